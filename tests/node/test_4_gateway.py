"""Real traffic through a Gateway API data plane: the same canary walk as test_3, with the
client's requests sent to a Gateway and split by an HTTPRoute whose weights the Argo Rollouts
controller moves through the Gateway API traffic-router plugin.

The data plane is Traefik, built from its Go module (tools/build-control-plane.py), run on the
host like the control plane with the tier's administrator kubeconfig. It reads GatewayClasses,
Gateways and HTTPRoutes, and proxies each request to a ready pod of the backend Services, picked
by smooth weighted round robin over the backendRefs' weights. It implements Gateway API v1.4.0:
the tier installs that version's standard-channel CRDs beside the released HTTPRoute CRD of
../shared/crds (v1.6.1, served as v1 like v1.4.0's), which `release` installs.

The policy's prod canary pauses at 25, 50 and 75 % with `trafficRouting: gatewayAPI`: the
webhook gives the route its canary backend and the Rollout the plugin; the walk measures the
share of answers from the new version at each step. The figures are printed in the output.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import builders
from tests.e2e import harness
from tests.node import cluster
from tests.node.conftest import CHART, NAMESPACE
from tests.node.rollouts import (
    ENABLED,
    dry_run,
    kubectl_argo,
    paused_at,
    phase,
    policy_pausing_at,
    report,
    rollout,
    sees_service,
)
from tests.node.traffic import Counts, Traffic
from tests.node.workloads import apply, get, sample_deployment, sample_service, wait_for

WEIGHTS = (25, 50, 75)
REPLICAS = 4
REQUESTS_PER_STEP = 400
# Weighted round robin is deterministic: over 400 requests at a fixed weight the share is
# within a request or two of it. The margin covers the requests of a step measured while the
# data plane was still loading the route's new weights (it reloads within a second of them).
TOLERANCE = 0.05
POLICY = policy_pausing_at(WEIGHTS, "gatewayAPI")
GATEWAY_CLASS = "rollout-webhook-node"
# Traefik takes the GatewayClasses that name this controller, and no other.
TRAEFIK_CONTROLLER = "traefik.io/gateway-controller"
# Already installed, from ../shared/crds, by the `release` fixture.
SHARED_HTTPROUTE_CRD = "gateway.networking.k8s.io_httproutes.yaml"
MEASURED: dict[int, Counts] = {}


def _ping(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
        return int(response.status) == 200


@pytest.fixture(scope="module")
def traefik(node_cluster: cluster.NodeCluster, node_kubectl: harness.Tool, release: str) -> int:
    """Traefik serving the tier's Gateways: the port of its HTTP entry point."""
    del release  # the shared CRDs, the HTTPRoute among them, come with it
    crds = node_cluster.work / "gateway-api-crds"
    crds.mkdir(exist_ok=True)
    for source in sorted(Path(node_cluster.binaries.gateway_api_crds).glob("*.yaml")):
        if source.name != SHARED_HTTPROUTE_CRD:
            (crds / source.name).write_bytes(source.read_bytes())
    harness.install_crds(node_kubectl, crds)
    web_port, ping_port = harness.free_ports(2)
    process = node_cluster.spawn(
        "traefik",
        [
            # Outside a pod, Traefik finds its cluster through KUBECONFIG, unless the in-cluster
            # variables are set: they must not be.
            "env",
            "-u",
            "KUBERNETES_SERVICE_HOST",
            "-u",
            "KUBERNETES_SERVICE_PORT",
            f"KUBECONFIG={node_cluster.kubeconfig}",
            str(node_cluster.binaries.traefik),
            # A Gateway listener is served by the entry point whose address ends in its port.
            f"--entryPoints.web.address=127.0.0.1:{web_port}",
            f"--entryPoints.ping.address=127.0.0.1:{ping_port}",
            "--ping=true",
            "--ping.entryPoint=ping",
            "--providers.kubernetesgateway=true",
            "--providers.kubernetesgateway.statusAddress.ip=127.0.0.1",
            # How long it gathers changes before it reloads (default 2 s).
            "--providers.providersThrottleDuration=500ms",
            "--global.checkNewVersion=false",
            "--global.sendAnonymousUsage=false",
            "--log.level=INFO",
            "--log.noColor=true",
        ],
    )
    wait_for(lambda: process.alive() and _ping(ping_port), "Traefik")
    gateway_class = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": GATEWAY_CLASS},
        "spec": {"controllerName": TRAEFIK_CONTROLLER},
    }
    apply(node_kubectl, gateway_class)
    wait_for(
        lambda: _condition(get(node_kubectl, "gatewayclass", GATEWAY_CLASS), "Accepted"),
        "the GatewayClass accepted by Traefik",
    )
    # Left running to the end of the session, when the tier stops every process it started:
    # the tier's memory figures then include it.
    return web_port


def _holds(conditions: list[dict[str, Any]], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def _condition(obj: dict[str, Any], kind: str) -> bool:
    return _holds(obj.get("status", {}).get("conditions", []), kind)


def _route_accepted(route: dict[str, Any]) -> bool:
    """Accepted by Traefik for its Gateway (the route's status has a parent entry each)."""
    return any(
        parent.get("controllerName") == TRAEFIK_CONTROLLER
        and _holds(parent.get("conditions", []), "Accepted")
        for parent in route.get("status", {}).get("parents", [])
    )


def _weights(kubectl: harness.Tool, namespace: str) -> dict[str, int]:
    """The route's backends by name with their weights (1 when the weight is left out)."""
    route = get(kubectl, "httproute", "web", "-n", namespace)
    (rule,) = route["spec"]["rules"]
    return {ref["name"]: ref.get("weight", 1) for ref in rule["backendRefs"]}


@pytest.fixture(scope="module")
def gateway_policy(node_helm: harness.Tool, release: str) -> None:
    node_helm(
        "upgrade", release, str(CHART), "--namespace", NAMESPACE, "--reuse-values",
        "--set-json", f"policy.document={json.dumps(POLICY)}", "--wait", "--timeout", "5m",
        timeout=330,
    )  # fmt: skip


@pytest.fixture(scope="module")
def shop(
    node_kubectl: harness.Tool, argo: None, gateway_policy: None, traefik: int
) -> Iterator[tuple[str, Traffic]]:
    """An opted-in sample service at 1.0.0 behind a Gateway, converted and Healthy, with
    traffic running through the Gateway."""
    del argo, gateway_policy
    namespace = f"gw-{uuid.uuid4().hex[:6]}"
    node_kubectl("create", "namespace", namespace)
    gateway = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": namespace},
        "spec": {
            "gatewayClassName": GATEWAY_CLASS,
            "listeners": [{"name": "http", "protocol": "HTTP", "port": traefik}],
        },
    }
    rules = [{"backendRefs": [{"name": "web", "port": 80}]}]
    route = builders.httproute("web", namespace, rules, parents=[{"name": "gw"}])
    apply(node_kubectl, sample_service("web", namespace), gateway, route)
    try:
        wait_for(
            lambda: _route_accepted(get(node_kubectl, "httproute", "web", "-n", namespace)),
            "the HTTPRoute accepted by Traefik",
        )
    except AssertionError as error:
        statuses = {
            kind: get(node_kubectl, kind, name, "-n", namespace).get("status")
            for kind, name in (("gateway", "gw"), ("httproute", "web"))
        }
        raise AssertionError(f"{error}; statuses: {json.dumps(statuses)}") from None
    deployment = sample_deployment("web", namespace, "1.0.0", REPLICAS, labels={ENABLED: "true"})

    def sees_route() -> bool:
        warnings = dry_run(node_kubectl, deployment)
        return sees_service(warnings) and "no HTTPRoute" not in warnings

    wait_for(sees_route, "the webhook to see the Service, the HTTPRoute and the policy")
    apply(node_kubectl, deployment)
    wait_for(lambda: phase(node_kubectl, namespace) == "Healthy", "a Healthy Rollout", 300)
    routing = rollout(node_kubectl, namespace)["spec"]["strategy"]["canary"]["trafficRouting"]
    assert routing == {
        "plugins": {"argoproj-labs/gatewayAPI": {"namespace": namespace, "httpRoute": "web"}}
    }
    wait_for(
        lambda: _weights(node_kubectl, namespace) == {"web": 100, "web-canary": 0},
        "the route's canary backend at weight 0",
    )
    with Traffic(f"http://127.0.0.1:{traefik}/") as traffic:
        first = traffic.wait_for_requests(50, 0.0)
        assert first.answers.keys() == {"1.0.0"}, first.describe()
        yield namespace, traffic
    node_kubectl("delete", "namespace", namespace, "--wait=false")


def test_through_the_gateway_a_canary_walks_its_steps_without_a_failed_request(
    node_cluster: cluster.NodeCluster,
    node_kubectl: harness.Tool,
    shop: tuple[str, Traffic],
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace, traffic = shop
    started = time.monotonic()
    node_kubectl("set", "image", "deployment/web", "app=localhost/rollout-webhook-node/sample:2.0.0", "-n", namespace)  # fmt: skip
    for weight in WEIGHTS:
        wait_for(lambda w=weight: paused_at(node_kubectl, namespace, w), f"paused at {weight} %")
        wait_for(
            lambda w=weight: _weights(node_kubectl, namespace) == {"web": 100 - w, "web-canary": w},
            f"the route at {100 - weight}/{weight}",
        )
        time.sleep(2)  # the data plane reloads within its throttle of the route's change
        counts = traffic.wait_for_requests(REQUESTS_PER_STEP, time.monotonic())
        MEASURED[weight] = counts
        report(
            capsys,
            f"gateway canary step setWeight {weight}: share of 2.0.0 "
            f"{counts.share('2.0.0'):.1%} over {counts.describe()}",
        )
        kubectl_argo(node_cluster, "promote", "web", "-n", namespace)
    wait_for(lambda: phase(node_kubectl, namespace) == "Healthy", "Healthy at 2.0.0", 300)
    wait_for(
        lambda: _weights(node_kubectl, namespace) == {"web": 100, "web-canary": 0},
        "the route back at 100/0",
    )
    time.sleep(2)
    after = traffic.wait_for_requests(100, time.monotonic())
    whole = traffic.counts(started)
    report(
        capsys,
        f"gateway canary 1.0.0 -> 2.0.0: {whole.describe()}; after it: {after.describe()}",
    )
    assert after.answers.keys() == {"2.0.0"}
    assert whole.failures == []
    assert set(MEASURED) == set(WEIGHTS)


def test_through_the_gateway_each_step_s_share_matches_its_weight() -> None:
    assert set(MEASURED) == set(WEIGHTS), "the walk above did not run"
    for weight, counts in MEASURED.items():
        assert abs(counts.share("2.0.0") - weight / 100) <= TOLERANCE, (weight, counts.describe())


def test_through_the_gateway_an_abort_returns_every_request_to_the_stable_version(
    node_cluster: cluster.NodeCluster,
    node_kubectl: harness.Tool,
    shop: tuple[str, Traffic],
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace, traffic = shop
    started = time.monotonic()
    node_kubectl("set", "image", "deployment/web", "app=localhost/rollout-webhook-node/sample:1.0.0", "-n", namespace)  # fmt: skip
    wait_for(lambda: paused_at(node_kubectl, namespace, WEIGHTS[0]), "paused at the first step")
    kubectl_argo(node_cluster, "abort", "web", "-n", namespace)
    wait_for(
        lambda: (
            rollout(node_kubectl, namespace)["status"].get("abort") is True
            and _weights(node_kubectl, namespace) == {"web": 100, "web-canary": 0}
        ),
        "the aborted canary's weight back at 0",
        300,
    )
    time.sleep(2)
    after = traffic.wait_for_requests(100, time.monotonic())
    whole = traffic.counts(started)
    report(capsys, f"gateway aborted canary: {whole.describe()}; after it: {after.describe()}")
    assert after.answers.keys() == {"2.0.0"}  # the stable version of the walk before
    assert whole.failures == []
