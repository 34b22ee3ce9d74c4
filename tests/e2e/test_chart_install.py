"""The Helm chart installed into a real kube-apiserver.

The API server itself checks what `helm template` tests cannot: the CEL matchConditions
compile, the selectors send exactly the intended requests to the webhook, and the RBAC
grants the server's account what the code calls and nothing else.

No kubelet runs, so the webhook's pods never start (hooks are skipped: their Jobs would
never finish). To see which requests reach the webhook, the installed configurations are
pointed at a closed loopback port with failurePolicy Fail: a request that reaches the
webhook is refused with the name of the entry that matched, one that does not is admitted.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import builders
from tests.e2e import harness

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "rollout-webhook"
# Unique per module: the session control plane is shared, and ClusterRoles are cluster-wide.
RELEASE = "install-rollout-webhook"  # holds the chart name: fullname = release
NAMESPACE = "platform-rollouts"
ACCOUNT = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"
CONTROLLER = "system:serviceaccount:argo-rollouts:argo-rollouts"
ENABLED = "rollout-webhook.io/enabled"


class Cluster:
    def __init__(self, kubectl: harness.Tool, suffix: str) -> None:
        self.kubectl = kubectl
        self.plain = f"team-{suffix}"  # no label
        self.opted = f"optin-{suffix}"  # Namespace labelled in

    def create(self, manifest: dict[str, Any], *as_user: str) -> str:
        """ "" when admitted, else the API server's refusal."""
        result = self.kubectl(
            "create", *as_user, "-f", "-", input=json.dumps(manifest), check=False
        )
        return "" if result.returncode == 0 else result.stderr.strip()


def deployment(namespace: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return builders.deployment(
        f"app-{uuid.uuid4().hex[:6]}",
        namespace,
        labels=labels,
        replicas=None,
        strategy=None,
        image="registry.example/app:1",
    )


def hpa(namespace: str, kind: str) -> dict[str, Any]:
    return builders.hpa("myapp", namespace, kind, 1, 3, name=f"hpa-{uuid.uuid4().hex[:6]}")


def httproute(namespace: str, backends: list[str]) -> dict[str, Any]:
    return builders.httproute(
        f"route-{uuid.uuid4().hex[:6]}",
        namespace,
        [builders.backend_rule(*backends)],
        parents=[{"name": "platform-gateway"}],
    )


def virtualservice(namespace: str, hosts: list[str]) -> dict[str, Any]:
    return builders.virtualservice(
        f"vs-{uuid.uuid4().hex[:6]}",
        namespace,
        [{"name": "primary", "route": [{"destination": {"host": h}} for h in hosts]}],
        hosts=["myapp"],
    )


def configmap(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"policy.yaml": "defaultEnvironment: prod\n"},
    }


def refused_by(message: str, entry: str) -> bool:
    return f'failed calling webhook "{entry}"' in message


@pytest.fixture(scope="module")
def cluster(kubectl: harness.Tool, helm: harness.Tool) -> Iterator[Cluster]:
    helm(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
        "--no-hooks", "--set", "webhook.failurePolicy=Fail", timeout=180,
    )  # fmt: skip
    closed = harness.free_ports(1)[0]
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        stored = json.loads(kubectl("get", kind, RELEASE, "-o", "json").stdout)
        patch = [
            {
                "op": "replace",
                "path": f"/webhooks/{i}/clientConfig",
                "value": {"url": f"https://127.0.0.1:{closed}/{hook['name']}"},
            }
            for i, hook in enumerate(stored["webhooks"])
        ]
        kubectl("patch", kind, RELEASE, "--type=json", "-p", json.dumps(patch))
    suffix = uuid.uuid4().hex[:6]
    state = Cluster(kubectl, suffix)
    kubectl("create", "namespace", state.plain)
    kubectl("create", "namespace", state.opted)
    kubectl("label", "namespace", state.opted, f"{ENABLED}=true")
    # The Argo Rollouts controller's account, allowed to write Deployments for the test.
    kubectl("create", "clusterrolebinding", f"controller-{suffix}",
            "--clusterrole=cluster-admin", f"--user={CONTROLLER}")  # fmt: skip
    # The API server picks new configurations up within about a second.
    deadline = time.monotonic() + 30
    while not refused_by(
        state.create(deployment(state.plain, {ENABLED: "true"})), "deployments.rollout-webhook.io"
    ):
        assert time.monotonic() < deadline, "the webhook configuration never took effect"
        time.sleep(0.5)
    yield state
    helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--no-hooks", check=False)
    # Whatever happened to the release, no webhook of it may outlive this module.
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        kubectl("delete", kind, RELEASE, "--ignore-not-found", check=False)
    kubectl("delete", "clusterrolebinding", f"controller-{suffix}", check=False)


def test_every_chart_object_was_accepted(kubectl: harness.Tool, cluster: Cluster) -> None:
    names = kubectl(
        "get", "deployment,service,serviceaccount,configmap,lease,role,rolebinding,poddisruptionbudget",
        "-n", NAMESPACE, "-o", "name",
    ).stdout.split()  # fmt: skip
    for expected in (
        f"deployment.apps/{RELEASE}",
        f"service/{RELEASE}",
        f"serviceaccount/{RELEASE}",
        f"configmap/{RELEASE}-policy",
        f"lease.coordination.k8s.io/{RELEASE}-reconciler",
        f"role.rbac.authorization.k8s.io/{RELEASE}",
        f"poddisruptionbudget.policy/{RELEASE}",
    ):
        assert expected in names
    stored = json.loads(
        kubectl("get", "mutatingwebhookconfiguration", RELEASE, "-o", "json").stdout
    )
    assert len(stored["webhooks"]) == 6
    assert all(len(h["matchConditions"]) >= 2 for h in stored["webhooks"])


def test_deployments_reach_the_webhook_by_label_or_namespace(cluster: Cluster) -> None:
    c = cluster
    assert refused_by(
        c.create(deployment(c.plain, {ENABLED: "true"})), "deployments.rollout-webhook.io"
    )
    # "false" must reach it too: that is how a converted Deployment opts out.
    assert refused_by(
        c.create(deployment(c.plain, {ENABLED: "false"})), "deployments.rollout-webhook.io"
    )
    assert c.create(deployment(c.plain)) == ""
    assert refused_by(c.create(deployment(c.opted)), "namespace-deployments.rollout-webhook.io")
    # In an opted-in namespace a labelled Deployment is sent once, by the label entry.
    message = c.create(deployment(c.opted, {ENABLED: "false"}))
    assert refused_by(message, "deployments.rollout-webhook.io")
    # The webhook's own namespace is never sent, so it can always start and roll back.
    assert c.create(deployment(NAMESPACE, {ENABLED: "true"})) == ""


def test_every_scale_of_a_deployment_reaches_the_webhook(
    kubectl: harness.Tool, cluster: Cluster
) -> None:
    """`kubectl scale` runs only the scale subresource's admission (kubernetes/kubernetes
    #84530), and its Scale has no labels: its own entry sends it, for any Deployment."""
    c = cluster

    def scale(namespace: str, *as_user: str) -> subprocess.CompletedProcess[str]:
        target = deployment(namespace)  # unlabelled: no Deployment entry is called
        assert c.create(target) == ""
        name = target["metadata"]["name"]
        return kubectl(
            "scale", "deployment", name, "-n", namespace, "--replicas=2", *as_user, check=False
        )

    scaled = scale(c.plain)
    assert refused_by(scaled.stderr, "deployments-scale.rollout-webhook.io")
    assert scale(c.plain, f"--as={CONTROLLER}").returncode == 0
    # The webhook's own namespace is never sent, so it can always start and roll back.
    assert scale(NAMESPACE).returncode == 0


def test_the_argo_rollouts_controller_and_the_webhook_itself_pass_by(
    kubectl: harness.Tool, cluster: Cluster
) -> None:
    c = cluster
    assert c.create(deployment(c.plain, {ENABLED: "true"}), f"--as={CONTROLLER}") == ""
    # The webhook's account may patch Deployments (the reconciler), and is not sent back to
    # itself; the same change by anyone else is.
    target = deployment(c.plain)
    assert c.create(target) == ""
    name = target["metadata"]["name"]
    label = json.dumps({"metadata": {"labels": {ENABLED: "true"}}})
    as_admin = kubectl("patch", "deployment", name, "-n", c.plain, "-p", label, check=False)
    assert refused_by(as_admin.stderr, "deployments.rollout-webhook.io")
    # (kubectl patch reads the object first, which the account may not: apply server-side.)
    labelled = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": c.plain, "labels": {ENABLED: "true"}},
    }
    kubectl(
        "apply", "--server-side", "--field-manager=rollout-webhook", f"--as={ACCOUNT}",
        "-f", "-", input=json.dumps(labelled),
    )  # fmt: skip


def test_only_hpas_and_routes_that_can_need_it_reach_the_webhook(cluster: Cluster) -> None:
    c = cluster
    assert refused_by(c.create(hpa(c.plain, "Deployment")), "hpas.rollout-webhook.io")
    assert c.create(hpa(c.plain, "Rollout")) == ""
    assert refused_by(c.create(httproute(c.plain, ["myapp"])), "httproutes.rollout-webhook.io")
    assert c.create(httproute(c.plain, ["myapp", "myapp-canary"])) == ""
    assert refused_by(
        c.create(virtualservice(c.plain, ["myapp"])), "virtualservices.rollout-webhook.io"
    )
    assert c.create(virtualservice(c.plain, ["myapp", "myapp-canary"])) == ""


def test_only_the_policy_configmap_is_validated(cluster: Cluster) -> None:
    c = cluster
    policy = f"{RELEASE}-policy"
    # DELETE is sent too (the webhook warns that the built-in policy takes over).
    deleted = c.kubectl("delete", "configmap", policy, "-n", NAMESPACE, check=False)
    assert refused_by(deleted.stderr, "policy.rollout-webhook.io")
    assert refused_by(c.create(configmap(NAMESPACE, policy)), "policy.rollout-webhook.io")
    assert c.create(configmap(NAMESPACE, "something-else")) == ""
    assert c.create(configmap(c.plain, policy)) == ""


def can_i(kubectl: harness.Tool, *request: str) -> bool:
    result = kubectl("auth", "can-i", *request, f"--as={ACCOUNT}", check=False)
    return result.stdout.strip() == "yes"


ALLOWED = [
    ("watch", "deployments.apps", "--all-namespaces"),
    ("patch", "deployments.apps", "-n", "team-x"),
    ("list", "namespaces"),
    ("create", "services", "-n", "team-x"),
    ("delete", "rollouts.argoproj.io", "-n", "team-x"),
    ("patch", "horizontalpodautoscalers.autoscaling", "-n", "team-x"),
    ("patch", "httproutes.gateway.networking.k8s.io", "-n", "team-x"),
    ("patch", "virtualservices.networking.istio.io", "-n", "team-x"),
    ("create", "events", "-n", "team-x"),
    ("delete", "replicasets.apps", "-n", "team-x"),
    ("create", "subjectaccessreviews.authorization.k8s.io"),
    ("watch", f"configmap/{RELEASE}-policy", "-n", NAMESPACE),
    ("update", f"lease/{RELEASE}-reconciler", "-n", NAMESPACE),
    ("update", f"secret/{RELEASE}-tls", "-n", NAMESPACE),
    ("patch", f"mutatingwebhookconfiguration/{RELEASE}"),
    ("patch", f"validatingwebhookconfiguration/{RELEASE}"),
]
DENIED = [
    ("create", "deployments.apps", "-n", "team-x"),
    ("delete", "deployments.apps", "-n", "team-x"),
    ("get", "secrets", "-n", "team-x"),
    ("list", "secrets", "-n", NAMESPACE),
    ("get", "secret/other", "-n", NAMESPACE),
    ("list", "configmaps", "-n", NAMESPACE),
    ("get", "configmap/other", "-n", NAMESPACE),
    ("create", "leases", "-n", NAMESPACE),
    ("update", "lease/other", "-n", NAMESPACE),
    ("update", f"lease/{RELEASE}-certs", "-n", NAMESPACE),
    ("delete", "horizontalpodautoscalers.autoscaling", "-n", "team-x"),
    # Scales are answered, never made: the Rollout's size is applied with the Rollout.
    ("patch", "deployments.apps", "--subresource=scale", "-n", "team-x"),
    ("patch", "mutatingwebhookconfiguration/someone-else"),
    ("create", "pods", "-n", "team-x"),
    ("update", "services", "-n", "team-x"),
    ("get", "deployments.apps", "-n", "team-x"),
    ("patch", "events", "-n", "team-x"),
    ("update", "replicasets.apps", "-n", "team-x"),
]


def test_rbac_grants_what_the_code_calls_and_no_more(
    kubectl: harness.Tool, cluster: Cluster
) -> None:
    wrongly_denied = [r for r in ALLOWED if not can_i(kubectl, *r)]
    wrongly_allowed = [r for r in DENIED if can_i(kubectl, *r)]
    assert wrongly_denied == []
    assert wrongly_allowed == []


def test_the_policy_watch_is_allowed_by_name_only(kubectl: harness.Tool, cluster: Cluster) -> None:
    # The server lists and watches its ConfigMap with a metadata.name field selector, which
    # RBAC authorizes against resourceNames; a plain list stays forbidden.
    named = kubectl(
        "get", "configmaps", "-n", NAMESPACE, f"--field-selector=metadata.name={RELEASE}-policy",
        f"--as={ACCOUNT}", "-o", "name",
    )  # fmt: skip
    assert named.returncode == 0
    plain = kubectl("get", "configmaps", "-n", NAMESPACE, f"--as={ACCOUNT}", check=False)
    assert plain.returncode != 0
    assert "forbidden" in plain.stderr


def test_server_side_apply_creates_generated_objects(
    kubectl: harness.Tool, cluster: Cluster
) -> None:
    # The writer applies with field manager rollout-webhook; an apply that creates the
    # object needs create as well as patch, and both are granted.
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "myapp-canary", "namespace": cluster.plain},
        "spec": {"selector": {"app": "myapp"}, "ports": [{"port": 80}]},
    }
    rollout = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "myapp", "namespace": cluster.plain},
        "spec": {
            "replicas": 2,
            "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "myapp"},
            "strategy": {"canary": {"steps": [{"setWeight": 50}]}},
        },
    }
    for manifest in (service, rollout):
        kubectl(
            "apply", "--server-side", "--field-manager=rollout-webhook", f"--as={ACCOUNT}",
            "-f", "-", input=json.dumps(manifest),
        )  # fmt: skip
