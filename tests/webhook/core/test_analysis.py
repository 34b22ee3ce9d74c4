"""Managed analysis: the policy keys, the default analysis, the templates written, the warnings."""

from __future__ import annotations

import copy
from typing import Any, cast

import pytest
import yaml

from tests.builders import admission_request, deployment, service
from tests.schemas import CRD_DIR, validate_object
from webhook.core.actions import Apply
from webhook.core.admission import decide_mutation, permissions_for
from webhook.core.analysis import (
    ARG_NAMES,
    EnvironmentAnalysis,
    KnownTemplates,
    condition_problems,
    default_analysis_block,
    plan_analysis,
    policy_analysis_warnings,
    referenced_templates,
    template_schema_from_crd,
    template_schema_problems,
    validate_analysis,
    with_default_analysis,
)
from webhook.core.convert import Neighbours, plan_conversion
from webhook.core.crd_schema import SchemaUnusable
from webhook.core.errors import PolicyInvalid
from webhook.core.keys import DEFAULT_KEYS as K
from webhook.core.policy import Policy, parse_policy_text
from webhook.core.reconcile import plan_reconcile
from webhook.core.review import AdmissionPlan, AdmissionRequest
from webhook.kube.view import MemoryClusterView

SEED_QUERY = (
    'sum(rate(http_requests_total{job="{{args.service-name}}",status=~"2.."}[5m]))\n/\n'
    'sum(rate(http_requests_total{job="{{args.service-name}}"}[5m]))\n'
)


def seed_template(condition: str = "result[0] >= 0.95", **extra: Any) -> dict[str, Any]:
    """The seed's success-rate template (docs: Prometheus Integration), as a policy entry."""
    metric = {
        "name": "success-rate",
        "successCondition": condition,
        "interval": "60s",
        "count": 5,
        "provider": {"prometheus": {"address": "{{args.prometheus-address}}", "query": SEED_QUERY}},
    }
    spec = {"args": [{"name": "service-name"}, {"name": "prometheus-address"}]}
    return {"name": "success-rate", "spec": {**spec, "metrics": [metric]}, **extra}


def policy_doc(env_analysis: Any = None, templates: Any = None, **rollout: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "rollout": {
            "strategy": "canary",
            "canary": {"steps": [{"setWeight": 20}, {"pause": {"duration": "1m"}}]},
            **rollout,
        }
    }
    if env_analysis is not None:
        env["analysis"] = env_analysis
    doc: dict[str, Any] = {"defaultEnvironment": "prod", "environments": {"prod": env}}
    if templates is not None:
        doc["analysis"] = {"templates": templates}
    return doc


def policy_of(doc: dict[str, Any]) -> Policy:
    return parse_policy_text(yaml.safe_dump(doc))


PROMETHEUS = {"address": "http://prometheus.monitoring:9090"}
DEFAULT = {"template": "success-rate", "prometheus": PROMETHEUS}


# ---------------------------------------------------------------------------
# The policy keys.

INVALID = [
    ("analysis: must be a mapping", {"analysis": []}),
    ("analysis.color: unknown key", {"analysis": {"templates": [], "color": 1}}),
    ("analysis.templates: must be a list", {"analysis": {"templates": {}}}),
    ("analysis.templates[0]: must be a mapping", {"analysis": {"templates": ["x"]}}),
    (
        "analysis.templates[0].kind: must be one of AnalysisTemplate, ClusterAnalysisTemplate",
        {"analysis": {"templates": [seed_template(kind="Rollout")]}},
    ),
    (
        "analysis.templates[0].name: must be a DNS-1123 subdomain",
        {"analysis": {"templates": [{**seed_template(), "name": "Success_Rate"}]}},
    ),
    (
        "analysis.templates[0].spec.metrics: must be a non-empty list",
        {"analysis": {"templates": [{"name": "a", "spec": {"metrics": []}}]}},
    ),
    (
        "analysis.templates[0].spec: must be a mapping",
        {"analysis": {"templates": [{"name": "a"}]}},
    ),
    (
        "analysis.templates[0].labels: unknown key",
        {"analysis": {"templates": [seed_template(labels={})]}},
    ),
    (
        "analysis.templates[1].name: AnalysisTemplate 'success-rate' is declared twice",
        {"analysis": {"templates": [seed_template(), seed_template()]}},
    ),
]

ENV_INVALID = [
    ("environments.prod.analysis: must be a mapping", "success-rate"),
    ("environments.prod.analysis.template: is required", {"mode": "step"}),
    ("environments.prod.analysis.mode: must be one of step, background", {**DEFAULT, "mode": "x"}),
    ("environments.prod.analysis.atStep: must be an integer", {**DEFAULT, "atStep": -1}),
    (
        "environments.prod.analysis.atStep: applies only to mode: step",
        {
            **DEFAULT,
            "mode": "background",
            "atStep": 1,
        },
    ),
    (
        "environments.prod.analysis.startingStep: applies only to mode: background",
        {
            **DEFAULT,
            "startingStep": 1,
        },
    ),
    (
        "environments.prod.analysis.startingStep: must be an integer",
        {
            **DEFAULT,
            "mode": "background",
            "startingStep": "2",
        },
    ),
    (
        "environments.prod.analysis.prometheus.address: must be an http:// or https:// URL",
        {
            "template": "success-rate",
            "prometheus": {"address": "prometheus:9090"},
        },
    ),
    (
        "environments.prod.analysis.prometheus.port: unknown key",
        {
            "template": "success-rate",
            "prometheus": {**PROMETHEUS, "port": 9090},
        },
    ),
    ("environments.prod.analysis.args.podHash: unknown key", {**DEFAULT, "args": {"podHash": "h"}}),
    (
        "environments.prod.analysis.args.canaryHash: must be an argument name",
        {
            **DEFAULT,
            "args": {"canaryHash": ""},
        },
    ),
    (
        "environments.prod.analysis.clusterScope: must be true or false",
        {
            **DEFAULT,
            "clusterScope": "yes",
        },
    ),
    (
        "environments.prod.analysis.clusterScope: is true, but the policy declares "
        "'success-rate' as a AnalysisTemplate",
        {**DEFAULT, "clusterScope": True},
    ),
    ("environments.prod.analysis.every: unknown key", {**DEFAULT, "every": "5m"}),
]


@pytest.mark.parametrize(("expected", "top"), INVALID, ids=[e for e, _ in INVALID])
def test_invalid_templates_are_refused_with_their_path(expected: str, top: dict[str, Any]) -> None:
    doc = {**policy_doc(), **top}
    with pytest.raises(PolicyInvalid) as refused:
        policy_of(doc)
    assert any(str(e).startswith(expected) for e in refused.value.errors), refused.value.errors


@pytest.mark.parametrize(("expected", "env"), ENV_INVALID, ids=[e for e, _ in ENV_INVALID])
def test_invalid_environment_analysis_is_refused_with_its_path(expected: str, env: Any) -> None:
    doc = policy_doc(env, [seed_template()])
    with pytest.raises(PolicyInvalid) as refused:
        policy_of(doc)
    assert any(str(e).startswith(expected) for e in refused.value.errors), refused.value.errors


def test_a_valid_policy_is_parsed_with_its_defaults() -> None:
    cluster = seed_template(kind="ClusterAnalysisTemplate")
    policy = policy_of(
        policy_doc({"template": "success-rate", "args": {"canaryHash": "hash"}}, [cluster])
    )
    env = policy.analysis.environments["prod"]
    # The scope follows the declared template; the renamed argument is the only change.
    assert env.cluster_scope is True
    assert env.mode == "step"
    assert env.prometheus_address is None
    assert env.arg_names == {**ARG_NAMES, "canaryHash": "hash"}
    assert [t.kind for t in policy.analysis.templates] == ["ClusterAnalysisTemplate"]
    # The analysis keys are part of what the policy's version hashes.
    other = policy_of(policy_doc({"template": "success-rate"}, [cluster]))
    assert other.version.sha256 != policy.version.sha256


def test_validate_analysis_ignores_documents_it_does_not_own() -> None:
    assert validate_analysis("not a mapping") == []
    assert validate_analysis({"environments": {"prod": "x"}}) == []


# ---------------------------------------------------------------------------
# The released CRD schemas.


def crd(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((CRD_DIR / name).read_text())
    return doc


TEMPLATE_CRD = "argo-rollouts-v1.9.1-analysis-template.yaml"
CLUSTER_CRD = "argo-rollouts-v1.9.1-cluster-analysis-template.yaml"


def test_templates_are_judged_by_the_released_crd_schemas() -> None:
    schemas = dict(
        template_schema_from_crd(crd(name), source=name) for name in (TEMPLATE_CRD, CLUSTER_CRD)
    )
    assert set(schemas) == {"AnalysisTemplate", "ClusterAnalysisTemplate"}
    good = seed_template()
    bad = copy.deepcopy(seed_template())
    bad["spec"]["metrics"][0]["interval"] = 60
    bad_cluster = copy.deepcopy(seed_template(kind="ClusterAnalysisTemplate"))
    bad_cluster["name"] = "cluster-rate"
    bad_cluster["spec"]["metrics"][0]["provider"]["prometheus"]["timeout"] = "30s"
    good_cluster = {**seed_template(kind="ClusterAnalysisTemplate"), "name": "cluster-rate"}
    policy = policy_of(policy_doc(None, [good, good_cluster]))
    assert template_schema_problems(policy.analysis, schemas) == []
    bad["name"] = "other"
    policy = policy_of(policy_doc(None, [good, bad, bad_cluster]))
    problems = [str(p) for p in template_schema_problems(policy.analysis, schemas)]
    assert len(problems) == 2, problems
    assert problems[0].startswith("analysis.templates[1].spec.metrics[0].interval: 60 is not")
    assert problems[1].startswith("analysis.templates[2].spec.metrics[0].provider.prometheus")
    assert TEMPLATE_CRD in problems[0]


@pytest.mark.parametrize(
    "name", ["argo-rollouts-v1.9.1-rollout.yaml", "argo-rollouts-v1.9.1-analysis-run.yaml"]
)
def test_other_crds_are_not_taken_for_a_template_schema(name: str) -> None:
    with pytest.raises(SchemaUnusable, match="not the CustomResourceDefinition of Analysis"):
        template_schema_from_crd(crd(name), source=name)


def test_a_crd_without_a_served_schema_is_unusable() -> None:
    doc = crd(TEMPLATE_CRD)
    for version in doc["spec"]["versions"]:
        version["served"] = False
    with pytest.raises(SchemaUnusable, match="serves no v1alpha1 AnalysisTemplate"):
        template_schema_from_crd(doc, source="x")


# ---------------------------------------------------------------------------
# Conditions and arguments.

VECTOR_QUERY = SEED_QUERY
SCALAR_QUERY = f"scalar({SEED_QUERY})"

CONDITIONS = [
    # (condition, query, the problem's words, or None)
    ("result >= 0.95", VECTOR_QUERY, "Prometheus gives a list here; write 'result[0] >= 0.95'"),
    ("result[0] >= 0.95", VECTOR_QUERY, None),
    ("result [0] >= 0.95", VECTOR_QUERY, None),
    ("all(result, {# >= 0.95})", VECTOR_QUERY, None),
    ("len(result) == 0 || result[0] >= 0.95", VECTOR_QUERY, None),
    (
        "result < 0.5 || result > 2",
        VECTOR_QUERY,
        "Prometheus gives a list here; write 'result[0] < 0.5 || result[0] > 2'",
    ),
    ("isNaN(result)", VECTOR_QUERY, "Prometheus gives a list here; write 'isNaN(result[0])'"),
    ("result >= 0.95", SCALAR_QUERY, None),
    ("result[0] >= 0.95", SCALAR_QUERY, "the query is a scalar, so result is a number, not a list"),
    ("true", VECTOR_QUERY, None),
]


@pytest.mark.parametrize(("condition", "query", "problem"), CONDITIONS)
def test_prometheus_conditions_must_fit_what_the_provider_returns(
    condition: str, query: str, problem: str | None
) -> None:
    spec = seed_template(condition)["spec"]
    spec["metrics"][0]["provider"]["prometheus"]["query"] = query
    spec["metrics"][0]["failureCondition"] = "false"
    found = condition_problems("AnalysisTemplate", "success-rate", spec)
    if problem is None:
        assert found == []
    else:
        [message] = found
        assert message == f"AnalysisTemplate success-rate metrics[0] successCondition: {problem}"
        assert len(message) <= 120 or condition.startswith("result <")


def test_a_failure_condition_is_checked_too() -> None:
    spec = seed_template()["spec"]
    spec["metrics"][0]["failureCondition"] = "result < 0.5"
    [message] = condition_problems("ClusterAnalysisTemplate", "t", spec)
    assert message.startswith("ClusterAnalysisTemplate t metrics[0] failureCondition: ")


def test_other_providers_are_not_judged_by_prometheus_rules() -> None:
    spec = {
        "metrics": [
            {"name": "web", "successCondition": "result == true", "provider": {"web": {}}},
            "not a metric",
        ]
    }
    assert condition_problems("AnalysisTemplate", "t", spec) == []


def test_an_argument_used_but_not_declared_is_named() -> None:
    spec = seed_template()["spec"]
    spec["args"] = [{"name": "service-name"}]
    [message] = condition_problems("AnalysisTemplate", "success-rate", spec)
    assert "uses {{args.prometheus-address}}, which the template does not declare" in message


# ---------------------------------------------------------------------------
# The default analysis.

ENV = EnvironmentAnalysis(template="success-rate", prometheus_address="http://p:9090")
STEPS = [{"setWeight": 20}, {"pause": {"duration": "1m"}}]


def block(**kw: Any) -> dict[str, Any]:
    return default_analysis_block(
        EnvironmentAnalysis(**{"template": "success-rate", **kw}), None, "web", "shop"
    )


def test_the_arguments_are_those_the_template_declares() -> None:
    declared = seed_template()["spec"]
    assert default_analysis_block(ENV, declared, "web", "shop") == {
        "templates": [{"templateName": "success-rate"}],
        "args": [
            {"name": "service-name", "value": "web"},
            {"name": "prometheus-address", "value": "http://p:9090"},
        ],
    }


def test_every_argument_is_passed_to_a_template_of_unknown_spec() -> None:
    assert block(prometheus_address="http://p:9090", cluster_scope=True) == {
        "templates": [{"templateName": "success-rate", "clusterScope": True}],
        "args": [
            {"name": "service-name", "value": "web"},
            {"name": "namespace", "value": "shop"},
            {"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}},
            {"name": "stable-hash", "valueFrom": {"podTemplateHashValue": "Stable"}},
            {"name": "prometheus-address", "value": "http://p:9090"},
        ],
    }
    # No address configured: no prometheus-address argument (the template's own address, or
    # the controller's ARGO_ROLLOUTS_PROMETHEUS_ADDRESS, is used).
    assert "prometheus-address" not in {a["name"] for a in block()["args"]}
    renamed = block(arg_names={"serviceName": "app"})
    assert renamed["args"] == [{"name": "app", "value": "web"}]


def canary(steps: list[Any], **more: Any) -> dict[str, Any]:
    return {"canary": {"steps": copy.deepcopy(steps), **more}}


ANALYSIS = {"analysis": {"templates": [{"templateName": "success-rate"}]}}
DEFAULTS = [
    ("step after the last", ENV, canary(STEPS), canary([*STEPS, ANALYSIS])),
    (
        "step at 1",
        EnvironmentAnalysis(template="success-rate", at_step=1),
        canary(STEPS),
        canary([STEPS[0], ANALYSIS, STEPS[1]]),
    ),
    (
        "step past the end goes last",
        EnvironmentAnalysis(template="success-rate", at_step=9),
        canary(STEPS),
        canary([*STEPS, ANALYSIS]),
    ),
    ("no steps", ENV, {"canary": {}}, canary([ANALYSIS])),
    ("the service's own step wins", ENV, canary([*STEPS, ANALYSIS]), canary([*STEPS, ANALYSIS])),
    (
        "background",
        EnvironmentAnalysis(template="success-rate", mode="background", starting_step=1),
        canary(STEPS),
        canary(STEPS, analysis={**ANALYSIS["analysis"], "startingStep": 1}),
    ),
    (
        "the service's own background analysis wins",
        EnvironmentAnalysis(template="success-rate", mode="background"),
        canary(STEPS, analysis={"templates": [{"templateName": "mine"}]}),
        canary(STEPS, analysis={"templates": [{"templateName": "mine"}]}),
    ),
    (
        "blue-green before promotion",
        ENV,
        {"blueGreen": {"activeService": "web"}},
        {"blueGreen": {"activeService": "web", "prePromotionAnalysis": ANALYSIS["analysis"]}},
    ),
    (
        "blue-green after promotion",
        EnvironmentAnalysis(template="success-rate", mode="background"),
        {"blueGreen": {}},
        {"blueGreen": {"postPromotionAnalysis": ANALYSIS["analysis"]}},
    ),
]


@pytest.mark.parametrize(
    ("env", "strategy", "expected"), [d[1:] for d in DEFAULTS], ids=[d[0] for d in DEFAULTS]
)
def test_the_default_analysis_goes_where_the_environment_says(
    env: EnvironmentAnalysis, strategy: dict[str, Any], expected: dict[str, Any]
) -> None:
    before = copy.deepcopy(strategy)
    added = with_default_analysis(strategy, env, copy.deepcopy(ANALYSIS["analysis"]))
    assert added == expected
    assert strategy == before, "the input strategy must not change"
    # Adding it again changes nothing: a converted Rollout plans to itself.
    assert with_default_analysis(added, env, copy.deepcopy(ANALYSIS["analysis"])) == expected


def test_every_reference_of_a_strategy_is_found() -> None:
    strategy = {
        "canary": {
            "analysis": {"templates": [{"templateName": "bg"}]},
            "steps": [
                {"setWeight": 10},
                {
                    "analysis": {
                        "templates": [
                            {"templateName": "a"},
                            {"templateName": "c", "clusterScope": True},
                        ]
                    }
                },
                {
                    "experiment": {
                        "analyses": [{"name": "x", "templateName": "e", "args": [{"name": "n"}]}]
                    }
                },
            ],
        },
        "blueGreen": {"prePromotionAnalysis": {"templates": [{"templateName": "pre"}]}},
    }
    found = [(r.path, r.kind, r.name, r.args) for r in referenced_templates(strategy)]
    assert found == [
        ("spec.strategy.canary.analysis.templates[0]", "AnalysisTemplate", "bg", ()),
        ("spec.strategy.canary.steps[1].analysis.templates[0]", "AnalysisTemplate", "a", ()),
        ("spec.strategy.canary.steps[1].analysis.templates[1]", "ClusterAnalysisTemplate", "c", ()),
        (
            "spec.strategy.canary.steps[2].experiment.analyses[0]",
            "AnalysisTemplate",
            "e",
            ({"name": "n"},),
        ),
        (
            "spec.strategy.blueGreen.prePromotionAnalysis.templates[0]",
            "AnalysisTemplate",
            "pre",
            (),
        ),
    ]


# ---------------------------------------------------------------------------
# One Rollout's analysis.


def in_cluster(template: dict[str, Any], kind: str = "AnalysisTemplate", **labels: str) -> Any:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": template["name"], "namespace": "shop", "labels": labels},
        "spec": template["spec"],
    }


def analysis_of(policy: Policy, strategy: dict[str, Any], known: KnownTemplates) -> Any:
    return plan_analysis(
        policy.analysis, "prod", strategy, service="web", namespace="shop", known=known, keys=K
    )


def messages(plan: Any) -> list[str]:
    return [f.message for f in plan.findings]


def test_a_managed_template_is_written_in_the_namespace_of_the_rollout() -> None:
    policy = policy_of(policy_doc(DEFAULT, [seed_template()]))
    plan = analysis_of(policy, canary(STEPS), KnownTemplates())
    [template] = plan.templates
    assert template["metadata"]["namespace"] == "shop"
    assert template["metadata"]["labels"] == {K.managed: "true"}
    assert template["spec"] == seed_template()["spec"]
    assert K.applied_hash in template["metadata"]["annotations"]
    validate_object(template)
    assert messages(plan) == []
    assert plan.strategy["canary"]["steps"][-1]["analysis"]["args"] == [
        {"name": "service-name", "value": "web"},
        {"name": "prometheus-address", "value": PROMETHEUS["address"]},
    ]


def test_a_managed_cluster_template_is_written_without_a_namespace() -> None:
    policy = policy_of(policy_doc(DEFAULT, [seed_template(kind="ClusterAnalysisTemplate")]))
    [template] = analysis_of(policy, canary(STEPS), KnownTemplates()).templates
    assert template["kind"] == "ClusterAnalysisTemplate"
    assert "namespace" not in template["metadata"]
    validate_object(template)


def test_a_missing_template_is_warned_about() -> None:
    policy = policy_of(policy_doc({"template": "not-there"}))
    plan = analysis_of(policy, canary(STEPS), KnownTemplates())
    assert plan.templates == ()
    assert messages(plan) == [
        "AnalysisTemplate not-there not found in namespace shop nor managed by the policy: the "
        "analysis at spec.strategy.canary.steps[2].analysis.templates[0] will fail"
    ]
    cluster = policy_of(policy_doc({"template": "not-there", "clusterScope": True}))
    [message] = messages(analysis_of(cluster, canary(STEPS), KnownTemplates()))
    assert message.startswith("ClusterAnalysisTemplate not-there not found in the cluster nor")


def test_a_template_in_the_cluster_is_used_and_checked() -> None:
    policy = policy_of(policy_doc({"template": "success-rate"}))
    seed = seed_template("result >= 0.95")
    plan = analysis_of(policy, canary(STEPS), KnownTemplates(namespaced=(in_cluster(seed),)))
    assert plan.templates == ()
    # Its spec is known, so only the arguments it declares are passed; with no address
    # configured, prometheus-address is not filled and Argo would not start the analysis.
    step = plan.strategy["canary"]["steps"][-1]["analysis"]
    assert [a["name"] for a in step["args"]] == ["service-name"]
    condition, unresolved = messages(plan)
    assert "write 'result[0] >= 0.95'" in condition
    assert unresolved == (
        "AnalysisTemplate success-rate: args.prometheus-address is neither passed nor given a "
        "value: Argo will not start the analysis at "
        "spec.strategy.canary.steps[2].analysis.templates[0]"
    )
    with_address = policy_of(policy_doc(DEFAULT))
    fixed = in_cluster(seed_template())
    plan = analysis_of(with_address, canary(STEPS), KnownTemplates(namespaced=(fixed,)))
    assert messages(plan) == []


def test_someone_elses_template_of_the_same_name_is_never_replaced() -> None:
    policy = policy_of(policy_doc(DEFAULT, [seed_template()]))
    theirs = in_cluster(seed_template("result[0] > 0.5"))
    plan = analysis_of(policy, canary(STEPS), KnownTemplates(namespaced=(theirs,)))
    assert plan.templates == ()
    assert "in namespace shop was not made by rollout-webhook: used as it is" in messages(plan)[0]
    ours = in_cluster(seed_template(), **{K.managed: "true"})
    plan = analysis_of(policy, canary(STEPS), KnownTemplates(namespaced=(ours,)))
    assert len(plan.templates) == 1
    assert messages(plan) == []


def test_a_warning_is_given_once_per_template() -> None:
    policy = policy_of(policy_doc())
    step = {"analysis": {"templates": [{"templateName": "gone"}]}}
    plan = analysis_of(policy, canary([step, step]), KnownTemplates())
    assert len(messages(plan)) == 2  # two places
    seed = in_cluster(seed_template("result > 1"))
    plan = analysis_of(
        policy,
        canary(
            [
                {
                    **step,
                    "analysis": {
                        **step["analysis"],
                        "args": [
                            {"name": "service-name", "value": "a"},
                            {"name": "prometheus-address", "value": "http://p"},
                        ],
                    },
                }
            ]
            * 2
        ),
        KnownTemplates(namespaced=({**seed, "metadata": {**seed["metadata"], "name": "gone"}},)),
    )
    assert len(messages(plan)) == 1  # the same template's condition, said once


# ---------------------------------------------------------------------------
# The policy as a whole.


def test_policy_validate_warns_about_what_cannot_work() -> None:
    step = {"analysis": {"templates": [{"templateName": "by-hand", "clusterScope": True}]}}
    doc = policy_doc(
        {"template": "elsewhere"},
        [seed_template("result >= 0.95")],
        canary={"steps": [step]},
    )
    policy = policy_of(doc)
    rollouts = {name: env.rollout for name, env in policy.environments.items()}
    warnings = policy_analysis_warnings(policy.analysis, rollouts)
    assert len(warnings) == 3, warnings
    assert "successCondition: Prometheus gives a list here" in warnings[0]
    assert warnings[1] == (
        "environments.prod.analysis.template: AnalysisTemplate elsewhere is not managed by the "
        "policy: it must exist in every namespace that uses it"
    )
    assert warnings[2] == (
        "environments.prod.rollout.canary.steps[0].analysis.templates[0]: "
        "ClusterAnalysisTemplate by-hand is not managed by the policy: it must exist in the cluster"
    )
    clean = policy_of(policy_doc(DEFAULT, [seed_template()]))
    assert policy_analysis_warnings(clean.analysis, {}) == []


# ---------------------------------------------------------------------------
# Through the planner, the reconciler.

NS = "shop"


def objects() -> tuple[dict[str, Any], dict[str, Any]]:
    dep = deployment("web", NS, labels={"app": "web", K.enabled: "true"})
    return dep, service("web", NS)


def test_a_conversion_carries_the_templates_and_converts_to_itself() -> None:
    policy = policy_of(policy_doc(DEFAULT, [seed_template()]))
    dep, svc = objects()
    first = plan_conversion(dep, Neighbours(services=(svc,)), policy)
    assert first.converted
    [template] = first.analysis_templates
    assert template in first.objects()
    assert first.rollout is not None
    validate_object(first.rollout)
    steps = first.rollout["spec"]["strategy"]["canary"]["steps"]
    assert steps[-1]["analysis"]["templates"] == [{"templateName": "success-rate"}]
    # Again, with the Rollout and template in the cluster: nothing changes.
    again = plan_conversion(
        first.deployment,
        Neighbours(services=(svc,), rollouts=(first.rollout,), analysis_templates=(template,)),
        policy,
        operation="UPDATE",
        old_deployment=first.deployment,
    )
    assert again.rollout == first.rollout
    assert again.analysis_templates == first.analysis_templates
    assert again.findings == ()


def test_the_reconciler_writes_a_template_only_when_it_differs() -> None:
    from datetime import UTC, datetime

    policy = policy_of(policy_doc(DEFAULT, [seed_template()]))
    dep, svc = objects()
    conversion = plan_conversion(dep, Neighbours(services=(svc,)), policy, operation="UPDATE")
    [template] = conversion.analysis_templates
    now = datetime(2026, 11, 29, tzinfo=UTC)

    def applied(templates: tuple[dict[str, Any], ...]) -> list[str]:
        neighbours = Neighbours(services=(svc,), analysis_templates=templates)
        plan = plan_reconcile(NS, "web", dep, neighbours, policy, now=now)
        return [a.why for a in plan.writes if isinstance(a, Apply) and "Template" in a.why]

    assert applied(()) == ["AnalysisTemplate success-rate of the policy"]
    assert applied((template,)) == []
    changed = copy.deepcopy(template)
    changed["spec"]["metrics"][0]["count"] = 1
    assert applied((changed,)) == ["AnalysisTemplate success-rate of the policy"]


# ---------------------------------------------------------------------------
# Admission: whose right a template write needs.


def _writing(*kinds: str) -> AdmissionPlan:
    changes = tuple({"kind": kind, "metadata": {"name": "x"}} for kind in kinds)
    return AdmissionPlan(decision="convert", reason="", changes=changes)


def test_a_namespaced_template_needs_the_requesters_right_a_cluster_one_does_not() -> None:
    plan = _writing("AnalysisTemplate", "ClusterAnalysisTemplate", "Rollout")
    assert [str(p) for p in permissions_for(plan)] == [
        "create analysistemplates.argoproj.io",
        "create rollouts.argoproj.io",
    ]


def test_admission_writes_the_templates_before_the_rollout() -> None:
    policy = policy_of(policy_doc(DEFAULT, [seed_template(kind="ClusterAnalysisTemplate")]))
    dep, svc = objects()
    view = MemoryClusterView([svc])
    sent = {**dep, "metadata": {**dep["metadata"], "uid": "u1"}}
    plan = decide_mutation(
        cast(AdmissionRequest, admission_request(sent, namespace=NS)), view, policy, keys=K
    )
    assert [c["kind"] for c in plan.changes][:2] == ["ClusterAnalysisTemplate", "Rollout"]


def test_a_huge_condition_is_checked_in_linear_time() -> None:
    # Each use of `result` looks only at the characters just before it: with the whole
    # prefix searched, this condition would take minutes.
    condition = "x" * 100_000 + " result " + "y" * 100_000 + " result[0]"
    spec = seed_template(condition)["spec"]
    [message] = condition_problems("AnalysisTemplate", "t", spec)
    assert message.endswith("Prometheus gives a list here; index it: result[0]")
