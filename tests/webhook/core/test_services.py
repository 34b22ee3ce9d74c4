"""The stable Service of a Deployment and its canary clone, through the planner."""

from __future__ import annotations

import pytest

from tests.builders import opted_in, service
from tests.webhook.core.conftest import plan
from webhook.core.convert import Neighbours
from webhook.core.keys import DEFAULT_KEYS as K
from webhook.core.objects import applied_hash

# --- Services ------------------------------------------------------------------


def test_canary_service_clone() -> None:
    svc = service()
    svc["spec"].update(type="LoadBalancer", clusterIP="10.0.0.1")
    svc["spec"]["ports"][0]["nodePort"] = 30080
    result = plan(opted_in(), neighbours=Neighbours(services=(svc,)))
    clone = result.services[0]
    assert clone["metadata"]["annotations"] == {K.applied_hash: applied_hash(clone, K)}
    assert result.services == (
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "web-canary",
                "namespace": "prod",
                "labels": {K.managed: "true", K.generated_for: "web"},
                "annotations": {K.applied_hash: applied_hash(clone, K)},
            },
            "spec": {
                "type": "ClusterIP",
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            },
        },
    )
    # No traffic router: the split is by replica count through `web` itself, which Argo
    # would pin to the stable pods if the Rollout named it.
    canary = result.rollout["spec"]["strategy"]["canary"]
    assert "stableService" not in canary
    assert canary["canaryService"] == "web-canary"


@pytest.mark.parametrize(
    "selector",
    [{"app": "other"}, {"app": "web", "tier": "x"}, {}],
    ids=["other-app", "not-a-subset", "no-selector"],
)
def test_services_that_do_not_select_the_pods_are_ignored(selector: dict[str, str]) -> None:
    result = plan(opted_in(), neighbours=Neighbours(services=(service(selector=selector),)))
    assert result.services == ()
    assert any("canary by replica count only" in w for w in result.warnings)


def test_bluegreen_without_a_service_is_refused() -> None:
    result = plan(opted_in(annotations={K.strategy: "bluegreen"}))
    assert result.decision == "refuse"
    assert "blue-green needs a Service that selects the pods; none does" in result.warnings


def test_several_services_prefer_the_one_named_as_the_deployment() -> None:
    result = plan(
        opted_in(),
        neighbours=Neighbours(services=(service("a-web", selector={"app": "web"}), service())),
    )
    assert result.rollout["spec"]["strategy"]["canary"]["canaryService"] == "web-canary"
    assert not any("Services select" in w for w in result.warnings)


def test_long_service_names_stay_dns_labels() -> None:
    long = "a" * 60
    result = plan(
        opted_in(long, pod_labels={"app": "x"}),
        neighbours=Neighbours(services=(service(long, selector={"app": "x"}),)),
    )
    assert all(len(s["metadata"]["name"]) <= 63 for s in result.services)


def test_generated_objects_are_never_candidates() -> None:
    first = plan(opted_in(), neighbours=Neighbours(services=(service(),)))
    again = plan(first.deployment, neighbours=Neighbours(services=(service(), *first.services)))
    assert again.rollout == first.rollout


def test_services_argo_pinned_still_belong_to_the_deployment() -> None:
    """Argo adds rollouts-pod-template-hash to the Services' selectors; a later update of the
    converted Deployment must still find them (and never copy the pin to the canary)."""
    first = plan(opted_in(), neighbours=Neighbours(services=(service(),)))
    pinned = service()
    pinned["spec"]["selector"]["rollouts-pod-template-hash"] = "6d4f"
    canary = {
        **first.services[0],
        "spec": {
            **first.services[0]["spec"],
            "selector": {"app": "web", "rollouts-pod-template-hash": "77aa"},
        },
    }
    again = plan(
        first.deployment,
        neighbours=Neighbours(services=(pinned, canary), rollouts=(first.rollout,)),
        operation="UPDATE",
        old_deployment=first.deployment,
    )
    assert again.converted
    assert again.rollout == first.rollout
    assert again.services == first.services
    bluegreen = plan(
        opted_in(annotations={K.strategy: "bluegreen"}), neighbours=Neighbours(services=(pinned,))
    )
    assert bluegreen.converted
    assert bluegreen.services[0]["spec"]["selector"] == {"app": "web"}
