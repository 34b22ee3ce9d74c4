"""A CA rotation seen through real TLS handshakes: nobody loses trust at any step.

Two "replicas" serve on 127.0.0.1; clients hold the caBundle from before the rotation
(only the old CA: an API server that has not re-read the webhook configuration yet) or
the one injected at staging (old and new CA).
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta

import pytest

from certs import pki
from tests.certs.tlsutil import handshake, tls_server

SERVICE, NAMESPACE = "rollout-webhook", "rollout-system"
HOST = "rollout-webhook.rollout-system.svc"
NOW = datetime.now(UTC)
LATER = NOW + timedelta(minutes=1)  # still valid on the real clock, after the backdate

ORIGINAL = pki.make_serving_cert(pki.make_ca(NOW), SERVICE, NAMESPACE, NOW)
STAGED = pki.apply_action(ORIGINAL, pki.Action.STAGE_CA, SERVICE, NAMESPACE, NOW)
PROMOTED = pki.apply_action(STAGED, pki.Action.PROMOTE_CA, SERVICE, NAMESPACE, LATER)
RETIRED = pki.apply_action(PROMOTED, pki.Action.RETIRE_CA, SERVICE, NAMESPACE, LATER)

OLD_TRUST = ORIGINAL.trust_pem  # held before the rotation
OVERLAP_TRUST = STAGED.trust_pem  # injected at staging, kept through promotion


def test_the_bundles_are_what_the_sequence_promises() -> None:
    assert pki.split_pem_certificates(OLD_TRUST) == (ORIGINAL.ca_pem,)
    assert set(pki.split_pem_certificates(OVERLAP_TRUST)) == {ORIGINAL.ca_pem, STAGED.next_ca_pem}
    assert set(pki.split_pem_certificates(PROMOTED.trust_pem)) == set(
        pki.split_pem_certificates(OVERLAP_TRUST)
    )
    assert pki.split_pem_certificates(RETIRED.trust_pem) == (STAGED.next_ca_pem,)
    assert STAGED.cert_pem == ORIGINAL.cert_pem
    assert PROMOTED.ca_pem == STAGED.next_ca_pem


def test_staged_both_old_and_new_bundle_holders_succeed() -> None:
    # Step 1: every replica still serves the leaf of the old CA.
    with tls_server(STAGED.cert_pem, STAGED.key_pem) as port:
        assert handshake(port, OLD_TRUST, HOST) == b"ok"
        assert handshake(port, OVERLAP_TRUST, HOST) == b"ok"


def test_promoted_overlap_bundle_trusts_replicas_on_either_leaf() -> None:
    # Step 2: replica A has not reloaded yet, replica B serves the new CA's leaf.
    with (
        tls_server(ORIGINAL.cert_pem, ORIGINAL.key_pem) as replica_a,
        tls_server(PROMOTED.cert_pem, PROMOTED.key_pem) as replica_b,
    ):
        for port in (replica_a, replica_b):
            assert handshake(port, OVERLAP_TRUST, HOST) == b"ok"
            assert handshake(port, PROMOTED.trust_pem, HOST) == b"ok"
        # Why staging comes first: a client that never got the new CA cannot talk to B.
        assert handshake(replica_a, OLD_TRUST, HOST) == b"ok"
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(replica_b, OLD_TRUST, HOST)


def test_retired_only_the_new_ca_is_trusted() -> None:
    # Step 3, after the grace period every replica serves the new leaf.
    with (
        tls_server(RETIRED.cert_pem, RETIRED.key_pem) as new,
        tls_server(ORIGINAL.cert_pem, ORIGINAL.key_pem) as straggler,
    ):
        assert handshake(new, RETIRED.trust_pem, HOST) == b"ok"
        # Why the grace period: a replica still on the old leaf is no longer trusted.
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(straggler, RETIRED.trust_pem, HOST)
