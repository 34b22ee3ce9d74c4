"""A reconcile that fails says why, everywhere an operator looks, and recovers in bounds.

The failures are made by the API server itself: a ValidatingAdmissionPolicy (GA since
Kubernetes 1.30) bound to the test's namespace denies the Rollout the webhook writes, with
`reason: Forbidden` (HTTP 403: transient, retried with backoff) or `reason: Invalid` (HTTP
422: the object itself is rejected, so it is not retried until the Deployment or the policy
changes). docs/troubleshooting.md says how an operator reads each signal checked here: the
log line, the Event on the Deployment, `rollout-webhook status`, the metric, the audit record.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.e2e import harness
from tests.e2e.scenarios.support import (
    BINARY,
    BOUND_1,
    POLICY_CONFIGMAP,
    PREFIX,
    ROLLOUT_API,
    WEBHOOK_NAMESPACE,
    Manifest,
    Webhook,
    annotations_of,
    apply,
    audit_records,
    converted,
    deployment,
    eventually,
    get,
    holds,
    service,
)

STATE = f"{PREFIX}reconciler"
MAX_BACKOFF = 60.0  # docs/reconciler.md: the retry delay doubles from 0.5 s up to 60 s


@contextmanager
def denying_rollouts(
    kubectl: harness.Tool, namespace: str, *, reason: str, expression: str, message: str
) -> Iterator[None]:
    """A ValidatingAdmissionPolicy that denies Rollout writes in `namespace` failing
    `expression`, with `reason`; removed afterwards (it is cluster-scoped)."""
    name = f"deny-rollouts-{namespace}"
    policy: Manifest = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["argoproj.io"],
                        "apiVersions": ["*"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["rollouts"],
                    }
                ]
            },
            "validations": [{"expression": expression, "message": message, "reason": reason}],
        },
    }
    binding: Manifest = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    apply(kubectl, policy, binding)
    try:
        yield
    finally:
        kubectl("delete", "validatingadmissionpolicybinding", name, "--ignore-not-found")
        kubectl("delete", "validatingadmissionpolicy", name, "--ignore-not-found")


def lift(kubectl: harness.Tool, namespace: str) -> None:
    kubectl("delete", "validatingadmissionpolicybinding", f"deny-rollouts-{namespace}")


def denied(kubectl: harness.Tool, namespace: str, replicas: int, message: str) -> bool:
    """Whether a server-side dry run of a Rollout of `replicas` is denied with `message`."""
    probe = {
        "apiVersion": ROLLOUT_API,
        "kind": "Rollout",
        "metadata": {"name": "probe", "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "probe"}},
            "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "probe"},
            "strategy": {"canary": {"steps": []}},
        },
    }
    result = kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(probe), check=False)
    return result.returncode != 0 and message in result.stderr


def events(kubectl: harness.Tool, namespace: str, name: str) -> list[Manifest]:
    found = kubectl(
        "get", "events", "-n", namespace, "-o", "json",
        f"--field-selector=involvedObject.kind=Deployment,involvedObject.name={name}",
    )  # fmt: skip
    items: list[Manifest] = json.loads(found.stdout)["items"]
    return items


def event(kubectl: harness.Tool, namespace: str, name: str, reason: str) -> Manifest | None:
    return next((e for e in events(kubectl, namespace, name) if e["reason"] == reason), None)


def metric(webhook: Webhook, name: str, **labels: str) -> float:
    """A sample of serve's /metrics (0 when absent)."""
    context = ssl.create_default_context(cadata=webhook.ca_pem)
    with urllib.request.urlopen(f"{webhook.url}/metrics", context=context, timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{([^}}]*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def status_row(control_plane: harness.ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    """`rollout-webhook status -o json`, as an operator runs it, for one service."""
    result = subprocess.run(
        [
            str(BINARY), "status", f"--kubeconfig={control_plane.kubeconfig}",
            "-n", namespace, "-o", "json",
            f"--webhook-namespace={WEBHOOK_NAMESPACE}", f"--policy-configmap={POLICY_CONFIGMAP}",
        ],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    rows = {r["name"]: r for r in json.loads(result.stdout)["services"]}
    row: dict[str, Any] = rows[name]
    return row


def failure_lines(webhook: Webhook, namespace: str, name: str) -> list[str]:
    if not webhook.log_path.exists():
        return []
    return [
        line
        for line in webhook.log_path.read_text(errors="replace").splitlines()
        if f"reconcile {namespace}/{name} failed at " in line
    ]


def test_a_transient_failure_is_said_backs_off_and_recovers(
    webhook: Webhook, team: str, kubectl: harness.Tool, control_plane: harness.ControlPlane
) -> None:
    message = "rollouts are frozen in this namespace"
    with denying_rollouts(kubectl, team, reason="Forbidden", expression="false", message=message):
        eventually(lambda: denied(kubectl, team, 1, message), "the policy in force", webhook)
        started = time.monotonic()
        apply(kubectl, service("web", team), deployment("web", team))

        line = eventually(
            lambda: next(iter(failure_lines(webhook, team, "web")), None),
            "the failure's log line",
            webhook,
            timeout=BOUND_1,
        )
        assert f"failed at apply Rollout {team}/web: KubeError: 403: " in line
        assert message in line
        said = eventually(
            lambda: event(kubectl, team, "web", "ReconcileFailed"),
            "a ReconcileFailed Event",
            webhook,
            timeout=BOUND_1,
        )
        assert said["type"] == "Warning" and message in said["message"]
        assert said["message"].startswith(f"apply Rollout {team}/web: KubeError: 403: ")
        assert metric(
            webhook, "rollout_webhook_reconcile_failures_total", reason="forbidden",
            step="apply", kind="Rollout",
        ) >= 1  # fmt: skip
        # The reconciler's records are queued to the trail's writer: on a busy machine the
        # Event can be seen before the record is on disk.
        record = eventually(
            lambda: next(
                (
                    r
                    for r in audit_records(webhook.audit_file)
                    if r["operation"] == "RECONCILE" and r["namespace"] == team
                    and r["name"] == "web" and r["decision"] == "failing"
                ),
                None,
            ),
            "the failure's audit record",
            webhook,
            timeout=BOUND_1,
        )  # fmt: skip
        assert message in record["reason"]
        row = eventually(
            lambda: (r if (r := status_row(control_plane, team, "web"))["reconciler"]["state"]
                     == "failing" else None),
            "status to show web failing",
            webhook,
            timeout=BOUND_1,
        )  # fmt: skip
        assert message in row["reconciler"]["reason"]
        print(f"failure said everywhere after {time.monotonic() - started:.1f}s")

        # Retried with a growing delay, however many events name the key meanwhile.
        eventually(lambda: len(failure_lines(webhook, team, "web")) >= 4, "4 attempts", webhook)
        delays = [
            float(m.group(1))
            for m in (re.search(r"retry in ([0-9.]+)s", x) for x in failure_lines(webhook, team, "web"))
            if m
        ]  # fmt: skip
        assert delays == sorted(delays) and delays[-1] <= MAX_BACKOFF, delays

        lift(kubectl, team)
        started = time.monotonic()
        eventually(
            lambda: converted(kubectl, "web", team),
            "web converted once the cause is gone",
            webhook,
            timeout=MAX_BACKOFF + BOUND_1,
        )
        eventually(
            lambda: STATE not in annotations_of(get(kubectl, "deployment", "web", team)),
            "the failure's annotation removed",
            webhook,
            timeout=BOUND_1,
        )
        print(f"recovered {time.monotonic() - started:.1f}s after the cause went")
        assert event(kubectl, team, "web", "Reconciled") is not None
        assert status_row(control_plane, team, "web")["reconciler"]["state"] == "converged"


def test_a_rejected_object_blocks_until_the_deployment_changes(
    webhook: Webhook, team: str, kubectl: harness.Tool, control_plane: harness.ControlPlane
) -> None:
    message = "at most 5 replicas here"
    with denying_rollouts(
        kubectl,
        team,
        reason="Invalid",
        expression="!has(object.spec.replicas) || object.spec.replicas <= 5",
        message=message,
    ):
        eventually(lambda: denied(kubectl, team, 6, message), "the policy in force", webhook)
        apply(kubectl, service("web", team), deployment("web", team, replicas=6))

        said = eventually(
            lambda: event(kubectl, team, "web", "ConversionBlocked"),
            "a ConversionBlocked Event",
            webhook,
            timeout=BOUND_1,
        )
        assert said["type"] == "Warning"
        assert message in said["message"] and "To fix: " in said["message"]
        row = status_row(control_plane, team, "web")
        assert row["reconciler"]["state"] == "blocked", row
        assert "To fix: " in row["reconciler"]["reason"]
        assert metric(webhook, "rollout_webhook_reconcile_failures_total", reason="invalid") >= 1
        assert metric(webhook, "rollout_webhook_reconcile_services", state="blocked") >= 1

        # Not retried: the same inputs would build the same rejected Rollout.
        attempts = len(failure_lines(webhook, team, "web"))
        holds(
            lambda: len(failure_lines(webhook, team, "web")) == attempts,
            "no further attempt",
            BOUND_1,
        )

        # The owner changes the Deployment (what the Event says to fix): tried at once.
        started = time.monotonic()
        apply(kubectl, deployment("web", team, replicas=4))
        rollout = eventually(
            lambda: get(kubectl, "rollout", "web", team), "the Rollout", webhook, timeout=BOUND_1
        )
        assert rollout["spec"]["replicas"] == 4
        eventually(
            lambda: STATE not in annotations_of(get(kubectl, "deployment", "web", team)),
            "the failure's annotation removed",
            webhook,
            timeout=BOUND_1,
        )
        print(f"unblocked {time.monotonic() - started:.1f}s after the fix")
