"""Managed analysis: the templates the policy owns, each environment's default analysis, and
the checks that a Rollout's analysis can run at all.

The policy may declare AnalysisTemplates and ClusterAnalysisTemplates (``analysis.templates``)
and give an environment a default analysis (``environments.NAME.analysis``): which template,
as a canary step or in the background, the Prometheus address and the names of the arguments
the product fills (the service's name, its namespace, the canary's pod-template hash). The
product writes the templates it owns next to the Rollouts that use them, with the same
server-side apply as everything else (docs/policy.md#analysis).

Argo Rollouts only finds out at run time that an analysis cannot work: a template that does
not exist, an argument nobody passes (``args.X was not resolved``), or a condition that
cannot be evaluated on what the provider returns. The Prometheus provider returns a list for
an instant vector or a matrix and a number only for a scalar (its ``Vector``/``Scalar``
cases), so the seed's ``result >= 0.95`` on a ``sum(...)/sum(...)`` query errors on every
measurement: it must be ``result[0] >= 0.95``. These checks warn before the Rollout exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from webhook.core.crd_schema import RolloutSchema, SchemaUnusable, rollout_problems
from webhook.core.errors import FieldError, Finding, warning
from webhook.core.keys import Keys
from webhook.core.objects import Obj, json_copy, name_of, spec_of, with_applied_hash

ANALYSIS_API_VERSION = "argoproj.io/v1alpha1"
ANALYSIS_TEMPLATE = "AnalysisTemplate"
CLUSTER_ANALYSIS_TEMPLATE = "ClusterAnalysisTemplate"
TEMPLATE_KINDS = (ANALYSIS_TEMPLATE, CLUSTER_ANALYSIS_TEMPLATE)
TEMPLATE_CRD_NAMES = ("analysistemplates.argoproj.io", "clusteranalysistemplates.argoproj.io")

AnalysisMode = Literal["step", "background"]
MODES: tuple[AnalysisMode, ...] = ("step", "background")

ARG_NAMES: Mapping[str, str] = {
    "serviceName": "service-name",
    "namespace": "namespace",
    "canaryHash": "canary-hash",
    "stableHash": "stable-hash",
    "prometheusAddress": "prometheus-address",
}
"""What the product can pass to a template, and the argument name each goes to unless the
environment's ``analysis.args`` renames it."""

_TOP_KEYS = ("templates",)
_TEMPLATE_KEYS = ("kind", "name", "spec")
_ENV_KEYS = ("template", "clusterScope", "mode", "atStep", "startingStep", "prometheus", "args")
# A DNS-1123 subdomain: what the API server requires of an object's name.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ARG_USE = re.compile(r"\{\{\s*args\.([A-Za-z0-9_.-]+)\s*\}\}")
_RESULT = re.compile(r"\bresult\b")
# expr functions that take the whole list: `all(result, {# >= 0.95})`, `len(result)`.
_LIST_FUNCTIONS = frozenset(
    ("all", "any", "none", "one", "filter", "map", "count", "len", "sum", "max", "min", "mean")
)
_FUNCTION_BEFORE = re.compile(r"(\w+)\s*\($")
_FUNCTION_WINDOW = 32
_SUGGESTED_LENGTH = 80


@dataclass(frozen=True)
class ManagedTemplate:
    """A template the policy declares; the product creates and updates it."""

    kind: str
    name: str
    spec: Mapping[str, Any]

    @property
    def cluster_scope(self) -> bool:
        return self.kind == CLUSTER_ANALYSIS_TEMPLATE


@dataclass(frozen=True)
class EnvironmentAnalysis:
    """An environment's default analysis."""

    template: str
    cluster_scope: bool = False
    mode: AnalysisMode = "step"
    at_step: int | None = None
    """step mode: the analysis step goes before ``steps[at_step]`` (None: after the last)."""
    starting_step: int | None = None
    """background mode: Argo's ``startingStep``."""
    prometheus_address: str | None = None
    arg_names: Mapping[str, str] = field(default_factory=lambda: dict(ARG_NAMES))


@dataclass(frozen=True)
class AnalysisSettings:
    templates: tuple[ManagedTemplate, ...] = ()
    environments: Mapping[str, EnvironmentAnalysis] = field(default_factory=dict)

    def managed(self, name: str, cluster_scope: bool) -> ManagedTemplate | None:
        kind = CLUSTER_ANALYSIS_TEMPLATE if cluster_scope else ANALYSIS_TEMPLATE
        return next((t for t in self.templates if t.kind == kind and t.name == name), None)


NO_ANALYSIS = AnalysisSettings()


# ---------------------------------------------------------------------------
# The policy keys: validation and parsing.


def without_analysis(doc: object) -> object:
    """The policy document without its analysis keys (the top-level ``analysis`` and each
    environment's), for the checks of the rest of the document."""
    if not isinstance(doc, Mapping):
        return doc
    out = {k: v for k, v in doc.items() if k != "analysis"}
    envs = out.get("environments")
    if isinstance(envs, Mapping):
        out["environments"] = {
            name: (
                {k: v for k, v in env.items() if k != "analysis"}
                if isinstance(env, Mapping)
                else env
            )
            for name, env in envs.items()
        }
    return out


def _kind_of(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", str: "a string", list: "a list"}
    if value is None:
        return "null"
    return "a mapping" if isinstance(value, Mapping) else names.get(type(value), "a value")


def _mapping(value: object, path: str, errors: list[FieldError]) -> Mapping[str, Any] | None:
    if isinstance(value, Mapping):
        return value
    errors.append(FieldError(path, f"must be a mapping, not {_kind_of(value)}"))
    return None


def _unknown(
    block: Mapping[str, Any], allowed: tuple[str, ...], path: str, errors: list[FieldError]
) -> None:
    for key in block:
        if key not in allowed:
            errors.append(
                FieldError(f"{path}.{key}", f"unknown key (allowed: {', '.join(allowed)})")
            )


def _non_negative(value: object, path: str, errors: list[FieldError]) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        errors.append(FieldError(path, "must be an integer, 0 or more"))


def validate_analysis(doc: object) -> list[FieldError]:
    """Every error in the policy's analysis keys, with its path. The templates' specs are
    checked against the served CRD by ``template_schema_problems``."""
    if not isinstance(doc, Mapping):
        return []
    errors: list[FieldError] = []
    declared: dict[str, str] = {}
    if "analysis" in doc:
        declared = _validate_templates(doc["analysis"], errors)
    envs = doc.get("environments")
    if isinstance(envs, Mapping):
        for name, env in envs.items():
            if isinstance(env, Mapping) and "analysis" in env:
                path = f"environments.{name}.analysis"
                _validate_environment(env["analysis"], path, declared, errors)
    return errors


def _validate_templates(value: object, errors: list[FieldError]) -> dict[str, str]:
    """Checks ``analysis``; returns the declared templates' kinds by name."""
    block = _mapping(value, "analysis", errors)
    if block is None:
        return {}
    _unknown(block, _TOP_KEYS, "analysis", errors)
    items = block.get("templates", [])
    if not isinstance(items, list):
        errors.append(FieldError("analysis.templates", f"must be a list, not {_kind_of(items)}"))
        return {}
    declared: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    for i, item in enumerate(items):
        path = f"analysis.templates[{i}]"
        template = _mapping(item, path, errors)
        if template is None:
            continue
        kind, name = _validate_template(template, path, errors)
        if (kind, name) in seen:
            errors.append(FieldError(f"{path}.name", f"{kind} {name!r} is declared twice"))
        seen.add((kind, name))
        declared.setdefault(name, kind)
    return declared


def _validate_template(
    template: Mapping[str, Any], path: str, errors: list[FieldError]
) -> tuple[str, str]:
    _unknown(template, _TEMPLATE_KEYS, path, errors)
    kind = template.get("kind", ANALYSIS_TEMPLATE)
    if kind not in TEMPLATE_KINDS:
        errors.append(FieldError(f"{path}.kind", f"must be one of {', '.join(TEMPLATE_KINDS)}"))
    name = template.get("name")
    if not isinstance(name, str) or len(name) > 253 or not _NAME.match(name):
        errors.append(
            FieldError(f"{path}.name", "must be a DNS-1123 subdomain (lowercase, digits, - and .)")
        )
    spec = _mapping(template.get("spec"), f"{path}.spec", errors)
    if spec is not None:
        metrics = spec.get("metrics")
        if not isinstance(metrics, list) or not metrics:
            errors.append(FieldError(f"{path}.spec.metrics", "must be a non-empty list"))
    return str(kind), str(name)


def _validate_environment(
    value: object, path: str, declared: Mapping[str, str], errors: list[FieldError]
) -> None:
    block = _mapping(value, path, errors)
    if block is None:
        return
    _unknown(block, _ENV_KEYS, path, errors)
    template = block.get("template")
    if not isinstance(template, str) or not template:
        errors.append(FieldError(f"{path}.template", "is required: the name of a template"))
    _validate_scope(block, path, declared.get(str(template)), errors)
    mode = block.get("mode", "step")
    if mode not in MODES:
        errors.append(FieldError(f"{path}.mode", f"must be one of {', '.join(MODES)}"))
    for key, needs in (("atStep", "step"), ("startingStep", "background")):
        if key in block:
            _non_negative(block[key], f"{path}.{key}", errors)
            if mode != needs:
                errors.append(FieldError(f"{path}.{key}", f"applies only to mode: {needs}"))
    if "prometheus" in block:
        _validate_prometheus(block["prometheus"], f"{path}.prometheus", errors)
    if "args" in block:
        _validate_arg_names(block["args"], f"{path}.args", errors)


def _validate_scope(
    block: Mapping[str, Any], path: str, managed_kind: str | None, errors: list[FieldError]
) -> None:
    if "clusterScope" not in block:
        return
    scope = block["clusterScope"]
    if not isinstance(scope, bool):
        errors.append(FieldError(f"{path}.clusterScope", "must be true or false"))
    elif managed_kind is not None and scope != (managed_kind == CLUSTER_ANALYSIS_TEMPLATE):
        errors.append(
            FieldError(
                f"{path}.clusterScope",
                f"is {str(scope).lower()}, but the policy declares {block.get('template')!r} "
                f"as a {managed_kind}",
            )
        )


def _validate_prometheus(value: object, path: str, errors: list[FieldError]) -> None:
    block = _mapping(value, path, errors)
    if block is None:
        return
    _unknown(block, ("address",), path, errors)
    address = block.get("address")
    # Argo's provider refuses an address that is not a URL ("prometheus address is not is
    # url format"), and only at the first measurement.
    if not isinstance(address, str) or not re.match(r"^https?://[^\s/]+", address):
        errors.append(FieldError(f"{path}.address", "must be an http:// or https:// URL"))


def _validate_arg_names(value: object, path: str, errors: list[FieldError]) -> None:
    block = _mapping(value, path, errors)
    if block is None:
        return
    _unknown(block, tuple(ARG_NAMES), path, errors)
    for key, name in block.items():
        if key in ARG_NAMES and (not isinstance(name, str) or not name):
            errors.append(FieldError(f"{path}.{key}", "must be an argument name"))


def parse_analysis(doc: Mapping[str, Any]) -> AnalysisSettings:
    """The analysis settings of a policy document that ``validate_analysis`` accepted."""
    block = doc.get("analysis") or {}
    templates = tuple(
        ManagedTemplate(
            kind=str(t.get("kind", ANALYSIS_TEMPLATE)),
            name=str(t["name"]),
            spec=json_copy(dict(t["spec"])),
        )
        for t in block.get("templates", [])
    )
    kinds = {t.name: t.kind for t in templates}
    environments: dict[str, EnvironmentAnalysis] = {}
    for name, env in (doc.get("environments") or {}).items():
        if isinstance(env, Mapping) and isinstance(env.get("analysis"), Mapping):
            environments[str(name)] = _environment_analysis(env["analysis"], kinds)
    return AnalysisSettings(templates, environments)


def _environment_analysis(
    block: Mapping[str, Any], kinds: Mapping[str, str]
) -> EnvironmentAnalysis:
    template = str(block["template"])
    scope = block.get("clusterScope", kinds.get(template) == CLUSTER_ANALYSIS_TEMPLATE)
    return EnvironmentAnalysis(
        template=template,
        cluster_scope=bool(scope),
        mode=cast(AnalysisMode, block.get("mode", "step")),
        at_step=block.get("atStep"),
        starting_step=block.get("startingStep"),
        prometheus_address=(block.get("prometheus") or {}).get("address"),
        arg_names={**ARG_NAMES, **(block.get("args") or {})},
    )


# ---------------------------------------------------------------------------
# The templates as objects, and their schema.


def template_manifest(template: ManagedTemplate, namespace: str, keys: Keys) -> Obj:
    """The template as the product applies it (in ``namespace`` unless cluster-scoped)."""
    metadata: Obj = {"name": template.name}
    if not template.cluster_scope:
        metadata["namespace"] = namespace
    metadata["labels"] = {keys.managed: "true"}
    manifest: Obj = {
        "apiVersion": ANALYSIS_API_VERSION,
        "kind": template.kind,
        "metadata": metadata,
        "spec": json_copy(dict(template.spec)),
    }
    return with_applied_hash(manifest, keys)


def template_schema_from_crd(crd: Mapping[str, Any], *, source: str) -> tuple[str, RolloutSchema]:
    """(kind, schema) of the served v1alpha1 AnalysisTemplate or ClusterAnalysisTemplate
    from its CustomResourceDefinition, judged like the Rollout's (``crd_schema``)."""
    spec = crd.get("spec") if isinstance(crd, Mapping) else None
    kind = ((spec or {}).get("names") or {}).get("kind")
    if crd.get("kind") != "CustomResourceDefinition" or kind not in TEMPLATE_KINDS:
        raise SchemaUnusable(
            f"{source}: not the CustomResourceDefinition of AnalysisTemplates or "
            "ClusterAnalysisTemplates"
        )
    for version in (spec or {}).get("versions") or []:
        if version.get("name") == "v1alpha1" and version.get("served", True):
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if isinstance(schema, Mapping):
                return str(kind), RolloutSchema(schema, source)
    raise SchemaUnusable(f"{source}: serves no v1alpha1 {kind} with a schema")


def template_schema_problems(
    settings: AnalysisSettings, schemas: Mapping[str, RolloutSchema]
) -> list[FieldError]:
    """What the served schemas (by kind) refuse in the declared templates, with the path of
    each problem in the policy (``analysis.templates[0].spec.metrics[0].count``)."""
    errors: list[FieldError] = []
    for i, template in enumerate(settings.templates):
        schema = schemas.get(template.kind)
        if schema is None:
            continue
        manifest = template_manifest(template, "policy", Keys())
        for problem in rollout_problems(schema, manifest):
            where, _, what = problem.partition(": ")
            errors.append(
                FieldError(
                    f"analysis.templates[{i}].{where}", f"{what} (the schema of {schema.source})"
                )
            )
    return errors


# ---------------------------------------------------------------------------
# What a template needs of its conditions and arguments.


def _bare_result_uses(condition: str) -> bool:
    """Whether ``result`` is used as a number: not indexed, not handed to a list function."""
    for match in _RESULT.finditer(condition):
        after = condition[match.end() :].lstrip()
        # Only the few characters before: a search over the whole prefix, at every use of
        # `result`, would be quadratic in a condition from a hostile policy.
        window = condition[max(0, match.start() - _FUNCTION_WINDOW) : match.start()].rstrip()
        before = _FUNCTION_BEFORE.search(window)
        if after.startswith("[") or (before and before.group(1) in _LIST_FUNCTIONS):
            continue
        return True
    return False


def _prometheus_condition_problem(condition: str, query: str) -> str | None:
    scalar = query.strip().startswith("scalar(")
    if scalar and re.search(r"\bresult\s*\[", condition):
        return "the query is a scalar, so result is a number, not a list"
    if not scalar and _bare_result_uses(condition):
        # Kept short: Kubernetes clips a warning at 120 characters, and the fix comes last.
        if len(condition) > _SUGGESTED_LENGTH:
            return "Prometheus gives a list here; index it: result[0]"
        fixed = re.sub(r"\bresult\b(?!\s*\[)", "result[0]", condition)
        return f"Prometheus gives a list here; write {fixed.strip()!r}"
    return None


def condition_problems(kind: str, name: str, spec: Mapping[str, Any]) -> list[str]:
    """Conditions that cannot work with what their metric's provider returns, and
    ``{{args.X}}`` uses of arguments the template does not declare."""
    problems: list[str] = []
    declared = {a.get("name") for a in spec.get("args") or [] if isinstance(a, Mapping)}
    for i, metric in enumerate(spec.get("metrics") or []):
        if not isinstance(metric, Mapping):
            continue
        where = f"{kind} {name} metrics[{i}]"
        prometheus = (metric.get("provider") or {}).get("prometheus")
        for key in ("successCondition", "failureCondition"):
            condition = metric.get(key)
            if isinstance(prometheus, Mapping) and isinstance(condition, str):
                problem = _prometheus_condition_problem(condition, str(prometheus.get("query", "")))
                if problem:
                    problems.append(f"{where} {key}: {problem}")
        for used in sorted(set(_ARG_USE.findall(repr(metric))) - declared):
            problems.append(
                f"{where} uses {{{{args.{used}}}}}, which the template does not declare"
            )
    return problems


def _unresolved_args(spec: Mapping[str, Any], passed: Sequence[Any]) -> list[str]:
    """Arguments without a value in the template that the reference does not pass: Argo
    refuses to start the analysis ("args.X was not resolved")."""
    given = {a.get("name") for a in passed if isinstance(a, Mapping)}
    return [
        str(arg.get("name"))
        for arg in spec.get("args") or []
        if isinstance(arg, Mapping)
        and "value" not in arg
        and "valueFrom" not in arg
        and arg.get("name") not in given
    ]


# ---------------------------------------------------------------------------
# The analysis of one Rollout.


@dataclass(frozen=True)
class Reference:
    """A template a Rollout's strategy names, where, and the arguments passed with it."""

    path: str
    name: str
    cluster_scope: bool
    args: tuple[Any, ...]

    @property
    def kind(self) -> str:
        return CLUSTER_ANALYSIS_TEMPLATE if self.cluster_scope else ANALYSIS_TEMPLATE


def _block_references(block: object, path: str) -> Iterator[Reference]:
    if not isinstance(block, Mapping):
        return
    args = tuple(block.get("args") or ())
    for i, template in enumerate(block.get("templates") or []):
        if isinstance(template, Mapping) and isinstance(template.get("templateName"), str):
            yield Reference(
                f"{path}.templates[{i}]",
                template["templateName"],
                bool(template.get("clusterScope", False)),
                args,
            )


def _step_references(steps: object, path: str) -> Iterator[Reference]:
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        if not isinstance(step, Mapping):
            continue
        yield from _block_references(step.get("analysis"), f"{path}[{i}].analysis")
        experiment = step.get("experiment")
        analyses = experiment.get("analyses") if isinstance(experiment, Mapping) else None
        for j, analysis in enumerate(analyses if isinstance(analyses, list) else []):
            if isinstance(analysis, Mapping) and isinstance(analysis.get("templateName"), str):
                yield Reference(
                    f"{path}[{i}].experiment.analyses[{j}]",
                    analysis["templateName"],
                    bool(analysis.get("clusterScope", False)),
                    tuple(analysis.get("args") or ()),
                )


def referenced_templates(strategy: Mapping[str, Any]) -> list[Reference]:
    """Every template a Rollout's ``spec.strategy`` names, in document order."""
    refs: list[Reference] = []
    canary = strategy.get("canary")
    if isinstance(canary, Mapping):
        base = "spec.strategy.canary"
        refs.extend(_block_references(canary.get("analysis"), f"{base}.analysis"))
        refs.extend(_step_references(canary.get("steps"), f"{base}.steps"))
    blue_green = strategy.get("blueGreen")
    if isinstance(blue_green, Mapping):
        for key in ("prePromotionAnalysis", "postPromotionAnalysis"):
            refs.extend(_block_references(blue_green.get(key), f"spec.strategy.blueGreen.{key}"))
    return refs


@dataclass(frozen=True)
class KnownTemplates:
    """The templates that exist where a Rollout runs: its namespace's and the cluster's."""

    namespaced: tuple[Mapping[str, Any], ...] = ()
    cluster: tuple[Mapping[str, Any], ...] = ()

    def find(self, ref: Reference) -> Mapping[str, Any] | None:
        pool = self.cluster if ref.cluster_scope else self.namespaced
        return next((t for t in pool if name_of(t) == ref.name), None)

    def spec(self, ref: Reference) -> Mapping[str, Any] | None:
        found = self.find(ref)
        return None if found is None else spec_of(found)


def _arg_value(source: str, arg: str, env: EnvironmentAnalysis, service: str, ns: str) -> Obj:
    values: dict[str, Obj] = {
        "serviceName": {"name": arg, "value": service},
        "namespace": {"name": arg, "value": ns},
        "canaryHash": {"name": arg, "valueFrom": {"podTemplateHashValue": "Latest"}},
        "stableHash": {"name": arg, "valueFrom": {"podTemplateHashValue": "Stable"}},
    }
    if env.prometheus_address:
        values["prometheusAddress"] = {"name": arg, "value": env.prometheus_address}
    return values.get(source, {})


def default_analysis_block(
    env: EnvironmentAnalysis, template_spec: Mapping[str, Any] | None, service: str, ns: str
) -> Obj:
    """The ``analysis`` block of an environment's default analysis for one service: its
    template and the arguments the product fills (those the template declares, when its
    spec is known; all of them otherwise: Argo ignores an argument a template does not
    declare)."""
    declared = (
        None
        if template_spec is None
        else {a.get("name") for a in template_spec.get("args") or [] if isinstance(a, Mapping)}
    )
    args = []
    for source, arg in env.arg_names.items():
        value = _arg_value(source, arg, env, service, ns)
        if value and (declared is None or arg in declared):
            args.append(value)
    reference: Obj = {"templateName": env.template}
    if env.cluster_scope:
        reference["clusterScope"] = True
    block: Obj = {"templates": [reference]}
    if args:
        block["args"] = args
    return block


def _names_template(block: object, env: EnvironmentAnalysis) -> bool:
    return any(
        r.name == env.template and r.cluster_scope == env.cluster_scope
        for r in _block_references(block, "")
    )


def with_default_analysis(strategy: Obj, env: EnvironmentAnalysis, block: Obj) -> Obj:
    """The Rollout's ``spec.strategy`` with the environment's default analysis added, unless
    the strategy already runs that analysis where the default would go (so planning a
    converted Rollout again changes nothing, and a service's own analysis wins)."""
    out = json_copy(strategy)
    canary = out.get("canary")
    if isinstance(canary, dict):
        if env.mode == "background":
            if "analysis" not in canary:
                background = {**block}
                if env.starting_step is not None:
                    background["startingStep"] = env.starting_step
                canary["analysis"] = background
            return out
        steps = canary.setdefault("steps", [])
        if not any(
            isinstance(s, Mapping) and _names_template(s.get("analysis"), env) for s in steps
        ):
            at = len(steps) if env.at_step is None else min(env.at_step, len(steps))
            steps.insert(at, {"analysis": block})
        return out
    blue_green = out.get("blueGreen")
    if isinstance(blue_green, dict):
        key = "prePromotionAnalysis" if env.mode == "step" else "postPromotionAnalysis"
        blue_green.setdefault(key, block)
    return out


@dataclass(frozen=True)
class AnalysisPlan:
    """A Rollout's strategy with its default analysis, the managed templates it needs
    written (in the Rollout's namespace, or cluster-wide), and the warnings."""

    strategy: Obj
    templates: tuple[Obj, ...] = ()
    findings: tuple[Finding, ...] = ()


def plan_analysis(
    settings: AnalysisSettings,
    environment: str,
    strategy: Obj,
    *,
    service: str,
    namespace: str,
    known: KnownTemplates,
    keys: Keys,
) -> AnalysisPlan:
    """The analysis of one service's Rollout (``strategy`` is its ``spec.strategy``)."""
    env = settings.environments.get(environment)
    if env is not None:
        managed = settings.managed(env.template, env.cluster_scope)
        spec = (
            managed.spec
            if managed is not None
            else known.spec(Reference("", env.template, env.cluster_scope, ()))
        )
        strategy = with_default_analysis(
            strategy, env, default_analysis_block(env, spec, service, namespace)
        )
    templates: dict[tuple[str, str], Obj] = {}
    findings: list[Finding] = []
    for ref in referenced_templates(strategy):
        managed = settings.managed(ref.name, ref.cluster_scope)
        existing = known.find(ref)
        if managed is not None and existing is not None and not _ours(existing, keys):
            # Someone else's template of that name: never overwritten (the apply is forced).
            findings.append(_not_ours(ref, namespace))
            managed = None
        if managed is not None:
            templates[(ref.kind, ref.name)] = template_manifest(managed, namespace, keys)
        spec = managed.spec if managed is not None else known.spec(ref)
        findings.extend(_reference_findings(ref, spec, namespace))
    unique = list(dict.fromkeys(f.message for f in findings))
    return AnalysisPlan(
        strategy,
        tuple(templates.values()),
        tuple(warning("analysis", message) for message in unique),
    )


def _ours(template: Mapping[str, Any], keys: Keys) -> bool:
    labels = (template.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(keys.managed) == "true")


def _not_ours(ref: Reference, namespace: str) -> Finding:
    where = "" if ref.cluster_scope else f" in namespace {namespace}"
    return warning(
        "analysis",
        f"{ref.kind} {ref.name}{where} was not made by rollout-webhook: used as it is, not "
        f"replaced by the policy's ({ref.path})",
    )


def _reference_findings(
    ref: Reference, spec: Mapping[str, Any] | None, namespace: str
) -> list[Finding]:
    if spec is None:
        where = "in the cluster" if ref.cluster_scope else f"in namespace {namespace}"
        return [
            warning(
                "analysis",
                f"{ref.kind} {ref.name} not found {where} nor managed by the policy: the "
                f"analysis at {ref.path} will fail",
            )
        ]
    problems = condition_problems(ref.kind, ref.name, spec)
    problems.extend(
        f"{ref.kind} {ref.name}: args.{arg} is neither passed nor given a value: Argo will not "
        f"start the analysis at {ref.path}"
        for arg in _unresolved_args(spec, ref.args)
    )
    return [warning("analysis", p) for p in problems]


# ---------------------------------------------------------------------------
# The policy as a whole (``policy validate``, the policy's admission).


def policy_analysis_warnings(
    settings: AnalysisSettings, rollouts: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """What cannot work in the policy's analysis: a managed template whose conditions do
    not fit its provider, and templates named (by an environment's default analysis or its
    ``rollout:`` block) that the policy does not manage, which must then exist in every
    namespace that uses them (or in the cluster)."""
    out = [p for t in settings.templates for p in condition_problems(t.kind, t.name, t.spec)]
    for name, env in settings.environments.items():
        if settings.managed(env.template, env.cluster_scope) is None:
            kind = CLUSTER_ANALYSIS_TEMPLATE if env.cluster_scope else ANALYSIS_TEMPLATE
            out.append(
                f"environments.{name}.analysis.template: {kind} {env.template} is not managed "
                "by the policy: it must exist "
                + ("in the cluster" if env.cluster_scope else "in every namespace that uses it")
            )
    for name, rollout in rollouts.items():
        strategy = {"canary": rollout.get("canary") or {}, "blueGreen": rollout.get("blueGreen")}
        for ref in referenced_templates(strategy):
            if settings.managed(ref.name, ref.cluster_scope) is None:
                path = ref.path.replace("spec.strategy.", f"environments.{name}.rollout.")
                out.append(
                    f"{path}: {ref.kind} {ref.name} is not managed by the policy: it must exist "
                    + ("in the cluster" if ref.cluster_scope else "in every namespace that uses it")
                )
    return list(dict.fromkeys(out))
