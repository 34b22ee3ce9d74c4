"""The server's RBAC: exactly what the code calls, no wildcards, every rule explained.

The expected grants are derived from the code where it names what it touches (the cached
kinds, the kinds it applies, the SubjectAccessReview path, the certificate store), so a new
watch or write without a matching rule fails here, and so does a rule nothing needs.
"""

from __future__ import annotations

import re
from typing import Any

from tests.helm.conftest import CHART, NAMESPACE, RELEASE, Render, find
from webhook.core.analysis import TEMPLATE_CRD_NAMES
from webhook.core.crd_schema import ROLLOUT_CRD_NAME
from webhook.kube import actions, resources
from webhook.kube.writer import SAR_PATH

Grant = tuple[str, str, str, str, tuple[str, ...]]  # scope, group, resource, verb, names


def grants(role: dict[str, Any], scope: str) -> set[Grant]:
    out = set()
    for rule in role["rules"]:
        names = tuple(sorted(rule.get("resourceNames", [])))
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((scope, group, resource, verb, names))
    return out


def server_grants(docs: list[dict[str, Any]]) -> set[Grant]:
    cluster = find(docs, "ClusterRole", RELEASE)
    role = find(docs, "Role", RELEASE)
    binding = find(docs, "ClusterRoleBinding", RELEASE)
    role_binding = find(docs, "RoleBinding", RELEASE)
    subject = {"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}
    assert binding["subjects"] == [subject]
    assert role_binding["subjects"] == [subject]
    assert binding["roleRef"]["name"] == cluster["metadata"]["name"]
    assert role_binding["roleRef"]["name"] == role["metadata"]["name"]
    return grants(cluster, "cluster") | grants(role, "namespace")


def expected_grants(certificates: str) -> set[Grant]:
    want: set[Grant] = set()

    def grant(
        scope: str, group: str, resource: str, verbs: str, names: tuple[str, ...] = ()
    ) -> None:
        for verb in verbs.split():
            want.add((scope, group, resource, verb, names))

    # The watch-fed caches list and watch every cached kind cluster-wide (webhook/kube/cache.py).
    for res in resources.CACHED:
        grant("cluster", res.group, res.plural, "list watch")
    # The Rollout CRD, whose schema judges every planned Rollout: a list and watch with a
    # metadata.name field selector (webhook/kube/cluster.py).
    assert (resources.CRD.group, resources.CRD.plural) == (
        "apiextensions.k8s.io",
        "customresourcedefinitions",
    )
    crd_names = tuple(sorted((ROLLOUT_CRD_NAME, *TEMPLATE_CRD_NAMES)))
    grant("cluster", resources.CRD.group, resources.CRD.plural, "list watch", crd_names)
    # The policy ConfigMap: a list and watch with a metadata.name field selector.
    grant("namespace", "", "configmaps", "list watch", (f"{RELEASE}-policy",))
    # Server-side apply of generated objects (create: an apply that creates is also
    # authorized as create) and their deletion at opt-out.
    for res in (resources.ROLLOUT, resources.SERVICE):
        grant("cluster", res.group, res.plural, "create patch delete")
    # The analysis templates the policy declares: server-side applied, never deleted.
    for res in (resources.ANALYSIS_TEMPLATE, resources.CLUSTER_ANALYSIS_TEMPLATE):
        grant("cluster", res.group, res.plural, "create patch")
    # Objects other tools own: only the fields the product changes are applied or patched.
    for res in (resources.HPA, resources.HTTPROUTE, resources.VIRTUALSERVICE, resources.DEPLOYMENT):
        grant("cluster", res.group, res.plural, "patch")
    # The confused-deputy check.
    assert SAR_PATH == "/apis/authorization.k8s.io/v1/subjectaccessreviews"
    grant("cluster", "authorization.k8s.io", "subjectaccessreviews", "create")
    # The reconciler: core/v1 Events, and the ReplicaSets a deleted Rollout orphaned.
    assert (actions.EVENT.group, actions.EVENT.plural) == ("", "events")
    grant("cluster", "", "events", "create")
    grant("cluster", actions.REPLICASET.group, actions.REPLICASET.plural, "list delete")
    # Leader election on the Leases the chart creates (certs/leader.py: get, replace).
    leases = (f"{RELEASE}-reconciler",)
    grant("namespace", "coordination.k8s.io", "leases", "get update", leases)
    if certificates == "bootstrap":
        # certs/store.py: read, create-or-conflict, replace at resourceVersion.
        grant("namespace", "", "secrets", "get update", (f"{RELEASE}-tls",))
        grant("namespace", "", "secrets", "create")
        # certs/inject.py: read the configuration, JSON-patch its caBundle.
        for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
            grant("cluster", "admissionregistration.k8s.io", kind, "get patch", (RELEASE,))
    return want


def test_server_rbac_is_exactly_what_the_code_needs(render: Render) -> None:
    for mode in ("bootstrap", "certManager"):
        have = server_grants(render(f"certificates.mode={mode}"))
        want = expected_grants(mode)
        assert have - want == set(), f"{mode}: granted but not needed: {sorted(have - want)}"
        assert want - have == set(), f"{mode}: needed but not granted: {sorted(want - have)}"


def test_no_wildcards_anywhere(render: Render) -> None:
    for combination in ((), ("certificates.mode=certManager",)):
        for doc in render(*combination):
            if doc["kind"] not in ("ClusterRole", "Role"):
                continue
            for rule in doc["rules"]:
                for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                    assert "*" not in rule.get(field, []), (doc["metadata"]["name"], rule)
                    assert not any("*" in v for v in rule.get(field, [])), rule


def test_hook_job_may_only_touch_its_secret(render: Render) -> None:
    docs = render()
    hook_role = find(docs, "Role", f"{RELEASE}-certs-hook")
    assert grants(hook_role, "namespace") == {
        ("namespace", "", "secrets", "get", (f"{RELEASE}-tls",)),
        ("namespace", "", "secrets", "update", (f"{RELEASE}-tls",)),
        ("namespace", "", "secrets", "create", ()),
    }


def test_the_leases_named_in_rbac_are_rendered(render: Render) -> None:
    docs = render()
    role = find(docs, "Role", RELEASE)
    [rule] = [r for r in role["rules"] if r["resources"] == ["leases"]]
    rendered = {d["metadata"]["name"] for d in docs if d["kind"] == "Lease"}
    assert set(rule["resourceNames"]) == rendered


def test_every_rule_in_the_templates_says_why(render: Render) -> None:
    for template in ("rbac.yaml", "certificates-bootstrap.yaml"):
        lines = (CHART / "templates" / template).read_text().splitlines()
        rule_lines = [i for i, line in enumerate(lines) if re.match(r"\s+- apiGroups:", line)]
        assert rule_lines, template
        for i in rule_lines:
            above = lines[i - 1].strip()
            assert above.startswith("#"), f"{template}:{i + 1}: rule without a comment above it"
