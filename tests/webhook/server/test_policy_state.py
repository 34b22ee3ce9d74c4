"""POST /validate on the policy ConfigMap, and the reload of a watched policy."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.builders import admission_request
from tests.webhook.core.conftest import released_rollout_schema
from tests.webhook.server.conftest import FakeCluster, deployment, serve
from webhook.core.crd_schema import RolloutSchema
from webhook.core.policy import builtin_policy
from webhook.core.review import decode_patch
from webhook.kube.cluster import PolicyStore
from webhook.server.policy_state import PolicyState

NAMESPACE = "rollout-system"
CONFIGMAP = "rollout-webhook-policy"


def policy_configmap(doc: Any, resource_version: str = "1") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": CONFIGMAP,
            "namespace": NAMESPACE,
            "resourceVersion": resource_version,
        },
        "data": {"policy.yaml": yaml.safe_dump(doc)},
    }


def good_policy(default: str = "dev") -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(json.dumps(builtin_policy().document))
    doc["defaultEnvironment"] = default
    return doc


def bad_policy() -> dict[str, Any]:
    doc = good_policy()
    env = doc["environments"]["prod"]["rollout"]
    env["canary"]["steps"][0] = {"setWeight": 250}
    doc["defaultEnvironment"] = "nowhere"
    return doc


def validate(running: Any, obj: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
    request = admission_request(obj, kind=("", "v1", "ConfigMap"), operation=operation)
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    answer = running.client.post(f"{running.url}/validate", json=body)
    assert answer.status_code == 200
    response: dict[str, Any] = answer.json()["response"]
    return response


def test_invalid_policy_configmap_is_denied_with_every_error(tmp_path: Path) -> None:
    with serve(tmp_path, cluster=FakeCluster(), namespace=NAMESPACE) as running:
        response = validate(running, policy_configmap(bad_policy()))
        assert response["allowed"] is False
        assert response["status"]["code"] == 422
        message = response["status"]["message"]
        assert "environments.prod.rollout.canary.steps[0].setWeight" in message
        assert "defaultEnvironment" in message
        assert "2 error(s)" in message
        (record,) = running.records(1)
        assert record["decision"] == "deny"


def test_valid_policy_and_other_configmaps_are_allowed(tmp_path: Path) -> None:
    with serve(tmp_path, cluster=FakeCluster(), namespace=NAMESPACE) as running:
        assert validate(running, policy_configmap(good_policy()))["allowed"] is True
        other = policy_configmap(bad_policy())
        other["metadata"]["name"] = "something-else"
        assert validate(running, other)["allowed"] is True
        deleting = validate(running, policy_configmap(bad_policy()), operation="DELETE")
        assert deleting["allowed"] is True
        broken_yaml = policy_configmap({})
        broken_yaml["data"]["policy.yaml"] = "environments: [unclosed"
        response = validate(running, broken_yaml)
        assert response["allowed"] is False
        assert "not valid YAML" in response["status"]["message"]


def test_reload_applies_a_good_policy_and_keeps_it_over_a_bad_one(tmp_path: Path) -> None:
    cluster = FakeCluster(policy_configmap=policy_configmap(good_policy("staging"), "10"))
    with serve(tmp_path, cluster=cluster, namespace=NAMESPACE) as running:
        assert cluster.policy is not None
        store = PolicyStore(cluster.policy)
        first = running.review(admission_request(deployment(), uid="a"))
        assert first["auditAnnotations"]["environment"] == "staging"
        assert f"{NAMESPACE}/{CONFIGMAP}@10/" in first["auditAnnotations"]["policy-version"]

        store.upsert(policy_configmap(good_policy("dev"), "11"))  # the watch sees a change
        second = running.review(admission_request(deployment(), uid="b"))
        assert second["auditAnnotations"]["environment"] == "dev"

        store.upsert(policy_configmap(bad_policy(), "12"))  # refused: dev stays
        third = running.review(admission_request(deployment(), uid="c"))
        assert third["auditAnnotations"]["environment"] == "dev"
        assert "@11/" in third["auditAnnotations"]["policy-version"]
        assert cluster.policy.last_error is not None

        metrics = running.client.get(f"{running.url}/metrics").text
        assert 'rollout_webhook_policy_reloads_total{result="invalid"} 1.0' in metrics
        assert 'rollout_webhook_policy_reloads_total{result="applied"} 2.0' in metrics

        store.remove({})  # the ConfigMap is deleted: the built-in policy applies
        fourth = running.review(admission_request(deployment(), uid="d"))
        assert fourth["auditAnnotations"]["policy-version"].startswith("built-in@")
        records = {r["uid"]: r for r in running.records(4)}
        assert records["c"]["policy"]["resourceVersion"] == "11"


def test_a_fixed_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(good_policy("staging")))
    with serve(tmp_path, cluster=FakeCluster(), policy_file=path) as running:
        response = running.review(admission_request(deployment()))
        assert response["auditAnnotations"]["environment"] == "staging"


def test_a_policy_refused_at_start_leaves_the_server_ready_converting_nothing(
    tmp_path: Path,
) -> None:
    cluster = FakeCluster(policy_configmap=policy_configmap(bad_policy(), "7"))
    with serve(tmp_path, cluster=cluster, namespace=NAMESPACE) as running:
        ready = running.client.get(f"{running.url}/readyz")
        assert ready.status_code == 200
        assert "ready; policy ConfigMap refused, no policy in force: " in ready.text
        metrics = running.client.get(f"{running.url}/metrics").text
        assert 'rollout_webhook_policy_condition{condition="none"} 1.0' in metrics
        assert 'rollout_webhook_policy_condition{condition="valid"} 0.0' in metrics

        new = running.review(admission_request(deployment(), uid="new"))
        assert new["allowed"] is True
        assert "patch" not in new
        assert any("not converted: no valid policy in force" in w for w in new["warnings"])

        converted = deployment(replicas=0, annotations={"rollout-webhook.io/rollout-name": "web"})
        resync = deployment(replicas=3)  # a GitOps resync sends the chart's object again
        held = running.review(
            admission_request(resync, uid="held", old=converted, operation="UPDATE")
        )
        assert held["allowed"] is True
        assert {"op": "replace", "path": "/spec/replicas", "value": 0} in decode_patch(held)
        assert cluster.writer.applied == []

        assert cluster.policy is not None
        PolicyStore(cluster.policy).upsert(policy_configmap(good_policy("staging"), "8"))
        assert running.client.get(f"{running.url}/readyz").text == "ready\n"
        later = running.review(admission_request(deployment(), uid="later"))
        assert later["auditAnnotations"]["environment"] == "staging"


def test_a_refused_edit_is_shown_while_the_last_good_policy_is_in_force(tmp_path: Path) -> None:
    cluster = FakeCluster(policy_configmap=policy_configmap(good_policy("staging"), "10"))
    with serve(tmp_path, cluster=cluster, namespace=NAMESPACE) as running:
        assert cluster.policy is not None
        PolicyStore(cluster.policy).upsert(policy_configmap(bad_policy(), "11"))
        ready = running.client.get(f"{running.url}/readyz")
        assert ready.status_code == 200
        assert f"the last good policy {NAMESPACE}/{CONFIGMAP}@10/" in ready.text
        metrics = running.client.get(f"{running.url}/metrics").text
        assert 'rollout_webhook_policy_condition{condition="last-good"} 1.0' in metrics


def test_listeners_hear_each_change_of_the_policy_in_force_and_nothing_else() -> None:
    state = PolicyState()
    heard: list[str] = []
    state.listeners.append(lambda policy: heard.append(str(policy.version)))
    store = PolicyStore(state)
    store.replace([policy_configmap(good_policy("staging"), "10")])  # the first list
    store.upsert(policy_configmap(good_policy("staging"), "10"))  # a relist: the same
    store.upsert(policy_configmap(bad_policy(), "11"))  # refused: nothing changed
    store.upsert(policy_configmap(good_policy("dev"), "12"))
    store.remove({})  # deleted: the built-in policy
    assert [v.split("@")[0] for v in heard] == [
        f"{NAMESPACE}/{CONFIGMAP}",
        f"{NAMESPACE}/{CONFIGMAP}",
        "built-in",
    ]
    assert ["@10/" in heard[0], "@12/" in heard[1]] == [True, True]


def test_a_failing_listener_does_not_stop_the_policy_watch() -> None:
    state = PolicyState()

    def broken(policy: object) -> None:
        raise RuntimeError("bug")

    state.listeners.append(broken)
    assert state.apply_configmap(policy_configmap(good_policy("staging"), "1"))
    assert state.current is not None and state.current.default_environment == "staging"


@dataclass
class _SchemaStore:
    current: RolloutSchema | None


@dataclass
class ClusterWithCRD(FakeCluster):
    """A cluster whose Rollout CRD's watch holds the released schema."""

    rollout_schema: _SchemaStore = field(
        default_factory=lambda: _SchemaStore(released_rollout_schema())
    )


def steps_policy(*steps: dict[str, Any]) -> dict[str, Any]:
    doc = good_policy()
    doc["environments"]["prod"]["rollout"]["canary"]["steps"] = list(steps)
    return doc


HEADER_ROUTE = {
    "setHeaderRoute": {"name": "h", "match": [{"headerName": "X", "headerValue": {"exact": "1"}}]}
}


def test_the_policy_webhook_judges_strategies_by_the_served_rollout_schema(
    tmp_path: Path,
) -> None:
    with serve(tmp_path, cluster=ClusterWithCRD(), namespace=NAMESPACE) as running:
        accepted = validate(
            running, policy_configmap(steps_policy(HEADER_ROUTE, {"setWeight": 50}))
        )
        assert accepted["allowed"] is True
        assert "warnings" not in accepted
        refused = validate(running, policy_configmap(steps_policy({"setWieght": 50})))
        assert refused["allowed"] is False
        assert (
            "environments.prod.rollout.canary.steps[0].setWieght: unknown field"
            in refused["status"]["message"]
        )


def test_without_a_rollout_crd_the_policy_webhook_says_what_it_did_not_check(
    tmp_path: Path,
) -> None:
    with serve(tmp_path, cluster=FakeCluster(), namespace=NAMESPACE) as running:
        response = validate(running, policy_configmap(steps_policy({"setWieght": 50})))
        assert response["allowed"] is True
        assert response["warnings"] == [
            "rollout-webhook: no Rollout CRD in the cluster: strategies were checked by the"
            " product's rules only"
        ]


def test_a_reloaded_policy_is_judged_by_the_served_schema() -> None:
    state = PolicyState()
    state.rollout_schema = released_rollout_schema
    assert state.apply_configmap(policy_configmap(steps_policy(HEADER_ROUTE))) is True
    assert state.apply_configmap(policy_configmap(steps_policy({"setWieght": 5}), "2")) is False
    assert state.last_error is not None
    assert "steps[0].setWieght: unknown field" in str(state.last_error)
