"""Certificates for the node tier: the end-to-end tier's CA and admin, plus one client
certificate per component and serving certificates for the API server and the kubelet.

Built on tests/e2e/pki.py (its CA, admin and service-account keys, and its issuer); only the
extra identities are added here.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.e2e import pki
from tests.node import host

NODE_NAME = "rollout-webhook-node"

# name: (user, group) of each component's client certificate. The groups and users are those
# the bootstrap RBAC policy (and the Node authorizer) grants each component's rights to.
CLIENTS = {
    "kubelet": (f"system:node:{NODE_NAME}", "system:nodes"),
    "kube-proxy": ("system:kube-proxy", None),
    "kube-controller-manager": ("system:kube-controller-manager", None),
    "kube-scheduler": ("system:kube-scheduler", None),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
}


@dataclass(frozen=True)
class NodePki:
    control_plane: pki.ControlPlanePki
    clients: dict[str, pki.KeyPair]
    kubelet_serving: pki.KeyPair

    def write(self, directory: Path) -> dict[str, Path]:
        paths = self.control_plane.write(directory)
        pairs = {**self.clients, "kubelet-serving": self.kubelet_serving}
        for name, pair in pairs.items():
            for suffix, content in ((".crt", pair.cert_pem), (".key", pair.key_pem)):
                path = directory / f"{name}{suffix}"
                path.write_bytes(content)
                if suffix == ".key":
                    path.chmod(0o600)
                paths[f"{name}{suffix}"] = path
        return paths


def _pair(
    common_name: str,
    organization: str | None,
    ca: tuple[x509.Name, ec.EllipticCurvePrivateKey],
    now: datetime.datetime,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName],
) -> pki.KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = pki._name(common_name, organization)
    cert = pki._issue(subject, key, ca[0], ca[1], now, ca=False, usages=[usage], sans=sans)
    return pki.KeyPair(cert, pki._key_pem(key))


def generate(now: datetime.datetime) -> NodePki:
    base = pki.generate(now)
    ca_key = serialization.load_pem_private_key(base.ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_name = x509.load_pem_x509_certificate(base.ca.cert_pem).subject
    ca = (ca_name, ca_key)
    server, client = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH

    def ip(address: str) -> x509.GeneralName:
        return x509.IPAddress(ipaddress.IPv4Address(address))

    names = ["kubernetes", "kubernetes.default", "kubernetes.default.svc", "localhost"]
    names.append("kubernetes.default.svc.cluster.local")
    apiserver_sans = [
        ip(host.HOST_ADDRESS),
        ip(host.KUBERNETES_SERVICE_IP),
        ip("127.0.0.1"),
        *(x509.DNSName(name) for name in names),
    ]
    serving = _pair("kube-apiserver", None, ca, now, server, apiserver_sans)
    clients = {
        name: _pair(user, group, ca, now, client, []) for name, (user, group) in CLIENTS.items()
    }
    kubelet_serving = _pair(
        NODE_NAME, None, ca, now, server, [ip(host.NODE_ADDRESS), x509.DNSName(NODE_NAME)]
    )
    return NodePki(dataclasses.replace(base, serving=serving), clients, kubelet_serving)


def kubeconfig(server: str, ca_pem: bytes, user: str, pair: pki.KeyPair) -> dict[str, Any]:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "node",
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(pair.cert_pem),
                    "client-key-data": b64(pair.key_pem),
                },
            }
        ],
        "contexts": [{"name": "node", "context": {"cluster": "node", "user": user}}],
        "current-context": "node",
    }


def write_kubeconfig(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path
