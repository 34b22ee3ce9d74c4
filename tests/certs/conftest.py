from __future__ import annotations

from datetime import UTC, datetime

import pytest

from certs import pki

# A frozen clock: every pure test judges bundles at fixed instants relative to this one.
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
SERVICE = "rollout-webhook"
NAMESPACE = "rollout-system"


@pytest.fixture(scope="session")
def ca() -> pki.CertificateAuthority:
    return pki.make_ca(T0)


@pytest.fixture(scope="session")
def bundle(ca: pki.CertificateAuthority) -> pki.Bundle:
    return pki.make_serving_cert(ca, SERVICE, NAMESPACE, T0)


@pytest.fixture(scope="session")
def other_bundle() -> pki.Bundle:
    return pki.make_serving_cert(pki.make_ca(T0), SERVICE, NAMESPACE, T0)
