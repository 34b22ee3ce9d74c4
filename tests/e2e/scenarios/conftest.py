"""Fixtures of the end-to-end scenarios (issue 7, and the reconciler's of issue 5).

- `audit_file`: the one audit file every server of this package appends to, so that the
  last module can verify the whole run's chain.
- `identity`: the chart's ServiceAccount, RBAC and Lease, applied once: every server here
  runs with that account's token and the chart's settings, as in a cluster, so its own
  writes pass its webhook untouched and the chart's rules must allow all it does.
- `webhook`: per module, `rollout-webhook serve` (reconciler on, a 5 s orphan grace) with
  the chart's webhook configurations (failurePolicy Fail) calling it, already in force.
- `team`: a fresh namespace labelled for this package's webhooks; what the test made in it
  is deleted afterwards, so no later server (they watch the whole cluster) acts on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.e2e import harness
from tests.e2e.scenarios.support import (
    TIER,
    TIER_LABEL,
    WEBHOOK_NAMESPACE,
    Webhook,
    chart_env,
    registered,
    render_chart,
    wait_in_force,
)

ORPHAN_GRACE_SECONDS = "5"
TEAM_KINDS = ",".join(
    (
        "deployments",
        "rollouts.argoproj.io",
        "services",
        "horizontalpodautoscalers",
        "httproutes.gateway.networking.k8s.io",
        "virtualservices.networking.istio.io",
    )
)


@pytest.fixture(scope="package")
def audit_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scenarios-audit") / "audit.jsonl"


@pytest.fixture(scope="package")
def webhook_namespace(kubectl: harness.Tool) -> Iterator[str]:
    kubectl("create", "namespace", WEBHOOK_NAMESPACE)
    yield WEBHOOK_NAMESPACE
    kubectl("delete", "namespace", WEBHOOK_NAMESPACE, "--wait=false", check=False)


@dataclass(frozen=True)
class Identity:
    kubeconfig: Path
    env: dict[str, str]


@pytest.fixture(scope="package")
def identity(
    control_plane: harness.ControlPlane,
    kubectl: harness.Tool,
    helm: harness.Tool,
    webhook_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Identity]:
    rendered = render_chart(helm, "serviceaccount.yaml", "rbac.yaml", "leases.yaml")
    kubectl("apply", "-f", "-", input=rendered)
    try:
        [account] = [
            d["metadata"]["name"]
            for d in yaml.safe_load_all(rendered)
            if d and d["kind"] == "ServiceAccount"
        ]
        token = kubectl(
            "create", "token", account, "-n", webhook_namespace, "--duration=2h"
        ).stdout.strip()
        path = tmp_path_factory.mktemp("identity") / "kubeconfig"
        path.write_text(yaml.safe_dump(harness.token_kubeconfig(control_plane, account, token)))
        path.chmod(0o600)
        env = chart_env(helm)
        # No garbage collector runs here: the reconciler's orphan clean-up is what deletes
        # a Rollout whose Deployment is gone, and 60 s would make that test slow.
        env["ROLLOUT_WEBHOOK_ORPHAN_GRACE_SECONDS"] = ORPHAN_GRACE_SECONDS
        yield Identity(path, env)
    finally:
        # Cluster-scoped RBAC would outlive the namespace (and clash with later installs).
        kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-", input=rendered,
                check=False)  # fmt: skip


@pytest.fixture(scope="package")
def probe_namespace(kubectl: harness.Tool) -> Iterator[str]:
    """Where a module's first dry runs check that its webhook is in force."""
    name = "scenarios-probe"
    kubectl("create", "namespace", name)
    kubectl("label", "namespace", name, f"{TIER_LABEL}={TIER}")
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def team(namespace: str, kubectl: harness.Tool) -> Iterator[str]:
    kubectl("label", "namespace", namespace, f"{TIER_LABEL}={TIER}")
    yield namespace
    kubectl("delete", TEAM_KINDS, "--all", "-n", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def webhook(
    identity: Identity,
    kubectl: harness.Tool,
    helm: harness.Tool,
    probe_namespace: str,
    audit_file: Path,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Webhook]:
    server = Webhook(
        tmp_path_factory.mktemp("serve"), identity.kubeconfig, audit_file, env=identity.env
    )
    name = f"scenarios-{request.module.__name__.rsplit('.', 1)[-1].replace('_', '-')}"
    server.start()
    try:
        with registered(kubectl, helm, server, name, "Fail"):
            wait_in_force(kubectl, probe_namespace, server)
            yield server
    finally:
        server.stop()
