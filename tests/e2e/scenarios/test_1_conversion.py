"""Conversion through the real API server and the real kubectl (issue 7).

One `rollout-webhook serve` for the module (reconciler on), called by the chart's webhook
configurations with failurePolicy Fail: a request the webhook did not answer fails, so
every conversion seen here went through admission or the reconciler, never around them.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import yaml

from tests.e2e import harness
from tests.e2e.scenarios.support import (
    BINARY,
    ENABLED,
    POLICY_CONFIGMAP,
    PREFIX,
    ROLLOUT_API,
    WEBHOOK_NAMESPACE,
    Manifest,
    Webhook,
    annotations_of,
    apply,
    audit_records,
    converted,
    deployment,
    eventually,
    get,
    hpa,
    scale_target,
    service,
)
from webhook.core.policy import builtin_policy
from webhook.core.reconcile import contains

BUILTIN = builtin_policy().document


def offline_rollout(*manifests: Manifest) -> Manifest:
    """The Rollout `rollout-webhook convert` plans for these objects (built-in policy)."""
    body = yaml.safe_dump_all(manifests)
    result = subprocess.run(
        [str(BINARY), "convert", "-f", "-"],
        input=body,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    [rollout] = [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "Rollout"]
    return dict(rollout)


def test_a_labelled_deployment_is_stored_patched_and_its_rollout_accepted(
    webhook: Webhook, team: str, kubectl: harness.Tool
) -> None:
    web = deployment("web", team, replicas=3)
    svc = service("web", team)
    apply(kubectl, svc, web)

    # The API server stored what the webhook answered: no need to wait for it.
    stored = get(kubectl, "deployment", "web", team)
    marks = annotations_of(stored)
    assert marks[f"{PREFIX}rollout-name"] == "web"
    assert marks[f"{PREFIX}applied-environment"] == "prod"  # the built-in default
    assert marks[f"{PREFIX}applied-strategy"] == "canary"
    assert marks[f"{PREFIX}original-replicas"] == "3"
    assert marks[f"{PREFIX}policy-version"]
    assert stored is not None and stored["spec"]["replicas"] == 0

    rollout = eventually(lambda: get(kubectl, "rollout", "web", team), "the Rollout", webhook)
    spec = rollout["spec"]
    assert spec["workloadRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "scaleDown": BUILTIN["environments"]["prod"]["scaleDown"],
    }
    assert spec["replicas"] == 3
    prod = BUILTIN["environments"]["prod"]["rollout"]["canary"]
    assert spec["strategy"]["canary"]["steps"] == prod["steps"]
    # No traffic router: `web` keeps selecting every pod (the split by replica count); Argo
    # would pin it to the stable pods if the Rollout named it as stableService.
    assert "stableService" not in spec["strategy"]["canary"]
    assert spec["strategy"]["canary"]["canaryService"] == "web-canary"
    # The CRD's structural schema prunes unknown fields silently: everything the planner
    # wrote must still be there, as the offline conversion of the same objects says.
    wanted = offline_rollout(svc, web)
    assert contains(wanted["spec"], spec), (wanted["spec"], spec)
    assert rollout["metadata"]["labels"][f"{PREFIX}managed"] == "true"
    canary = eventually(
        lambda: get(kubectl, "service", "web-canary", team), "the canary Service", webhook
    )
    assert canary["spec"]["selector"] == {"app": "web"}

    # Another environment by label: its strategy, not the default's.
    apply(kubectl, deployment("tool", team, labels={f"{PREFIX}environment": "dev"}))
    tool = eventually(lambda: get(kubectl, "rollout", "tool", team), "the dev Rollout", webhook)
    dev = BUILTIN["environments"]["dev"]["rollout"]["canary"]
    assert tool["spec"]["strategy"]["canary"]["steps"] == dev["steps"]


def test_the_label_added_to_a_running_deployment_converts_it(
    webhook: Webhook, team: str, kubectl: harness.Tool
) -> None:
    apply(kubectl, service("api", team), deployment("api", team, enabled=None, replicas=2))
    assert f"{PREFIX}rollout-name" not in annotations_of(get(kubectl, "deployment", "api", team))

    kubectl("label", "deployment", "api", "-n", team, f"{ENABLED}=true")
    stored = get(kubectl, "deployment", "api", team)
    assert annotations_of(stored)[f"{PREFIX}rollout-name"] == "api"
    # Running: it keeps its pods; Argo scales it down once the Rollout's are up.
    assert stored is not None and stored["spec"]["replicas"] == 2
    rollout = eventually(lambda: get(kubectl, "rollout", "api", team), "the Rollout", webhook)
    assert rollout["spec"]["replicas"] == 2


def test_the_namespace_label_opts_in_its_deployments_and_false_wins(
    webhook: Webhook, team: str, kubectl: harness.Tool
) -> None:
    apply(
        kubectl,
        deployment("plain", team, enabled=None),
        deployment("keep", team, enabled="false"),
    )
    kubectl("label", "namespace", team, f"{ENABLED}=true")

    # Already there: the reconciler converts it (a Namespace change is no Deployment request).
    eventually(lambda: converted(kubectl, "plain", team), "plain converted", webhook)
    # Created afterwards: the namespace's webhook entry converts it at admission.
    apply(kubectl, deployment("later", team, enabled=None))
    later = get(kubectl, "deployment", "later", team)
    assert annotations_of(later)[f"{PREFIX}rollout-name"] == "later"
    eventually(lambda: converted(kubectl, "later", team), "later's Rollout", webhook)

    # "false" on the Deployment wins over the Namespace, in admission and the reconciler.
    kubectl("annotate", "deployment", "keep", "-n", team, "touched=yes")
    keep = get(kubectl, "deployment", "keep", team)
    assert f"{PREFIX}rollout-name" not in annotations_of(keep)
    assert keep is not None and keep["spec"]["replicas"] == 3
    assert get(kubectl, "rollout", "keep", team) is None
    decisions = [
        r
        for r in audit_records(webhook.audit_file)
        if (r["namespace"], r["name"], r["objectKind"]) == (team, "keep", "Deployment")
        and r["kind"] == "AdmissionDecision"
    ]
    assert decisions and all(r["decision"] != "convert" for r in decisions)


def test_hpas_made_before_and_after_opt_in_both_target_the_rollout(
    webhook: Webhook, team: str, kubectl: harness.Tool
) -> None:
    apply(kubectl, deployment("early", team, enabled=None), hpa("early", team, "early"))
    assert scale_target(get(kubectl, "hpa", "early", team)) == ("Deployment", "early")
    kubectl("label", "deployment", "early", "-n", team, f"{ENABLED}=true")

    def retargeted(name: str) -> Manifest | None:
        found = get(kubectl, "hpa", name, team)
        return found if scale_target(found) == ("Rollout", name) else None

    early = eventually(lambda: retargeted("early"), "the earlier HPA re-targeted", webhook)
    assert early["spec"]["scaleTargetRef"]["apiVersion"] == ROLLOUT_API

    apply(kubectl, deployment("late", team))
    eventually(lambda: converted(kubectl, "late", team), "late converted", webhook)
    apply(kubectl, hpa("late", team, "late"))
    # Re-targeted at admission: stored so at once.
    assert scale_target(get(kubectl, "hpa", "late", team)) == ("Rollout", "late")


def test_routes_get_the_canary_backend_and_keep_their_other_rules(
    webhook: Webhook, team: str, kubectl: harness.Tool
) -> None:
    """`trafficRouting: auto` uses one router per service (the Gateway API when an HTTPRoute
    sends it traffic, else Istio): so one service behind each kind of route."""
    route: Manifest = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "shop", "namespace": team},
        "spec": {
            "parentRefs": [{"name": "gateway"}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                    "backendRefs": [{"name": "web", "port": 80}],
                },
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
                    "backendRefs": [{"name": "static", "port": 80}],
                },
            ],
        },
    }
    virtual_service: Manifest = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "cart", "namespace": team},
        "spec": {
            "hosts": ["cart.example"],
            "http": [
                {
                    "name": "api",
                    "match": [{"uri": {"prefix": "/api"}}],
                    "route": [{"destination": {"host": "cart"}}],
                },
                {"name": "static", "route": [{"destination": {"host": "static"}}]},
            ],
        },
    }
    apply(
        kubectl,
        service("web", team),
        service("cart", team),
        service("static", team),
        route,
        virtual_service,
    )
    before_route = get(kubectl, "httproute", "shop", team)
    before_vs = get(kubectl, "virtualservice", "cart", team)
    assert before_route is not None and before_vs is not None

    apply(kubectl, deployment("web", team), deployment("cart", team))

    def route_names() -> list[str] | None:
        found = get(kubectl, "httproute", "shop", team)
        names = [r["name"] for r in (found or {})["spec"]["rules"][0]["backendRefs"]]
        return names if len(names) == 2 else None

    assert eventually(route_names, "the HTTPRoute's canary backend", webhook) == [
        "web",
        "web-canary",
    ]

    def vs_hosts() -> list[str] | None:
        found = get(kubectl, "virtualservice", "cart", team)
        hosts = [d["destination"]["host"] for d in (found or {})["spec"]["http"][0]["route"]]
        return hosts if len(hosts) == 2 else None

    assert eventually(vs_hosts, "the VirtualService's canary destination", webhook) == [
        "cart",
        "cart-canary",
    ]
    after_route = get(kubectl, "httproute", "shop", team)
    after_vs = get(kubectl, "virtualservice", "cart", team)
    assert after_route is not None and after_vs is not None
    rules_before, rules_after = before_route["spec"]["rules"], after_route["spec"]["rules"]
    assert rules_after[1] == rules_before[1]
    assert rules_after[0]["matches"] == rules_before[0]["matches"]
    assert after_route["spec"]["parentRefs"] == before_route["spec"]["parentRefs"]
    assert after_vs["spec"]["http"][1] == before_vs["spec"]["http"][1]
    assert after_vs["spec"]["http"][0]["match"] == before_vs["spec"]["http"][0]["match"]
    assert after_vs["spec"]["hosts"] == before_vs["spec"]["hosts"]
    # Each Rollout routes through the router of its service.
    web = get(kubectl, "rollout", "web", team)
    cart = get(kubectl, "rollout", "cart", team)
    assert web is not None and cart is not None
    assert "plugins" in web["spec"]["strategy"]["canary"]["trafficRouting"]
    assert "istio" in cart["spec"]["strategy"]["canary"]["trafficRouting"]


def test_a_server_side_dry_run_creates_and_changes_nothing(
    webhook: Webhook, team: str, kubectl: harness.Tool
) -> None:
    apply(kubectl, service("dry", team), hpa("dry", team, "dry"))
    hpa_before = get(kubectl, "hpa", "dry", team)
    assert hpa_before is not None

    result = kubectl(
        "apply", "--dry-run=server", "-o", "json", "-f", "-",
        input=json.dumps(deployment("dry", team)),
    )  # fmt: skip
    shown = json.loads(result.stdout)
    assert annotations_of(shown)[f"{PREFIX}rollout-name"] == "dry"  # the patch was decided
    assert shown["spec"]["replicas"] == 0
    records = [
        r
        for r in audit_records(webhook.audit_file)
        if (r["namespace"], r["name"], r["objectKind"]) == (team, "dry", "Deployment")
        and r["kind"] == "AdmissionDecision"
    ]
    assert records and all(r["dryRun"] is True and r["decision"] == "convert" for r in records)

    # A real conversion after it, written through the same queue: once its writes are
    # done, any write wrongly queued for the dry run would be done too.
    apply(kubectl, service("real", team), deployment("real", team))
    eventually(lambda: get(kubectl, "service", "real-canary", team), "real's writes", webhook)

    assert get(kubectl, "deployment", "dry", team) is None
    assert get(kubectl, "rollout", "dry", team) is None
    assert get(kubectl, "service", "dry-canary", team) is None
    hpa_after = get(kubectl, "hpa", "dry", team)
    assert hpa_after is not None
    assert hpa_after["metadata"]["resourceVersion"] == hpa_before["metadata"]["resourceVersion"]


def test_a_user_who_may_not_create_rollouts_gets_none_and_a_warning(
    webhook: Webhook, team: str, kubectl: harness.Tool
) -> None:
    role: Manifest = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "deployer", "namespace": team},
        "rules": [
            {
                "apiGroups": ["apps"],
                "resources": ["deployments"],
                "verbs": ["get", "list", "create", "update", "patch"],
            }
        ],
    }
    binding: Manifest = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "carol-deployer", "namespace": team},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployer"},
        "subjects": [{"kind": "User", "name": "carol", "apiGroup": "rbac.authorization.k8s.io"}],
    }
    apply(kubectl, role, binding)
    assert kubectl("auth", "can-i", "create", "rollouts.argoproj.io", "-n", team,
                   "--as=carol", check=False).stdout.strip() == "no"  # fmt: skip

    warnings = apply(kubectl, deployment("carols", team), as_user="carol")
    assert f"carol may not create rollouts.argoproj.io in namespace {team}" in warnings
    stored = get(kubectl, "deployment", "carols", team)
    assert stored is not None and stored["spec"]["replicas"] == 3
    assert f"{PREFIX}rollout-name" not in annotations_of(stored)
    assert annotations_of(stored)[f"{PREFIX}refused"].startswith("carol may not create")

    # The reconciler, acting under its own name, must not do for carol what admission
    # would not: once a later Deployment's Rollout is there, carol's key was seen too.
    apply(kubectl, deployment("admins", team))
    eventually(lambda: converted(kubectl, "admins", team), "admins converted", webhook)
    assert get(kubectl, "rollout", "carols", team) is None
    assert f"{PREFIX}rollout-name" not in annotations_of(get(kubectl, "deployment", "carols", team))


def policy_configmap(document: dict[str, Any]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": POLICY_CONFIGMAP, "namespace": WEBHOOK_NAMESPACE},
        "data": {"policy.yaml": yaml.safe_dump(document)},
    }


def test_an_invalid_policy_is_refused_with_its_path_and_the_running_one_stays(
    webhook: Webhook, team: str, kubectl: harness.Tool
) -> None:
    good = json.loads(json.dumps(BUILTIN))
    good["defaultEnvironment"] = "staging"
    apply(kubectl, policy_configmap(good))
    try:
        probes = iter(range(100))

        def staging_applies() -> Manifest | None:
            name = f"probe-{next(probes)}"
            apply(kubectl, deployment(name, team))
            found = get(kubectl, "deployment", name, team)
            env = annotations_of(found).get(f"{PREFIX}applied-environment")
            return found if env == "staging" else None

        first = eventually(staging_applies, "the staging policy to be loaded", webhook)
        version = annotations_of(first)[f"{PREFIX}policy-version"]
        stored_before = get(kubectl, "configmap", POLICY_CONFIGMAP, WEBHOOK_NAMESPACE)
        assert stored_before is not None

        bad = json.loads(json.dumps(good))
        bad["environments"]["prod"]["rollout"]["canary"]["steps"][0] = {"setWeight": 250}
        result = kubectl(
            "apply", "-f", "-", input=json.dumps(policy_configmap(bad)), check=False
        )  # fmt: skip
        assert result.returncode != 0
        assert "environments.prod.rollout.canary.steps[0].setWeight" in result.stderr

        stored_after = get(kubectl, "configmap", POLICY_CONFIGMAP, WEBHOOK_NAMESPACE)
        assert stored_after is not None
        assert stored_after["data"] == stored_before["data"]
        assert (
            stored_after["metadata"]["resourceVersion"]
            == stored_before["metadata"]["resourceVersion"]
        )
        apply(kubectl, deployment("after", team))
        after = annotations_of(get(kubectl, "deployment", "after", team))
        assert after[f"{PREFIX}applied-environment"] == "staging"
        assert after[f"{PREFIX}policy-version"] == version
    finally:
        # The rest of the module runs with the built-in policy (DELETE is allowed, warned).
        kubectl("delete", "configmap", POLICY_CONFIGMAP, "-n", WEBHOOK_NAMESPACE, check=False)
