"""`kubectl scale deployment` of a converted Deployment goes to its Rollout.

A scale calls the `deployments/scale` subresource, which runs only its own admission
(kubernetes/kubernetes#84530), so the chart has an entry for it. The webhook patches the
Scale back to the Deployment's count (the Deployment never runs pods of its own) and gives
the count to the Rollout, after checking that the user may scale that Rollout. No
controller runs here: the Deployment's stored `spec.replicas` is what would start pods.
"""

from __future__ import annotations

import json

from tests.e2e import harness
from tests.e2e.scenarios.support import (
    ENABLED,
    PREFIX,
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
    hpa,
    scale_target,
    service,
)


def replicas(kubectl: harness.Tool, kind: str, name: str, namespace: str) -> int | None:
    found = get(kubectl, kind, name, namespace)
    return None if found is None else int(found["spec"].get("replicas", 0))


def converted_web(webhook: Webhook, kubectl: harness.Tool, team: str) -> None:
    apply(kubectl, service("web", team), deployment("web", team, replicas=3))
    eventually(lambda: converted(kubectl, "web", team), "web converted", webhook)
    assert replicas(kubectl, "deployment", "web", team) == 0
    assert replicas(kubectl, "rollout", "web", team) == 3


def rollout_status(kubectl: harness.Tool, team: str, phase: str) -> None:
    """What Argo Rollouts would write (no controller runs here): the status subresource."""
    kubectl(
        "patch", "rollout", "web", "-n", team, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"phase": phase}}),
    )  # fmt: skip


def test_kubectl_scale_goes_to_the_rollout_and_the_deployment_stays_at_zero(
    webhook: Webhook, team: str, kubectl: harness.Tool
) -> None:
    converted_web(webhook, kubectl, team)

    result = kubectl("scale", "deployment", "web", "-n", team, "--replicas=6")
    assert "Deployment web is managed by Rollout web: scaled the Rollout to 6" in result.stderr
    # Stored as answered: the Deployment never had 6 replicas, not for a moment.
    assert replicas(kubectl, "deployment", "web", team) == 0
    eventually(lambda: replicas(kubectl, "rollout", "web", team) == 6, "the Rollout at 6", webhook)
    # The Scale carries no annotations: the reconciler mirrors the new size.
    eventually(
        lambda: (
            annotations_of(get(kubectl, "deployment", "web", team)).get(
                f"{PREFIX}original-replicas"
            )
            == "6"
        ),
        "original-replicas to follow the Rollout",
        webhook,
    )
    [record] = [
        r
        for r in audit_records(webhook.audit_file)
        if r["kind"] == "AdmissionDecision" and r["extra"].get("subresource") == "scale"
        and r["namespace"] == team
    ]  # fmt: skip
    assert (record["objectKind"], record["name"], record["decision"]) == (
        "Deployment",
        "web",
        "convert",
    )

    # A server-side dry run: the same answer, nothing written.
    dry = kubectl("scale", "deployment", "web", "-n", team, "--replicas=9", "--dry-run=server")
    assert "scaled the Rollout to 9" in dry.stderr
    holds(
        lambda: (
            replicas(kubectl, "rollout", "web", team) == 6
            and replicas(kubectl, "deployment", "web", team) == 0
        ),
        "the Rollout at 6 and the Deployment at 0 after a dry run",
        3,
    )

    # In the middle of a canary (paused): the same, and the steps in force stay.
    steps = get(kubectl, "rollout", "web", team)["spec"]["strategy"]["canary"]["steps"]  # type: ignore[index]
    rollout_status(kubectl, team, "Paused")
    kubectl("scale", "deployment", "web", "-n", team, "--replicas=4")
    assert replicas(kubectl, "deployment", "web", team) == 0
    eventually(
        lambda: replicas(kubectl, "rollout", "web", team) == 4, "the paused Rollout at 4", webhook
    )
    paused = get(kubectl, "rollout", "web", team)
    assert paused is not None and paused["spec"]["strategy"]["canary"]["steps"] == steps

    # A scale to the count the Deployment already has (0) still sets the service's size.
    kubectl("scale", "deployment", "web", "-n", team, "--replicas=0")
    eventually(lambda: replicas(kubectl, "rollout", "web", team) == 0, "the Rollout at 0", webhook)


def scaler_rbac(team: str, user: str, *, may_scale_rollouts: bool) -> list[Manifest]:
    """A Role that may scale Deployments (and read Rollouts), and, when asked, patch the
    Rollouts' scale subresource: exactly what `kubectl scale rollout` needs."""
    rules: list[dict[str, object]] = [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]},
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch"]},
        {"apiGroups": ["argoproj.io"], "resources": ["rollouts"], "verbs": ["get", "list"]},
    ]
    if may_scale_rollouts:
        rules.append(
            {"apiGroups": ["argoproj.io"], "resources": ["rollouts/scale"], "verbs": ["patch"]}
        )
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "scaler", "namespace": team},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"{user}-scaler", "namespace": team},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "scaler"},
            "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
        },
    ]


def test_a_scale_by_a_user_who_may_not_scale_rollouts_is_denied_with_the_command(
    webhook: Webhook, team: str, kubectl: harness.Tool
) -> None:
    converted_web(webhook, kubectl, team)
    apply(kubectl, *scaler_rbac(team, "dave", may_scale_rollouts=False))

    refused = kubectl(
        "scale", "deployment", "web", "-n", team, "--replicas=6", "--as=dave", check=False
    )
    assert refused.returncode != 0
    assert "dave may not scale rollouts.argoproj.io/web" in refused.stderr
    assert "kubectl scale rollout web --replicas=6" in refused.stderr
    holds(
        lambda: (
            replicas(kubectl, "rollout", "web", team) == 3
            and replicas(kubectl, "deployment", "web", team) == 0
        ),
        "the Rollout and the Deployment as they were",
        3,
    )

    # Given exactly what `kubectl scale rollout` needs, dave's scale goes through (the
    # webhook keeps a denied answer up to 10 s) and the command named works for them too.
    apply(kubectl, *scaler_rbac(team, "dave", may_scale_rollouts=True))

    def scaled_by_dave() -> bool:
        result = kubectl(
            "scale", "deployment", "web", "-n", team, "--replicas=6", "--as=dave", check=False
        )
        return result.returncode == 0

    eventually(scaled_by_dave, "dave's scale to be allowed", webhook)
    assert replicas(kubectl, "deployment", "web", team) == 0
    eventually(lambda: replicas(kubectl, "rollout", "web", team) == 6, "the Rollout at 6", webhook)
    kubectl("scale", "rollout", "web", "-n", team, "--replicas=7", "--as=dave")
    assert replicas(kubectl, "rollout", "web", team) == 7


def test_scaling_the_rollout_is_kept_and_an_hpa_owns_the_size(
    webhook: Webhook, team: str, kubectl: harness.Tool
) -> None:
    converted_web(webhook, kubectl, team)

    kubectl("scale", "rollout", "web", "-n", team, "--replicas=5")
    # Admission (an annotation is an UPDATE of the Deployment) and the reconciler (the
    # Rollout's and the Deployment's events) both plan the Rollout again: neither undoes it.
    kubectl("annotate", "deployment", "web", "-n", team, "touched=1")
    eventually(
        lambda: (
            annotations_of(get(kubectl, "deployment", "web", team)).get(
                f"{PREFIX}original-replicas"
            )
            == "5"
        ),
        "original-replicas to follow the Rollout",
        webhook,
    )
    holds(lambda: replicas(kubectl, "rollout", "web", team) == 5, "the Rollout at 5", 10)

    # An HPA sizes the Rollout: a scale of the Deployment changes nothing, and says so.
    apply(kubectl, hpa("web", team, "web", low=2, high=10))
    eventually(
        lambda: scale_target(get(kubectl, "hpa", "web", team)) == ("Rollout", "web"),
        "the HPA to target the Rollout",
        webhook,
    )
    result = kubectl("scale", "deployment", "web", "-n", team, "--replicas=8")
    assert "Rollout web is sized by HPA web: nothing scaled" in result.stderr
    assert replicas(kubectl, "deployment", "web", team) == 0
    # What the HPA controller would do (none runs here): scale the Rollout.
    kubectl("scale", "rollout", "web", "-n", team, "--replicas=4")
    kubectl("delete", "hpa", "web", "-n", team)
    holds(lambda: replicas(kubectl, "rollout", "web", team) == 4, "the Rollout at 4", 5)

    # Opting out gives the Deployment the service's size: the Rollout's.
    kubectl("label", "deployment", "web", "-n", team, f"{ENABLED}=false", "--overwrite")
    eventually(
        lambda: replicas(kubectl, "deployment", "web", team) == 4,
        "the Deployment back at the Rollout's 4",
        webhook,
    )


def test_a_plain_or_opted_out_deployment_scales_as_asked(
    webhook: Webhook, team: str, kubectl: harness.Tool
) -> None:
    apply(
        kubectl,
        deployment("plain", team, enabled=None, replicas=2),
        deployment("out", team, enabled="false", replicas=2),
    )
    for name in ("plain", "out"):
        result = kubectl("scale", "deployment", name, "-n", team, "--replicas=6")
        assert "Warning" not in result.stderr
        assert replicas(kubectl, "deployment", name, team) == 6
        assert get(kubectl, "rollout", name, team) is None
