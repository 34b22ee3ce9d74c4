"""POST /validate on a policy whose analysis cannot work: allowed, with the warnings."""

from __future__ import annotations

from pathlib import Path

from tests.webhook.server.conftest import FakeCluster, serve
from tests.webhook.server.test_policy_state import (
    NAMESPACE,
    good_policy,
    policy_configmap,
    validate,
)


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
        warnings = response["warnings"]
        assert len(warnings) == 2, warnings
        assert "successCondition: Prometheus gives a list here" in warnings[0]
        assert warnings[1].startswith("environments.prod.analysis.template: AnalysisTemplate")
        clean = validate(running, policy_configmap(good_policy()))
        assert "warnings" not in clean
