"""POST /validate on a policy with managed analysis: warnings, and the served CRDs' schemas."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.schemas import CRD_DIR
from tests.webhook.server.conftest import FakeCluster, serve
from tests.webhook.server.test_policy_state import (
    NAMESPACE,
    good_policy,
    policy_configmap,
    validate,
)
from webhook.core.analysis import TEMPLATE_CRD_NAMES
from webhook.kube.cluster import TemplateSchemaStore, template_schemas


def test_a_policy_whose_analysis_cannot_work_is_allowed_with_warnings(tmp_path: Path) -> None:
    doc = good_policy()
    metric = {
        "name": "success-rate",
        "successCondition": "result >= 0.95",
        "provider": {"prometheus": {"address": "http://p:9090", "query": "sum(up)"}},
    }
    doc["analysis"] = {"templates": [{"name": "success-rate", "spec": {"metrics": [metric]}}]}
    doc["environments"]["prod"]["analysis"] = {"template": "by-hand"}
    with serve(tmp_path, cluster=FakeCluster(), namespace=NAMESPACE) as running:
        response = validate(running, policy_configmap(doc))
        assert response["allowed"] is True
        # This fake cluster serves no Rollout CRD, which every answer says as well.
        no_schema = [w for w in response["warnings"] if "no Rollout CRD" in w]
        assert len(no_schema) == 1, response["warnings"]
        warnings = [w for w in response["warnings"] if w not in no_schema]
        assert len(warnings) == 2, warnings
        assert "successCondition: Prometheus gives a list here" in warnings[0]
        assert warnings[1].startswith("environments.prod.analysis.template: AnalysisTemplate")
        clean = validate(running, policy_configmap(good_policy()))
        assert clean["warnings"] == no_schema


@dataclass
class ClusterServingTemplateCrds(FakeCluster):
    """A cluster whose analysis template CRDs are the released ones."""

    template_schema_stores: dict[str, TemplateSchemaStore] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, file in zip(TEMPLATE_CRD_NAMES, CRD_FILES, strict=True):
            store = TemplateSchemaStore(name)
            store.replace([yaml.safe_load((CRD_DIR / file).read_text())])
            self.template_schema_stores[name] = store


CRD_FILES = (
    "argo-rollouts-v1.9.1-analysis-template.yaml",
    "argo-rollouts-v1.9.1-cluster-analysis-template.yaml",
)


def test_a_template_the_served_schema_refuses_is_denied(tmp_path: Path) -> None:
    doc = good_policy()
    metric = {"name": "m", "interval": 60, "provider": {"prometheus": {"query": "scalar(up)"}}}
    template = {"kind": "ClusterAnalysisTemplate", "name": "t", "spec": {"metrics": [metric]}}
    doc["analysis"] = {"templates": [template]}
    cluster = ClusterServingTemplateCrds()
    with serve(tmp_path, cluster=cluster, namespace=NAMESPACE) as running:
        response = validate(running, policy_configmap(doc))
        assert response["allowed"] is False
        message = response["status"]["message"]
        assert (
            "analysis.templates[0].spec.metrics[0].interval: 60 is not of type 'string'" in message
        )
        assert "CustomResourceDefinition clusteranalysistemplates.argoproj.io" in message
        metric["interval"] = "60s"
        assert validate(running, policy_configmap(doc))["allowed"] is True


def test_a_missing_or_unusable_crd_leaves_templates_to_the_api_server() -> None:
    store = TemplateSchemaStore("analysistemplates.argoproj.io")
    store.replace([yaml.safe_load((CRD_DIR / CRD_FILES[0]).read_text())])
    assert set(template_schemas({"a": store})) == {"AnalysisTemplate"}
    store.upsert({"kind": "CustomResourceDefinition", "spec": {"names": {"kind": "Rollout"}}})
    assert template_schemas({"a": store}) == {}
    store.replace([yaml.safe_load((CRD_DIR / CRD_FILES[0]).read_text())])
    store.replace([])
    assert template_schemas({"a": store}) == {}
