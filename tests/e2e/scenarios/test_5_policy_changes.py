"""Policy changes reach the services already converted, within docs/reconciler.md's bounds.

Every test here edits the cluster-wide policy ConfigMap, which every server of the package
would read: that is why they have a module (and so a `serve`) of their own, and why each
deletes the ConfigMap again (the built-in policy then applies). Each bound is measured from
the moment `kubectl apply` of the ConfigMap returns, so it includes the watch's delay and
the reconciler's pass.

No Argo Rollouts controller runs: a Rollout's phase is written by the test
(`rollout_phase`), and so is a Deployment's status (`pods_available`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from tests.e2e import harness
from tests.e2e.scenarios.support import (
    BOUND_1,
    POLICY_CONFIGMAP,
    PREFIX,
    WEBHOOK_NAMESPACE,
    Manifest,
    Webhook,
    annotations_of,
    apply,
    bound_n,
    converted,
    deployment,
    eventually,
    get,
    holds,
    opting_out,
    policy_configmap,
    policy_doc,
    reconcile_failures,
    rollout_phase,
    service,
    steps_of,
)

STEPS_A: list[Manifest] = [{"setWeight": 20}]
STEPS_B: list[Manifest] = [{"setWeight": 50}]


@pytest.fixture
def policy(kubectl: harness.Tool) -> Iterator[None]:
    """The test's policies; the built-in one again afterwards."""
    yield
    kubectl("delete", "configmap", POLICY_CONFIGMAP, "-n", WEBHOOK_NAMESPACE, check=False)


def set_policy(kubectl: harness.Tool, document: Manifest) -> float:
    """Apply the policy and return when it was applied (monotonic), without waiting."""
    apply(kubectl, policy_configmap(document))
    return time.monotonic()


def in_force(kubectl: harness.Tool, webhook: Webhook, namespace: str) -> None:
    """Until admission decides with the ConfigMap as stored now: a server-side dry run of
    a labelled Deployment names its resourceVersion. Writes nothing."""
    stored = get(kubectl, "configmap", POLICY_CONFIGMAP, WEBHOOK_NAMESPACE)
    assert stored is not None
    version = f"@{stored['metadata']['resourceVersion']}/"

    def decided_with_it() -> bool:
        probe = deployment(f"probe-{uuid.uuid4().hex[:6]}", namespace)
        result = kubectl(
            "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(probe)
        )
        return version in annotations_of(json.loads(result.stdout)).get(
            f"{PREFIX}policy-version", ""
        )

    eventually(decided_with_it, f"the policy {version} in force for admission", webhook)


def start_with(
    kubectl: harness.Tool, webhook: Webhook, team: str, document: Manifest, *names: str
) -> None:
    """The policy in force, then each name as a converted service (a Service and a
    Deployment of 3), with the policy's steps."""
    apply(kubectl, policy_configmap(document))
    in_force(kubectl, webhook, team)
    for name in names:
        apply(kubectl, service(name, team), deployment(name, team))
    for name in names:
        eventually(partial(converted, kubectl, name, team), f"{name} converted", webhook)
        assert (
            steps_of(kubectl, name, team)
            == document["environments"]["staging"]["rollout"]["canary"]["steps"]
        )


def within(check: Any, what: str, webhook: Webhook, since: float, bound: float) -> float:
    """`check` comes true within `bound` seconds of `since`; returns the time it took."""
    eventually(check, what, webhook, timeout=max(bound - (time.monotonic() - since), 0.5))
    return time.monotonic() - since


def test_immediate_moves_every_rollout_to_the_new_steps_but_not_half_way(
    webhook: Webhook, team: str, kubectl: harness.Tool, policy: None
) -> None:
    start_with(kubectl, webhook, team, policy_doc(STEPS_A, updates="immediate"), "web", "paused")
    rollout_phase(kubectl, "paused", team, "Paused")

    since = set_policy(kubectl, policy_doc(STEPS_B, updates="immediate"))
    took = within(
        lambda: steps_of(kubectl, "web", team) == STEPS_B,
        "web's Rollout to get the new steps",
        webhook,
        since,
        bound_n(2),
    )
    print(f"immediate: new steps after {took:.1f}s")
    # A Rollout half-way through a rollout keeps its steps until it is done.
    holds(lambda: steps_of(kubectl, "paused", team) == STEPS_A, "the paused Rollout's steps", 5)

    rollout_phase(kubectl, "paused", team, "Healthy")
    since = time.monotonic()
    within(
        lambda: steps_of(kubectl, "paused", team) == STEPS_B,
        "the Rollout to take the new steps once it is Healthy",
        webhook,
        since,
        BOUND_1,
    )
    assert reconcile_failures(webhook) == []


def test_next_change_keeps_the_steps_until_the_deployment_changes(
    webhook: Webhook, team: str, kubectl: harness.Tool, policy: None
) -> None:
    start_with(kubectl, webhook, team, policy_doc(STEPS_A), "web")

    set_policy(kubectl, policy_doc(STEPS_B))
    in_force(kubectl, webhook, team)
    # Longer than the bound in which the reconciler would have moved it under immediate.
    holds(lambda: steps_of(kubectl, "web", team) == STEPS_A, "the steps A", bound_n(1) + 2)

    since = time.monotonic()
    kubectl("annotate", "deployment", "web", "-n", team, "example.com/touched=1")
    within(
        lambda: steps_of(kubectl, "web", team) == STEPS_B,
        "the Deployment's next change to bring the new steps",
        webhook,
        since,
        BOUND_1,
    )
    assert reconcile_failures(webhook) == []


def test_never_keeps_the_steps_and_new_services_get_the_new_ones(
    webhook: Webhook, team: str, kubectl: harness.Tool, policy: None
) -> None:
    start_with(kubectl, webhook, team, policy_doc(STEPS_A, updates="never"), "web")

    set_policy(kubectl, policy_doc(STEPS_B, updates="never"))
    in_force(kubectl, webhook, team)
    kubectl("annotate", "deployment", "web", "-n", team, "example.com/touched=1")
    holds(lambda: steps_of(kubectl, "web", team) == STEPS_A, "the steps A", bound_n(1) + 2)

    apply(kubectl, service("late", team), deployment("late", team))
    eventually(lambda: converted(kubectl, "late", team), "late converted", webhook)
    assert steps_of(kubectl, "late", team) == STEPS_B
    assert reconcile_failures(webhook) == []


def test_the_kill_switch_opts_the_environment_out_and_back_in(
    webhook: Webhook, team: str, kubectl: harness.Tool, policy: None
) -> None:
    start_with(kubectl, webhook, team, policy_doc(STEPS_A), "web", "api")
    for name in ("web", "api"):
        stored = get(kubectl, "deployment", name, team)
        assert stored is not None and stored["spec"]["replicas"] == 0

    since = set_policy(kubectl, policy_doc(STEPS_A, enabled=False))
    took = within(
        lambda: all(opting_out(kubectl, n, team, 3) for n in ("web", "api")),
        "both services at step 1 of the opt-out (Deployment first)",
        webhook,
        since,
        bound_n(2),
    )
    print(f"kill switch: step 1 for 2 services after {took:.1f}s")

    # A Deployment created while the environment is off stays a plain one, with no failure.
    apply(kubectl, service("late", team), deployment("late", team, replicas=2))
    stored = get(kubectl, "deployment", "late", team)
    assert stored is not None and stored["spec"]["replicas"] == 2
    assert f"{PREFIX}rollout-name" not in annotations_of(stored)
    holds(lambda: get(kubectl, "rollout", "late", team) is None, "late stays without a Rollout", 5)
    assert reconcile_failures(webhook) == []

    # Switched back on: every service of the environment converges, late included.
    since = set_policy(kubectl, policy_doc(STEPS_A))

    def converged() -> bool:
        rollouts = [get(kubectl, "rollout", n, team) for n in ("web", "api", "late")]
        return all(
            r is not None and r["spec"]["workloadRef"].get("scaleDown") == "onsuccess"
            for r in rollouts
        ) and bool(converted(kubectl, "late", team))

    took = within(converged, "the environment converted again", webhook, since, bound_n(3))
    print(f"kill switch off: 3 services converted after {took:.1f}s")
    assert reconcile_failures(webhook) == []
