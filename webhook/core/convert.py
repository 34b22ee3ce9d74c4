"""Planning a conversion: a Deployment and its neighbours in, every object as it should be out.

``plan_conversion`` is the heart of the product and a pure function: no client, no
clock, no I/O. The admission server, the reconciler and the offline ``convert`` command
all call it, so they cannot disagree. Planning an already converted set of objects
returns it unchanged (the property tests check this), which is what makes webhook
reinvocation and reconciler re-runs safe.

Facts it rests on (see docs/architecture.md):

- A webhook cannot change an object's kind (kubernetes/kubernetes#89558), so the
  Deployment stays and a Rollout refers to it through ``spec.workloadRef``, with an
  empty template.
- ``spec.replicas`` on the Rollout is always set: left out it means 1
  (argo-rollouts#3689, #4110).
- On CREATE the Deployment is stored with 0 replicas (pods come from the Rollout only);
  a running Deployment keeps its replicas and Argo scales it down per ``scaleDown``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from webhook.core.analysis import KnownTemplates, plan_analysis
from webhook.core.crd_schema import RolloutSchema, rollout_problems
from webhook.core.errors import Finding, error, warning
from webhook.core.hpa import clamp_to_hpa, hpas_for, retarget_hpa, targets
from webhook.core.keys import DEFAULT_KEYS, Keys
from webhook.core.objects import (
    Obj,
    annotations_of,
    carried_labels,
    dns_label,
    json_copy,
    labels_of,
    meta,
    name_of,
    namespace_of,
    owner_reference,
    spec_of,
    with_applied_hash,
)
from webhook.core.policy import Environment, Policy
from webhook.core.policy_schema import Strategy
from webhook.core.routes import (
    RoutePatch,
    Subsets,
    add_canary_backend_httproute,
    add_canary_destination_virtualservice,
    httproute_references,
    subset_routing,
    virtualservice_references,
)
from webhook.core.selection import (
    OptIn,
    StrategyChoice,
    resolve_environment,
    resolve_opt_in,
    resolve_strategy,
)
from webhook.core.services import candidate_services, clone_service

ConversionOperation = Literal["CREATE", "UPDATE"]
"""What a conversion is planned for: CREATE stores the Deployment with 0 replicas (its
pods come from the Rollout only); UPDATE converts a stored, running one (the reconciler
always plans an UPDATE)."""
ConversionDecision = Literal["convert", "skip", "refuse"]

ROLLOUT_API_VERSION = "argoproj.io/v1alpha1"
GATEWAY_PLUGIN = "argoproj-labs/gatewayAPI"
# Phases in which a Rollout is moving between revisions: its strategy is never changed then.
ACTIVE_PHASES = ("Progressing", "Paused")


@dataclass(frozen=True)
class Neighbours:
    """The objects of the Deployment's namespace that a conversion reads."""

    namespace: Mapping[str, Any] | None = None
    services: tuple[Mapping[str, Any], ...] = ()
    hpas: tuple[Mapping[str, Any], ...] = ()
    http_routes: tuple[Mapping[str, Any], ...] = ()
    virtual_services: tuple[Mapping[str, Any], ...] = ()
    rollouts: tuple[Mapping[str, Any], ...] = ()
    # Istio DestinationRules: read for subset-level routing, never changed (Argo edits them).
    destination_rules: tuple[Mapping[str, Any], ...] = ()
    analysis_templates: tuple[Mapping[str, Any], ...] = ()
    cluster_analysis_templates: tuple[Mapping[str, Any], ...] = ()

    def rollout_named(self, name: str) -> Mapping[str, Any] | None:
        return next((r for r in self.rollouts if name_of(r) == name), None)


@dataclass(frozen=True)
class Conversion:
    """Everything a decision produces, as data. ``deployment`` is always a full object."""

    decision: ConversionDecision
    reason: str
    deployment: Obj
    environment: str | None = None
    strategy: Strategy | None = None
    rollout: Obj | None = None
    services: tuple[Obj, ...] = ()
    hpas: tuple[Obj, ...] = ()
    routes: tuple[Obj, ...] = ()
    findings: tuple[Finding, ...] = ()
    policy_version: str = ""
    analysis_templates: tuple[Obj, ...] = ()
    """The templates the policy manages that the Rollout uses: written before it."""

    @property
    def converted(self) -> bool:
        return self.decision == "convert"

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.is_error)

    @property
    def warnings(self) -> tuple[str, ...]:
        """Every finding as a message for the user (errors of a refusal included)."""
        return tuple(f.message for f in self.findings)

    def objects(self) -> list[Obj]:
        """The Deployment first, then every object this conversion creates or changes."""
        out: list[Obj] = [self.deployment]
        if self.rollout is not None:
            out.append(self.rollout)
        return [*out, *self.analysis_templates, *self.services, *self.hpas, *self.routes]


@dataclass(frozen=True)
class _Traffic:
    config: Obj | None
    routes: tuple[Obj, ...]
    findings: tuple[Finding, ...] = field(default=())
    # Istio subset-level routing: Argo splits one host by DestinationRule subsets, so the
    # Rollout names no Services (a stable Service pinned to the stable pods would leave the
    # canary subset without endpoints) and no canary Service is generated.
    subset_level: bool = False


# Canary steps that add a route of their own to the router while they run; Argo Rollouts
# refuses them unless `trafficRouting.managedRoutes` lists their names.
MANAGED_ROUTE_STEPS = ("setHeaderRoute", "setMirrorRoute")


def managed_route_names(steps: object) -> tuple[str, ...]:
    """The route names of the steps' setHeaderRoute and setMirrorRoute, in order of first use.

    Argo gives managed routes precedence in the order listed (a header route before the
    service's own routes), so the first step's route comes first."""
    names: list[str] = []
    for step in steps if isinstance(steps, list) else []:
        for action in MANAGED_ROUTE_STEPS:
            body = step.get(action) if isinstance(step, Mapping) else None
            name = body.get("name") if isinstance(body, Mapping) else None
            if isinstance(name, str) and name and name not in names:
                names.append(name)
    return tuple(names)


def _uses_step(steps: object, action: str) -> bool:
    return isinstance(steps, list) and any(
        isinstance(step, Mapping) and action in step for step in steps
    )


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _stable_service(
    deployment: Mapping[str, Any], neighbours: Neighbours, keys: Keys
) -> tuple[Mapping[str, Any] | None, list[Finding]]:
    candidates = candidate_services(deployment, neighbours.services, keys)
    if not candidates:
        return None, []
    name = name_of(deployment)
    by_name = [s for s in candidates if name_of(s) == name]
    # Which candidates a route sends traffic to matters only when none is named as the
    # Deployment: left unread otherwise, so a crowded namespace's routes are read once
    # per plan (by the traffic routing), not once per candidate.
    routed = (
        []
        if by_name
        else [
            s
            for s in candidates
            if any(httproute_references(r, name_of(s)) for r in neighbours.http_routes)
            or any(virtualservice_references(v, name_of(s)) for v in neighbours.virtual_services)
        ]
    )
    chosen = (by_name or routed or candidates)[0]
    findings: list[Finding] = []
    if len(candidates) > 1 and not by_name and len(routed) != 1:
        findings.append(
            warning(
                "several-services",
                f"{len(candidates)} Services select the pods; using {name_of(chosen)} as stable",
            )
        )
    return chosen, findings


def _traffic(
    env: Environment,
    stable: str | None,
    canary: str | None,
    neighbours: Neighbours,
    ns: str,
    steps: object = (),
) -> _Traffic:
    """How the canary's share of traffic is routed: through the HTTPRoutes or the
    VirtualServices that send traffic to the stable Service, as the environment says."""
    mode = env.traffic_routing
    if mode == "none" or stable is None or canary is None:
        return _Traffic(None, ())
    http_routes = [r for r in neighbours.http_routes if httproute_references(r, stable)]
    virtual_services = [
        v for v in neighbours.virtual_services if virtualservice_references(v, stable)
    ]
    if mode == "gatewayAPI" or (mode == "auto" and http_routes):
        return _gateway_api_traffic(http_routes, stable, canary, ns, steps)
    if mode == "istio" or (mode == "auto" and virtual_services):
        return _istio_traffic(virtual_services, neighbours.destination_rules, stable, canary, steps)
    return _Traffic(None, ())


def _no_route(message: str) -> _Traffic:
    return _Traffic(None, (), (warning("no-route", message),))


def _gateway_api_traffic(
    http_routes: Sequence[Mapping[str, Any]], stable: str, canary: str, ns: str, steps: object
) -> _Traffic:
    if not http_routes:
        return _no_route(f"trafficRouting is gatewayAPI but no HTTPRoute sends traffic to {stable}")
    patches = [add_canary_backend_httproute(r, stable, canary) for r in http_routes]
    names = sorted(name_of(r) for r in http_routes)
    plugin: Obj = {"namespace": ns}
    if len(names) == 1:
        plugin["httpRoute"] = names[0]
    else:
        # The plugin adds a setHeaderRoute step's rule only to the listed routes that ask
        # for it (a lone `httpRoute` always does): every route of the service does here.
        header_routes = _uses_step(steps, "setHeaderRoute")
        plugin["httpRoutes"] = [
            {"name": n, **({"useHeaderRoutes": True} if header_routes else {})} for n in names
        ]
    findings: tuple[Finding, ...] = ()
    if _uses_step(steps, "setMirrorRoute"):
        # Argo Rollouts v1.9 validates setMirrorRoute as Istio-only (the Rollout turns
        # InvalidSpec with any other router), and the plugin's SetMirrorRoute does nothing
        # (argoproj-labs/rollouts-plugin-trafficrouter-gatewayapi#32).
        findings = (
            error(
                "mirror-needs-istio",
                f"setMirrorRoute needs Istio: Argo Rollouts refuses it with the Gateway API "
                f"plugin, and HTTPRoute {names[0]} routes this service",
            ),
        )
    traffic = _collect({"plugins": {GATEWAY_PLUGIN: plugin}}, patches)
    return replace(traffic, findings=(*traffic.findings, *findings))


def _istio_traffic(
    virtual_services: Sequence[Mapping[str, Any]],
    destination_rules: Sequence[Mapping[str, Any]],
    stable: str,
    canary: str,
    steps: object,
) -> _Traffic:
    if not virtual_services:
        return _no_route(f"trafficRouting is istio but no VirtualService routes to {stable}")
    managed = frozenset(managed_route_names(steps))
    subsets, subset_findings = subset_routing(virtual_services, destination_rules, stable, managed)
    if subset_findings:
        return _Traffic(None, (), subset_findings)
    patches = [
        add_canary_destination_virtualservice(v, stable, canary, managed=managed, subsets=subsets)
        for v in virtual_services
    ]
    refs: list[Obj] = []
    for vs, patch in sorted(
        zip(virtual_services, patches, strict=True), key=lambda p: name_of(p[0])
    ):
        ref: Obj = {"name": name_of(vs)}
        # With more than one HTTP route, Argo must be told which ones to weight; the routes
        # Argo adds itself during a step (managedRoutes) do not count.
        own = [h for h in spec_of(vs).get("http") or [] if h.get("name") not in managed]
        if len(own) > 1:
            ref["routes"] = list(patch.route_names)
        refs.append(ref)
    config: Obj = {"virtualService": refs[0]} if len(refs) == 1 else {"virtualServices": refs}
    if subsets is not None:
        config["destinationRule"] = _destination_rule_config(subsets)
    traffic = _collect({"istio": config}, patches)
    return replace(traffic, subset_level=subsets is not None)


def _destination_rule_config(subsets: Subsets) -> Obj:
    return {
        "name": subsets.destination_rule,
        "canarySubsetName": subsets.canary,
        "stableSubsetName": subsets.stable,
    }


def _collect(config: Obj, patches: Sequence[RoutePatch]) -> _Traffic:
    findings = tuple(f for p in patches for f in p.findings)
    return _Traffic(config, tuple(p.route for p in patches if p.changed), findings)


def _traffic_dependent_settings(block: Mapping[str, Any], has_traffic: bool) -> list[Finding]:
    """Argo's own validation: these settings make a Rollout InvalidSpec without traffic routing."""
    if has_traffic:
        return []
    problems: list[str] = []
    for i, step in enumerate(block.get("steps") or []):
        for action in ("setCanaryScale", *MANAGED_ROUTE_STEPS):
            if action in step:
                problems.append(f"steps[{i}].{action}")
        for j, template in enumerate((step.get("experiment") or {}).get("templates") or []):
            if "weight" in template:
                problems.append(f"steps[{i}].experiment.templates[{j}].weight")
    for key in ("scaleDownDelaySeconds", "dynamicStableScale"):
        if key in block:
            problems.append(key)
    return [
        error(
            "needs-traffic-routing", f"canary {p} needs traffic routing, and this service has none"
        )
        for p in problems
    ]


def _strategy_spec(
    strategy: Strategy,
    block: Mapping[str, Any],
    deployment: Mapping[str, Any],
    stable: str | None,
    second: str | None,
    traffic: _Traffic,
) -> Obj:
    settings = json_copy(dict(block))
    if strategy == "bluegreen":
        assert stable is not None
        assert second is not None
        return {"blueGreen": {"activeService": stable, "previewService": second, **settings}}
    rolling = (spec_of(deployment).get("strategy") or {}).get("rollingUpdate") or {}
    canary: Obj = {}
    for key in ("maxSurge", "maxUnavailable"):
        if key in rolling and key not in settings:
            canary[key] = rolling[key]
    if stable is not None and second is not None:
        # Without a traffic router the split is by replica count, through the service's own
        # Service: Argo pins a named stableService to the stable pods, so naming it would send
        # every request to the old version until the end. The canary Service (the canary
        # pods alone) is still named, for tests and analysis aimed at the new version.
        if traffic.config is not None:
            canary["stableService"] = stable
        canary["canaryService"] = second
    if traffic.config is not None:
        canary["trafficRouting"] = json_copy(traffic.config)
        managed = managed_route_names(settings.get("steps"))
        if managed:
            canary["trafficRouting"]["managedRoutes"] = [{"name": n} for n in managed]
    canary.update(settings)
    canary.setdefault("steps", [])
    return {"canary": canary}


# What the cluster decides in a strategy (which Services, which routes), as opposed to
# what the policy decides (steps, analysis, promotion): recomputed on every plan, even
# when a Rollout keeps its policy settings.
STRUCTURAL_KEYS = {
    "canary": ("stableService", "canaryService", "trafficRouting"),
    "blueGreen": ("activeService", "previewService"),
}


def brings_policy_strategy(deployment: Mapping[str, Any], policy: Policy, keys: Keys) -> bool:
    """Whether a plan of the stored, converted ``deployment`` may move its Rollout to the
    policy's strategy: always under ``rolloutUpdates: immediate``; under ``nextChange`` once
    an admitted change of the Deployment recorded this policy version on it (the admission
    and everything planned after it then agree: the write after the admission, and the
    reconciler's passes over the same stored object); never under ``never``."""
    if policy.rollout_updates == "immediate":
        return True
    return annotations_of(deployment).get(keys.policy_version) == str(policy.version)


def _kept_strategy(
    existing: Mapping[str, Any] | None, policy: Policy, update_strategy: bool
) -> tuple[Strategy, dict[str, Any]] | None:
    """The strategy an existing Rollout keeps (its kind and policy settings), if it keeps it.

    A Rollout in the middle of a rollout keeps its steps; so does every Rollout under
    ``rolloutUpdates: never``, and, when the caller says so, under ``nextChange``.
    """
    if existing is None:
        return None
    strategy = spec_of(existing).get("strategy")
    if not isinstance(strategy, Mapping) or not strategy:
        return None
    phase = (existing.get("status") or {}).get("phase")
    keep = not update_strategy or policy.rollout_updates == "never"
    if not keep and phase not in ACTIVE_PHASES:
        return None
    field_name = "blueGreen" if "blueGreen" in strategy else "canary"
    block = strategy.get(field_name) or {}
    settings = {k: json_copy(v) for k, v in block.items() if k not in STRUCTURAL_KEYS[field_name]}
    return ("bluegreen" if field_name == "blueGreen" else "canary"), settings


def _skip(
    decision: ConversionDecision,
    reason: str,
    deployment: Mapping[str, Any],
    findings: Sequence[Finding] = (),
    environment: str | None = None,
    version: str = "",
) -> Conversion:
    return Conversion(
        decision=decision,
        reason=reason,
        deployment=json_copy(dict(deployment)),
        environment=environment,
        findings=tuple(findings),
        policy_version=version,
    )


@dataclass(frozen=True)
class _Admitted:
    """A Deployment past the skip checks: why it is in, its environment, what it asks for."""

    opt_in: OptIn
    source: str  # where the environment's name came from
    env: Environment
    choice: StrategyChoice

    @property
    def findings(self) -> list[Finding]:
        return [*self.opt_in.findings, *self.choice.findings]


def _invalid_replicas(deployment: Mapping[str, Any]) -> tuple[ConversionDecision, str] | None:
    """A Deployment the API server will refuse for its replica count is left to it: a
    conversion would patch the count to 0 and so make the invalid object valid."""
    replicas = spec_of(deployment).get("replicas")
    if replicas is None or (
        isinstance(replicas, int) and not isinstance(replicas, bool) and 0 <= replicas < 2**31
    ):
        return None
    return "refuse", f"spec.replicas {replicas!r} is not a valid count: not converted"


def _skip_checks(
    deployment: Mapping[str, Any],
    namespace: Mapping[str, Any] | None,
    policy: Policy,
    keys: Keys,
    forced_environment: str | None,
    schema: RolloutSchema | None = None,
) -> _Admitted | Conversion:
    """The Deployment's environment and strategy choice, or why it is skipped or refused."""
    version = str(policy.version)
    opt_in = resolve_opt_in(deployment, namespace, keys)
    if not opt_in.opted_in:
        return _skip("skip", opt_in.reason, deployment, opt_in.findings, version=version)
    env_choice = resolve_environment(deployment, namespace, policy, keys, forced=forced_environment)
    env = policy.environment(env_choice.name)
    if env is None:
        where = f"{env_choice.name!r} (from {env_choice.source})"
        return _skip(
            "refuse",
            f"environment {where} is not in the policy",
            deployment,
            [error("unknown-environment", f"policy has no environment {where}")],
            version=version,
        )
    choice = resolve_strategy(deployment, env, keys, schema)
    admitted = _Admitted(opt_in, env_choice.source, env, choice)
    refusal = _switched_off(admitted, keys) or _invalid_replicas(deployment)
    if refusal is None:
        return admitted
    decision, reason = refusal
    findings = list(admitted.findings)
    if decision == "refuse" and not any(f.is_error for f in findings):
        findings.append(error("not-converted", f"not converted: {reason}"))
    return _skip(decision, reason, deployment, findings, env.name, version)


def _switched_off(admitted: _Admitted, keys: Keys) -> tuple[ConversionDecision, str] | None:
    """Why an opted-in Deployment is still not converted: a switch is off, or its
    overrides are invalid."""
    if not admitted.env.enabled:
        return "skip", f"environment {admitted.env.name} is switched off (rollout.enabled: false)"
    if not admitted.choice.enabled:
        return "skip", f"annotation {keys.rollout} sets enabled: false"
    if any(f.is_error for f in admitted.findings):
        return "refuse", "the service's overrides are invalid"
    return None


def _recreate_warning(deployment: Mapping[str, Any], strategy: Strategy) -> list[Finding]:
    if (spec_of(deployment).get("strategy") or {}).get("type") != "Recreate":
        return []
    return [
        warning(
            "recreate",
            f"Deployment strategy Recreate has no Rollout equivalent; {strategy} replaces it",
        )
    ]


@dataclass(frozen=True)
class _Layout:
    """The Services and routes a strategy names: the stable Service (None: no Service
    selects the pods), the canary or preview Service generated next to it, the routing."""

    stable: Mapping[str, Any] | None
    second: str | None
    traffic: _Traffic

    @property
    def stable_name(self) -> str | None:
        return name_of(self.stable) if self.stable is not None else None


def _layout(
    deployment: Mapping[str, Any],
    env: Environment,
    strategy: Strategy,
    neighbours: Neighbours,
    keys: Keys,
    steps: object = (),
) -> tuple[_Layout, list[Finding]]:
    stable, findings = _stable_service(deployment, neighbours, keys)
    if stable is None:
        findings.append(
            error("no-service", "blue-green needs a Service that selects the pods; none does")
            if strategy == "bluegreen"
            else warning("no-service", "no Service selects the pods: canary by replica count only")
        )
        return _Layout(None, None, _Traffic(None, ())), findings
    stable_name = name_of(stable)
    second = dns_label(stable_name, "canary" if strategy == "canary" else "preview")
    traffic = (
        _traffic(env, stable_name, second, neighbours, namespace_of(deployment), steps)
        if strategy == "canary"
        else _Traffic(None, ())
    )
    layout = _Layout(stable, None if traffic.subset_level else second, traffic)
    return layout, [*findings, *traffic.findings]


def _replicas(
    deployment: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    operation: ConversionOperation,
    keys: Keys,
) -> tuple[int, int | None, bool]:
    """(replicas the owner wants, replicas the stored Deployment should have (None: as is),
    whether this request resizes the service).

    Once converted, the Deployment's own replica count belongs to Argo Rollouts, which
    scales it down. A later request for a new size (a GitOps sync putting back the count
    from Git, argo-rollouts#4935) is the service's new size and goes to the Rollout, while
    the Deployment keeps the count it had.
    """
    requested = _int(spec_of(deployment).get("replicas"), 1)
    recorded_text = annotations_of(deployment).get(keys.original_replicas)
    if old is not None and recorded_text is None:
        recorded_text = annotations_of(old).get(keys.original_replicas)
    converted = annotations_of(deployment).get(keys.rollout_name) or (
        old is not None and annotations_of(old).get(keys.rollout_name)
    )
    recorded = int(recorded_text) if recorded_text and recorded_text.isdigit() else None
    if not converted or recorded is None:
        # A new conversion: the Deployment's count is the size it asks for.
        return requested, (0 if operation == "CREATE" else None), True
    if old is not None:
        previous = _int(spec_of(old).get("replicas"), 1)
        if requested != previous:
            return requested, previous, True
    return recorded, None, False


def _rollout_replicas(
    wanted: int,
    resized: bool,
    hpas: Sequence[Mapping[str, Any]],
    existing: Mapping[str, Any] | None,
) -> int:
    """The Rollout's size. Once the Rollout exists its ``spec.replicas`` is the service's
    size: an HPA scaling it, or a person (``kubectl scale rollout``), sets it there, and
    only a request that resizes the Deployment moves it (without an HPA, which owns the
    size). ``original-replicas`` on the Deployment mirrors it, never the other way round."""
    current = spec_of(existing).get("replicas") if existing is not None else None
    if isinstance(current, int) and not isinstance(current, bool) and (hpas or not resized):
        return current
    if hpas:
        return clamp_to_hpa(wanted, hpas[0])
    return wanted


@dataclass(frozen=True)
class _Applied:
    """What the converted objects record: the environment, the strategy in force and the
    version of the policy that decided it."""

    env: Environment
    strategy: Strategy
    version: str

    def annotations(self, keys: Keys) -> dict[str, str]:
        return {
            keys.applied_environment: self.env.name,
            keys.applied_strategy: self.strategy,
            keys.policy_version: self.version,
        }


def _applied_version(
    kept: bool, existing: Mapping[str, Any] | None, version: str, keys: Keys
) -> str:
    """The version recorded is the one that decided the strategy in force."""
    if kept and existing is not None:
        return annotations_of(existing).get(keys.policy_version, version)
    return version


def _converted_deployment(
    deployment: Mapping[str, Any],
    applied: _Applied,
    wanted: int,
    stored: int | None,
    keys: Keys,
) -> Obj:
    """The Deployment as admitted: the product's annotations (``original-replicas``: the
    Rollout's size, ``wanted``), and its replicas when they change (0 on CREATE: pods come
    from the Rollout only)."""
    # Only the metadata is copied: the pod template, nearly all of the object, is shared
    # with the request (nothing changes a conversion's Deployment in place afterwards).
    metadata = json_copy(dict(meta(deployment)))
    converted = {**deployment, "metadata": metadata}
    metadata.setdefault("annotations", {}).update(
        {
            keys.rollout_name: name_of(deployment),
            keys.original_replicas: str(wanted),
            **applied.annotations(keys),
        }
    )
    if stored is not None:
        converted["spec"] = {**spec_of(deployment), "replicas": stored}
    return converted


_COPIED_SPEC_FIELDS = ("revisionHistoryLimit", "minReadySeconds", "progressDeadlineSeconds")


def _rollout_manifest(
    deployment: Mapping[str, Any],
    applied: _Applied,
    replicas: int,
    strategy_spec: Obj,
    keys: Keys,
    notifications: Mapping[str, str],
) -> Obj:
    """The Rollout: the Deployment's name, labels and selector, its pods by workloadRef,
    and the notification subscriptions of its policy as Argo's annotations."""
    name = name_of(deployment)
    labels = carried_labels(labels_of(deployment), keys)
    labels[keys.managed] = "true"
    labels[keys.generated_for] = name
    metadata: Obj = {
        "name": name,
        "namespace": namespace_of(deployment),
        "labels": labels,
        "annotations": {**applied.annotations(keys), **notifications},
    }
    owners = owner_reference(deployment)
    if owners:
        metadata["ownerReferences"] = owners
    spec = spec_of(deployment)
    rollout_spec: Obj = {"replicas": replicas}
    if "selector" in spec:
        rollout_spec["selector"] = json_copy(spec["selector"])
    rollout_spec.update({k: spec[k] for k in _COPIED_SPEC_FIELDS if k in spec})
    rollout_spec["workloadRef"] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": name,
        "scaleDown": applied.env.scale_down,
    }
    rollout_spec["strategy"] = strategy_spec
    rollout: Obj = {
        "apiVersion": ROLLOUT_API_VERSION,
        "kind": "Rollout",
        "metadata": metadata,
        "spec": rollout_spec,
    }
    return with_applied_hash(rollout, keys)


def plan_conversion(
    deployment: Mapping[str, Any],
    neighbours: Neighbours,
    policy: Policy,
    *,
    operation: ConversionOperation = "CREATE",
    old_deployment: Mapping[str, Any] | None = None,
    keys: Keys = DEFAULT_KEYS,
    environment: str | None = None,
    update_strategy: bool = True,
    rollout_schema: RolloutSchema | None = None,
) -> Conversion:
    """Decide whether and how to convert a Deployment, and produce every resulting object.

    With ``rollout_schema`` (the Rollout CRD the cluster serves), a conversion whose Rollout
    that schema refuses is a refusal instead: the Deployment is admitted as sent, never at
    0 replicas for a Rollout that cannot be made.

    ``environment`` forces the policy environment (the offline preview's option);
    otherwise the label rules of docs/labels.md choose it. ``update_strategy=False``
    keeps an existing Rollout's strategy (the reconciler under ``rolloutUpdates:
    nextChange``: only a change of the Deployment moves it to a new policy).

    The steps: the skip checks; the strategy in force (kept by a running Rollout, or
    the policy's); the Services and routes it names; the pre-flight checks; then the
    objects: the Deployment as admitted, the Rollout, the generated Service, the HPAs.
    """
    version = str(policy.version)
    admitted = _skip_checks(
        deployment, neighbours.namespace, policy, keys, environment, rollout_schema
    )
    if isinstance(admitted, Conversion):
        return admitted
    env = admitted.env
    name = name_of(deployment)
    existing = neighbours.rollout_named(name)
    kept = _kept_strategy(existing, policy, update_strategy)
    strategy, settings = kept or (admitted.choice.strategy, dict(admitted.choice.block))
    layout, layout_findings = _layout(
        deployment, env, strategy, neighbours, keys, settings.get("steps")
    )
    findings = [*admitted.findings, *_recreate_warning(deployment, strategy), *layout_findings]
    if strategy == "bluegreen" and layout.stable is None:
        return _skip("refuse", "no Service for blue-green", deployment, findings, env.name, version)
    if strategy == "canary":
        findings.extend(_traffic_dependent_settings(settings, layout.traffic.config is not None))
    if any(f.is_error for f in findings):
        return _skip("refuse", "pre-flight checks failed", deployment, findings, env.name, version)

    wanted, stored, resized = _replicas(deployment, old_deployment, operation, keys)
    hpas = hpas_for(neighbours.hpas, name)
    size = _rollout_replicas(wanted, resized, hpas, existing)
    applied = _Applied(env, strategy, _applied_version(kept is not None, existing, version, keys))
    analysis = plan_analysis(
        policy.analysis,
        env.name,
        _strategy_spec(
            strategy, settings, deployment, layout.stable_name, layout.second, layout.traffic
        ),
        service=name,
        namespace=namespace_of(deployment),
        known=KnownTemplates(neighbours.analysis_templates, neighbours.cluster_analysis_templates),
        keys=keys,
    )
    findings.extend(analysis.findings)
    services: tuple[Obj, ...] = ()
    if layout.stable is not None and layout.second is not None:
        clone = clone_service(layout.stable, layout.second, deployment, keys)
        services = (with_applied_hash(clone, keys),)
    verb = "converted" if operation == "CREATE" else "converted (running Deployment)"
    converted = Conversion(
        decision="convert",
        reason=f"{admitted.opt_in.reason}; {verb} with {env.name} {strategy} ({admitted.source})",
        deployment=_converted_deployment(deployment, applied, size, stored, keys),
        environment=env.name,
        strategy=strategy,
        rollout=_rollout_manifest(
            deployment, applied, size, analysis.strategy, keys, admitted.choice.notifications
        ),
        services=services,
        hpas=tuple(retarget_hpa(h, name) for h in hpas if not targets(h, "Rollout", name)),
        routes=layout.traffic.routes,
        findings=tuple(findings),
        policy_version=version,
        analysis_templates=analysis.templates,
    )
    return judged(converted, deployment, rollout_schema)


def judged(
    conversion: Conversion, deployment: Mapping[str, Any], schema: RolloutSchema | None
) -> Conversion:
    """``conversion``, or its refusal when ``schema`` refuses its Rollout (each problem
    named by its path, e.g. ``spec.strategy.canary.analysis.dryRun[0]``)."""
    if schema is None or conversion.rollout is None:
        return conversion
    problems = rollout_problems(schema, conversion.rollout)
    if not problems:
        return conversion
    # The path first: Kubernetes clips a warning at 120 characters.
    findings = [
        error("rollout-schema", f"{problem} (the Rollout schema of {schema.source})")
        for problem in problems
    ]
    return _skip(
        "refuse",
        f"the Rollout it makes is refused by the schema of {schema.source}: {problems[0]}",
        deployment,
        [*conversion.findings, *findings],
        conversion.environment,
        conversion.policy_version,
    )


def policy_plan_problems(policy: Policy, schema: RolloutSchema) -> tuple[str, ...]:
    """What the served Rollout schema refuses in the Rollout each environment would make
    for a plain service (a Deployment with its Service), as "environments.NAME.rollout:
    problem": a policy that passes its own checks may still make Rollouts the cluster
    refuses (a wrong type deep in an analysis, an int32 overflow)."""
    labels = {"app": "sample"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "sample",
            "namespace": "sample",
            "labels": {DEFAULT_KEYS.enabled: "true"},
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": []}},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "sample", "namespace": "sample"},
        "spec": {"selector": labels, "ports": [{"port": 80}]},
    }
    problems: list[str] = []
    for name in policy.environments:
        conversion = plan_conversion(
            deployment, Neighbours(services=(service,)), policy, environment=name
        )
        if conversion.rollout is None:
            continue
        problems.extend(
            f"environments.{name}.rollout: the Rollout it makes is refused by the schema of "
            f"{schema.source}: {problem}"
            for problem in rollout_problems(schema, conversion.rollout)
        )
    return tuple(problems)
