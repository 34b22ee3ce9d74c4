"""Real TLS handshakes: a server on 127.0.0.1 serves the leaf, a client verifies the chain."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from certs import pki
from tests.certs.tlsutil import handshake, tls_server

SERVICE, NAMESPACE = "rollout-webhook", "rollout-system"
# Handshakes check validity against the real time, so these bundles are made "now".
NOW = datetime.now(UTC)
BUNDLE = pki.make_serving_cert(
    pki.make_ca(NOW), SERVICE, NAMESPACE, NOW, ["webhook.example.com"], ["127.0.0.1"]
)
SANS = [*pki.service_dns_names(SERVICE, NAMESPACE), "webhook.example.com", "127.0.0.1"]


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with tls_server(BUNDLE.cert_pem, BUNDLE.key_pem) as p:
        yield p


@pytest.mark.parametrize("name", SANS)
def test_client_verifies_the_chain_for_every_san(port: int, name: str) -> None:
    assert handshake(port, BUNDLE.trust_pem, name) == b"ok"


@pytest.mark.parametrize("name", ["rollout-webhook.other.svc", "127.0.0.2", "example.com"])
def test_a_name_not_in_the_sans_fails_verification(port: int, name: str) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(port, BUNDLE.trust_pem, name)


def test_a_client_trusting_another_ca_fails(port: int) -> None:
    stranger = pki.make_ca(NOW)
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        handshake(port, stranger.cert_pem, SANS[2])


def test_localhost_bundle_serves_localhost_and_loopback() -> None:
    local = pki.self_signed_for_localhost(NOW)
    with tls_server(local.cert_pem, local.key_pem) as p:
        assert handshake(p, local.trust_pem, "localhost") == b"ok"
        assert handshake(p, local.trust_pem, "127.0.0.1") == b"ok"
