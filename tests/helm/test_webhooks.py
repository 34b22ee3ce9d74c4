"""The two webhook configurations: what reaches the webhook, and how the API server calls it."""

from __future__ import annotations

from typing import Any

from tests.helm.conftest import NAMESPACE, RELEASE, Render, find

CONTROLLER = "system:serviceaccount:argo-rollouts:argo-rollouts"
OWN_USER = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"
ENABLED = "rollout-webhook.io/enabled"


def mutating(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    config = find(docs, "MutatingWebhookConfiguration", RELEASE)
    return {hook["name"]: hook for hook in config["webhooks"]}


def excluded(hook: dict[str, Any]) -> set[str]:
    for expr in hook["namespaceSelector"]["matchExpressions"]:
        if expr["key"] == "kubernetes.io/metadata.name" and expr["operator"] == "NotIn":
            return set(expr["values"])
    raise AssertionError(f"{hook['name']} excludes no namespaces")


def conditions(hook: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["expression"] for c in hook.get("matchConditions", [])}


def test_every_mutating_entry_is_called_safely(render: Render) -> None:
    hooks = mutating(render())
    resources = {r for hook in hooks.values() for rule in hook["rules"] for r in rule["resources"]}
    # Exactly the kinds /mutate handles (webhook/core/admission.py decide_mutation).
    assert resources == {
        "deployments",
        "deployments/scale",
        "horizontalpodautoscalers",
        "httproutes",
        "virtualservices",
    }
    for hook in hooks.values():
        assert hook["admissionReviewVersions"] == ["v1"]
        # The webhook writes Rollouts and Services on real requests and nothing on dry runs.
        assert hook["sideEffects"] == "NoneOnDryRun"
        assert hook["failurePolicy"] == "Ignore"
        assert hook["timeoutSeconds"] <= 5
        assert hook["reinvocationPolicy"] == "IfNeeded"
        assert hook["clientConfig"]["service"] == {
            "name": RELEASE,
            "namespace": NAMESPACE,
            "path": "/mutate",
            "port": 443,
        }
        assert {"kube-system", "kube-node-lease", NAMESPACE} <= excluded(hook)
        for rule in hook["rules"]:
            # A subresource is never created: its object is its parent's.
            want = ["UPDATE"] if "/" in rule["resources"][0] else ["CREATE", "UPDATE"]
            assert rule["operations"] == want
        skips = conditions(hook)
        assert (
            skips["not-argo-rollouts-controller"] == f"request.userInfo.username != '{CONTROLLER}'"
        )
        assert skips["not-rollout-webhook"] == f"request.userInfo.username != '{OWN_USER}'"


def test_deployments_reach_the_webhook_by_their_label_or_their_namespaces(render: Render) -> None:
    hooks = mutating(render())
    by_label = hooks["deployments.rollout-webhook.io"]
    by_namespace = hooks["namespace-deployments.rollout-webhook.io"]
    # The Deployment's own label, either value ("false" opts out and must be seen).
    assert by_label["objectSelector"] == {
        "matchExpressions": [{"key": ENABLED, "operator": "Exists"}]
    }
    assert all(e["key"] != ENABLED for e in by_label["namespaceSelector"]["matchExpressions"])
    # Unlabelled Deployments of a Namespace that opts in: the two entries never overlap.
    assert by_namespace["objectSelector"] == {
        "matchExpressions": [{"key": ENABLED, "operator": "DoesNotExist"}]
    }
    assert {"key": ENABLED, "operator": "In", "values": ["true"]} in by_namespace[
        "namespaceSelector"
    ]["matchExpressions"]


def test_every_scale_of_a_deployment_reaches_the_webhook(render: Render) -> None:
    """kubectl scale calls deployments/scale, which runs only its own admission
    (kubernetes/kubernetes#84530); its Scale object has no labels, and an objectSelector is
    evaluated on it, not on the Deployment (#113594), so none may narrow this entry."""
    hooks = mutating(render())
    scale = hooks["deployments-scale.rollout-webhook.io"]
    assert scale["rules"] == [
        {
            "apiGroups": ["apps"],
            "apiVersions": ["v1"],
            "resources": ["deployments/scale"],
            "operations": ["UPDATE"],
            "scope": "Namespaced",
        }
    ]
    assert "objectSelector" not in scale
    # A Deployment opts in by its own label in any namespace: only the exclusions apply.
    assert (
        scale["namespaceSelector"] == hooks["deployments.rollout-webhook.io"]["namespaceSelector"]
    )
    # Only the two users that never need the webhook are skipped; a scale to the count the
    # Deployment already has is sent too (it still sets the service's size).
    assert set(conditions(scale)) == {"not-argo-rollouts-controller", "not-rollout-webhook"}
    # The entries for the Deployment itself never match its subresource.
    for name in ("deployments.rollout-webhook.io", "namespace-deployments.rollout-webhook.io"):
        assert [r["resources"] for r in hooks[name]["rules"]] == [["deployments"]]


def test_hpas_and_routes_are_filtered_by_what_can_need_the_webhook(render: Render) -> None:
    hooks = mutating(render())
    assert (
        "object.spec.scaleTargetRef.kind == 'Deployment'"
        in conditions(hooks["hpas.rollout-webhook.io"])["scales-a-deployment"]
    )
    assert (
        "size(r.backendRefs) == 1"
        in conditions(hooks["httproutes.rollout-webhook.io"])["has-a-single-backend-rule"]
    )
    assert (
        "size(h.route) == 1"
        in conditions(hooks["virtualservices.rollout-webhook.io"])["has-a-single-destination-route"]
    )


def test_the_policy_configmap_is_validated_in_the_release_namespace_only(render: Render) -> None:
    config = find(render(), "ValidatingWebhookConfiguration", RELEASE)
    [hook] = config["webhooks"]
    assert hook["sideEffects"] == "None"
    assert hook["clientConfig"]["service"]["path"] == "/validate"
    assert hook["rules"][0]["resources"] == ["configmaps"]
    assert hook["namespaceSelector"]["matchExpressions"] == [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [NAMESPACE]}
    ]
    assert conditions(hook) == {"is-the-policy-configmap": f"request.name == '{RELEASE}-policy'"}
    custom = find(
        render("policy.create=false", "policy.name=platform-policy"),
        "ValidatingWebhookConfiguration",
    )
    assert conditions(custom["webhooks"][0]) == {
        "is-the-policy-configmap": "request.name == 'platform-policy'"
    }


def test_fail_closed_is_one_switch(render: Render) -> None:
    docs = render("webhook.failurePolicy=Fail")
    for hook in mutating(docs).values():
        assert hook["failurePolicy"] == "Fail"
    assert find(docs, "ValidatingWebhookConfiguration")["webhooks"][0]["failurePolicy"] == "Fail"
    # The webhook itself then denies what it fails to decide, instead of admitting it.
    args = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--fail-closed" in args
    default_args = find(render(), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--fail-closed" not in default_args


def test_extra_namespaces_are_excluded_and_the_defaults_stay(render: Render) -> None:
    docs = render('json:webhook.excludeNamespaces=["argocd","monitoring","kube-system"]')
    for hook in mutating(docs).values():
        values = next(
            e["values"]
            for e in hook["namespaceSelector"]["matchExpressions"]
            if e["operator"] == "NotIn"
        )
        assert sorted(values) == sorted(
            ["kube-system", "kube-node-lease", NAMESPACE, "argocd", "monitoring"]
        )


def test_controller_user_and_label_prefix_are_values(render: Render) -> None:
    docs = render(
        "argoRollouts.controllerServiceAccount=system:serviceaccount:rollouts:controller",
        "labelPrefix=delivery.example.com/",
    )
    hooks = mutating(docs)
    by_label = hooks["deployments.rollout-webhook.io"]
    assert conditions(by_label)["not-argo-rollouts-controller"] == (
        "request.userInfo.username != 'system:serviceaccount:rollouts:controller'"
    )
    assert (
        by_label["objectSelector"]["matchExpressions"][0]["key"] == "delivery.example.com/enabled"
    )
    container = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert (
        "--controller-service-account=system:serviceaccount:rollouts:controller"
        in container["args"]
    )
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ROLLOUT_WEBHOOK_LABEL_PREFIX"] == "delivery.example.com/"


def test_ca_bundle_comes_from_the_bootstrap_job_or_cert_manager(render: Render) -> None:
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        plain = find(render(), kind)
        assert "annotations" not in plain["metadata"]
        injected = find(render("certificates.mode=certManager"), kind)
        assert injected["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": f"{NAMESPACE}/{RELEASE}"
        }
