"""`status`: one row per opted-in service, drift as the reconciler sees it."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.builders import deployment, hpa, httproute, opted_in, service
from tests.webhook.reconciler.fake import FakeAPI
from webhook.cli.status import _table, service_rows
from webhook.core.policy import builtin_policy
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
        "DRIFT",
    ]
    assert table.splitlines()[1].split() == [
        "prod",
        "web",
        "prod",
        "canary",
        "Healthy",
        "Rollout",
        "HTTPRoute/web",
        "none",
    ]
