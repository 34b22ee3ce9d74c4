"""Services, HPAs and routes that change after the conversion, and Deployments renamed or
deleted: each converges within the bound docs/reconciler.md states for it.

Every bound is timed from the change (the poll starts right after the kubectl command that
makes it) and is the documented one: ``ONE_PASS`` for what one reconcile pass after the
watch event does, plus ``ORPHAN_GRACE`` (5 s in this package) where the clean-up of a
deleted Deployment waits for it. No garbage collector runs here: what a deleted Deployment
leaves is removed by the reconciler alone (in a cluster the collector does most of it).
"""

from __future__ import annotations

import json
from typing import Any

from tests import builders
from tests.e2e import harness
from tests.e2e.scenarios.conftest import ORPHAN_GRACE_SECONDS
from tests.e2e.scenarios.support import (
    ENABLED,
    PREFIX,
    Manifest,
    Webhook,
    apply,
    converted,
    deployment,
    eventually,
    get,
    holds,
    hpa,
    scale_target,
    service,
)

ONE_PASS = 10.0
"""docs/reconciler.md: one service, one pass, from the watch event."""
ORPHAN_GRACE = float(ORPHAN_GRACE_SECONDS)
GENERATED_FOR = f"{PREFIX}deployment"


def canary_of(kubectl: harness.Tool, name: str, namespace: str) -> dict[str, Any]:
    rollout = get(kubectl, "rollout", name, namespace)
    assert rollout is not None, f"Rollout {name} is gone"
    return dict(rollout["spec"]["strategy"]["canary"])


def http_route(name: str, namespace: str, backends: list[str]) -> Manifest:
    return builders.httproute(
        name,
        namespace,
        [{"backendRefs": [{"name": b, "port": 80} for b in backends]}],
        parents=[{"name": "gateway"}],
    )


def backends(kubectl: harness.Tool, name: str, namespace: str) -> list[str] | None:
    route = get(kubectl, "httproute", name, namespace)
    if route is None:
        return None
    return [r["name"] for r in route["spec"]["rules"][0]["backendRefs"]]


def generated_for(kubectl: harness.Tool, namespace: str, deployment_name: str) -> list[str]:
    """`kind/name` of every object labelled as generated for the Deployment."""
    result = kubectl(
        "get",
        "rollouts.argoproj.io,services",
        "-n",
        namespace,
        "-l",
        f"{GENERATED_FOR}={deployment_name}",
        "-o",
        "json",
    )
    return sorted(
        f"{o['kind']}/{o['metadata']['name']}" for o in json.loads(result.stdout)["items"]
    )


def converted_web(kubectl: harness.Tool, team: str, webhook: Webhook, *extra: Manifest) -> None:
    apply(kubectl, service("web", team), *extra)
    apply(kubectl, deployment("web", team))
    eventually(lambda: converted(kubectl, "web", team), "web converted", webhook)
    eventually(lambda: get(kubectl, "service", "web-canary", team), "web-canary", webhook)


# --- Services ---------------------------------------------------------------------------------


def test_a_deleted_service_leaves_the_rollout_and_comes_back_when_recreated(
    webhook: Webhook, team: str, kubectl: harness.Tool
) -> None:
    converted_web(kubectl, team, webhook)
    assert canary_of(kubectl, "web", team)["canaryService"] == "web-canary"

    kubectl("delete", "service", "web", "-n", team)
    eventually(
        lambda: not {"stableService", "canaryService"} & set(canary_of(kubectl, "web", team)),
        "the Rollout to stop naming the deleted Service",
        webhook,
        timeout=ONE_PASS,
    )
    eventually(
        lambda: get(kubectl, "service", "web-canary", team) is None,
        "the unused canary Service to be deleted",
        webhook,
        timeout=ONE_PASS,
    )

    apply(kubectl, service("web", team))
    eventually(
        lambda: canary_of(kubectl, "web", team).get("canaryService") == "web-canary",
        "the Rollout to name the recreated Service",
        webhook,
        timeout=ONE_PASS,
    )
    eventually(
        lambda: get(kubectl, "service", "web-canary", team),
        "the canary Service again",
        webhook,
        timeout=ONE_PASS,
    )


def test_a_service_created_later_and_a_selector_moved_away(
    webhook: Webhook, team: str, kubectl: harness.Tool
) -> None:
    apply(kubectl, deployment("api", team))
    eventually(lambda: converted(kubectl, "api", team), "api converted", webhook)
    assert "canaryService" not in canary_of(kubectl, "api", team)

    apply(kubectl, service("api", team))
    eventually(
        lambda: canary_of(kubectl, "api", team).get("canaryService") == "api-canary",
        "the Rollout to name the new Service",
        webhook,
        timeout=ONE_PASS,
    )
    eventually(
        lambda: get(kubectl, "service", "api-canary", team),
        "the new Service's canary clone",
        webhook,
        timeout=ONE_PASS,
    )

    # The selector moves to pods that are not api's: the event's previous object (and the
    # Rollout that names the Service) is what still ties it to api.
    patch = {"spec": {"selector": {"app": "elsewhere"}}}
    kubectl("patch", "service", "api", "-n", team, "--type=merge", "-p", json.dumps(patch))
    eventually(
        lambda: "canaryService" not in canary_of(kubectl, "api", team),
        "the Rollout to stop naming a Service that no longer selects its pods",
        webhook,
        timeout=ONE_PASS,
    )
    eventually(
        lambda: get(kubectl, "service", "api-canary", team) is None,
        "the unused canary Service to be deleted",
        webhook,
        timeout=ONE_PASS,
    )
    assert get(kubectl, "service", "api", team) is not None  # the team's own stays


# --- HPAs and routes ---------------------------------------------------------------------------


def test_an_hpa_pointed_back_at_the_deployment_scales_the_rollout_again(
    webhook: Webhook, team: str, kubectl: harness.Tool
) -> None:
    converted_web(kubectl, team, webhook, hpa("web", team, "web"))
    eventually(
        lambda: scale_target(get(kubectl, "hpa", "web", team)) == ("Rollout", "web"),
        "the HPA to target the Rollout",
        webhook,
    )
    back = {"spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment"}}}
    kubectl("patch", "hpa", "web", "-n", team, "--type=merge", "-p", json.dumps(back))
    eventually(
        lambda: scale_target(get(kubectl, "hpa", "web", team)) == ("Rollout", "web"),
        "the HPA to target the Rollout again",
        webhook,
        timeout=ONE_PASS,
    )


def test_a_route_created_changed_and_deleted_after_the_conversion(
    webhook: Webhook, team: str, kubectl: harness.Tool
) -> None:
    converted_web(kubectl, team, webhook)
    assert "trafficRouting" not in canary_of(kubectl, "web", team)

    apply(kubectl, http_route("front", team, ["web"]))
    eventually(
        lambda: backends(kubectl, "front", team) == ["web", "web-canary"],
        "the new route's canary backend",
        webhook,
        timeout=ONE_PASS,
    )
    eventually(
        lambda: "trafficRouting" in canary_of(kubectl, "web", team),
        "the Rollout to route through the new HTTPRoute",
        webhook,
        timeout=ONE_PASS,
    )
    assert canary_of(kubectl, "web", team)["stableService"] == "web"  # a router needs both

    # The canary backend removed by hand (a sync of the route from Git, say): put back.
    lone = {"spec": {"rules": http_route("front", team, ["web"])["spec"]["rules"]}}
    kubectl("patch", "httproute", "front", "-n", team, "--type=merge", "-p", json.dumps(lone))
    eventually(
        lambda: backends(kubectl, "front", team) == ["web", "web-canary"],
        "the canary backend restored",
        webhook,
        timeout=ONE_PASS,
    )

    kubectl("delete", "httproute", "front", "-n", team)
    eventually(
        lambda: "trafficRouting" not in canary_of(kubectl, "web", team),
        "the Rollout to stop routing through the deleted HTTPRoute",
        webhook,
        timeout=ONE_PASS,
    )
    canary = canary_of(kubectl, "web", team)
    assert canary["canaryService"] == "web-canary" and "stableService" not in canary


# --- Deployments renamed or deleted ------------------------------------------------------------


def renamed(name: str, namespace: str, app: str) -> Manifest:
    """A Deployment named ``name`` whose pods are the ones ``app``'s Service selects."""
    return builders.deployment(
        name,
        namespace,
        labels={"app": app, ENABLED: "true"},
        pod_labels={"app": app},
        strategy=None,
        image="registry.example/app:2",
    )


def test_a_renamed_deployment_takes_over_and_the_old_one_leaves_nothing(
    webhook: Webhook, team: str, kubectl: harness.Tool
) -> None:
    converted_web(kubectl, team, webhook)

    apply(kubectl, renamed("web-v2", team, "web"))
    eventually(lambda: converted(kubectl, "web-v2", team), "web-v2 converted", webhook)
    assert canary_of(kubectl, "web-v2", team)["canaryService"] == "web-canary"
    # Both exist: the canary Service keeps one owner, and the two do not relabel it in turn.
    owner = eventually(
        lambda: (get(kubectl, "service", "web-canary", team) or {})["metadata"]["labels"].get(
            GENERATED_FOR
        ),
        "web-canary's owner",
        webhook,
    )
    holds(
        lambda: (
            (get(kubectl, "service", "web-canary", team) or {})["metadata"]["labels"].get(
                GENERATED_FOR
            )
            == owner
        ),
        "web-canary's owner",
        seconds=3,
    )

    kubectl("delete", "deployment", "web", "-n", team)
    eventually(
        lambda: generated_for(kubectl, team, "web") == [],
        "nothing generated for the deleted web",
        webhook,
        timeout=ORPHAN_GRACE + ONE_PASS,
    )
    eventually(
        lambda: generated_for(kubectl, team, "web-v2") == ["Rollout/web-v2", "Service/web-canary"],
        "web-canary to belong to web-v2",
        webhook,
        timeout=ORPHAN_GRACE + ONE_PASS,
    )
    assert canary_of(kubectl, "web-v2", team)["canaryService"] == "web-canary"

    kubectl("delete", "deployment", "web-v2", "-n", team)
    eventually(
        lambda: generated_for(kubectl, team, "web-v2") == [],
        "nothing generated for the deleted web-v2",
        webhook,
        timeout=ORPHAN_GRACE + ONE_PASS,
    )
    assert get(kubectl, "service", "web", team) is not None  # the team's own Service stays
