"""The benchmark's generated objects and bodies are what they claim to be."""

from __future__ import annotations

import collections
import json

import pytest

from bench.fixtures import (
    PER_NAMESPACE,
    REQUEST_NAMESPACE,
    cluster_objects,
    request_bodies,
)
from webhook.core.admission import decide_mutation
from webhook.core.keys import DEFAULT_KEYS
from webhook.core.policy import builtin_policy
from webhook.core.review import parse_review
from webhook.kube.view import MemoryClusterView


def test_each_service_is_cached_converted_with_its_neighbours() -> None:
    objects = list(cluster_objects(25, builtin_policy()))
    kinds = collections.Counter(
        o["kind"] for o in objects if o["metadata"].get("namespace") != REQUEST_NAMESPACE
    )
    namespaces = -(-25 // PER_NAMESPACE)  # three namespaces hold 25 services
    assert kinds["Rollout"] == 25
    assert kinds["Deployment"] == 25
    assert kinds["Service"] == 50  # stable and canary
    assert kinds["HorizontalPodAutoscaler"] == 25
    assert kinds["HTTPRoute"] == 25
    assert kinds["Namespace"] == namespaces + 1  # and the requests' namespace
    for obj in objects:
        if obj["kind"] == "Deployment" and obj["metadata"]["name"].startswith("svc-"):
            assert obj["metadata"]["annotations"][DEFAULT_KEYS.rollout_name]
        if obj["kind"] == "HorizontalPodAutoscaler" and obj["metadata"]["name"].startswith("svc-"):
            assert obj["spec"]["scaleTargetRef"]["kind"] == "Rollout"
        assert obj["metadata"]["uid"]
        assert "managedFields" not in obj["metadata"]
    keys = [MemoryClusterView.key(o) for o in objects]
    assert len(keys) == len(set(keys)), "every object is generated once"


@pytest.mark.parametrize("crowded", [False, True])
def test_each_case_body_gets_the_decision_it_is_meant_to_measure(crowded: bool) -> None:
    view = MemoryClusterView(cluster_objects(10, builtin_policy(), crowded=crowded))
    expected = {"convert": "convert", "not-opted-in": "skip", "hpa-update": "convert"}
    bodies = request_bodies()
    for case, decision in expected.items():
        request = parse_review(json.loads(bodies[case]))
        plan = decide_mutation(request, view, builtin_policy(), keys=DEFAULT_KEYS)
        assert plan.decision == decision, (case, plan.reason)
        assert (plan.mutated is not None) == (decision == "convert"), case
    assert bodies["baseline"] == bodies["convert"]


def test_the_converted_deployment_the_create_waits_for_is_in_the_cache() -> None:
    # The write worker applies a CREATE's changes once the object is stored; the cache
    # holds it, as the watch would deliver it, so a run does not time out on each write.
    view = MemoryClusterView(cluster_objects(10, builtin_policy()))
    stored = view.get("Deployment", REQUEST_NAMESPACE, "web")
    assert stored is not None
    assert stored["metadata"]["annotations"][DEFAULT_KEYS.rollout_name] == "web"


def test_crowded_puts_every_service_in_the_requests_namespace() -> None:
    view = MemoryClusterView(cluster_objects(25, builtin_policy(), crowded=True))
    rollouts = view.list("Rollout", REQUEST_NAMESPACE)
    assert len(rollouts) == 25 + 1  # and the "api" service of the HPA case
    assert [n["metadata"]["name"] for n in view.list("Namespace", "")] == [REQUEST_NAMESPACE]


def test_a_fleet_with_one_crowded_namespace_spreads_the_rest() -> None:
    view = MemoryClusterView(cluster_objects(35, builtin_policy(), crowded_services=15))
    assert len(view.list("Rollout", REQUEST_NAMESPACE)) == 15 + 1  # and "api"
    assert len(view.list("Rollout", "")) == 35 + 1
    spread = [n["metadata"]["name"] for n in view.list("Namespace", "")]
    assert len(spread) == 2 + 1  # 20 services in namespaces of 10, and the crowded one
    keys = [
        MemoryClusterView.key(o) for o in cluster_objects(35, builtin_policy(), crowded_services=15)
    ]
    assert len(keys) == len(set(keys)), "every object is generated once"
