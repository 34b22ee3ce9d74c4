"""`helm uninstall` last: a converted service keeps serving, under traffic, with 0 failed
requests (docs/install.md says what happens to converted services). Runs after every other
test of the tier, since it removes the release they share."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.e2e import harness
from tests.node.conftest import NAMESPACE, RELEASE
from tests.node.rollouts import ENABLED, dry_run, phase, report, rollout, sees_service
from tests.node.traffic import Traffic
from tests.node.workloads import apply, get, sample_deployment, sample_service, wait_for


def test_helm_uninstall_leaves_converted_services_serving(
    node_kubectl: harness.Tool,
    node_helm: harness.Tool,
    release: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace = f"kept-{uuid.uuid4().hex[:6]}"
    node_kubectl("create", "namespace", namespace)
    apply(node_kubectl, sample_service("web", namespace))
    deployment = sample_deployment("web", namespace, "1.0.0", 2, labels={ENABLED: "true"})
    wait_for(
        lambda: sees_service(dry_run(node_kubectl, deployment)), "the webhook to see the Service"
    )
    apply(node_kubectl, deployment)
    wait_for(lambda: phase(node_kubectl, namespace) == "Healthy", "a Healthy Rollout", 300)
    address = get(node_kubectl, "service", "web", "-n", namespace)["spec"]["clusterIP"]
    with Traffic(f"http://{address}/") as traffic:
        traffic.wait_for_requests(50, 0.0)
        started = time.monotonic()
        node_helm("uninstall", release, "--namespace", NAMESPACE, "--wait", timeout=200)
        after = traffic.wait_for_requests(200, time.monotonic())
        whole = traffic.counts(started)
    kept = rollout(node_kubectl, namespace)
    deployment_now = get(node_kubectl, "deployment", "web", "-n", namespace)
    configurations = node_kubectl("get", "mutatingwebhookconfiguration", "-o", "name").stdout
    report(
        capsys,
        f"helm uninstall: {whole.describe()}; the Rollout is {kept['status'].get('phase')}, "
        f"the Deployment at {deployment_now['spec'].get('replicas')} replicas",
    )
    assert RELEASE not in configurations
    assert kept["status"].get("phase") == "Healthy"
    assert whole.failures == []
    assert after.answers.keys() == {"1.0.0"}
