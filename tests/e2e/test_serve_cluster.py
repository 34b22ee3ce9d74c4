"""`serve` against a real kube-apiserver: caches, server-side apply, SubjectAccessReview,
dry-run, the policy watch and the validating webhook, driven by real `kubectl`.

The server runs in-process with ``--kubeconfig``; the API server calls it through a
registered MutatingWebhookConfiguration and ValidatingWebhookConfiguration. Runs on the
session control plane of the end-to-end tier (etcd + kube-apiserver, RBAC on), so its
namespaces and configuration names are its own, and the module removes its webhook
configurations and the objects it converted when it is done (the reconcilers of later
modules watch the whole cluster).
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from cryptography import x509

from tests import builders
from tests.e2e import harness
from tests.webhook.server.conftest import Running, serve
from webhook.core.audit import verify_chain
from webhook.core.policy import builtin_policy
from webhook.server.runner import build_server
from webhook.server.settings import ServeSettings

pytestmark = pytest.mark.e2e

# Names of this module only: the control plane is shared by the whole session.
WEBHOOK_NS = "serve-cluster-system"
SHOP = "serve-cluster-shop"
UNWATCHED = "serve-cluster-unwatched"
POLICY_WEBHOOK = f"rollout-webhook-policy-{WEBHOOK_NS}"
KEY = "rollout-webhook.io/"
T = TypeVar("T")


@pytest.fixture(scope="module")
def plane(
    control_plane: harness.ControlPlane, kubectl: harness.Tool
) -> Iterator[tuple[harness.ControlPlane, Any]]:
    kubectl("create", "namespace", WEBHOOK_NS)
    yield control_plane, kubectl
    # Converted objects left here would be reconciled by every later module's server.
    for ns in (SHOP, UNWATCHED):
        kubectl(
            "delete", "deployments,rollouts.argoproj.io,services,horizontalpodautoscalers",
            "--all", "-n", ns, "--ignore-not-found", "--wait=false", check=False,
        )  # fmt: skip
    for ns in (WEBHOOK_NS, SHOP, UNWATCHED):
        kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False)


def eventually(check: Callable[[], T | None], what: str, timeout: float = 20) -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except harness.CommandFailed:
            result = None
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def get(kubectl: Any, *args: str) -> dict[str, Any] | None:
    result = kubectl("get", *args, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def deployment(name: str, namespace: str, labels: dict[str, str] | None = None) -> str:
    return json.dumps(
        builders.deployment(
            name,
            namespace,
            labels=labels if labels is not None else {f"{KEY}enabled": "true"},
            replicas=2,
            strategy=None,
            image="nginx:1.27",
        )
    )


def webhooks(namespace_scope: str) -> tuple[dict[str, Any], dict[str, Any]]:
    rules = [
        {
            "apiGroups": ["apps"],
            "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["deployments"],
        },
        {
            "apiGroups": ["autoscaling"],
            "apiVersions": ["v2"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["horizontalpodautoscalers"],
        },
    ]
    mutating = {
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": f"rollout-webhook-{namespace_scope}"},
        "webhooks": [
            {
                "name": "mutate.rollout-webhook.io",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "NoneOnDryRun",
                "failurePolicy": "Ignore",
                "reinvocationPolicy": "IfNeeded",
                "timeoutSeconds": 5,
                "rules": rules,
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": namespace_scope}
                },
                "clientConfig": {},
            }
        ],
    }
    validating = {
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": POLICY_WEBHOOK},
        "webhooks": [
            {
                "name": "policy.rollout-webhook.io",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["configmaps"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": WEBHOOK_NS}},
                "clientConfig": {},
            }
        ],
    }
    return mutating, validating


def policy_configmap(
    default_environment: str, *, broken: bool = False, step: dict[str, Any] | None = None
) -> str:
    doc = json.loads(json.dumps(builtin_policy().document))
    doc["defaultEnvironment"] = default_environment
    if broken:
        doc["environments"]["prod"]["rollout"]["canary"]["steps"][0] = {"setWeight": 250}
    if step is not None:
        doc["environments"]["prod"]["rollout"]["canary"]["steps"][0] = step
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "rollout-webhook-policy", "namespace": WEBHOOK_NS},
            "data": {"policy.yaml": yaml.safe_dump(doc)},
        }
    )


@pytest.fixture(scope="module")
def cluster_server(
    plane: tuple[harness.ControlPlane, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Running, Any, Path]]:
    cp, kubectl = plane
    tmp = tmp_path_factory.mktemp("serve")
    audit_file = tmp / "audit.jsonl"
    kubectl("create", "namespace", SHOP)
    mutating, validating = webhooks(SHOP)
    with serve(
        tmp, kubeconfig=cp.kubeconfig, namespace=WEBHOOK_NS, audit_file=audit_file
    ) as running:
        try:
            eventually(
                lambda: running.client.get(f"{running.url}/readyz").status_code == 200,
                "readiness (policy and caches)",
            )
            harness.register_webhook(
                kubectl, f"{running.url}/mutate", running.ca_pem.encode(), mutating
            )
            harness.register_webhook(
                kubectl, f"{running.url}/validate", running.ca_pem.encode(), validating
            )
            yield running, kubectl, audit_file
        finally:
            # Before the server stops: a configuration calling a stopped server would fail
            # (or, with Ignore, silently skip) other modules' requests.
            for manifest in (mutating, validating):
                name = manifest["metadata"]["name"]
                kubectl("delete", manifest["kind"].lower(), name, "--ignore-not-found", check=False)


def converted(kubectl: Any, name: str) -> dict[str, Any] | None:
    found = get(kubectl, "deployment", name, "-n", SHOP)
    if found and found["metadata"].get("annotations", {}).get(f"{KEY}rollout-name") == name:
        return found
    return None


def written_after(kubectl: Any, name: str) -> None:
    """Convert a Deployment `name` and wait for its Rollout: a barrier for earlier writes."""
    kubectl("apply", "-f", "-", input=deployment(name, SHOP))
    eventually(lambda: get(kubectl, "rollout", name, "-n", SHOP), f"{name}'s Rollout")


def test_a_labelled_deployment_is_converted_and_its_rollout_applied(
    cluster_server: tuple[Running, Any, Path],
) -> None:
    running, kubectl, audit_file = cluster_server
    kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web", "namespace": SHOP},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
            }
        ),
    )

    # The configuration takes about a second to be in force: re-apply until converted.
    def apply_and_check() -> dict[str, Any] | None:
        kubectl("apply", "-f", "-", input=deployment("web", SHOP))
        return converted(kubectl, "web")

    stored = eventually(apply_and_check, "the Deployment to be converted")
    assert stored["spec"]["replicas"] == 0
    rollout = eventually(
        lambda: get(kubectl, "rollout", "web", "-n", SHOP, "--show-managed-fields"), "the Rollout"
    )
    assert rollout["spec"]["workloadRef"]["name"] == "web"
    assert rollout["spec"]["replicas"] == 2
    managers = {m["manager"] for m in rollout["metadata"]["managedFields"]}
    assert managers == {"rollout-webhook"}
    canary = eventually(lambda: get(kubectl, "service", "web-canary", "-n", SHOP), "canary svc")
    assert canary["spec"]["selector"] == {"app": "web"}

    # The cache sees what was written: a re-apply of the manifest changes nothing.
    kubectl("apply", "-f", "-", input=deployment("web", SHOP))
    assert converted(kubectl, "web") is not None

    running.server.audit.flush()
    lines = audit_file.read_text().splitlines()
    assert verify_chain(lines).broken is None
    records = [json.loads(line) for line in lines]
    writes = [r for r in records if r["name"] == "web" and r["kind"] == "AdmissionWrites"]
    made = {(c["kind"], c["result"]) for c in writes[0]["changes"]["made"]}
    assert ("Rollout", "applied") in made


def test_server_dry_run_returns_the_patch_and_writes_nothing(
    cluster_server: tuple[Running, Any, Path],
) -> None:
    _, kubectl, _ = cluster_server
    eventually(lambda: converted(kubectl, "web"), "the webhook in force")
    result = kubectl(
        "apply", "--dry-run=server", "-o", "json", "-f", "-", input=deployment("dry", SHOP)
    )
    shown = json.loads(result.stdout)
    assert shown["metadata"]["annotations"][f"{KEY}rollout-name"] == "dry"
    # A real conversion after it goes through the same write queue: once its Rollout is
    # there, a write wrongly queued for the dry run would have been made too.
    written_after(kubectl, "after-dry")
    assert get(kubectl, "rollout", "dry", "-n", SHOP) is None
    assert get(kubectl, "deployment", "dry", "-n", SHOP) is None


def test_a_user_who_may_not_create_rollouts_is_not_converted(
    cluster_server: tuple[Running, Any, Path],
) -> None:
    _, kubectl, _ = cluster_server
    eventually(lambda: converted(kubectl, "web"), "the webhook in force")
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "deployer", "namespace": SHOP},
        "rules": [
            {
                "apiGroups": ["apps"],
                "resources": ["deployments"],
                "verbs": ["get", "list", "create", "update", "patch"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "bob-deployer", "namespace": SHOP},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployer"},
        "subjects": [{"kind": "User", "name": "bob", "apiGroup": "rbac.authorization.k8s.io"}],
    }
    kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"kind": "List", "apiVersion": "v1", "items": [role, binding]}),
    )
    result = kubectl("create", "--as=bob", "-f", "-", input=deployment("bobs", SHOP))
    assert f"bob may not create rollouts.argoproj.io in namespace {SHOP}" in result.stderr
    stored = get(kubectl, "deployment", "bobs", "-n", SHOP)
    assert stored is not None
    annotations = stored["metadata"].get("annotations", {})
    assert f"{KEY}rollout-name" not in annotations
    assert annotations[f"{KEY}refused"] == "bob may not create rollouts.argoproj.io"
    assert stored["spec"]["replicas"] == 2
    # The reconciler runs too and must leave bob's Deployment alone: once a later
    # Deployment is converted, bob's (queued before it) has been looked at.
    written_after(kubectl, "after-bob")
    assert get(kubectl, "rollout", "bobs", "-n", SHOP) is None
    assert f"{KEY}rollout-name" not in (
        (get(kubectl, "deployment", "bobs", "-n", SHOP) or {})["metadata"].get("annotations", {})
    )


def test_a_user_who_may_not_patch_the_route_gets_no_conversion_at_all(
    cluster_server: tuple[Running, Any, Path],
) -> None:
    """Every write made for a requester needs the requester's right to make it: erin may
    create Deployments, Rollouts and Services, not patch the platform's HTTPRoute, so no
    canary backend, no canary Service and no Rollout are made for her, by admission or by
    the reconciler (a conversion is all or nothing)."""
    _, kubectl, _ = cluster_server
    written_after(kubectl, "before-erin")  # the webhook is in force
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "routed", "namespace": SHOP},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [{"backendRefs": [{"name": "routed", "port": 80}]}],
        },
    }
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "routed", "namespace": SHOP},
        "spec": {"selector": {"app": "routed"}, "ports": [{"port": 80}]},
    }
    rules = [
        ("apps", "deployments", ["get", "list", "create", "update", "patch"]),
        ("argoproj.io", "rollouts", ["get", "list", "create", "patch"]),
        ("", "services", ["get", "list", "create", "patch"]),
    ]
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "no-routes", "namespace": SHOP},
        "rules": [{"apiGroups": [g], "resources": [r], "verbs": v} for g, r, v in rules],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "erin-no-routes", "namespace": SHOP},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "no-routes"},
        "subjects": [{"kind": "User", "name": "erin", "apiGroup": "rbac.authorization.k8s.io"}],
    }
    items = [route, svc, role, binding]
    kubectl(
        "apply", "-f", "-", input=json.dumps({"kind": "List", "apiVersion": "v1", "items": items})
    )
    written_after(kubectl, "after-route")  # the route and Service reach the webhook's caches
    manifest = json.loads(deployment("routed", SHOP))
    manifest["spec"]["template"]["metadata"]["labels"] = {"app": "routed"}
    manifest["spec"]["selector"] = {"matchLabels": {"app": "routed"}}
    result = kubectl("create", "--as=erin", "-f", "-", input=json.dumps(manifest))
    assert "erin may not patch httproutes.gateway.networking.k8s.io" in result.stderr
    stored = get(kubectl, "deployment", "routed", "-n", SHOP)
    assert stored is not None and stored["spec"]["replicas"] == 2
    annotations = stored["metadata"].get("annotations", {})
    assert annotations[f"{KEY}refused"] == "erin may not patch httproutes.gateway.networking.k8s.io"
    written_after(kubectl, "after-erin")  # the reconciler has looked at erin's too

    def told() -> list[Any] | None:
        events = get(
            kubectl,
            "events",
            "-n",
            SHOP,
            "--field-selector",
            "involvedObject.name=routed,reason=ConversionRefused",
        )
        return (events or {}).get("items") or None

    [event] = eventually(told, "a ConversionRefused Event on erin's Deployment", timeout=10)
    assert "erin may not patch httproutes.gateway.networking.k8s.io" in event["message"]
    assert get(kubectl, "rollout", "routed", "-n", SHOP) is None
    assert get(kubectl, "service", "routed-canary", "-n", SHOP) is None
    stored_route = get(kubectl, "httproute", "routed", "-n", SHOP)
    assert stored_route is not None
    assert [b["name"] for b in stored_route["spec"]["rules"][0]["backendRefs"]] == ["routed"]


def test_policy_configmap_is_validated_and_reloaded(
    cluster_server: tuple[Running, Any, Path],
) -> None:
    running, kubectl, _ = cluster_server
    eventually(lambda: converted(kubectl, "web"), "the webhook in force")

    def refused() -> str | None:
        result = kubectl(
            "apply", "-f", "-", input=policy_configmap("dev", broken=True), check=False
        )
        return result.stderr if result.returncode != 0 else None

    message = eventually(refused, "the bad policy to be refused")
    assert "environments.prod.rollout.canary.steps[0].setWeight" in message
    # A step kind the served Rollout CRD does not have: refused by its schema, with the path.
    misspelt = policy_configmap("dev", step={"setWieght": 5})
    result = kubectl("apply", "-f", "-", input=misspelt, check=False)
    assert result.returncode != 0
    assert "environments.prod.rollout.canary.steps[0].setWieght: unknown field" in result.stderr
    assert get(kubectl, "configmap", "rollout-webhook-policy", "-n", WEBHOOK_NS) is None

    kubectl("apply", "-f", "-", input=policy_configmap("dev"))

    def dev_applied() -> dict[str, Any] | None:
        kubectl("delete", "deployment", "later", "-n", SHOP, "--ignore-not-found")
        kubectl("apply", "-f", "-", input=deployment("later", SHOP))
        found = converted(kubectl, "later")
        if found and found["metadata"]["annotations"][f"{KEY}applied-environment"] == "dev":
            return found
        return None

    eventually(dev_applied, "the new policy to apply", timeout=30)
    metrics = running.client.get(f"{running.url}/metrics").text
    assert 'rollout_webhook_policy_reloads_total{result="applied"}' in metrics


def test_a_rollout_the_served_schema_refuses_leaves_the_deployment_as_sent(
    cluster_server: tuple[Running, Any, Path],
) -> None:
    """The product's own rules pass this override; the Rollout CRD the cluster serves
    refuses it. Admitted as sent: never stored at 0 replicas for a Rollout that cannot be
    made, and the warning names the path in the annotation."""
    _, kubectl, _ = cluster_server
    written_after(kubectl, "schema-barrier")  # the webhook is in force
    manifest = json.loads(deployment("dry", SHOP))
    manifest["metadata"]["annotations"] = {
        f"{KEY}rollout": "canary:\n  analysis:\n    templates: [{templateName: t}]\n"
        "    dryRun: [1]\n"
    }
    result = kubectl("apply", "-f", "-", input=json.dumps(manifest))
    assert "rollout.canary.analysis.dryRun[0]: must be of type object" in result.stderr
    stored = get(kubectl, "deployment", "dry", "-n", SHOP)
    assert stored is not None
    assert stored["spec"]["replicas"] == 2
    assert f"{KEY}rollout-name" not in stored["metadata"].get("annotations", {})
    time.sleep(2)  # nothing is written after the answer either
    assert get(kubectl, "rollout", "dry", "-n", SHOP) is None


def test_rotate_certs_bootstraps_the_secret_and_serves_from_it(
    plane: tuple[harness.ControlPlane, Any], tmp_path: Path
) -> None:
    cp, kubectl = plane
    cert_dir = tmp_path / "tls"  # empty: the first pass must fill it
    cert_dir.mkdir()
    settings = ServeSettings(
        kubeconfig=cp.kubeconfig,
        namespace=WEBHOOK_NS,
        cert_dir=cert_dir,
        rotate_certs=True,
        tls_secret="rotation-e2e-tls",
        # The module's server already reconciles under this namespace's Lease, and a
        # second one in this process would share its identity (both would lead).
        reconcile=False,
    )
    server = build_server(settings, audit_stream=io.StringIO())
    try:
        secret = get(kubectl, "secret", "rotation-e2e-tls", "-n", WEBHOOK_NS)
        assert secret is not None
        ca_pem = base64.b64decode(secret["data"]["ca.crt"]).decode()
        assert (cert_dir / "ca.crt").read_text() == ca_pem
        assert server.certificate.current is not None
        served = x509.load_pem_x509_certificate(server.certificate.current.cert_pem)
        names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        dns = names.value.get_values_for_type(x509.DNSName)
        assert f"rollout-webhook.{WEBHOOK_NS}.svc" in dns
    finally:
        server.close()


def test_the_reconciler_converts_what_admission_never_saw(
    cluster_server: tuple[Running, Any, Path],
) -> None:
    """A labelled Deployment in a namespace the webhook is not registered for (as when
    the webhook was down and failurePolicy Ignore let it through) is converted anyway."""
    _, kubectl, _ = cluster_server
    kubectl("create", "namespace", UNWATCHED)
    kubectl("apply", "-f", "-", input=deployment("late", UNWATCHED))
    rollout = eventually(
        lambda: get(kubectl, "rollout", "late", "-n", UNWATCHED), "the reconciler's Rollout", 30
    )
    assert rollout["spec"]["workloadRef"]["name"] == "late"

    def annotated() -> dict[str, Any] | None:
        found = get(kubectl, "deployment", "late", "-n", UNWATCHED)
        annotations = (found or {}).get("metadata", {}).get("annotations", {})
        return found if annotations.get(f"{KEY}rollout-name") == "late" else None

    eventually(annotated, "the reconciler's patch of the Deployment", 30)
    lease = get(kubectl, "lease", "rollout-webhook-reconciler", "-n", WEBHOOK_NS)
    assert lease is not None
    assert lease["spec"]["holderIdentity"]
