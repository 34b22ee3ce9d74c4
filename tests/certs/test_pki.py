"""Pure certificate logic, judged with a frozen clock: one test per reason to act."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs import pki
from certs.pki import Action
from tests.certs.conftest import NAMESPACE, SERVICE, T0

DAY = timedelta(days=1)
NAMES = {
    "rollout-webhook",
    "rollout-webhook.rollout-system",
    "rollout-webhook.rollout-system.svc",
    "rollout-webhook.rollout-system.svc.cluster.local",
}


def check(b: pki.Bundle, now: datetime, **kw: object) -> pki.Decision:
    return pki.check_bundle(b, SERVICE, NAMESPACE, now, **kw)  # type: ignore[arg-type]


def load(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


# --- what gets made ---------------------------------------------------------------------


def test_serving_certificate_has_the_service_names_and_is_a_plain_server_cert(
    bundle: pki.Bundle,
) -> None:
    leaf = load(bundle.cert_pem)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == NAMES
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    assert leaf.not_valid_after_utc - T0 == pki.LEAF_LIFETIME
    # Backdated for clock skew between nodes.
    assert leaf.not_valid_before_utc == T0 - pki.CLOCK_SKEW_ALLOWANCE


def test_ca_is_a_two_year_p256_ca(ca: pki.CertificateAuthority) -> None:
    cert = load(ca.cert_pem)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca is True
    assert bc.path_length == 0
    assert cert.not_valid_after_utc - T0 == timedelta(days=730)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_extra_dns_and_ip_sans_are_added() -> None:
    b = pki.make_serving_cert(
        pki.make_ca(T0), SERVICE, NAMESPACE, T0, ["Webhook.Example.com."], ["10.1.2.3", "::1"]
    )
    sans = load(b.cert_pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert set(sans.value.get_values_for_type(x509.DNSName)) == NAMES | {"webhook.example.com"}
    assert set(sans.value.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("10.1.2.3"),
        ipaddress.ip_address("::1"),
    }
    assert (
        check(b, T0, extra_dns=["webhook.example.com"], extra_ips=["10.1.2.3", "::1"]).action
        is Action.NONE
    )


def test_leaf_never_outlives_its_ca() -> None:
    short_ca = pki.make_ca(T0, lifetime=10 * DAY)
    b = pki.make_serving_cert(short_ca, SERVICE, NAMESPACE, T0)
    assert load(b.cert_pem).not_valid_after_utc == T0 + 10 * DAY


def test_localhost_bundle_for_serve_without_flags() -> None:
    b = pki.self_signed_for_localhost(T0)
    sans = load(b.cert_pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert sans.value.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    decision = pki.check_bundle_for_names(b, ["localhost"], ["127.0.0.1"], T0)
    assert decision.action is Action.NONE


@pytest.mark.parametrize(
    ("service", "namespace", "dns", "ips", "message"),
    [
        ("Bad_Name", NAMESPACE, [], [], "service 'Bad_Name' is not a valid DNS label"),
        (SERVICE, "", [], [], "namespace '' is not a valid DNS label"),
        (SERVICE, NAMESPACE, ["exa mple.com"], [], "DNS name 'exa mple.com'"),
        (SERVICE, NAMESPACE, [], ["999.1.1.1"], "IP address '999.1.1.1'"),
    ],
)
def test_bad_names_are_refused_with_the_offending_value(
    ca: pki.CertificateAuthority,
    service: str,
    namespace: str,
    dns: list[str],
    ips: list[str],
    message: str,
) -> None:
    with pytest.raises(pki.CertificateError, match=message):
        pki.make_serving_cert(ca, service, namespace, T0, dns, ips)


def test_naive_clock_is_refused(ca: pki.CertificateAuthority) -> None:
    with pytest.raises(pki.CertificateError, match="timezone-aware"):
        pki.make_serving_cert(ca, SERVICE, NAMESPACE, datetime(2030, 1, 1))


# --- reasons to act, one by one -----------------------------------------------------------


def test_fresh_bundle_needs_nothing_until_two_thirds_of_the_leaf_life(bundle: pki.Bundle) -> None:
    d = check(bundle, T0 + 59 * DAY)
    assert d.action is Action.NONE
    assert d.reasons == ()
    assert d.leaf_not_after == T0 + 90 * DAY
    # 2/3 of (90 days + the 5 minute backdate), counted from not_before.
    assert d.next_check is not None
    assert T0 + 59 * DAY < d.next_check < T0 + 61 * DAY


def test_leaf_inside_renewal_window(bundle: pki.Bundle) -> None:
    d = check(bundle, T0 + 61 * DAY)
    assert d.action is Action.RENEW_LEAF
    assert any("inside its renewal window" in r for r in d.reasons)


def test_leaf_expired(bundle: pki.Bundle) -> None:
    d = check(bundle, T0 + 91 * DAY)
    assert d.action is Action.RENEW_LEAF
    assert d.reasons == ("the serving certificate expired at 2030-04-01T12:00:00Z",)


def test_missing_san(bundle: pki.Bundle) -> None:
    d = check(bundle, T0, extra_dns=["webhook.example.com"], extra_ips=["10.0.0.9"])
    assert d.action is Action.RENEW_LEAF
    assert d.reasons == ("the serving certificate lacks SANs: webhook.example.com, 10.0.0.9",)


def test_san_no_longer_wanted() -> None:
    b = pki.make_serving_cert(pki.make_ca(T0), SERVICE, NAMESPACE, T0, ["old.example.com"])
    d = check(b, T0)
    assert d.action is Action.RENEW_LEAF
    assert d.reasons == ("the serving certificate has SANs no longer wanted: old.example.com",)


def test_certificate_for_another_service(bundle: pki.Bundle) -> None:
    d = pki.check_bundle(bundle, "other", NAMESPACE, T0)
    assert d.action is Action.RENEW_LEAF
    assert "lacks SANs: other, other.rollout-system" in d.reasons[0]


def test_common_name_only_certificate_is_rejected(ca: pki.CertificateAuthority) -> None:
    leaf_pem, key_pem = _odd_leaf(ca, san=False)
    d = check(replace(_with_ca(ca), cert_pem=leaf_pem, key_pem=key_pem), T0)
    assert d.action is Action.RENEW_LEAF
    assert d.reasons[0].startswith("the serving certificate lacks SANs: rollout-webhook,")


def test_leaf_that_is_a_ca_or_lacks_server_auth(ca: pki.CertificateAuthority) -> None:
    leaf_pem, key_pem = _odd_leaf(ca, is_ca=True, server_auth=False)
    d = check(replace(_with_ca(ca), cert_pem=leaf_pem, key_pem=key_pem), T0)
    assert d.action is Action.RENEW_LEAF
    assert d.reasons == (
        "the serving certificate is a CA (basicConstraints CA:TRUE)",
        "the serving certificate lacks the serverAuth extended key usage",
    )


def test_leaf_not_signed_by_the_ca(bundle: pki.Bundle, other_bundle: pki.Bundle) -> None:
    mixed = replace(bundle, cert_pem=other_bundle.cert_pem, key_pem=other_bundle.key_pem)
    d = check(mixed, T0)
    assert d.action is Action.RENEW_LEAF
    assert d.reasons == ("the serving certificate is not signed by the CA",)


def test_key_not_matching_the_leaf(bundle: pki.Bundle, other_bundle: pki.Bundle) -> None:
    d = check(replace(bundle, key_pem=other_bundle.key_pem), T0)
    assert d.action is Action.RENEW_LEAF
    assert d.reasons == ("the serving key does not match the serving certificate",)


@pytest.mark.parametrize(
    ("field", "value", "action", "reason"),
    [
        ("cert_pem", "", Action.RENEW_LEAF, "the serving certificate is missing"),
        ("cert_pem", "garbage", Action.RENEW_LEAF, "the serving certificate is not a readable PEM"),
        ("key_pem", "", Action.RENEW_LEAF, "the serving key is missing"),
        (
            "key_pem",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            Action.RENEW_LEAF,
            "the serving key is not a readable PEM",
        ),
        ("ca_pem", "garbage", Action.REISSUE, "the CA certificate is not a readable PEM"),
        ("ca_key_pem", "", Action.REISSUE, "the CA key is missing"),
    ],
)
def test_unparsable_or_missing_parts(
    bundle: pki.Bundle, field: str, value: str, action: Action, reason: str
) -> None:
    d = check(replace(bundle, **{field: value}), T0)  # type: ignore[arg-type]
    assert d.action is action
    assert d.reasons[0] == reason


def test_ca_key_is_not_required_for_a_local_directory(bundle: pki.Bundle) -> None:
    assert check(replace(bundle, ca_key_pem=""), T0, managed=False).action is Action.NONE


def test_ca_key_not_matching_the_ca(bundle: pki.Bundle, other_bundle: pki.Bundle) -> None:
    d = check(replace(bundle, ca_key_pem=other_bundle.ca_key_pem), T0)
    assert d.action is Action.REISSUE
    assert d.reasons == ("the CA key does not belong to the CA certificate",)


def test_ca_expired_means_reissue_everything(bundle: pki.Bundle) -> None:
    d = check(bundle, T0 + 731 * DAY)
    assert d.action is Action.REISSUE
    assert d.reasons[0] == "the CA expired at 2032-01-01T12:00:00Z"
    # The leaf's own finding is folded in, not lost.
    assert any("serving certificate expired" in r for r in d.reasons)


def test_not_yet_valid_is_reported(bundle: pki.Bundle) -> None:
    d = check(bundle, T0 - DAY)
    assert d.action is Action.REISSUE
    assert "the CA is not valid before 2030-01-01T11:55:00Z" in d.reasons


def test_ca_inside_renewal_window_stages_a_new_ca(bundle: pki.Bundle) -> None:
    now = T0 + 500 * DAY
    fresh_leaf = pki.apply_action(bundle, Action.RENEW_LEAF, SERVICE, NAMESPACE, now - DAY)
    d = check(fresh_leaf, now)
    assert d.action is Action.STAGE_CA
    assert d.reasons[0].startswith("the CA is inside its renewal window since 2031-05-")


def test_every_finding_is_listed_and_the_most_urgent_wins(bundle: pki.Bundle) -> None:
    d = check(bundle, T0 + 500 * DAY, extra_dns=["x.example.com"])
    assert d.action is Action.RENEW_LEAF
    assert d.pending == (Action.STAGE_CA,)
    assert len(d.reasons) == 3


# --- acting -----------------------------------------------------------------------------


def test_nothing_stored_yet_makes_a_fresh_valid_bundle() -> None:
    b = pki.apply_action(None, Action.REISSUE, SERVICE, NAMESPACE, T0)
    assert check(b, T0).action is Action.NONE


@pytest.mark.parametrize("day", [61, 91])
def test_renewing_the_leaf_keeps_the_ca(bundle: pki.Bundle, day: int) -> None:
    now = T0 + day * DAY
    renewed = pki.apply_action(bundle, check(bundle, now).action, SERVICE, NAMESPACE, now)
    assert renewed.ca_pem == bundle.ca_pem
    assert renewed.trust_pem == bundle.trust_pem
    assert renewed.cert_pem != bundle.cert_pem
    assert check(renewed, now).action is Action.NONE


def test_ca_rotation_runs_stage_promote_retire_with_overlap(bundle: pki.Bundle) -> None:
    lt = pki.DEFAULT_LIFETIMES
    now = T0 + 500 * DAY
    b = pki.apply_action(bundle, Action.RENEW_LEAF, SERVICE, NAMESPACE, now)
    assert check(b, now).action is Action.STAGE_CA

    staged = pki.apply_action(b, Action.STAGE_CA, SERVICE, NAMESPACE, now)
    # Step 1: trust grows, the leaf and its signer stay.
    assert staged.cert_pem == b.cert_pem
    assert staged.ca_pem == b.ca_pem
    assert pki.split_pem_certificates(staged.trust_pem) == (b.ca_pem, staged.next_ca_pem)
    wait = check(staged, now + lt.propagation_delay - timedelta(seconds=1))
    assert wait.action is Action.NONE
    assert wait.next_check == now + lt.propagation_delay

    # Step 2: the leaf switches to the new CA; the old CA stays trusted.
    t2 = now + lt.propagation_delay
    d = check(staged, t2)
    assert d.action is Action.PROMOTE_CA
    promoted = pki.apply_action(staged, d.action, SERVICE, NAMESPACE, t2)
    assert promoted.ca_pem == staged.next_ca_pem
    assert promoted.previous_ca_pems == (b.ca_pem,)
    assert set(pki.split_pem_certificates(promoted.trust_pem)) == set(
        pki.split_pem_certificates(staged.trust_pem)
    )
    assert load(promoted.cert_pem).issuer == load(promoted.ca_pem).subject
    assert check(promoted, t2 + lt.retire_grace - timedelta(seconds=1)).action is Action.NONE

    # Step 3: after the grace period the old CA is dropped.
    t3 = t2 + lt.retire_grace
    d = check(promoted, t3)
    assert d.action is Action.RETIRE_CA
    retired = pki.apply_action(promoted, d.action, SERVICE, NAMESPACE, t3)
    assert pki.split_pem_certificates(retired.trust_pem) == (promoted.ca_pem,)
    assert check(retired, t3).action is Action.NONE


def test_a_broken_staged_ca_is_restaged(bundle: pki.Bundle) -> None:
    broken = replace(bundle, next_ca_pem="garbage", rotation_step_at=T0)
    d = check(broken, T0)
    assert d.action is Action.STAGE_CA
    assert d.reasons == ("the staged CA or its key is unreadable or mismatched",)


def test_trust_bundle_has_no_duplicates(bundle: pki.Bundle) -> None:
    doubled = replace(bundle, previous_ca_pems=(bundle.ca_pem, bundle.ca_pem + "\n\n"))
    assert doubled.trust_pem == bundle.trust_pem


# --- helpers ----------------------------------------------------------------------------


def _with_ca(ca: pki.CertificateAuthority) -> pki.Bundle:
    return pki.Bundle(ca_pem=ca.cert_pem, ca_key_pem=ca.key_pem, cert_pem="", key_pem="")


def _odd_leaf(
    ca: pki.CertificateAuthority, *, san: bool = True, is_ca: bool = False, server_auth: bool = True
) -> tuple[str, str]:
    """A leaf made the way pki never makes one, to prove check_bundle catches it."""
    from cryptography.hazmat.primitives import serialization

    ca_cert = load(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem.encode(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVICE)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0 - DAY)
        .not_valid_after(T0 + 30 * DAY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in sorted(NAMES)]), critical=False
        )
    if server_auth:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def test_decision_times_are_utc(bundle: pki.Bundle) -> None:
    d = check(bundle, T0)
    assert d.leaf_not_after is not None
    assert d.leaf_not_after.tzinfo is UTC


def _rsa_bundle() -> pki.Bundle:
    """A bundle as another issuer might make it: RSA keys, same SANs."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    def pem_key(key: rsa.RSAPrivateKey) -> str:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "other CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(T0 - DAY)
        .not_valid_after(T0 + 365 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    authority = pki.CertificateAuthority(
        ca.public_bytes(serialization.Encoding.PEM).decode(), pem_key(ca_key)
    )
    return pki.make_serving_cert(authority, SERVICE, NAMESPACE, T0)


def test_a_bundle_with_an_rsa_ca_is_judged_on_its_merits() -> None:
    b = _rsa_bundle()
    assert check(b, T0).action is Action.NONE
    other = pki.make_serving_cert(pki.make_ca(T0), SERVICE, NAMESPACE, T0)
    d = check(replace(b, key_pem=other.key_pem), T0)
    assert d.reasons == ("the serving key does not match the serving certificate",)
