"""Self-tests of the end-to-end harness: the real API server, the real CRDs, the real tools."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e import harness

pytestmark = pytest.mark.e2e


def _create_rollout(kube: client.ApiClient, namespace: str, body: dict[str, Any]) -> Any:
    return client.CustomObjectsApi(kube).create_namespaced_custom_object(
        "argoproj.io", "v1alpha1", namespace, "rollouts", body
    )


def _read_rollout(kube: client.ApiClient, namespace: str, name: str) -> Any:
    return client.CustomObjectsApi(kube).get_namespaced_custom_object(
        "argoproj.io", "v1alpha1", namespace, "rollouts", name
    )


def _rollout(name: str, replicas: Any) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "workloadRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": name,
                "scaleDown": "onsuccess",
            },
            "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}},
        },
    }


def test_api_server_reports_the_release_it_was_built_from(
    control_plane: harness.ControlPlane, kube: client.ApiClient
) -> None:
    info = client.VersionApi(kube).get_code()
    assert info.git_version.startswith("v1.35."), info.git_version
    assert (info.major, info.minor) == ("1", "35")
    assert info.git_tree_state == "clean"
    # The same answer on the wire, read without the client library.
    assert control_plane.get_json("/version")["gitVersion"] == info.git_version


def test_every_shared_crd_is_established(kube: client.ApiClient) -> None:
    files = sorted(harness.CRD_DIR.glob("*.yaml"))
    expected = {yaml.safe_load(f.read_text())["metadata"]["name"] for f in files}
    assert "rollouts.argoproj.io" in expected
    assert "httproutes.gateway.networking.k8s.io" in expected
    api = client.ApiextensionsV1Api(kube)
    for name in sorted(expected):
        crd = api.read_custom_resource_definition(name)
        assert crd.status is not None, name
        conditions = {c.type: c.status for c in crd.status.conditions or []}
        assert conditions.get("Established") == "True", (name, conditions)


def test_rollout_with_workload_ref_is_accepted(kube: client.ApiClient, namespace: str) -> None:
    created = _create_rollout(kube, namespace, _rollout("web", 3))
    # Read back from storage: a field the schema does not know would have been pruned.
    stored = _read_rollout(kube, namespace, "web")
    assert stored["metadata"]["uid"] == created["metadata"]["uid"]
    assert stored["spec"]["replicas"] == 3
    assert stored["spec"]["workloadRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "scaleDown": "onsuccess",
    }


def test_rollout_with_wrong_replicas_type_is_rejected_by_the_crd_schema(
    kube: client.ApiClient, namespace: str
) -> None:
    with pytest.raises(ApiException) as caught:
        _create_rollout(kube, namespace, _rollout("bad", "three"))
    assert caught.value.status == 422
    body = json.loads(str(caught.value.body))
    fields = [cause.get("field") for cause in body["details"]["causes"]]
    assert "spec.replicas" in fields, body


def test_kubectl_talks_to_the_cluster_as_admin(kubectl: harness.Tool) -> None:
    versions = json.loads(kubectl("version", "-o", "json").stdout)
    assert versions["clientVersion"]["gitVersion"].startswith("v1.35.")
    assert versions["serverVersion"]["gitVersion"].startswith("v1.35.")
    # RBAC is on and the admin certificate is in system:masters.
    assert kubectl("auth", "can-i", "*", "*").stdout.strip() == "yes"
    assert kubectl("get", "crd", "rollouts.argoproj.io", "-o", "name").stdout.strip() == (
        "customresourcedefinition.apiextensions.k8s.io/rollouts.argoproj.io"
    )


def test_rbac_denies_an_unbound_service_account(kubectl: harness.Tool, namespace: str) -> None:
    as_nobody = f"--as=system:serviceaccount:{namespace}:nobody"
    result = kubectl(
        "auth", "can-i", "create", "deployments", "-n", namespace, as_nobody, check=False
    )
    assert result.stdout.strip() == "no"


def test_kubectl_reports_a_failed_command(kubectl: harness.Tool) -> None:
    with pytest.raises(harness.CommandFailed, match=r"NotFound|not found"):
        kubectl("get", "namespace", "no-such-namespace")


def test_helm_runs_against_the_cluster(helm: harness.Tool) -> None:
    assert helm("version", "--short").stdout.startswith("v4.")
    # Reads release Secrets through the kubeconfig: proves helm reaches the API as the admin.
    assert json.loads(helm("list", "--all-namespaces", "-o", "json").stdout) == []


def test_register_webhook_fills_client_config(
    control_plane: harness.ControlPlane, kube: client.ApiClient, register_webhook: Any
) -> None:
    manifest: dict[str, Any] = {
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "e2e-harness-probe"},
        "webhooks": [
            {
                "name": "probe.rollout-webhook.io",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Ignore",
                # Matches nothing real, so registering it cannot disturb other tests.
                "rules": [
                    {
                        "apiGroups": ["example.invalid"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["nothing"],
                    }
                ],
                "clientConfig": {"service": {"name": "ignored", "namespace": "ignored"}},
            }
        ],
    }
    stored = register_webhook("https://127.0.0.1:9/mutate", control_plane.ca_pem, manifest)
    assert stored["kind"] == "MutatingWebhookConfiguration"
    client_config = stored["webhooks"][0]["clientConfig"]
    assert client_config["url"] == "https://127.0.0.1:9/mutate"
    assert "service" not in client_config
    assert manifest["webhooks"][0]["clientConfig"] == {  # the caller's dict is untouched
        "service": {"name": "ignored", "namespace": "ignored"}
    }
    api = client.AdmissionregistrationV1Api(kube)
    read = api.read_mutating_webhook_configuration("e2e-harness-probe")
    assert read.webhooks is not None
    ca_bundle: Any = read.webhooks[0].client_config.ca_bundle
    assert base64.b64decode(ca_bundle) == control_plane.ca_pem


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (
            {"kind": "ConfigMap", "webhooks": [{}]},
            "kind 'ConfigMap' is not a webhook configuration",
        ),
        ({"kind": "ValidatingWebhookConfiguration", "webhooks": []}, "has no webhooks"),
    ],
)
def test_register_webhook_refuses_what_is_not_a_webhook_configuration(
    manifest: dict[str, Any], message: str
) -> None:
    never_called = harness.Tool(Path("/nonexistent/kubectl"), {})
    with pytest.raises(ValueError, match=message):
        harness.register_webhook(never_called, "https://127.0.0.1:1/", b"", manifest)
