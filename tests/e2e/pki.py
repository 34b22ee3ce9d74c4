"""Throw-away certificates for a test control plane.

One CA signs the API server's serving certificate and the admin client certificate (group
system:masters, which RBAC lets do anything); a separate key pair signs service-account tokens.
Test-only and kept apart from the product's certs package on purpose: the harness must not
depend on the code it tests.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Short-lived on purpose: these live for one test session.
VALIDITY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class ControlPlanePki:
    ca: KeyPair
    serving: KeyPair
    admin: KeyPair
    service_account_public_pem: bytes
    service_account_private_pem: bytes

    def write(self, directory: Path) -> dict[str, Path]:
        """Write every file the API server and clients read; returns their paths by role."""
        directory.mkdir(parents=True, exist_ok=True)
        files = {
            "ca.crt": self.ca.cert_pem,
            "ca.key": self.ca.key_pem,
            "serving.crt": self.serving.cert_pem,
            "serving.key": self.serving.key_pem,
            "admin.crt": self.admin.cert_pem,
            "admin.key": self.admin.key_pem,
            "sa.pub": self.service_account_public_pem,
            "sa.key": self.service_account_private_pem,
        }
        paths = {}
        for name, content in files.items():
            path = directory / name
            path.write_bytes(content)
            if name.endswith(".key"):
                path.chmod(0o600)
            paths[name] = path
        return paths


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _issue(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    now: datetime.datetime,
    *,
    ca: bool,
    usages: list[x509.ObjectIdentifier],
    sans: list[x509.GeneralName],
) -> bytes:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=not ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    certificate = builder.sign(issuer_key, hashes.SHA256())
    return certificate.public_bytes(serialization.Encoding.PEM)


def generate(now: datetime.datetime) -> ControlPlanePki:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("rollout-webhook-e2e-ca")
    ca_pem = _issue(ca_name, ca_key, ca_name, ca_key, now, ca=True, usages=[], sans=[])

    serving_key = ec.generate_private_key(ec.SECP256R1())
    serving_pem = _issue(
        _name("kube-apiserver"),
        serving_key,
        ca_name,
        ca_key,
        now,
        ca=False,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        sans=[
            x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
            x509.DNSName("localhost"),
        ],
    )

    admin_key = ec.generate_private_key(ec.SECP256R1())
    # The API server maps CN to the user name and O to groups; system:masters is bound to
    # cluster-admin by the bootstrap RBAC policy.
    admin_pem = _issue(
        _name("e2e-admin", "system:masters"),
        admin_key,
        ca_name,
        ca_key,
        now,
        ca=False,
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
        sans=[],
    )

    sa_key = ec.generate_private_key(ec.SECP256R1())
    sa_public = sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return ControlPlanePki(
        ca=KeyPair(ca_pem, _key_pem(ca_key)),
        serving=KeyPair(serving_pem, _key_pem(serving_key)),
        admin=KeyPair(admin_pem, _key_pem(admin_key)),
        service_account_public_pem=sa_public,
        service_account_private_pem=_key_pem(sa_key),
    )


@dataclass(frozen=True)
class WebhookClientPki:
    """The client certificate the API server shows to webhooks that ask for one, and the
    CA of its own that signed it (docs/security.md#mutual-tls)."""

    ca: KeyPair
    client: KeyPair


def webhook_client(now: datetime.datetime) -> WebhookClientPki:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("rollout-webhook-e2e-webhook-client-ca")
    ca_pem = _issue(ca_name, ca_key, ca_name, ca_key, now, ca=True, usages=[], sans=[])
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_pem = _issue(
        _name("kube-apiserver-webhook-client"),
        client_key,
        ca_name,
        ca_key,
        now,
        ca=False,
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
        sans=[],
    )
    return WebhookClientPki(
        KeyPair(ca_pem, _key_pem(ca_key)), KeyPair(client_pem, _key_pem(client_key))
    )
