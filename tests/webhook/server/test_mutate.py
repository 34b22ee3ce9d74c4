"""POST /mutate over real HTTPS: the answer, the patch, the writes and the audit record."""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from typing import Any

from tests import builders
from tests.builders import ALICE, admission_request
from tests.webhook.server.conftest import CONTROLLER, FakeCluster, deployment, serve, service
from webhook.core.review import MAX_WARNING_LENGTH, UserInfo, apply_patch, decode_patch
from webhook.kube.view import MemoryClusterView

KEY = "rollout-webhook.io/"


def cluster_with(*objects: dict[str, Any]) -> FakeCluster:
    return FakeCluster(view=MemoryClusterView(objects))


def test_converts_a_labelled_deployment_and_echoes_the_uid(tmp_path: Path) -> None:
    cluster = cluster_with(service())
    with serve(tmp_path, cluster=cluster) as running:
        obj = deployment()
        response = running.review(admission_request(obj, uid="uid-123"))
        # Written before the answer left: no waiting, no flush.
        assert '"uid":"uid-123"' in running.audit_stream.getvalue()
        assert response["uid"] == "uid-123"
        assert response["allowed"] is True
        assert response["patchType"] == "JSONPatch"
        patched = apply_patch(obj, decode_patch(response))
        annotations = patched["metadata"]["annotations"]
        assert annotations[f"{KEY}rollout-name"] == "web"
        assert annotations[f"{KEY}original-replicas"] == "3"
        assert patched["spec"]["replicas"] == 0  # on CREATE the pods come from the Rollout
        # Only what the conversion changed: the rest of the object is as sent.
        assert patched["spec"]["template"] == obj["spec"]["template"]
        assert response["auditAnnotations"]["decision"] == "convert"
        assert response["auditAnnotations"]["environment"] == "prod"
        assert response["auditAnnotations"]["strategy"] == "canary"
        assert response["auditAnnotations"]["policy-version"].startswith("built-in@")

        (record,) = running.records(1)
        assert record["uid"] == "uid-123"
        assert record["decision"] == "convert"
        assert record["user"] == "alice"
        assert record["patch"] == decode_patch(response)
        assert record["policy"]["name"] == "built-in"
        assert len(record["policy"]["sha256"]) == 64
        wanted = {(c["kind"], c["name"]) for c in record["changes"]["wanted"]}
        assert wanted == {("Rollout", "web"), ("Service", "web-canary")}
        # Recorded before the answer: the writes are still to come.
        assert {c["result"] for c in record["changes"]["made"]} == {"pending"}
        writes = running.writes("uid-123")
        made = {(c["kind"], c["name"], c["result"]) for c in writes["changes"]["made"]}
        assert made == {("Rollout", "web", "applied"), ("Service", "web-canary", "applied")}
        assert writes["decision"] == "convert"
    kinds = sorted(m["kind"] for m in cluster.writer.applied)
    assert kinds == ["Rollout", "Service"]
    rollout = next(m for m in cluster.writer.applied if m["kind"] == "Rollout")
    assert rollout["spec"]["workloadRef"]["name"] == "web"
    assert rollout["spec"]["replicas"] == 3


def test_reinvocation_of_the_patched_object_gives_no_patch(tmp_path: Path) -> None:
    with serve(tmp_path, cluster=cluster_with(service())) as running:
        obj = deployment()
        first = running.review(admission_request(obj))
        patched = apply_patch(obj, decode_patch(first))
        again = running.review(admission_request(patched, uid="second"))
        assert again["allowed"] is True
        assert "patch" not in again
        assert again["auditAnnotations"]["decision"] == "convert"


def test_update_of_a_converted_deployment_is_stable(tmp_path: Path) -> None:
    with serve(tmp_path, cluster=cluster_with(service())) as running:
        obj = deployment()
        stored = apply_patch(obj, decode_patch(running.review(admission_request(obj))))
        update = copy.deepcopy(stored)
        update["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28"
        response = running.review(admission_request(update, operation="UPDATE", old=stored))
        assert response["allowed"] is True
        assert apply_patch(update, decode_patch(response)) == update


def test_objects_not_opted_in_and_deletes_pass_unpatched(tmp_path: Path) -> None:
    with serve(tmp_path, cluster=cluster_with()) as running:
        plain = deployment(labels={})
        response = running.review(admission_request(plain))
        assert response == {
            "uid": response["uid"],
            "allowed": True,
            "auditAnnotations": {
                "decision": "skip",
                "policy-version": response["auditAnnotations"]["policy-version"],
            },
        }
        deleted = running.review(admission_request(None, operation="DELETE", old=deployment()))
        assert deleted["allowed"] is True
        assert "patch" not in deleted
        records = running.records(2)
        assert [r["decision"] for r in records] == ["skip", "skip"]
        assert "DELETE" in records[1]["reason"]


def test_the_rollouts_controller_and_the_webhook_itself_pass_through(tmp_path: Path) -> None:
    cluster = cluster_with(service())
    with serve(tmp_path, cluster=cluster, namespace="rollout-system") as running:
        obj = deployment(replicas=0)
        for user in (CONTROLLER, "system:serviceaccount:rollout-system:rollout-webhook"):
            response = running.review(admission_request(obj, user={"username": user}))
            assert response["allowed"] is True
            assert "patch" not in response
            assert response["auditAnnotations"]["decision"] == "skip"
        records = running.records(2)
        assert all("passes through" in r["reason"] for r in records)
    assert cluster.writer.applied == []
    assert cluster.writer.reviews == []


def test_dry_run_returns_the_same_patch_and_writes_nothing(tmp_path: Path) -> None:
    cluster = cluster_with(service())
    with serve(tmp_path, cluster=cluster) as running:
        obj = deployment()
        dry = running.review(admission_request(obj, uid="dry", dry_run=True))
        real = running.review(admission_request(obj, uid="real"))
        assert decode_patch(dry) == decode_patch(real) != []
        records = {r["uid"]: r for r in running.records(2)}
        assert records["dry"]["dryRun"] is True
        assert {c["result"] for c in records["dry"]["changes"]["made"]} == {"skipped: dry run"}
        assert records["real"]["dryRun"] is False
    # Only the real request wrote, and only once per object.
    assert sorted(m["kind"] for m in cluster.writer.applied) == ["Rollout", "Service"]


def test_a_user_who_may_not_create_rollouts_gets_no_conversion(tmp_path: Path) -> None:
    cluster = cluster_with(service())
    cluster.writer.allowed_users = set()
    with serve(tmp_path, cluster=cluster) as running:
        obj = deployment()
        response = running.review(admission_request(obj, user=ALICE))
        assert response["allowed"] is True
        # Unconverted; only marked so that the reconciler does not convert it for alice.
        assert decode_patch(response) == [
            {
                "op": "add",
                "path": "/metadata/annotations",
                "value": {f"{KEY}refused": "alice may not create rollouts.argoproj.io"},
            }
        ]
        assert response["auditAnnotations"]["decision"] == "refuse"
        (warning,) = [w for w in response["warnings"] if "rollouts.argoproj.io" in w]
        assert "alice" in warning
        assert "shop" in warning
        (record,) = running.records(1)
        assert record["decision"] == "refuse"
        assert "no RBAC rule allows it" in record["reason"]
        assert record["changes"] == {"wanted": [], "made": []}
    assert cluster.writer.applied == []
    user, namespace = cluster.writer.reviews[0]
    assert user["groups"] == ALICE["groups"]
    assert namespace == "shop"


def test_warnings_are_at_most_120_characters(tmp_path: Path) -> None:
    cluster = cluster_with()
    cluster.writer.allowed_users = set()
    with serve(tmp_path, cluster=cluster) as running:
        long_user: UserInfo = {"username": "system:serviceaccount:" + "x" * 200 + ":deployer"}
        response = running.review(admission_request(deployment(), user=long_user))
        assert response["warnings"]
        assert all(len(w) <= MAX_WARNING_LENGTH for w in response["warnings"])


def test_writes_of_a_create_wait_until_the_object_is_stored(tmp_path: Path) -> None:
    cluster = cluster_with(service())
    with serve(tmp_path, cluster=cluster, write_timeout_seconds=0.5) as running:
        # A later admission step refuses the Deployment: it is never stored.
        running.review(admission_request(deployment(), uid="refused-later"), store=False)
        record = running.writes("refused-later")
        results = {c["result"] for c in record["changes"]["made"]}
        assert len(results) == 1
        assert results.pop() == (
            "skipped: after 0.5s: Deployment shop/web is not stored "
            "(refused by a later admission step?); nothing written"
        )
    assert cluster.writer.applied == []


def test_failed_writes_are_audited_as_wanted_but_not_made(tmp_path: Path) -> None:
    cluster = cluster_with(service())
    cluster.writer.fail_kinds = {"Rollout"}
    with serve(tmp_path, cluster=cluster) as running:
        running.review(admission_request(deployment(), uid="w"))
        record = running.writes("w")
        made = {c["kind"]: c["result"] for c in record["changes"]["made"]}
        assert made["Rollout"].startswith("failed: the API server refused the Rollout")
        assert made["Service"] == "applied"
        metrics = running.client.get(f"{running.url}/metrics").text
        assert 'rollout_webhook_cluster_writes_total{kind="Rollout",result="failed"} 1.0' in metrics


def test_hpa_of_a_converted_deployment_is_retargeted(tmp_path: Path) -> None:
    stored = deployment(annotations={f"{KEY}rollout-name": "web", f"{KEY}original-replicas": "3"})
    cluster = cluster_with(stored, service())
    hpa: dict[str, Any] = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 2,
            "maxReplicas": 10,
        },
    }
    with serve(tmp_path, cluster=cluster) as running:
        kind = ("autoscaling", "v2", "HorizontalPodAutoscaler")
        response = running.review(admission_request(hpa, kind=kind))
        patched = apply_patch(hpa, decode_patch(response))
        assert patched["spec"]["scaleTargetRef"] == {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "name": "web",
        }
        assert patched["spec"]["maxReplicas"] == 10
        again = running.review(admission_request(patched, kind=kind, operation="UPDATE", old=hpa))
        assert "patch" not in again
        other = copy.deepcopy(hpa)
        other["spec"]["scaleTargetRef"]["name"] = "api"
        assert "patch" not in running.review(admission_request(other, kind=kind))


def test_httproute_of_a_converted_service_gets_the_canary_backend(tmp_path: Path) -> None:
    stored = deployment(annotations={f"{KEY}rollout-name": "web", f"{KEY}original-replicas": "3"})
    cluster = cluster_with(stored, service())
    route: dict[str, Any] = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "parentRefs": [{"name": "gateway"}],
            "rules": [{"backendRefs": [{"name": "web", "port": 80}]}],
        },
    }
    kind = ("gateway.networking.k8s.io", "v1", "HTTPRoute")
    with serve(tmp_path, cluster=cluster) as running:
        response = running.review(admission_request(route, kind=kind, uid="route"))
        patched = apply_patch(route, decode_patch(response))
        refs = patched["spec"]["rules"][0]["backendRefs"]
        assert {r["name"]: r["weight"] for r in refs} == {"web": 100, "web-canary": 0}
        again = running.review(admission_request(patched, kind=kind, operation="UPDATE"))
        assert "patch" not in again
        unrelated = copy.deepcopy(route)
        unrelated["spec"]["rules"][0]["backendRefs"][0]["name"] = "api"
        assert "patch" not in running.review(admission_request(unrelated, kind=kind))
        records = {r["uid"]: r for r in running.records(3)}
        assert records["route"]["decision"] == "convert"
        wanted = {(c["kind"], c["name"]) for c in records["route"]["changes"]["wanted"]}
        assert ("Rollout", "web") in wanted


def test_internal_error_admits_with_a_warning_and_is_audited(tmp_path: Path) -> None:
    with serve(tmp_path, cluster=cluster_with()) as running:

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise KeyError("boom")

        running.server.engine.decide = broken
        response = running.review(admission_request(deployment(), uid="err"))
        assert response["allowed"] is True
        assert "patch" not in response
        assert any("internal error" in w for w in response["warnings"])
        (record,) = running.records(1)
        assert record["decision"] == "error"
        assert "KeyError" in record["reason"]


def test_internal_error_denies_when_fail_closed(tmp_path: Path) -> None:
    with serve(tmp_path, cluster=cluster_with(), fail_closed=True) as running:

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise KeyError("boom")

        running.server.engine.decide = broken
        response = running.review(admission_request(deployment()))
        assert response["allowed"] is False
        assert response["status"]["code"] == 500
        assert "fail-closed" in response["status"]["message"]


def test_timeout_query_bounds_the_answer(tmp_path: Path) -> None:
    cluster = cluster_with(service())
    cluster.writer.review_delay = 3.0  # a permission check that hangs
    with serve(tmp_path, cluster=cluster, access_review_timeout_seconds=10) as running:
        started = time.monotonic()
        response = running.review(admission_request(deployment()), query="?timeout=1s")
        elapsed = time.monotonic() - started
        assert elapsed < 2.0  # bounded by ?timeout=1s, not by the 3 s check
        assert response["allowed"] is True
        assert response["auditAnnotations"]["decision"] == "refuse"
        (warning,) = [w for w in response["warnings"] if "not converted" in w]
        assert "timed out" in warning
        patched = apply_patch(deployment(), decode_patch(response))
        # Every right the writes need timed out: the Rollout's, then the canary Service's.
        assert patched["metadata"]["annotations"] == {
            f"{KEY}refused": "alice may not create rollouts.argoproj.io, create services"
        }


def test_virtualservice_of_a_converted_service_gets_the_canary_destination(
    tmp_path: Path,
) -> None:
    stored = deployment(annotations={f"{KEY}rollout-name": "web", f"{KEY}original-replicas": "3"})
    cluster = cluster_with(stored, service())
    vs: dict[str, Any] = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "hosts": ["web.example.com"],
            "http": [{"route": [{"destination": {"host": "web", "port": {"number": 80}}}]}],
        },
    }
    kind = ("networking.istio.io", "v1", "VirtualService")
    with serve(tmp_path, cluster=cluster) as running:
        response = running.review(admission_request(vs, kind=kind))
        patched = apply_patch(vs, decode_patch(response))
        route = patched["spec"]["http"][0]["route"]
        assert [(d["destination"]["host"], d["weight"]) for d in route] == [
            ("web", 100),
            ("web-canary", 0),
        ]
        again = running.review(admission_request(patched, kind=kind, operation="UPDATE"))
        assert "patch" not in again


def test_a_user_without_rollout_rights_keeps_an_existing_conversion_but_writes_nothing(
    tmp_path: Path,
) -> None:
    """An update (e.g. a GitOps sync putting replicas back) of a Deployment converted
    earlier must stay converted, or Deployment and Rollout would both run pods."""
    cluster = cluster_with(service())
    with serve(tmp_path, cluster=cluster) as running:
        obj = deployment()
        first = running.review(admission_request(obj, uid="first"))
        stored = apply_patch(obj, decode_patch(first))
        running.writes("first")
        cluster.writer.allowed_users = set()
        applied_before = len(cluster.writer.applied)
        resync = deployment(replicas=3)  # what Git says, without the product's annotations
        response = running.review(
            admission_request(
                resync, operation="UPDATE", old=stored, user={"username": "ci"}, uid="sync"
            )
        )
        patched = apply_patch(resync, decode_patch(response))
        assert patched["metadata"]["annotations"][f"{KEY}rollout-name"] == "web"
        assert patched["spec"]["replicas"] == stored["spec"]["replicas"]
        assert any(
            "no changes written on your behalf (" in w and "ci may not" in w
            for w in response["warnings"]
        )
        records = {r["uid"]: r for r in running.records(2)}
        assert records["sync"]["changes"]["wanted"] == []
    assert len(cluster.writer.applied) == applied_before


def test_a_deployment_named_by_generate_name_is_left_to_the_reconciler(tmp_path: Path) -> None:
    with serve(tmp_path, cluster=cluster_with(service())) as running:
        obj = deployment()
        del obj["metadata"]["name"]
        obj["metadata"]["generateName"] = "web-"
        request = admission_request(obj)
        request["name"] = ""
        response = running.review(request, store=False)
        assert "patch" not in response
        (record,) = running.records(1)
        assert record["decision"] == "skip"
        assert "generateName" in record["reason"]


def test_a_refused_deployment_converts_once_an_allowed_user_applies_it(tmp_path: Path) -> None:
    cluster = cluster_with(service())
    cluster.writer.allowed_users = {"admin"}
    with serve(tmp_path, cluster=cluster) as running:
        obj = deployment()
        refused = apply_patch(obj, decode_patch(running.review(admission_request(obj))))
        assert f"{KEY}refused" in refused["metadata"]["annotations"]
        update = copy.deepcopy(refused)
        response = running.review(
            admission_request(update, operation="UPDATE", old=refused, user={"username": "admin"})
        )
        converted = apply_patch(update, decode_patch(response))
        annotations = converted["metadata"]["annotations"]
        assert annotations[f"{KEY}rollout-name"] == "web"
        assert f"{KEY}refused" not in annotations


def test_writes_for_one_object_run_in_admission_order(tmp_path: Path) -> None:
    """Rapid resizes: each job writes what is stored when it runs (the admitted version or
    a later one), in admission order, so no job puts back an older size than one before
    it wrote, and the last size asked for is the one that stays."""
    cluster = cluster_with(service())
    cluster.writer.apply_delays = [0.4]  # the first apply is slow: later jobs must wait
    with serve(tmp_path, cluster=cluster) as running:
        obj = deployment(replicas=3)
        stored = apply_patch(obj, decode_patch(running.review(admission_request(obj, uid="u0"))))
        previous = stored
        for replicas in range(4, 9):  # `kubectl scale`: each update asks for a new size
            update = copy.deepcopy(previous)
            update["spec"]["replicas"] = replicas
            response = running.review(
                admission_request(update, uid=f"u{replicas}", operation="UPDATE", old=previous)
            )
            previous = apply_patch(update, decode_patch(response))
        for uid in ("u0", *(f"u{r}" for r in range(4, 9))):
            running.writes(uid)
    sizes = [m["spec"]["replicas"] for m in cluster.writer.applied if m["kind"] == "Rollout"]
    assert len(sizes) == 6  # one write per admission
    assert sizes == sorted(sizes)
    assert sizes[-1] == 8


def test_a_route_to_two_converted_services_gets_both_canary_backends(tmp_path: Path) -> None:
    converted = {f"{KEY}rollout-name": "x", f"{KEY}original-replicas": "2"}
    web = deployment("web", annotations={**converted, f"{KEY}rollout-name": "web"})
    api = deployment("api", annotations={**converted, f"{KEY}rollout-name": "api"})
    other = deployment("other", annotations={**converted, f"{KEY}rollout-name": "other"})
    cluster = cluster_with(
        web, api, other, service("web"), service("api", app="api"), service("other", app="other")
    )
    route: dict[str, Any] = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "shop", "namespace": "shop"},
        "spec": {
            "rules": [
                {
                    "matches": [{"path": {"value": "/"}}],
                    "backendRefs": [{"name": "web", "port": 80}],
                },
                {
                    "matches": [{"path": {"value": "/api"}}],
                    "backendRefs": [{"name": "api", "port": 80}],
                },
            ]
        },
    }
    kind = ("gateway.networking.k8s.io", "v1", "HTTPRoute")
    with serve(tmp_path, cluster=cluster) as running:
        response = running.review(admission_request(route, kind=kind, uid="r"))
        patched = apply_patch(route, decode_patch(response))
        names = [[r["name"] for r in rule["backendRefs"]] for rule in patched["spec"]["rules"]]
        assert names == [["web", "web-canary"], ["api", "api-canary"]]
        (record,) = running.records(1)
        assert "web" in record["reason"]
        assert "api" in record["reason"]
        assert "other" not in record["reason"]
        rollouts = {c["name"] for c in record["changes"]["wanted"] if c["kind"] == "Rollout"}
        assert rollouts == {"web", "api"}


def test_a_full_write_queue_leaves_the_writes_to_the_reconciler(tmp_path: Path) -> None:
    cluster = cluster_with(service())
    with serve(tmp_path, cluster=cluster) as running:
        worker = running.server.engine.worker
        assert worker is not None
        worker.max_pending = 0  # as if the API server had been failing for a while
        running.review(admission_request(deployment(), uid="full"))
        record = running.writes("full")
        results = {c["result"] for c in record["changes"]["made"]}
        assert results == {"skipped: 0 writes already waiting; left to the reconciler"}
    assert cluster.writer.applied == []


def test_a_slow_permission_check_does_not_hold_up_other_requests(tmp_path: Path) -> None:
    cluster = cluster_with(service())
    cluster.writer.review_delay = 3.0
    with serve(tmp_path, cluster=cluster) as running:
        slow = threading.Thread(
            target=running.review, args=(admission_request(deployment(), uid="slow"),)
        )
        slow.start()
        time.sleep(0.2)  # the slow review is now waiting on the SubjectAccessReview
        started = time.monotonic()
        quick = running.review(
            admission_request(deployment("other", labels={}), uid="quick"), store=False
        )
        assert time.monotonic() - started < 1.0  # not the 3 s the other request waits
        assert quick["uid"] == "quick"
        assert slow.is_alive()
        slow.join(timeout=10)


def test_writes_made_after_waiting_are_planned_on_the_caches_as_they_are_then(
    tmp_path: Path,
) -> None:
    """`kubectl apply` of a Deployment and its Service together: the Service can reach the
    caches after the Deployment's admission. The writes wait for the Deployment anyway, and
    are planned again then, so the Rollout gets the Service (and its canary) at once."""
    cluster = cluster_with()
    with serve(tmp_path, cluster=cluster, write_timeout_seconds=5) as running:
        obj = deployment()
        response = running.review(admission_request(obj, uid="together"), store=False)
        (decision,) = running.records(1)
        assert {c["kind"] for c in decision["changes"]["wanted"]} == {"Rollout"}
        cluster.view.put(service())
        cluster.view.put(apply_patch(obj, decode_patch(response)))
        record = running.writes("together")
    assert {c["kind"]: c["result"] for c in record["changes"]["made"]} == {
        "Rollout": "applied",
        "Service": "applied",
    }
    (rollout,) = [m for m in cluster.writer.applied if m["kind"] == "Rollout"]
    canary = rollout["spec"]["strategy"]["canary"]
    assert canary["canaryService"] == "web-canary"


# --- kubectl scale deployment: the scale subresource -------------------------------------------

CONVERTED = {f"{KEY}rollout-name": "web", f"{KEY}original-replicas": "3"}


def converted_web() -> FakeCluster:
    """shop/web converted and drained, its Rollout at 3."""
    rollout = builders.rollout("web", "shop", replicas=3)
    web = deployment(replicas=0, annotations=CONVERTED)
    web["metadata"]["uid"] = "uid-web"  # the Scale's (builders.scale)
    return cluster_with(web, service(), rollout)


def test_a_scale_of_a_converted_deployment_goes_to_the_rollout(tmp_path: Path) -> None:
    cluster = converted_web()
    with serve(tmp_path, cluster=cluster) as running:
        request = builders.scale_request("web", "shop", replicas=6, current=0, uid="scale")
        response = running.review(request)
        assert response["allowed"] is True
        # The Deployment keeps the count it has: its pods come from the Rollout only.
        assert apply_patch(request["object"], decode_patch(response))["spec"]["replicas"] == 0
        assert response["warnings"] == [
            "Deployment web is managed by Rollout web: scaled the Rollout to 6; "
            "the Deployment stays at 0"
        ]
        (record,) = running.records(1)
        assert (record["objectKind"], record["name"], record["decision"]) == (
            "Deployment",
            "web",
            "convert",
        )
        assert record["extra"] == {"subresource": "scale"}
        writes = running.writes("scale")
        assert [(c["kind"], c["result"]) for c in writes["changes"]["made"]] == [
            ("Rollout", "applied")
        ]
        metrics = running.client.get(f"{running.url}/metrics").text
        assert 'kind="Deployment/scale",operation="UPDATE"' in metrics
    [rollout] = cluster.writer.applied
    assert rollout["kind"] == "Rollout" and rollout["spec"]["replicas"] == 6
    # The whole Rollout is applied (an apply of only the count would drop the fields the
    # product's field manager owns).
    assert rollout["spec"]["workloadRef"]["name"] == "web"
    assert rollout["spec"]["strategy"]["canary"]["steps"]
    # Asked as kubectl scale rollout would need it, for that Rollout only.
    [(user, namespace, name)] = cluster.writer.scale_reviews
    assert (user["username"], namespace, name) == ("alice", "shop", "web")
    assert cluster.writer.reviews == []


def test_a_scale_by_a_user_who_may_not_scale_the_rollout_is_denied(tmp_path: Path) -> None:
    cluster = converted_web()
    cluster.writer.scalers = set()
    with serve(tmp_path, cluster=cluster) as running:
        request = builders.scale_request("web", "shop", replicas=6, current=0, user=ALICE)
        response = running.review(request)
        assert response["allowed"] is False
        assert response["status"]["code"] == 403
        assert response["status"]["message"] == (
            "rollout-webhook: alice may not scale rollouts.argoproj.io/web in namespace shop "
            "(no RBAC rule allows it); Deployment web is managed by Rollout web: "
            "kubectl scale rollout web --replicas=6"
        )
        assert "patch" not in response
        (record,) = running.records(1)
        assert record["decision"] == "deny"
        assert record["changes"] == {"wanted": [], "made": []}
    assert cluster.writer.applied == []


def test_a_dry_run_scale_gets_the_patch_and_writes_nothing(tmp_path: Path) -> None:
    cluster = converted_web()
    with serve(tmp_path, cluster=cluster) as running:
        request = builders.scale_request("web", "shop", replicas=6, current=0, dry_run=True)
        response = running.review(request)
        assert apply_patch(request["object"], decode_patch(response))["spec"]["replicas"] == 0
        (record,) = running.records(1)
        assert {c["result"] for c in record["changes"]["made"]} == {"skipped: dry run"}
    assert cluster.writer.applied == []


def test_a_scale_of_a_plain_deployment_passes_untouched(tmp_path: Path) -> None:
    cluster = cluster_with(deployment(labels={}), service())
    with serve(tmp_path, cluster=cluster) as running:
        request = builders.scale_request("web", "shop", replicas=6, current=3)
        response = running.review(request)
        assert response["allowed"] is True
        assert "patch" not in response and "warnings" not in response
        (record,) = running.records(1)
        assert (record["decision"], record["reason"]) == ("skip", "Deployment web is not converted")
    assert cluster.writer.applied == []
    assert cluster.writer.scale_reviews == []
