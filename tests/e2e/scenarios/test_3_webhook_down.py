"""The webhook is down while Deployments are created; the reconciler catches up (issues 7, 5).

The chart's configurations (failurePolicy Ignore, the chart's default) are registered for
a server that is not running: the API server cannot call it and admits the Deployments
unchanged. Then `serve` starts, with its reconciler, and converts every one of them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import harness
from tests.e2e.scenarios.conftest import Identity
from tests.e2e.scenarios.support import (
    PREFIX,
    Webhook,
    annotations_of,
    apply,
    deployment,
    eventually,
    get,
    registered,
)

COUNT = 20
FAIL_OPEN = re.compile(
    r'^apiserver_admission_webhook_fail_open_count\{[^}]*name="deployments\.rollout-webhook\.io"'
    r"[^}]*\} (\d+)",
    re.MULTILINE,
)


def fail_open_count(kubectl: harness.Tool) -> int:
    """The API server's count of calls to the deployments webhook it let through failing."""
    metrics = kubectl("get", "--raw", "/metrics").stdout
    return sum(int(n) for n in FAIL_OPEN.findall(metrics))


@pytest.fixture(scope="module")
def stopped_webhook(
    identity: Identity,
    kubectl: harness.Tool,
    helm: harness.Tool,
    audit_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Webhook]:
    """Registered but not started: its port is chosen and nothing listens on it."""
    server = Webhook(
        tmp_path_factory.mktemp("serve-down"),
        identity.kubeconfig,
        audit_file,
        env=identity.env,
    )
    server.prepare()
    try:
        with registered(kubectl, helm, server, "scenarios-webhook-down", "Ignore"):
            yield server
    finally:
        server.stop()


def test_deployments_admitted_while_the_webhook_was_down_are_all_converted(
    stopped_webhook: Webhook, team: str, kubectl: harness.Tool
) -> None:
    names = [f"svc-{i:02d}" for i in range(COUNT)]
    failed_open = fail_open_count(kubectl)
    apply(kubectl, *(deployment(name, team, replicas=2) for name in names))
    for name in names:
        stored = get(kubectl, "deployment", name, team)
        assert stored is not None and stored["spec"]["replicas"] == 2
        assert f"{PREFIX}rollout-name" not in annotations_of(stored)
    # They went past the webhook because it failed open, not because nothing matched.
    assert fail_open_count(kubectl) >= failed_open + COUNT

    started = time.monotonic()
    stopped_webhook.start()

    def all_converted() -> bool:
        rollouts = kubectl("get", "rollouts.argoproj.io", "-n", team, "-o", "name").stdout
        return len(rollouts.split()) == COUNT

    eventually(all_converted, f"all {COUNT} Rollouts", stopped_webhook, timeout=90)
    for name in names:
        rollout = get(kubectl, "rollout", name, team)
        assert rollout is not None and rollout["spec"]["workloadRef"]["name"] == name
        assert rollout["spec"]["replicas"] == 2
    eventually(
        lambda: all(
            annotations_of(get(kubectl, "deployment", n, team)).get(f"{PREFIX}rollout-name") == n
            for n in names
        ),
        "every Deployment annotated by the reconciler",
        stopped_webhook,
    )
    print(f"{COUNT} Deployments converted {time.monotonic() - started:.1f}s after start")
