"""Pure certificate logic: make a CA and a serving certificate, decide on renewal. No I/O.

Every function takes the current time as an argument (a timezone-aware ``datetime``), so
renewal is tested with a frozen clock and never by sleeping. Keys are ECDSA P-256: cheap
to generate, accepted by every Kubernetes API server, and small on the wire.

Lifetimes (see docs/certificates.md for the reasoning):

- CA: ``CA_LIFETIME`` (2 years), renewed once ``RENEW_AFTER_FRACTION`` (2/3) of its life
  has passed, i.e. with about 8 months to spare. A CA rotation is a three-step sequence
  (stage, promote, retire) so that every client keeps trusting whatever a replica serves.
- Serving certificate ("leaf"): ``LEAF_LIFETIME`` (90 days), renewed at 2/3 of its life,
  i.e. with 30 days to spare, so a rotation loop that is down for weeks is still caught
  by a later run before anything expires.

The bundle also carries the state of a CA rotation in progress: a staged ``next_ca`` that
clients already trust but that signs nothing yet, and ``previous_ca_pems`` still trusted
until every replica serves a leaf from the new CA.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Names of the entries of a kubernetes.io/tls Secret and of the files in a local directory.
TLS_CERT_KEY = "tls.crt"
TLS_KEY_KEY = "tls.key"
CA_CERT_KEY = "ca.crt"
# Product entries of the Secret: the CA keys stay with the bundle so that a leaf can be
# renewed without replacing the CA (which would force a caBundle rotation every 60 days).
CA_KEY_KEY = "ca.key"
NEXT_CA_CERT_KEY = "ca-next.crt"
NEXT_CA_KEY_KEY = "ca-next.key"

CA_LIFETIME = timedelta(days=730)
LEAF_LIFETIME = timedelta(days=90)
RENEW_AFTER_FRACTION = 2 / 3
# not_before is set this far in the past: nodes' clocks disagree by seconds to minutes,
# and a certificate that is "not yet valid" on one of them breaks every admission call.
CLOCK_SKEW_ALLOWANCE = timedelta(minutes=5)
# A staged CA is promoted (starts signing the leaf) only after this long, so that every
# API server has re-read the webhook configurations with the new caBundle and every pod
# mounting the Secret has the new ca.crt (kubelet refreshes mounted Secrets within about
# a minute plus its cache TTL).
DEFAULT_PROPAGATION_DELAY = timedelta(minutes=10)
# Old CAs stay trusted this long after the leaf switched to the new CA, so that replicas
# still serving the old leaf (not yet reloaded) keep working.
DEFAULT_RETIRE_GRACE = timedelta(hours=1)

DEFAULT_CLUSTER_DOMAIN = "cluster.local"
LOCALHOST_DNS = ("localhost",)
LOCALHOST_IPS = ("127.0.0.1",)

# Keys this module can sign with and compare: its own ECDSA keys, and RSA keys of a
# bundle made elsewhere.
_SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class CertificateError(ValueError):
    """Input the certificate logic cannot work with: a bad name, an unreadable PEM."""


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA certificate and its private key, both PEM."""

    cert_pem: str
    key_pem: str


@dataclass(frozen=True)
class Bundle:
    """Everything a webhook needs to serve TLS and everything a client needs to trust it.

    ``ca_pem`` signs ``cert_pem``; ``ca_key_pem`` may be empty when the bundle was read
    from somewhere that does not keep the CA key (a local directory). ``next_ca_*`` is a
    CA staged for rotation (trusted, not yet signing); ``previous_ca_pems`` are CAs that
    signed earlier leaves and stay trusted until retired. ``rotation_step_at`` is when the
    last CA rotation step (stage or promote) happened; the next step waits on it.
    """

    ca_pem: str
    cert_pem: str
    key_pem: str
    ca_key_pem: str = ""
    next_ca_pem: str = ""
    next_ca_key_pem: str = ""
    previous_ca_pems: tuple[str, ...] = ()
    rotation_step_at: datetime | None = None

    @property
    def trust_pem(self) -> str:
        """The CA bundle clients must trust: the active CA, then the staged, then old ones.

        This is what goes into ``ca.crt`` and into every webhook's ``clientConfig.caBundle``.
        """
        return "".join(_unique_pems((self.ca_pem, self.next_ca_pem, *self.previous_ca_pems)))


class Action(enum.Enum):
    """What a bundle needs, most urgent first in ``_PRIORITY``."""

    NONE = "none"
    # Start over with a new CA and leaf: the CA is unusable, so no overlap is possible.
    REISSUE = "reissue"
    # Issue a new leaf from the active CA; trust does not change.
    RENEW_LEAF = "renew-leaf"
    # CA rotation step 1: make a new CA and add it to the trust bundle only.
    STAGE_CA = "stage-ca"
    # CA rotation step 2: sign a new leaf with the staged CA; the old CA stays trusted.
    PROMOTE_CA = "promote-ca"
    # CA rotation step 3: stop trusting the previous CAs.
    RETIRE_CA = "retire-ca"


_PRIORITY = (
    Action.REISSUE,
    Action.PROMOTE_CA,
    Action.RENEW_LEAF,
    Action.STAGE_CA,
    Action.RETIRE_CA,
)


@dataclass(frozen=True)
class Decision:
    """The verdict on a bundle: the action to take now and every reason found, in words.

    ``reasons`` lists every finding (more than one action may be due; the most urgent is
    ``action`` and the others follow on the next pass). ``next_check`` is when, if nothing
    changes, some action will next become due.
    """

    action: Action
    reasons: tuple[str, ...] = ()
    leaf_not_after: datetime | None = None
    ca_not_after: datetime | None = None
    next_check: datetime | None = None
    pending: tuple[Action, ...] = field(default=())

    @property
    def needed(self) -> bool:
        return self.action is not Action.NONE


@dataclass(frozen=True)
class Lifetimes:
    """Lifetimes and rotation delays, all overridable for tests and special clusters."""

    ca: timedelta = CA_LIFETIME
    leaf: timedelta = LEAF_LIFETIME
    renew_after_fraction: float = RENEW_AFTER_FRACTION
    propagation_delay: timedelta = DEFAULT_PROPAGATION_DELAY
    retire_grace: timedelta = DEFAULT_RETIRE_GRACE


DEFAULT_LIFETIMES = Lifetimes()


# ---------------------------------------------------------------------------------------
# Names


def service_dns_names(
    service: str, namespace: str, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
) -> tuple[str, ...]:
    """The four names an in-cluster client may use for a Service, shortest first."""
    _check_label(service, "service")
    _check_label(namespace, "namespace")
    svc = f"{service}.{namespace}.svc"
    return (service, f"{service}.{namespace}", svc, f"{svc}.{cluster_domain}")


def _check_label(value: str, what: str) -> None:
    if not _DNS_LABEL.match(value):
        raise CertificateError(
            f"{what} {value!r} is not a valid DNS label "
            "(lower-case letters, digits and '-', at most 63 characters)"
        )


def normalise_dns_names(names: Iterable[str]) -> tuple[str, ...]:
    """Validate extra DNS SANs (RFC 1123 names, optionally with a leading ``*.``)."""
    result = []
    for raw in names:
        name = raw.strip().lower().rstrip(".")
        labels = name.split(".")
        if labels and labels[0] == "*" and len(labels) > 1:
            labels = labels[1:]
        if not name or len(name) > 253 or not all(_DNS_LABEL.match(lbl) for lbl in labels):
            raise CertificateError(f"DNS name {raw!r} is not a valid host name")
        result.append(name)
    return tuple(dict.fromkeys(result))


def normalise_dns_names_or_none(name: str) -> str | None:
    """``name`` normalised if it is a valid DNS name (no wildcard), else None."""
    if name.startswith("*"):
        return None
    try:
        return normalise_dns_names([name])[0]
    except CertificateError:
        return None


def normalise_ips(
    ips: Iterable[str],
) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    result = []
    for raw in ips:
        try:
            result.append(ipaddress.ip_address(raw.strip()))
        except ValueError:
            raise CertificateError(
                f"IP address {raw!r} is not a valid IPv4 or IPv6 address"
            ) from None
    return tuple(dict.fromkeys(result))


# ---------------------------------------------------------------------------------------
# Making certificates


def make_ca(
    now: datetime,
    *,
    lifetime: timedelta = CA_LIFETIME,
    name: str = "rollout-webhook CA",
) -> CertificateAuthority:
    """A self-signed ECDSA P-256 CA, valid from ``now`` (less the skew allowance).

    The subject carries the issue time: two CAs alive during a rotation then never share
    a name, which keeps chain building unambiguous for every TLS library.
    """
    _check_aware(now)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"{name} {now.strftime('%Y%m%dT%H%M%SZ')}")]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(cert_pem=_cert_pem(cert), key_pem=_key_pem(key))


def make_serving_cert(
    ca: CertificateAuthority,
    service: str,
    namespace: str,
    now: datetime,
    extra_dns: Sequence[str] = (),
    extra_ips: Sequence[str] = (),
    *,
    lifetime: timedelta = LEAF_LIFETIME,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
) -> Bundle:
    """A serving certificate for a Service, signed by ``ca``, as a fresh Bundle.

    SANs: the Service's four in-cluster names plus ``extra_dns`` and ``extra_ips``. The
    leaf never outlives its CA.
    """
    dns = (*service_dns_names(service, namespace, cluster_domain), *extra_dns)
    return issue_leaf(ca, dns, extra_ips, now, lifetime=lifetime)


def self_signed_for_localhost(now: datetime, *, lifetime: timedelta = LEAF_LIFETIME) -> Bundle:
    """A throw-away CA and a leaf for ``localhost`` and ``127.0.0.1``: ``serve`` with no flags.

    Clients verify against ``bundle.ca_pem`` (``curl --cacert ca.crt``).
    """
    ca = make_ca(now, lifetime=lifetime, name="rollout-webhook local CA")
    return issue_leaf(ca, LOCALHOST_DNS, LOCALHOST_IPS, now, lifetime=lifetime)


def issue_leaf(
    ca: CertificateAuthority,
    dns_names: Sequence[str],
    ips: Sequence[str],
    now: datetime,
    *,
    lifetime: timedelta = LEAF_LIFETIME,
) -> Bundle:
    """Sign a serving certificate for exactly these SANs (at least one) with ``ca``."""
    _check_aware(now)
    names = normalise_dns_names(dns_names)
    addresses = normalise_ips(ips)
    if not names and not addresses:
        raise CertificateError("a serving certificate needs at least one DNS or IP SAN")
    ca_cert = _load_cert(ca.cert_pem, "CA certificate")
    ca_key = _load_key(ca.key_pem, "CA key")
    if not _same_public_key(ca_cert.public_key(), ca_key.public_key()):
        raise CertificateError("the CA key does not belong to the CA certificate")
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans += [x509.IPAddress(a) for a in addresses]
    # The CommonName is informational only: clients match the SANs (RFC 6125; Go ignores
    # the CN since 1.15), so the SAN extension always lists every name, the CN included.
    common_name = names[0] if names else str(addresses[0])
    not_after = min(now + lifetime, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Bundle(
        ca_pem=ca.cert_pem,
        ca_key_pem=ca.key_pem,
        cert_pem=_cert_pem(cert),
        key_pem=_key_pem(key),
    )


# ---------------------------------------------------------------------------------------
# Deciding


def check_bundle(
    bundle: Bundle,
    service: str,
    namespace: str,
    now: datetime,
    extra_dns: Sequence[str] = (),
    extra_ips: Sequence[str] = (),
    *,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
    lifetimes: Lifetimes = DEFAULT_LIFETIMES,
    managed: bool = True,
) -> Decision:
    """Decide whether a bundle needs action now, and say why in words a human can act on.

    ``managed=False`` suits a plain bundle read from a directory, which keeps neither the
    CA key nor the state of a CA rotation: the CA key and rotation steps are then not
    judged (several CAs in ``ca.crt`` are simply all trusted).
    """
    dns = (*service_dns_names(service, namespace, cluster_domain), *extra_dns)
    return check_bundle_for_names(
        bundle,
        dns,
        extra_ips,
        now,
        lifetimes=lifetimes,
        managed=managed,
    )


def check_bundle_for_names(
    bundle: Bundle,
    dns_names: Sequence[str],
    ips: Sequence[str],
    now: datetime,
    *,
    lifetimes: Lifetimes = DEFAULT_LIFETIMES,
    managed: bool = True,
) -> Decision:
    """``check_bundle`` for an explicit SAN list (a local certificate, say)."""
    _check_aware(now)
    wanted_dns = set(normalise_dns_names(dns_names))
    wanted_ips = set(normalise_ips(ips))
    found: dict[Action, list[str]] = {a: [] for a in _PRIORITY}
    due_later: list[datetime] = []

    ca = _try_load_cert(bundle.ca_pem)
    ca_not_after = ca.not_valid_after_utc if ca else None
    if ca is None:
        found[Action.REISSUE].append(_missing_or_bad(bundle.ca_pem, "CA certificate"))
    else:
        _check_ca(ca, bundle, now, lifetimes, managed, found, due_later)

    leaf = _try_load_cert(bundle.cert_pem)
    leaf_not_after = leaf.not_valid_after_utc if leaf else None
    if leaf is None:
        found[Action.RENEW_LEAF].append(_missing_or_bad(bundle.cert_pem, "serving certificate"))
    else:
        _check_leaf(leaf, ca, bundle, wanted_dns, wanted_ips, now, lifetimes, found, due_later)

    if managed:
        _check_rotation(bundle, now, lifetimes, found, due_later)

    # Nothing the leaf needs can be done without a usable CA: fold it into the reissue.
    if found[Action.REISSUE]:
        for action in (Action.RENEW_LEAF, Action.STAGE_CA, Action.PROMOTE_CA, Action.RETIRE_CA):
            found[Action.REISSUE].extend(found.pop(action))
    due = [a for a in _PRIORITY if found.get(a)]
    reasons = tuple(r for a in due for r in found[a])
    return Decision(
        action=due[0] if due else Action.NONE,
        reasons=reasons,
        leaf_not_after=leaf_not_after,
        ca_not_after=ca_not_after,
        next_check=min(due_later) if due_later else None,
        pending=tuple(due[1:]),
    )


def _check_ca(
    ca: x509.Certificate,
    bundle: Bundle,
    now: datetime,
    lifetimes: Lifetimes,
    managed: bool,
    found: dict[Action, list[str]],
    due_later: list[datetime],
) -> None:
    reissue = found[Action.REISSUE]
    if not _is_ca(ca):
        reissue.append("the CA certificate is not a CA (basicConstraints CA:TRUE missing)")
    if ca.not_valid_after_utc <= now:
        reissue.append(f"the CA expired at {_fmt(ca.not_valid_after_utc)}")
    elif ca.not_valid_before_utc > now:
        reissue.append(f"the CA is not valid before {_fmt(ca.not_valid_before_utc)}")
    if managed:
        ca_key = _try_load_key(bundle.ca_key_pem)
        if ca_key is None:
            reissue.append(_missing_or_bad(bundle.ca_key_pem, "CA key"))
        elif not _same_public_key(ca.public_key(), ca_key.public_key()):
            reissue.append("the CA key does not belong to the CA certificate")
    if reissue:
        return
    renew_at = _renew_at(ca, lifetimes)
    if bundle.next_ca_pem.strip():
        return  # a rotation is already under way; _check_rotation handles it
    if renew_at <= now:
        found[Action.STAGE_CA].append(
            f"the CA is inside its renewal window since {_fmt(renew_at)} "
            f"(expires {_fmt(ca.not_valid_after_utc)})"
        )
    else:
        due_later.append(renew_at)


def _check_leaf(
    leaf: x509.Certificate,
    ca: x509.Certificate | None,
    bundle: Bundle,
    wanted_dns: set[str],
    wanted_ips: set[ipaddress.IPv4Address | ipaddress.IPv6Address],
    now: datetime,
    lifetimes: Lifetimes,
    found: dict[Action, list[str]],
    due_later: list[datetime],
) -> None:
    renew = found[Action.RENEW_LEAF]
    if leaf.not_valid_after_utc <= now:
        renew.append(f"the serving certificate expired at {_fmt(leaf.not_valid_after_utc)}")
    elif leaf.not_valid_before_utc > now:
        renew.append(
            f"the serving certificate is not valid before {_fmt(leaf.not_valid_before_utc)}"
        )
    else:
        renew_at = _renew_at(leaf, lifetimes)
        if renew_at <= now:
            renew.append(
                f"the serving certificate is inside its renewal window since {_fmt(renew_at)} "
                f"(expires {_fmt(leaf.not_valid_after_utc)})"
            )
        else:
            due_later.append(renew_at)
    have_dns, have_ips = _sans(leaf)
    missing = sorted(wanted_dns - have_dns) + sorted(str(i) for i in wanted_ips - have_ips)
    extra = sorted(have_dns - wanted_dns) + sorted(str(i) for i in have_ips - wanted_ips)
    if missing:
        renew.append(f"the serving certificate lacks SANs: {', '.join(missing)}")
    if extra:
        renew.append(f"the serving certificate has SANs no longer wanted: {', '.join(extra)}")
    if _is_ca(leaf):
        renew.append("the serving certificate is a CA (basicConstraints CA:TRUE)")
    if not _has_server_auth(leaf):
        renew.append("the serving certificate lacks the serverAuth extended key usage")
    if ca is not None and not _issued_by(leaf, ca):
        renew.append("the serving certificate is not signed by the CA")
    key = _try_load_key(bundle.key_pem)
    if key is None:
        renew.append(_missing_or_bad(bundle.key_pem, "serving key"))
    elif not _same_public_key(leaf.public_key(), key.public_key()):
        renew.append("the serving key does not match the serving certificate")


def _check_rotation(
    bundle: Bundle,
    now: datetime,
    lifetimes: Lifetimes,
    found: dict[Action, list[str]],
    due_later: list[datetime],
) -> None:
    step_at = bundle.rotation_step_at
    if bundle.next_ca_pem.strip():
        nxt = _try_load_cert(bundle.next_ca_pem)
        nxt_key = _try_load_key(bundle.next_ca_key_pem)
        if (
            nxt is None
            or nxt_key is None
            or not _same_public_key(nxt.public_key(), nxt_key.public_key())
        ):
            # A broken staged CA is dropped by staging a fresh one.
            found[Action.STAGE_CA].append("the staged CA or its key is unreadable or mismatched")
            return
        promote_at = (step_at or now) + lifetimes.propagation_delay
        if step_at is None or promote_at <= now:
            found[Action.PROMOTE_CA].append(
                "a new CA was staged and has had time to reach every client; "
                "the serving certificate switches to it"
            )
        else:
            due_later.append(promote_at)
    if bundle.previous_ca_pems and not bundle.next_ca_pem.strip():
        retire_at = (step_at or now) + lifetimes.retire_grace
        if step_at is None or retire_at <= now:
            found[Action.RETIRE_CA].append(
                f"{len(bundle.previous_ca_pems)} previous CA(s) still trusted past the "
                "grace period; they are removed from the trust bundle"
            )
        else:
            due_later.append(retire_at)


# ---------------------------------------------------------------------------------------
# Acting


def apply_action(
    bundle: Bundle | None,
    action: Action,
    service: str,
    namespace: str,
    now: datetime,
    extra_dns: Sequence[str] = (),
    extra_ips: Sequence[str] = (),
    *,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
    lifetimes: Lifetimes = DEFAULT_LIFETIMES,
) -> Bundle:
    """The bundle after one action. ``bundle=None`` (nothing stored yet) means REISSUE."""
    dns = (*service_dns_names(service, namespace, cluster_domain), *extra_dns)

    def leaf_from(ca: CertificateAuthority) -> Bundle:
        return issue_leaf(ca, dns, extra_ips, now, lifetime=lifetimes.leaf)

    if bundle is None:
        return leaf_from(make_ca(now, lifetime=lifetimes.ca))
    if action is Action.REISSUE:
        # Replicas keep serving the old leaf until they reload: CAs that are still valid
        # stay trusted through the usual grace period, so those replicas keep working.
        fresh = leaf_from(make_ca(now, lifetime=lifetimes.ca))
        still_valid = tuple(
            p
            for p in (bundle.ca_pem, bundle.next_ca_pem, *bundle.previous_ca_pems)
            if (c := _try_load_cert(p)) is not None and c.not_valid_after_utc > now
        )
        if not still_valid:
            return fresh
        return replace(fresh, previous_ca_pems=_unique_pems(still_valid), rotation_step_at=now)
    if action is Action.NONE:
        return bundle
    if action is Action.RENEW_LEAF:
        fresh = leaf_from(CertificateAuthority(bundle.ca_pem, bundle.ca_key_pem))
        return replace(bundle, cert_pem=fresh.cert_pem, key_pem=fresh.key_pem)
    if action is Action.STAGE_CA:
        nxt = make_ca(now, lifetime=lifetimes.ca)
        return replace(
            bundle,
            next_ca_pem=nxt.cert_pem,
            next_ca_key_pem=nxt.key_pem,
            rotation_step_at=now,
        )
    if action is Action.PROMOTE_CA:
        fresh = leaf_from(CertificateAuthority(bundle.next_ca_pem, bundle.next_ca_key_pem))
        old = tuple(p for p in (bundle.ca_pem, *bundle.previous_ca_pems) if p.strip())
        return Bundle(
            ca_pem=fresh.ca_pem,
            ca_key_pem=fresh.ca_key_pem,
            cert_pem=fresh.cert_pem,
            key_pem=fresh.key_pem,
            previous_ca_pems=_unique_pems(old),
            rotation_step_at=now,
        )
    if action is Action.RETIRE_CA:
        return replace(bundle, previous_ca_pems=(), rotation_step_at=None)
    raise AssertionError(f"unhandled action {action}")  # pragma: no cover


# ---------------------------------------------------------------------------------------
# Inspection helpers (for the CLI and the metrics)


def leaf_not_after(bundle: Bundle) -> datetime | None:
    cert = _try_load_cert(bundle.cert_pem)
    return cert.not_valid_after_utc if cert else None


def split_pem_certificates(pem: str) -> tuple[str, ...]:
    """The certificates of a concatenated PEM bundle, each normalised, duplicates removed."""
    blocks = re.findall(
        r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, flags=re.DOTALL
    )
    return _unique_pems(tuple(_normalise_pem(b) for b in blocks))


def describe_certificate(pem: str) -> str:
    """One line: subject, SANs (for a leaf) and validity, or why it cannot be read."""
    cert = _try_load_cert(pem)
    if cert is None:
        return "unreadable"
    dns, ips = _sans(cert)
    names = ", ".join(sorted(dns) + sorted(str(i) for i in ips))
    subject = cert.subject.rfc4514_string()
    sans = f" SANs [{names}]" if names else ""
    return (
        f"{subject}{sans} valid {_fmt(cert.not_valid_before_utc)} .. "
        f"{_fmt(cert.not_valid_after_utc)}"
    )


# ---------------------------------------------------------------------------------------
# Internals


def _renew_at(cert: x509.Certificate, lifetimes: Lifetimes) -> datetime:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) * lifetimes.renew_after_fraction


def _issued_by(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        ext = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return ext.value.ca


def _has_server_auth(cert: x509.Certificate) -> bool:
    try:
        ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.SERVER_AUTH in ext.value


def _sans(
    cert: x509.Certificate,
) -> tuple[set[str], set[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return set(), set()
    dns = {n.lower() for n in ext.value.get_values_for_type(x509.DNSName)}
    ips: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for ip in ext.value.get_values_for_type(x509.IPAddress):
        if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            ips.add(ip)
    return dns, ips


def _same_public_key(a: object, b: object) -> bool:
    # Any key type: a bundle made elsewhere (an RSA key from another issuer) is judged
    # on whether its key matches, not on being of the type this module makes.
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    try:
        return bool(a.public_bytes(enc, fmt) == b.public_bytes(enc, fmt))  # type: ignore[attr-defined]
    except (AttributeError, TypeError, ValueError):
        return False


def _load_cert(pem: str, what: str) -> x509.Certificate:
    cert = _try_load_cert(pem)
    if cert is None:
        raise CertificateError(_missing_or_bad(pem, what))
    return cert


def _load_key(pem: str, what: str) -> _SigningKey:
    key = _try_load_key(pem)
    if key is None:
        raise CertificateError(_missing_or_bad(pem, what))
    return key


def _try_load_cert(pem: str) -> x509.Certificate | None:
    if not pem.strip():
        return None
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        return None


def _try_load_key(pem: str) -> _SigningKey | None:
    if not pem.strip():
        return None
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) else None


def _missing_or_bad(pem: str, what: str) -> str:
    if not pem.strip():
        return f"the {what} is missing"
    return f"the {what} is not a readable PEM"


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _normalise_pem(pem: str) -> str:
    return pem.strip() + "\n"


def _unique_pems(pems: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_normalise_pem(p) for p in pems if p.strip()))


def _check_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise CertificateError("the clock must give a timezone-aware time (UTC)")


def _fmt(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")
