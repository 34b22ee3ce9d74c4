"""`rollout-webhook serve` with the chart's arguments and nothing but the chart's RBAC.

The chart is installed into the real API server; the server then runs on loopback with the
container's own arguments and environment, authenticated as the chart's ServiceAccount (a
token from the TokenRequest API), and the chart's two webhook configurations are pointed at
it. It must become ready (every watch allowed), convert a Deployment end to end (Rollout,
canary Service, HPA and HTTPRoute written under its own name) and refuse a bad policy: the
least-privilege rules are enough for what the code really does. And since anything that
reaches the port can POST an AdmissionReview, forged and replayed ones, sent straight to
it, must write nothing.
"""

from __future__ import annotations

import base64
import datetime
import json
import ssl
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from certs.files import write_bundle_dir
from certs.pki import self_signed_for_localhost
from tests.e2e import harness

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "rollout-webhook"
RELEASE = "rw-serve"
FULLNAME = f"{RELEASE}-rollout-webhook"
NAMESPACE = "platform-serve"
ENABLED = "rollout-webhook.io/enabled"
T = TypeVar("T")


@dataclass(frozen=True)
class Served:
    url: str
    process: harness.ManagedProcess
    team: str
    ca_pem: str


def eventually(check: Callable[[], T | None], what: str, process: harness.ManagedProcess) -> T:
    deadline = time.monotonic() + 30
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}; server log:\n{process.log_tail()}", pytrace=False)
        time.sleep(0.25)


def local_argv(
    container: dict[str, Any], kubeconfig: Path, cert_dir: Path, port: int, health_port: int
) -> list[str]:
    """The container's command line, made to run here: same flags, local paths and ports."""
    replaced = {"--in-cluster", "--host", "--port", "--cert-dir", "--health-port"}
    kept = [a for a in container["args"] if a.split("=")[0] not in replaced]
    env = [f"{e['name']}={e['value']}" for e in container["env"] if "value" in e]
    binary = str(Path(sys.executable).parent / "rollout-webhook")
    return [
        "env",
        *env,
        binary,
        *kept,
        f"--kubeconfig={kubeconfig}",
        f"--cert-dir={cert_dir}",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--health-port={health_port}",
    ]


def point_webhooks_at(kubectl: harness.Tool, url: str, ca_pem: str) -> None:
    bundle = base64.b64encode(ca_pem.encode()).decode()
    for kind, path in (
        ("mutatingwebhookconfiguration", "/mutate"),
        ("validatingwebhookconfiguration", "/validate"),
    ):
        stored = json.loads(kubectl("get", kind, FULLNAME, "-o", "json").stdout)
        patch = [
            {
                "op": "replace",
                "path": f"/webhooks/{i}/clientConfig",
                "value": {"url": f"{url}{path}", "caBundle": bundle},
            }
            for i in range(len(stored["webhooks"]))
        ]
        kubectl("patch", kind, FULLNAME, "--type=json", "-p", json.dumps(patch))


@pytest.fixture(scope="module")
def served(
    control_plane: harness.ControlPlane,
    kubectl: harness.Tool,
    helm: harness.Tool,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("chart-serve")
    helm(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
        "--no-hooks", "--set", "webhook.failurePolicy=Fail", timeout=180,
    )  # fmt: skip
    deployment = json.loads(
        kubectl("get", "deployment", FULLNAME, "-n", NAMESPACE, "-o", "json").stdout
    )
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    token = kubectl("create", "token", FULLNAME, "-n", NAMESPACE, "--duration=1h").stdout.strip()
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(harness.token_kubeconfig(control_plane, FULLNAME, token)))
    bundle = self_signed_for_localhost(datetime.datetime.now(datetime.UTC))
    tls = write_bundle_dir(bundle, workdir / "tls")
    port, health_port = harness.free_ports(2)
    process = harness.ManagedProcess(
        "rollout-webhook",
        local_argv(container, kubeconfig, tls.directory, port, health_port),
        workdir / "serve.log",
    )
    process.start()
    url = f"https://127.0.0.1:{port}"
    context = ssl.create_default_context(cadata=bundle.ca_pem)

    def ready() -> bool:
        # The chart's probes ask the health port (plain HTTP); the admission port answers too.
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{health_port}/readyz", timeout=2
            ) as probe:
                if probe.status != 200:
                    return False
            with urllib.request.urlopen(f"{url}/readyz", context=context, timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    try:
        # Ready means every watch the server starts was allowed and has listed once.
        eventually(ready, "serve never became ready under the chart's RBAC", process)
        point_webhooks_at(kubectl, url, bundle.ca_pem)
        team = f"team-{uuid.uuid4().hex[:6]}"
        kubectl("create", "namespace", team)
        yield Served(url, process, team, bundle.ca_pem)
    finally:
        process.stop()
        helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--no-hooks", check=False)
        # Whatever happened to the release, no webhook of it may outlive this module.
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            kubectl("delete", kind, FULLNAME, "--ignore-not-found", check=False)


def get(kubectl: harness.Tool, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    result = kubectl(
        "get", kind, name, "-n", namespace, "-o", "json", "--show-managed-fields", check=False
    )  # fmt: skip
    return json.loads(result.stdout) if result.returncode == 0 else None


def apply(kubectl: harness.Tool, manifest: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", input=json.dumps(manifest))


def test_a_labelled_deployment_is_converted_with_the_chart_s_rights(
    kubectl: harness.Tool, served: Served
) -> None:
    ns = served.team
    labels = {"app": "myapp"}
    apply(kubectl, {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "myapp", "namespace": ns},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
    })  # fmt: skip
    apply(kubectl, {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "myapp", "namespace": ns},
        "spec": {"parentRefs": [{"name": "platform-gateway"}],
                 "rules": [{"backendRefs": [{"name": "myapp", "port": 80}]}]},
    })  # fmt: skip
    apply(kubectl, {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "myapp", "namespace": ns},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "myapp"},
                 "minReplicas": 2, "maxReplicas": 4},
    })  # fmt: skip
    apply(kubectl, {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "myapp", "namespace": ns, "labels": {**labels, ENABLED: "true"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}},
        },
    })  # fmt: skip

    deployment = get(kubectl, "deployment", "myapp", ns)
    assert deployment is not None
    assert deployment["metadata"]["annotations"]["rollout-webhook.io/rollout-name"] == "myapp"

    def written_by_the_webhook(kind: str, name: str) -> dict[str, Any] | None:
        obj = get(kubectl, kind, name, ns)
        managers = {
            m.get("manager") for m in (obj or {}).get("metadata", {}).get("managedFields", [])
        }
        return obj if "rollout-webhook" in managers else None

    rollout = eventually(
        lambda: written_by_the_webhook("rollout", "myapp"), "no Rollout", served.process
    )
    assert rollout["spec"]["workloadRef"]["name"] == "myapp"
    eventually(
        lambda: written_by_the_webhook("service", "myapp-canary"),
        "no canary Service",
        served.process,
    )
    hpa = eventually(
        lambda: written_by_the_webhook("hpa", "myapp"), "HPA not re-targeted", served.process
    )
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Rollout"
    route = eventually(
        lambda: written_by_the_webhook("httproute", "myapp"), "route not patched", served.process
    )
    names = [ref["name"] for ref in route["spec"]["rules"][0]["backendRefs"]]
    assert names == ["myapp", "myapp-canary"]
    # Nothing the server did (watches, writes, the reconciler and its Lease) was refused for
    # lack of a right. (The control plane is shared: a namespace another test deletes refuses
    # new content, Events included, "because it is being terminated"; that is no refusal.)
    log = served.process.log_path.read_text()
    refused = [
        line
        for line in log.splitlines()
        if "forbidden" in line.lower() and "because it is being terminated" not in line
    ]
    assert refused == []


def test_a_bad_policy_is_refused_by_the_chart_s_validating_webhook(
    kubectl: harness.Tool, served: Served
) -> None:
    policy = json.loads(
        kubectl("get", "configmap", f"{FULLNAME}-policy", "-n", NAMESPACE, "-o", "json").stdout
    )
    document = yaml.safe_load(policy["data"]["policy.yaml"])
    document["environments"]["prod"]["rollout"]["canary"]["steps"][0] = {"setWeight": 200}
    policy["data"]["policy.yaml"] = yaml.safe_dump(document)
    result = kubectl("replace", "-f", "-", input=json.dumps(policy), check=False)
    assert result.returncode != 0
    assert "environments.prod.rollout.canary.steps[0].setWeight" in result.stderr


# --- reviews that did not come from the API server ---------------------------------------------

MALLORY = {"username": "mallory", "groups": ["system:masters", "system:authenticated"]}


def post_review(served: Served, request: dict[str, Any]) -> dict[str, Any]:
    """POST an AdmissionReview straight to the port, as any TLS client can."""
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    call = urllib.request.Request(
        f"{served.url}/mutate",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    context = ssl.create_default_context(cadata=served.ca_pem)
    with urllib.request.urlopen(call, context=context, timeout=10) as answer:
        response: dict[str, Any] = json.loads(answer.read())["response"]
        return response


def deployment_review(
    obj: dict[str, Any], namespace: str, *, operation: str, old: dict[str, Any] | None = None
) -> dict[str, Any]:
    deployments = {"group": "apps", "version": "v1", "resource": "deployments"}
    kind = {"group": "apps", "version": "v1", "kind": "Deployment"}
    return {
        "uid": str(uuid.uuid4()),
        "kind": kind,
        "resource": deployments,
        "requestKind": kind,
        "requestResource": deployments,
        "namespace": namespace,
        "name": obj["metadata"]["name"],
        "operation": operation,
        "userInfo": MALLORY,
        "object": obj,
        "oldObject": old,
        "dryRun": False,
    }


def writes_of(served: Served, uid: str) -> dict[str, Any]:
    """The AdmissionWrites audit record of a decision (standard output, in the log)."""

    def found() -> dict[str, Any] | None:
        for line in served.process.log_path.read_text(errors="replace").splitlines():
            if uid in line and '"AdmissionWrites"' in line:
                record: dict[str, Any] = json.loads(line[line.index("{") :])
                return record
        return None

    return eventually(found, f"no AdmissionWrites record for {uid}", served.process)


def labelled_deployment(name: str, namespace: str, replicas: int = 2) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {**labels, ENABLED: "true"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}},
        },
    }  # fmt: skip


def stable_service(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
    }  # fmt: skip


@pytest.fixture
def victim(kubectl: harness.Tool, served: Served) -> Iterator[str]:
    """Another team's namespace with a labelled Deployment its owner, erin, applied without
    the right to create Rollouts: admitted unconverted and marked refused, so neither the
    webhook nor the reconciler converts it."""
    ns = f"victim-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    apply(kubectl, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "deployer", "namespace": ns},
        "rules": [{"apiGroups": ["apps"], "resources": ["deployments"],
                   "verbs": ["get", "list", "create", "patch", "update"]}],
    })  # fmt: skip
    kubectl("create", "rolebinding", "erin", "--role=deployer", "--user=erin", "-n", ns)
    apply(kubectl, stable_service("web", ns))
    result = kubectl(
        "apply", "--as=erin", "-f", "-", input=json.dumps(labelled_deployment("web", ns))
    )
    assert "erin may not create rollouts.argoproj.io" in result.stderr
    yield ns
    kubectl("delete", "deployment", "web", "-n", ns, "--ignore-not-found", check=False)


def nothing_generated(kubectl: harness.Tool, ns: str) -> None:
    assert get(kubectl, "rollout", "web", ns) is None
    assert get(kubectl, "service", "web-canary", ns) is None


def test_a_forged_review_for_another_teams_deployment_writes_nothing(
    kubectl: harness.Tool, served: Served, victim: str
) -> None:
    stored = get(kubectl, "deployment", "web", victim)
    assert stored is not None
    assert "rollout-webhook.io/refused" in stored["metadata"]["annotations"]
    forged = json.loads(json.dumps(stored))
    del forged["metadata"]["annotations"]["rollout-webhook.io/refused"]
    forged["spec"]["replicas"] = 5
    # As a made-up member of system:masters, for the namespace the object is in ...
    same = deployment_review(forged, victim, operation="UPDATE", old=stored)
    # ... and saying the attacker's own namespace for an object of the victim's.
    elsewhere = deployment_review(forged, served.team, operation="UPDATE", old=stored)
    for request in (same, elsewhere):
        response = post_review(served, request)
        assert response["allowed"] is True  # the answer goes nowhere: no API server asked
        record = writes_of(served, request["uid"])
        results = [c["result"] for c in record["changes"]["made"]]
        assert results and all(r.startswith("skipped: ") for r in results), results
        assert all("nothing written" in r for r in results), results
    nothing_generated(kubectl, victim)
    after = get(kubectl, "deployment", "web", victim)
    assert after is not None
    assert after["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]


def test_a_replayed_review_writes_nothing_new(kubectl: harness.Tool, served: Served) -> None:
    ns = served.team
    apply(kubectl, stable_service("replayed", ns))
    original = labelled_deployment("replayed", ns, replicas=2)
    apply(kubectl, original)
    eventually(lambda: get(kubectl, "rollout", "replayed", ns), "no Rollout", served.process)
    canary = eventually(
        lambda: get(kubectl, "service", "replayed-canary", ns), "no canary", served.process
    )
    # Let the reconciler settle what it writes once (the Deployment's annotations).
    time.sleep(2)
    rollout = get(kubectl, "rollout", "replayed", ns)
    assert rollout is not None
    # The CREATE the API server sent, sent again; then one asking for another size.
    resized = json.loads(json.dumps(original))
    resized["spec"]["replicas"] = 9
    for obj in (original, resized):
        request = deployment_review(obj, ns, operation="CREATE")
        post_review(served, request)
        writes_of(served, request["uid"])
    again = get(kubectl, "rollout", "replayed", ns)
    assert again is not None
    assert again["spec"]["replicas"] == 2
    assert again["metadata"]["resourceVersion"] == rollout["metadata"]["resourceVersion"]
    canary_again = get(kubectl, "service", "replayed-canary", ns)
    assert canary_again is not None
    assert canary_again["metadata"]["resourceVersion"] == canary["metadata"]["resourceVersion"]
