"""`status`: one row per opted-in service, drift as the reconciler sees it."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.builders import deployment, hpa, httproute, opted_in, service
from tests.webhook.reconciler.fake import FakeAPI
from webhook.cli.status import _table, service_rows
from webhook.core.keys import DEFAULT_KEYS as K
from webhook.core.policy import builtin_policy
from webhook.core.service_state import Failure, state_annotation
from webhook.kube.resources import CACHED_KINDS
from webhook.reconciler.controller import Reconciler

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def snapshot(api: FakeAPI) -> dict[str, list[dict[str, object]]]:
    return {k: list(api.list(k, "")) for k in CACHED_KINDS}


def test_rows_show_state_and_drift() -> None:
    api = FakeAPI()
    for obj in (opted_in(uid="u"), service(), hpa(), httproute(), deployment("plain")):
        api.put(obj)
    policy = builtin_policy()
    before = service_rows(snapshot(api), policy, NOW)
    assert [r["name"] for r in before] == ["web"]
    assert before[0]["phase"] == "Missing"
    assert "create Rollout web" in before[0]["drift"]
    assert before[0]["hpaTarget"] == "Deployment"

    Reconciler(api, lambda: policy, api).reconcile(("prod", "web"))
    rollout = api.get("Rollout", "prod", "web")
    assert rollout is not None
    rollout["status"] = {"phase": "Healthy"}
    api.put(rollout)
    (row,) = service_rows(snapshot(api), policy, NOW)
    assert row["drift"] == []
    assert (row["environment"], row["strategy"], row["phase"], row["hpaTarget"]) == (
        "prod",
        "canary",
        "Healthy",
        "Rollout",
    )
    assert row["routes"] == ["HTTPRoute/web"]
    table = _table([row])
    assert table.splitlines()[0].split() == [
        "NAMESPACE",
        "NAME",
        "ENVIRONMENT",
        "STRATEGY",
        "PHASE",
        "HPA",
        "ROUTES",
        "RECONCILER",
        "DRIFT",
        "REASON",
    ]
    assert table.splitlines()[1].split() == [
        "prod",
        "web",
        "prod",
        "canary",
        "Healthy",
        "Rollout",
        "HTTPRoute/web",
        "converged",
        "none",
        "-",
    ]
    assert row["reconciler"] == {"state": "converged", "reason": None}


def test_rows_say_pending_failing_and_blocked_with_the_reason() -> None:
    api = FakeAPI()
    for obj in (opted_in(uid="u"), service()):
        api.put(obj)
    policy = builtin_policy()
    (pending,) = service_rows(snapshot(api), policy, NOW)
    assert pending["reconciler"]["state"] == "pending"

    failure = Failure("forbidden", False, "apply Rollout prod/web", "KubeError: 403: denied")
    dep = api.get("Deployment", "prod", "web")
    assert dep is not None
    dep["metadata"]["annotations"] = {K.reconciler_state: state_annotation(failure, NOW)}
    api.put(dep)
    (failing,) = service_rows(snapshot(api), policy, NOW)
    assert failing["reconciler"] == {
        "state": "failing",
        "reason": "apply Rollout prod/web: KubeError: 403: denied",
        "since": "2026-11-26T00:00:00Z",
    }
    line = _table([failing]).splitlines()[1]
    assert " failing " in line
    assert line.endswith("  apply Rollout prod/web: KubeError: 403: denied")

    api.put(
        opted_in("bg", uid="b", annotations={K.strategy: "bluegreen"}, pod_labels={"app": "bg"})
    )
    rows = {r["name"]: r for r in service_rows(snapshot(api), policy, NOW)}
    assert rows["bg"]["reconciler"]["state"] == "blocked"
    assert "no Service for blue-green" in rows["bg"]["reconciler"]["reason"]


def test_rows_carry_invalid_label_values_as_warnings() -> None:
    api = FakeAPI()
    plain_ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}}
    for obj in (plain_ns, deployment("web", labels={K.enabled: "yes"}), service()):
        api.put(obj)
    (row,) = service_rows(snapshot(api), builtin_policy(), NOW)
    assert row["name"] == "web"
    assert row["warnings"] == [
        f'label {K.enabled}=\'yes\' on the Deployment is neither "true" nor "false"; ignored'
    ]
    opted_in_ns = {**plain_ns, "metadata": {"name": "prod", "labels": {K.enabled: "true"}}}
    api.put(opted_in_ns)
    (row,) = service_rows(snapshot(api), builtin_policy(), NOW)
    assert row["environment"] == "prod"  # converted by the Namespace's label, still warned
    assert row["warnings"][0].startswith(f"label {K.enabled}='yes' on the Deployment")
