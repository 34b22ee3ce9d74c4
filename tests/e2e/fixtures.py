"""The end-to-end tier's fixtures, as a plugin: one real control plane per test session.

Registered for the whole tests/ tree by tests/conftest.py (``pytest_plugins``), so every
test that asks for a fixture here shares the same session control plane, wherever it lives.
A conftest.py cannot be registered twice (pytest refuses a module that is both a conftest
and a plugin), which is why these live in a module of their own.

Fixtures for scenario tests:
- `control_plane`: the running ControlPlane (url, kubeconfig, ca_pem, get_json).
- `kube`: an ApiClient of the official kubernetes client, authenticated as the admin.
- `kubectl` / `helm`: the extracted binaries bound to the test cluster; `kubectl("get", "ns")`
  returns the CompletedProcess and raises CommandFailed (with stderr) on a non-zero exit.
- `register_webhook(url, ca_pem, manifest)`: registers a webhook configuration that calls
  `url`, and deletes it again after the test.
- `namespace`: a fresh namespace per test, deleted after it.

Where Go is missing the tier skips, saying how to enable it; under CI=true it fails instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from kubernetes import client, config

from tests.e2e import binaries, harness


def _unavailable(message: str) -> NoReturn:
    if binaries.in_ci():
        pytest.fail(f"end-to-end tier cannot run under CI=true: {message}", pytrace=False)
    pytest.skip(f"end-to-end tier skipped: {message}")


@pytest.fixture(scope="session")
def kube_tools() -> dict[str, Path]:
    """Paths of the extracted helm and kubectl (keys "helm", "kubectl")."""
    try:
        return binaries.kube_tools()
    except binaries.Unavailable as error:
        _unavailable(str(error))


@pytest.fixture(scope="session")
def control_plane(
    tmp_path_factory: pytest.TempPathFactory, kube_tools: dict[str, Path]
) -> Iterator[harness.ControlPlane]:
    try:
        paths = binaries.control_plane_binaries()
    except binaries.Unavailable as error:
        _unavailable(str(error))
    workdir = tmp_path_factory.mktemp("control-plane")
    with harness.running_control_plane(paths["etcd"], paths["kube-apiserver"], workdir) as plane:
        kubectl = harness.kubectl_tool(kube_tools["kubectl"], plane.kubeconfig, workdir / "kube")
        harness.install_crds(kubectl)
        yield plane


@pytest.fixture(scope="session")
def kubectl(control_plane: harness.ControlPlane, kube_tools: dict[str, Path]) -> harness.Tool:
    return harness.kubectl_tool(
        kube_tools["kubectl"], control_plane.kubeconfig, control_plane.workdir / "kube"
    )


@pytest.fixture(scope="session")
def helm(control_plane: harness.ControlPlane, kube_tools: dict[str, Path]) -> harness.Tool:
    return harness.helm_tool(
        kube_tools["helm"], control_plane.kubeconfig, control_plane.workdir / "helm"
    )


@pytest.fixture(scope="session")
def kube(control_plane: harness.ControlPlane) -> Iterator[client.ApiClient]:
    api_client: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(control_plane.kubeconfig)
    )
    yield api_client
    api_client.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def namespace(kube: client.ApiClient) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    # No namespace controller runs, so the namespace stays Terminating; its name is unique.
    core.delete_namespace(name)


RegisterWebhook = Callable[[str, bytes, dict[str, Any]], dict[str, Any]]


@pytest.fixture
def register_webhook(kubectl: harness.Tool) -> Iterator[RegisterWebhook]:
    """`register_webhook(url, ca_pem, manifest)`; see harness.register_webhook."""
    registered: list[tuple[str, str]] = []

    def register(url: str, ca_pem: bytes, manifest: dict[str, Any]) -> dict[str, Any]:
        stored = harness.register_webhook(kubectl, url, ca_pem, manifest)
        registered.append((stored["kind"], stored["metadata"]["name"]))
        return stored

    yield register
    for kind, name in reversed(registered):
        kubectl("delete", kind.lower(), name, "--ignore-not-found", check=False)
