"""The admission decision by kind, without a server: tables of requests and cached objects
against ``decide_deployment``, ``decide_hpa``, ``decide_route`` and ``decide_mutation``.

The caches are a small reader of the objects given (``Caches``); the patch is the one the
server would send (``patch_for``). tests/webhook/server/test_mutate.py proves the same
decisions reach the API server over HTTPS, with their writes and audit records.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from tests import builders
from tests.builders import Obj
from webhook.core.admission import (
    decide_deployment,
    decide_deployment_scale,
    decide_hpa,
    decide_mutation,
    decide_route,
    deployment_neighbours,
    mark_refused,
    neighbours_of,
    permissions_for,
    plan_scale_refused,
    plan_without_policy,
    plan_without_writes,
)
from webhook.core.cluster import ClusterReader, Permission
from webhook.core.index import index_keys
from webhook.core.keys import DEFAULT_KEYS
from webhook.core.keys import DEFAULT_KEYS as K
from webhook.core.policy import builtin_policy
from webhook.core.review import (
    AdmissionPlan,
    AdmissionRequest,
    apply_patch,
    patch_for,
)

POLICY = builtin_policy()
NS = "prod"
DEPLOYMENT = ("apps", "v1", "Deployment")
HPA = ("autoscaling", "v2", "HorizontalPodAutoscaler")
HTTPROUTE = ("gateway.networking.k8s.io", "v1", "HTTPRoute")
VIRTUALSERVICE = ("networking.istio.io", "v1", "VirtualService")

ROLLOUT_NAME = K.rollout_name
ORIGINAL_REPLICAS = K.original_replicas


def converted(name: str = "web", ns: str = NS, **kw: Any) -> Obj:
    """A Deployment as the caches hold it once converted: opted in and annotated."""
    annotations = {ROLLOUT_NAME: name, ORIGINAL_REPLICAS: "3", **kw.pop("annotations", {})}
    return builders.opted_in(name, ns, annotations=annotations, **kw)


class Caches:
    """The cluster as the core reads it (``ClusterReader``): the objects given, by kind and
    namespace, and by the index keys of ``webhook.core.index``."""

    def __init__(self, *objects: Obj) -> None:
        self.objects = [copy.deepcopy(o) for o in objects]

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = [o for o in self.list(kind, namespace) if o["metadata"]["name"] == name]
        return found[0] if found else None

    def list(self, kind: str, namespace: str) -> tuple[dict[str, Any], ...]:
        return tuple(
            o
            for o in self.objects
            if o["kind"] == kind and (not namespace or o["metadata"].get("namespace") == namespace)
        )

    def indexed(self, kind: str, namespace: str, keys: Iterable[str]) -> tuple[dict[str, Any], ...]:
        wanted = set(keys)
        return tuple(o for o in self.list(kind, namespace) if index_keys(kind, o) & wanted)


def review(obj: Obj | None, kind: tuple[str, str, str] = DEPLOYMENT, **kw: Any) -> AdmissionRequest:
    return cast(AdmissionRequest, builders.admission_request(obj, kind=kind, **kw))


def decide(
    decision: Callable[..., AdmissionPlan], request: AdmissionRequest, cached: Sequence[Obj]
) -> AdmissionPlan:
    reader: ClusterReader = Caches(*cached)
    return decision(request, reader, POLICY, keys=K)


def sent_back(request: AdmissionRequest, plan: AdmissionPlan) -> Obj:
    """The object as the API server stores it: the request's object with the plan's patch."""
    obj = request.get("object")
    assert obj is not None
    return apply_patch(obj, patch_for(request, plan))


def written(plan: AdmissionPlan) -> list[tuple[str, str]]:
    return [(c["kind"], c["metadata"]["name"]) for c in plan.changes]


# --- Deployments -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Create:
    """A CREATE of ``deployment`` with ``cached`` in the caches, and what the plan must say."""

    deployment: Obj
    cached: tuple[Obj, ...] = (builders.service(),)
    decision: str = "convert"
    reason: str = "converted with prod canary"
    changes: tuple[tuple[str, str], ...] = (("Rollout", "web"), ("Service", "web-canary"))
    replicas: int = 0
    """spec.replicas once patched: 0 on a conversion, the pods come from the Rollout."""
    annotations: Mapping[str, str | None] = field(
        default_factory=lambda: {ROLLOUT_NAME: "web", ORIGINAL_REPLICAS: "3"}
    )
    """Annotations once patched (None: absent)."""
    warnings: tuple[str, ...] = ()


CREATES = [
    pytest.param(Create(builders.opted_in()), id="opted-in-with-its-service"),
    pytest.param(
        Create(
            builders.opted_in(),
            cached=(),
            changes=(("Rollout", "web"),),
            warnings=("no Service selects the pods: canary by replica count only",),
        ),
        id="opted-in-without-a-service-writes-only-the-rollout",
    ),
    pytest.param(
        Create(
            builders.deployment(),
            decision="skip",
            reason="not opted in",
            changes=(),
            replicas=3,
            annotations={ROLLOUT_NAME: None},
        ),
        id="not-opted-in",
    ),
    pytest.param(
        Create(
            builders.deployment(labels={K.enabled: "false"}),
            decision="skip",
            reason="opted out by label rollout-webhook.io/enabled=false",
            changes=(),
            replicas=3,
            annotations={ROLLOUT_NAME: None},
        ),
        id="opted-out-by-label",
    ),
    pytest.param(
        Create(
            builders.opted_in(annotations={K.refused: "alice may not create rollouts"}),
            annotations={ROLLOUT_NAME: "web", K.refused: None},
        ),
        id="a-refusal-marker-goes-when-it-converts",
    ),
]


@pytest.mark.parametrize("case", CREATES)
def test_decide_deployment_on_create(case: Create) -> None:
    request = review(case.deployment)
    plan = decide(decide_deployment, request, case.cached)
    assert plan.decision == case.decision
    assert case.reason in plan.reason
    assert written(plan) == list(case.changes)
    assert plan.warnings == case.warnings
    stored = sent_back(request, plan)
    assert stored["spec"]["replicas"] == case.replicas
    annotations = stored["metadata"].get("annotations") or {}
    for key, value in case.annotations.items():
        assert annotations.get(key) == value, key
    # Only what the conversion changes: the pods are as sent.
    assert stored["spec"]["template"] == case.deployment["spec"]["template"]
    if case.decision == "convert":
        assert (plan.environment, plan.strategy) == ("prod", "canary")
        rollout = plan.changes[0]
        assert rollout["spec"]["workloadRef"]["name"] == "web"
        assert rollout["spec"]["replicas"] == 3
    else:
        assert plan.mutated is None


def first_conversion() -> Obj:
    """The Deployment as stored after its CREATE was converted."""
    request = review(builders.opted_in())
    return sent_back(request, decide(decide_deployment, request, [builders.service()]))


def as_stored(stored: Obj) -> Obj:
    return stored


def with_a_new_image(stored: Obj) -> Obj:
    sent = copy.deepcopy(stored)
    sent["spec"]["template"]["spec"]["containers"][0]["image"] = "example/app:2"
    return sent


def as_in_git(stored: Obj) -> Obj:
    """What a GitOps sync puts back: the manifest without the product's annotations, with
    its own replica count."""
    return builders.opted_in(replicas=3)


@pytest.mark.parametrize(
    ("operation", "edit", "patched"),
    [
        pytest.param("CREATE", as_stored, False, id="the-patched-object-reinvoked"),
        pytest.param("UPDATE", with_a_new_image, False, id="an-update-of-the-pods"),
        pytest.param("UPDATE", as_in_git, True, id="a-gitops-resync-keeps-the-conversion"),
    ],
)
def test_decide_deployment_after_its_conversion(
    operation: str, edit: Callable[[Obj], Obj], patched: bool
) -> None:
    stored = first_conversion()
    sent = edit(stored)
    old = stored if operation == "UPDATE" else None
    request = review(sent, operation=operation, old=old)
    plan = decide(decide_deployment, request, [builders.service()])
    assert plan.decision == "convert"
    assert written(plan) == [("Rollout", "web"), ("Service", "web-canary")]
    assert bool(patch_for(request, plan)) is patched
    again = sent_back(request, plan)
    assert again["metadata"]["annotations"] == stored["metadata"]["annotations"]
    assert again["spec"]["replicas"] == stored["spec"]["replicas"] == 0


def test_a_deployment_named_by_generate_name_is_left_to_the_reconciler() -> None:
    sent = builders.opted_in()
    del sent["metadata"]["name"]
    sent["metadata"]["generateName"] = "web-"
    plan = decide(decide_deployment, review(sent), [builders.service()])
    assert plan.decision == "skip"
    assert "generateName" in plan.reason
    assert (plan.mutated, plan.changes) == (None, ())


def test_the_patch_adds_no_namespace_the_body_did_not_carry() -> None:
    sent = builders.opted_in()
    del sent["metadata"]["namespace"]
    plan = decide(decide_deployment, review(sent, namespace=NS), [builders.service()])
    assert plan.decision == "convert"
    assert plan.mutated is not None
    assert "namespace" not in plan.mutated["metadata"]
    assert written(plan) == [("Rollout", "web"), ("Service", "web-canary")]


def test_mark_refused_adds_the_marker_and_keeps_the_rest() -> None:
    sent = builders.opted_in(annotations={"team": "shop"})
    marked = mark_refused(sent, "alice may not create rollouts.argoproj.io", keys=K)
    assert marked["metadata"]["annotations"] == {
        "team": "shop",
        K.refused: "alice may not create rollouts.argoproj.io",
    }
    assert sent["metadata"]["annotations"] == {"team": "shop"}  # the request is not changed
    assert {**marked, "metadata": sent["metadata"]} == sent


# --- HorizontalPodAutoscalers -------------------------------------------------------------------

AT_THE_ROLLOUT = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "web"}


@pytest.mark.parametrize(
    ("cached", "hpa", "decision", "reason", "changes"),
    [
        pytest.param(
            [converted(), builders.service()],
            builders.hpa(),
            "convert",
            "HPA re-targeted at Rollout web, which manages Deployment web",
            [("Rollout", "web")],
            id="the-hpa-of-a-converted-deployment",
        ),
        pytest.param(
            [converted(), builders.service()],
            builders.hpa(kind="Rollout"),
            "skip",
            "the HPA does not scale a Deployment",
            [],
            id="already-at-the-rollout",
        ),
        pytest.param(
            [converted(), builders.service()],
            builders.hpa("api"),
            "skip",
            "Deployment api is not converted",
            [],
            id="the-hpa-of-another-deployment",
        ),
        pytest.param(
            [builders.opted_in(), builders.service()],
            builders.hpa(),
            "skip",
            "Deployment web is not converted",
            [],
            id="opted-in-but-not-yet-converted",
        ),
        pytest.param(
            [converted(ns="staging"), builders.service()],
            builders.hpa(),
            "skip",
            "Deployment web is not converted",
            [],
            id="converted-in-another-namespace",
        ),
        pytest.param(
            [converted(labels={K.enabled: "false"}), builders.service()],
            builders.hpa(),
            "skip",
            "Deployment web: opted out by label rollout-webhook.io/enabled=false on the Deployment",
            [],
            id="converted-then-opted-out",
        ),
    ],
)
def test_decide_hpa(
    cached: list[Obj], hpa: Obj, decision: str, reason: str, changes: list[tuple[str, str]]
) -> None:
    request = review(hpa, HPA)
    plan = decide(decide_hpa, request, cached)
    assert (plan.decision, plan.reason) == (decision, reason)
    assert written(plan) == changes
    if decision == "convert":
        assert plan.mutated is not None
        # Only the target changes: the bounds stay the HPA's.
        assert plan.mutated["spec"] == {**hpa["spec"], "scaleTargetRef": AT_THE_ROLLOUT}
        assert (plan.environment, plan.strategy) == ("prod", "canary")
    else:
        assert plan.mutated is None
        assert patch_for(request, plan) == []


# --- routes -------------------------------------------------------------------------------------


def split(route: Obj) -> list[list[tuple[str, int | None]]]:
    """Where a route sends traffic, rule by rule: (Service, weight)."""
    spec = route["spec"]
    if route["kind"] == "HTTPRoute":
        return [
            [(r["name"], r.get("weight")) for r in rule["backendRefs"]] for rule in spec["rules"]
        ]
    return [
        [(d["destination"]["host"], d.get("weight")) for d in http["route"]]
        for http in spec["http"]
    ]


CANARY = [("web", 100), ("web-canary", 0)]
SPLIT_HTTPROUTE = builders.httproute(
    rules=[
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [
                {"name": "web", "port": 80, "weight": 100},
                {"name": "web-canary", "port": 80, "weight": 0},
            ],
        }
    ]
)
SPLIT_VIRTUALSERVICE = builders.virtualservice(
    http=[
        {
            "route": [
                {"destination": {"host": "web", "port": {"number": 80}}, "weight": 100},
                {"destination": {"host": "web-canary", "port": {"number": 80}}, "weight": 0},
            ]
        }
    ]
)
TWO_SERVICES = builders.httproute(
    "shop",
    rules=[
        {"matches": [{"path": {"value": "/"}}], "backendRefs": [{"name": "web", "port": 80}]},
        {"matches": [{"path": {"value": "/api"}}], "backendRefs": [{"name": "api", "port": 80}]},
    ],
    parents=None,
)
CONVERTED_WEB = [converted(), builders.service()]
THREE_CONVERTED = [
    *(converted(n) for n in ("web", "api", "other")),
    *(builders.service(n) for n in ("web", "api", "other")),
]
NO_TRAFFIC = "sends no traffic to a converted Deployment"


@pytest.mark.parametrize(
    ("cached", "kind", "route", "reason", "sent_to", "changes"),
    [
        pytest.param(
            CONVERTED_WEB,
            HTTPROUTE,
            builders.httproute(),
            "canary backend added for web",
            [CANARY],
            [("Rollout", "web"), ("Service", "web-canary")],
            id="httproute-to-a-converted-service",
        ),
        pytest.param(
            CONVERTED_WEB,
            HTTPROUTE,
            SPLIT_HTTPROUTE,
            f"the HTTPRoute {NO_TRAFFIC}",
            None,
            [],
            id="httproute-already-split",
        ),
        pytest.param(
            CONVERTED_WEB,
            HTTPROUTE,
            builders.httproute(rules=[builders.backend_rule("api")]),
            f"the HTTPRoute {NO_TRAFFIC}",
            None,
            [],
            id="httproute-to-another-service",
        ),
        pytest.param(
            [builders.opted_in(), builders.service()],
            HTTPROUTE,
            builders.httproute(),
            f"the HTTPRoute {NO_TRAFFIC}",
            None,
            [],
            id="httproute-to-a-deployment-not-yet-converted",
        ),
        pytest.param(
            THREE_CONVERTED,
            HTTPROUTE,
            TWO_SERVICES,
            "canary backend added for web, api",
            [[("web", 100), ("web-canary", 0)], [("api", 100), ("api-canary", 0)]],
            [
                ("Rollout", "web"),
                ("Service", "web-canary"),
                ("Rollout", "api"),
                ("Service", "api-canary"),
            ],
            id="httproute-to-two-of-three-converted-services",
        ),
        pytest.param(
            CONVERTED_WEB,
            VIRTUALSERVICE,
            builders.virtualservice(),
            "canary backend added for web",
            [CANARY],
            [("Rollout", "web"), ("Service", "web-canary")],
            id="virtualservice-to-a-converted-service",
        ),
        pytest.param(
            CONVERTED_WEB,
            VIRTUALSERVICE,
            SPLIT_VIRTUALSERVICE,
            f"the VirtualService {NO_TRAFFIC}",
            None,
            [],
            id="virtualservice-already-split",
        ),
        pytest.param(
            CONVERTED_WEB,
            VIRTUALSERVICE,
            builders.virtualservice(http=[{"route": [{"destination": {"host": "api"}}]}]),
            f"the VirtualService {NO_TRAFFIC}",
            None,
            [],
            id="virtualservice-to-another-service",
        ),
    ],
)
def test_decide_route(
    cached: list[Obj],
    kind: tuple[str, str, str],
    route: Obj,
    reason: str,
    sent_to: list[list[tuple[str, int]]] | None,
    changes: list[tuple[str, str]],
) -> None:
    request = review(route, kind)
    plan = decide(decide_route, request, cached)
    assert plan.reason == reason
    assert written(plan) == changes
    if sent_to is None:
        assert plan.decision == "skip"
        assert plan.mutated is None
        assert patch_for(request, plan) == []
        return
    assert plan.decision == "convert"
    assert (plan.environment, plan.strategy) == ("prod", "canary")
    stored = sent_back(request, plan)
    assert split(stored) == sent_to
    # Sent again as patched, the route needs no further patch.
    again = review(stored, kind, operation="UPDATE", old=stored)
    assert patch_for(again, decide(decide_route, again, cached)) == []


def test_a_route_sent_without_its_namespace_is_patched_without_one() -> None:
    route = builders.httproute()
    del route["metadata"]["namespace"]
    plan = decide(decide_route, review(route, HTTPROUTE, namespace=NS), CONVERTED_WEB)
    assert plan.decision == "convert"
    assert plan.mutated is not None
    assert "namespace" not in plan.mutated["metadata"]
    assert split(plan.mutated) == [CANARY]


# --- the scale subresource ----------------------------------------------------------------------


def paused_canary(replicas: int = 3) -> Obj:
    """The Rollout of ``web`` paused in a canary, with steps the policy no longer has."""
    rollout = builders.rollout(
        replicas=replicas, strategy={"canary": {"steps": [{"setWeight": 5}]}}
    )
    rollout["status"] = {"phase": "Paused"}
    return rollout


DRAINED = [converted(replicas=0), builders.service(), builders.rollout(replicas=3)]


@dataclass(frozen=True)
class Scaled:
    """``kubectl scale deployment web --replicas=REPLICAS`` of a Deployment at ``current``,
    with ``cached`` in the caches, and what the plan must say."""

    cached: tuple[Obj, ...]
    replicas: int
    current: int
    decision: str
    reason: str
    stored: int | None = None
    """The Scale's count once patched (None: admitted untouched, no patch)."""
    rollout: int | None = None
    """The Rollout's count written after the answer (None: nothing written)."""
    warning: str = ""


SCALES = [
    pytest.param(
        Scaled(
            tuple(DRAINED),
            6,
            0,
            "convert",
            "scale of Deployment web to 6 sent to Rollout web",
            stored=0,
            rollout=6,
            warning="Deployment web is managed by Rollout web: scaled the Rollout to 6; "
            "the Deployment stays at 0",
        ),
        id="converted-and-drained",
    ),
    pytest.param(
        Scaled(
            (converted(replicas=2), builders.service(), builders.rollout(replicas=3)),
            6,
            2,
            "convert",
            "scale of Deployment web to 6 sent to Rollout web",
            stored=2,
            rollout=6,
        ),
        id="converted-while-argo-still-drains-it-keeps-its-count",
    ),
    pytest.param(
        Scaled(
            tuple(DRAINED),
            0,
            0,
            "convert",
            "scale of Deployment web to 0 sent to Rollout web",
            rollout=0,
        ),
        id="scaled-to-zero-with-the-deployment-already-at-zero-stops-the-service",
    ),
    pytest.param(
        Scaled(
            (converted(replicas=0), builders.service(), paused_canary()),
            6,
            0,
            "convert",
            "scale of Deployment web to 6 sent to Rollout web",
            stored=0,
            rollout=6,
        ),
        id="during-a-paused-canary",
    ),
    pytest.param(
        Scaled(
            (*DRAINED, builders.hpa(kind="Rollout")),
            6,
            0,
            "convert",
            "Rollout web is sized by HPA web; scale of Deployment web to 6 not applied",
            stored=0,
            warning="Rollout web is sized by HPA web: nothing scaled; "
            "change the HPA's min/maxReplicas instead",
        ),
        id="an-hpa-sizes-the-rollout-nothing-written",
    ),
    pytest.param(
        Scaled(
            (*DRAINED, builders.hpa()),
            6,
            0,
            "convert",
            "Rollout web is sized by HPA web; scale of Deployment web to 6 not applied",
            stored=0,
        ),
        id="an-hpa-still-aimed-at-the-deployment-is-not-denied",
    ),
    pytest.param(
        Scaled(
            (builders.deployment(), builders.service()),
            6,
            3,
            "skip",
            "Deployment web is not converted",
        ),
        id="a-plain-deployment-scales-as-asked",
    ),
    pytest.param(
        Scaled(
            (builders.opted_in(), builders.service()),
            6,
            3,
            "skip",
            "Deployment web is not converted",
        ),
        id="opted-in-not-yet-converted-left-to-the-reconciler",
    ),
    pytest.param(
        Scaled(
            (
                converted(labels={K.enabled: "false"}, replicas=3),
                builders.service(),
                builders.rollout(),
            ),
            6,
            3,
            "skip",
            "Deployment web: opted out by label rollout-webhook.io/enabled=false on the Deployment",
        ),
        id="opting-out-the-deployment-takes-its-size-back",
    ),
    pytest.param(
        Scaled((converted(ns="staging"),), 6, 0, "skip", "Deployment web is not converted"),
        id="converted-in-another-namespace",
    ),
    pytest.param(
        Scaled((), 6, 0, "skip", "Deployment web is not converted"),
        id="not-in-the-caches",
    ),
]


@pytest.mark.parametrize("case", SCALES)
def test_decide_deployment_scale(case: Scaled) -> None:
    request = cast(
        AdmissionRequest,
        builders.scale_request(replicas=case.replicas, current=case.current),
    )
    plan = decide(decide_deployment_scale, request, case.cached)
    assert (plan.decision, plan.reason) == (case.decision, case.reason)
    assert plan.extra == {"subresource": "scale"}
    patch = patch_for(request, plan)
    if case.stored is None:
        assert patch == []
    else:
        assert sent_back(request, plan)["spec"]["replicas"] == case.stored
        assert sent_back(request, plan)["kind"] == "Scale"
    if case.rollout is None:
        assert plan.changes == ()
    else:
        (rollout,) = plan.changes
        assert rollout["kind"] == "Rollout" and rollout["spec"]["replicas"] == case.rollout
        assert rollout["spec"]["workloadRef"]["name"] == "web"
        # The strategy in force stays: a scale never brings in the policy's new steps.
        cached = [o for o in case.cached if o["kind"] == "Rollout"]
        if cached:
            steps = cached[0]["spec"]["strategy"]["canary"]["steps"]
            assert rollout["spec"]["strategy"]["canary"]["steps"] == steps
    if case.warning:
        assert case.warning in plan.warnings


def test_a_scale_reaches_its_decision_through_decide_mutation() -> None:
    request = cast(AdmissionRequest, builders.scale_request(replicas=6, current=0))
    plan = decide(decide_mutation, request, DRAINED)
    assert plan == decide(decide_deployment_scale, request, DRAINED)
    assert plan.decision == "convert"
    # Without the subresource fields the same object is a kind the webhook leaves alone.
    bare = cast(AdmissionRequest, {k: v for k, v in request.items() if k != "resource"})
    assert (
        decide(decide_mutation, bare, DRAINED).reason == "Scale is not a kind this webhook changes"
    )


def test_a_scale_by_a_user_who_may_not_scale_the_rollout_is_denied_naming_the_command() -> None:
    request = cast(AdmissionRequest, builders.scale_request(replicas=6, current=0))
    plan = plan_scale_refused(request, "no RBAC rule allows it")
    assert plan.decision == "deny"
    assert plan.changes == () and plan.mutated is None
    assert plan.reason == (
        "alice may not scale rollouts.argoproj.io/web in namespace prod (no RBAC rule allows "
        "it); Deployment web is managed by Rollout web: kubectl scale rollout web --replicas=6"
    )


# --- dispatch -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "obj", "decision"),
    [
        pytest.param(DEPLOYMENT, builders.opted_in(), decide_deployment, id="Deployment"),
        pytest.param(HPA, builders.hpa(), decide_hpa, id="HorizontalPodAutoscaler"),
        pytest.param(HTTPROUTE, builders.httproute(), decide_route, id="HTTPRoute"),
        pytest.param(VIRTUALSERVICE, builders.virtualservice(), decide_route, id="VirtualService"),
    ],
)
def test_decide_mutation_sends_each_kind_to_its_decision(
    kind: tuple[str, str, str], obj: Obj, decision: Callable[..., AdmissionPlan]
) -> None:
    request = review(obj, kind)
    plan = decide(decide_mutation, request, CONVERTED_WEB)
    assert plan.decision == "convert"
    assert plan == decide(decision, request, CONVERTED_WEB)


@pytest.mark.parametrize(
    ("kind", "obj"),
    [
        pytest.param(("", "v1", "Service"), builders.service(), id="Service"),
        pytest.param(("", "v1", "Namespace"), builders.namespace(NS), id="Namespace"),
        pytest.param(("argoproj.io", "v1alpha1", "Rollout"), builders.rollout(), id="Rollout"),
    ],
)
def test_decide_mutation_leaves_other_kinds_alone(kind: tuple[str, str, str], obj: Obj) -> None:
    plan = decide(decide_mutation, review(obj, kind), CONVERTED_WEB)
    assert plan == AdmissionPlan("skip", f"{kind[2]} is not a kind this webhook changes")


# --- neighbours ---------------------------------------------------------------------------------


def names(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    return [o["metadata"]["name"] for o in objects]


def test_neighbours_of_reads_the_whole_namespace_and_no_other() -> None:
    reader = Caches(
        builders.namespace(NS),
        builders.namespace("staging"),
        *(builders.service(n) for n in ("web", "api")),
        builders.service("web", "staging"),
        builders.hpa("api"),
        builders.hpa("web", "staging"),
        builders.httproute("r"),
        builders.virtualservice("v"),
        builders.virtualservice("v", "staging"),
        builders.rollout("db"),
    )
    found = neighbours_of(reader, NS)
    assert found.namespace == builders.namespace(NS)
    assert names(found.services) == ["web", "api"]
    assert names(found.hpas) == ["api"]
    assert names(found.http_routes) == ["r"]
    assert names(found.virtual_services) == ["v"]
    assert names(found.rollouts) == ["db"]


@pytest.mark.parametrize(
    ("obj", "field_name", "found"),
    [
        pytest.param(builders.service("web"), "services", True, id="service-selecting-its-pods"),
        pytest.param(
            builders.service("front", selector={"app": "web"}),
            "services",
            True,
            id="service-of-another-name-selecting-its-pods",
        ),
        pytest.param(builders.service("api"), "services", False, id="service-of-other-pods"),
        pytest.param(builders.service("web", "staging"), "services", False, id="other-namespace"),
        pytest.param(builders.hpa("web"), "hpas", True, id="hpa-scaling-it"),
        pytest.param(builders.hpa("api"), "hpas", False, id="hpa-scaling-another"),
        pytest.param(builders.httproute("r"), "http_routes", True, id="httproute-to-its-service"),
        pytest.param(
            builders.httproute("r", rules=[builders.backend_rule("api")]),
            "http_routes",
            False,
            id="httproute-to-another-service",
        ),
        pytest.param(
            builders.virtualservice("v", http=[{"route": [{"destination": {"host": "web.prod"}}]}]),
            "virtual_services",
            True,
            id="virtualservice-to-its-service",
        ),
        pytest.param(
            builders.virtualservice("v", http=[{"route": [{"destination": {"host": "api"}}]}]),
            "virtual_services",
            False,
            id="virtualservice-to-another-service",
        ),
        pytest.param(builders.rollout("web"), "rollouts", True, id="rollout-of-its-name"),
        pytest.param(builders.rollout("api"), "rollouts", False, id="rollout-of-another-name"),
    ],
)
def test_deployment_neighbours_finds_only_what_its_conversion_reads(
    obj: Obj, field_name: str, found: bool
) -> None:
    reader = Caches(builders.namespace(NS), obj)
    neighbours = deployment_neighbours(reader, NS, builders.opted_in())
    assert neighbours.namespace == builders.namespace(NS)
    assert (obj in getattr(neighbours, field_name)) is found


WHY = "no RBAC rule allows it"
ROLLOUT = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "web"}}


def deployment(*, converted: bool = False) -> dict[str, Any]:
    annotations = {DEFAULT_KEYS.rollout_name: "web"} if converted else {}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "annotations": annotations},
        "spec": {"replicas": 3},
    }


def request(
    kind: str,
    operation: str,
    obj: dict[str, Any],
    *,
    old: dict[str, Any] | None = None,
    user: str | None = "bob",
) -> AdmissionRequest:
    review: dict[str, Any] = {
        "uid": "u-1",
        "kind": {"group": "", "version": "v1", "kind": kind},
        "operation": operation,
        "namespace": "shop",
        "name": "web",
        "object": obj,
        "oldObject": old,
        "userInfo": {} if user is None else {"username": user},
    }
    return review  # type: ignore[return-value]


def converting(mutated: dict[str, Any]) -> AdmissionPlan:
    """The plan of a conversion: a patch and a Rollout to write."""
    return AdmissionPlan(
        "convert",
        "converted",
        environment="prod",
        strategy="canary",
        mutated=mutated,
        changes=(ROLLOUT,),
        warnings=("an earlier warning",),
    )


def refused_copy(obj: dict[str, Any], who: str) -> dict[str, Any]:
    meta = obj["metadata"]
    annotations = {
        **meta["annotations"],
        DEFAULT_KEYS.refused: f"{who} may not create rollouts.argoproj.io",
    }
    return {**obj, "metadata": {**meta, "annotations": annotations}}


def denial(who: str) -> str:
    return f"{who} may not create rollouts.argoproj.io in namespace shop ({WHY})"


def refusal_warning(who: str) -> str:
    return f"not converted ({WHY}): {who} may not create rollouts.argoproj.io in namespace shop"


def no_writes_warning(who: str) -> str:
    return f"no changes written on your behalf ({WHY}): {who} may not create rollouts.argoproj.io"


HPA_OBJECT = {
    "apiVersion": "autoscaling/v2",
    "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "web"},
}
ROUTE_OBJECT = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {"name": "web"},
}
RETARGETED_HPA = {**HPA_OBJECT, "spec": {"scaleTargetRef": {"kind": "Rollout", "name": "web"}}}


@dataclass(frozen=True)
class WithoutWrites:
    request: AdmissionRequest
    plan: AdmissionPlan
    decision: str
    reason: str
    mutated: dict[str, Any] | None
    warning: str


WITHOUT_WRITES_CASES = {
    "a new Deployment is not converted, and marked for the reconciler": WithoutWrites(
        request("Deployment", "CREATE", deployment()),
        converting(deployment(converted=True)),
        "refuse",
        denial("bob"),
        refused_copy(deployment(), "bob"),
        refusal_warning("bob"),
    ),
    "an update of a Deployment never converted is not converted either": WithoutWrites(
        request("Deployment", "UPDATE", deployment(), old=deployment()),
        converting(deployment(converted=True)),
        "refuse",
        denial("bob"),
        refused_copy(deployment(), "bob"),
        refusal_warning("bob"),
    ),
    "a request with no user name is refused in the name of '?'": WithoutWrites(
        request("Deployment", "CREATE", deployment(), user=None),
        converting(deployment(converted=True)),
        "refuse",
        denial("?"),
        refused_copy(deployment(), "?"),
        refusal_warning("?"),
    ),
    "an update of a converted Deployment keeps its patch, only the writes go": WithoutWrites(
        request("Deployment", "UPDATE", deployment(), old=deployment(converted=True)),
        converting(deployment(converted=True)),
        "convert",
        f"converted; no changes written: {denial('bob')}",
        deployment(converted=True),
        no_writes_warning("bob"),
    ),
    "an HPA_OBJECT of a converted Deployment keeps its re-target, only the writes go": WithoutWrites(
        request("HorizontalPodAutoscaler", "CREATE", HPA_OBJECT),
        converting(RETARGETED_HPA),
        "convert",
        f"converted; no changes written: {denial('bob')}",
        RETARGETED_HPA,
        no_writes_warning("bob"),
    ),
    "a route keeps its canary backend, only the writes go": WithoutWrites(
        request("HTTPRoute", "UPDATE", ROUTE_OBJECT, old=ROUTE_OBJECT),
        converting({**ROUTE_OBJECT, "spec": {"rules": []}}),
        "convert",
        f"converted; no changes written: {denial('bob')}",
        {**ROUTE_OBJECT, "spec": {"rules": []}},
        no_writes_warning("bob"),
    ),
}


@pytest.mark.parametrize("case", WITHOUT_WRITES_CASES.values(), ids=WITHOUT_WRITES_CASES.keys())
def test_plan_without_writes(case: WithoutWrites) -> None:
    plan = plan_without_writes(case.request, case.plan, WHY, keys=DEFAULT_KEYS)
    assert plan.decision == case.decision
    assert plan.reason == case.reason
    assert plan.mutated == case.mutated
    assert plan.changes == ()
    assert plan.warnings == ("an earlier warning", case.warning)
    # What the decision found stays in the record.
    assert (plan.environment, plan.strategy) == ("prod", "canary")


def test_the_request_object_is_not_changed() -> None:
    sent = deployment()
    plan_without_writes(
        request("Deployment", "CREATE", sent),
        converting(deployment(converted=True)),
        WHY,
        keys=DEFAULT_KEYS,
    )
    assert sent == deployment()


# --- no valid policy in force ------------------------------------------------------------------

WHY_NO_POLICY = "policy ConfigMap refused, no policy in force: line 1: not valid YAML"
PLAIN = builders.deployment(labels={})


def _stripped(obj: Obj) -> Obj:
    """``obj`` as a GitOps resync sends it again: no product annotations, its own replicas."""
    sent = copy.deepcopy(obj)
    sent["metadata"]["annotations"] = {}
    sent["spec"]["replicas"] = 3
    return sent


@pytest.mark.parametrize(
    ("kind", "obj", "old", "cached", "held", "warned"),
    [
        pytest.param(DEPLOYMENT, builders.opted_in(), None, (), None, True, id="new-opted-in"),
        pytest.param(
            DEPLOYMENT,
            PLAIN,
            None,
            (builders.namespace(NS, {K.enabled: "true"}),),
            None,
            True,
            id="new-in-an-opted-in-namespace",
        ),
        pytest.param(
            DEPLOYMENT,
            builders.deployment(labels={K.enabled: "false"}),
            None,
            (builders.namespace(NS, {K.enabled: "true"}),),
            None,
            False,
            id="opted-out-in-an-opted-in-namespace",
        ),
        pytest.param(DEPLOYMENT, PLAIN, None, (), None, False, id="plain"),
        pytest.param(
            DEPLOYMENT,
            _stripped(converted(replicas=0)),
            converted(replicas=0),
            (),
            converted(replicas=0),
            True,
            id="a-resync-of-a-converted-deployment-is-held",
        ),
        pytest.param(
            HPA,
            builders.hpa(),
            None,
            (converted(),),
            builders.hpa(kind="Rollout"),
            False,
            id="an-hpa-of-a-converted-deployment-keeps-scaling-the-rollout",
        ),
        pytest.param(HPA, builders.hpa(), None, (PLAIN,), None, False, id="an-hpa-of-a-plain-one"),
        pytest.param(
            HTTPROUTE, builders.httproute(), None, (converted(),), None, False, id="route"
        ),
    ],
)
def test_without_a_policy_nothing_new_is_converted_and_conversions_are_held(
    kind: tuple[str, str, str],
    obj: Obj,
    old: Obj | None,
    cached: Sequence[Obj],
    held: Obj | None,
    warned: bool,
) -> None:
    request = review(obj, kind, old=old, operation="UPDATE" if old else "CREATE")
    plan = plan_without_policy(request, Caches(*cached), WHY_NO_POLICY, keys=K)
    assert plan.decision == "skip"
    assert plan.changes == ()
    assert WHY_NO_POLICY in plan.reason
    assert sent_back(request, plan) == (obj if held is None else held)
    assert bool(plan.warnings) == warned


# --- the requester's rights for every write ----------------------------------------------------


def _writing(*kinds: str) -> AdmissionPlan:
    return AdmissionPlan(
        "convert",
        "converted",
        changes=tuple({"kind": k, "metadata": {"name": "web"}} for k in kinds),
    )


@pytest.mark.parametrize(
    ("kinds", "rights"),
    [
        (("Rollout",), ["create rollouts.argoproj.io"]),
        (("Rollout", "Service"), ["create services", "create rollouts.argoproj.io"]),
        (
            ("Rollout", "Service", "HorizontalPodAutoscaler", "HTTPRoute", "VirtualService"),
            [
                "create services",
                "create rollouts.argoproj.io",
                "patch horizontalpodautoscalers.autoscaling",
                "patch httproutes.gateway.networking.k8s.io",
                "patch virtualservices.networking.istio.io",
            ],
        ),
        (("Rollout", "Rollout"), ["create rollouts.argoproj.io"]),
        ((), []),
    ],
)
def test_every_write_names_the_right_it_needs(kinds: tuple[str, ...], rights: list[str]) -> None:
    assert [str(p) for p in permissions_for(_writing(*kinds))] == rights


def test_a_write_of_an_unknown_kind_is_never_made_unchecked() -> None:
    with pytest.raises(ValueError, match="no permission known for writing Secret"):
        permissions_for(_writing("Rollout", "Secret"))


def test_a_conversion_is_all_or_nothing_when_one_right_is_missing() -> None:
    route = Permission("patch", "gateway.networking.k8s.io", "httproutes")
    sent = builders.opted_in(uid="u1")
    request = review(sent, user={"username": "erin"}, namespace="shop")
    plan = plan_without_writes(
        request, _writing("Rollout", "HTTPRoute"), WHY, keys=K, missing=(route,)
    )
    assert plan.decision == "refuse"
    assert plan.changes == ()
    assert plan.warnings == (
        f"not converted ({WHY}): erin may not patch httproutes.gateway.networking.k8s.io"
        " in namespace shop",
    )
    assert sent_back(request, plan)["metadata"]["annotations"] == {
        K.refused: "erin may not patch httproutes.gateway.networking.k8s.io"
    }


def test_an_invalid_label_value_in_an_opted_in_namespace_is_an_admission_warning() -> None:
    """docs/labels.md: an invalid value is ignored and said; the Namespace opts it in."""
    namespace = builders.namespace(NS, {K.enabled: "true"})
    dep = builders.opted_in(labels={K.enabled: "yes"})
    plan = decide(decide_deployment, review(dep), [namespace, builders.service()])
    assert plan.decision == "convert"
    assert f"label {K.enabled}='yes' on the Deployment is neither" in plan.warnings[0]
