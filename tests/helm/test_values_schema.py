"""values.schema.json: a wrong type or an unknown key fails `helm template` with a clear message."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import pytest
import yaml

from tests.helm.conftest import CHART

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())

# (--set arguments, the path helm names, words of the reason)
BAD_VALUES = [
    (("replicaCount=two",), "/replicaCount", "want integer"),
    (("replicaCount=0",), "/replicaCount", "minimum"),
    (("replicas=3",), "''", "additional properties 'replicas' not allowed"),
    (("webhook.failurePolicy=Never",), "/webhook/failurePolicy", "'Ignore', 'Fail'"),
    (("webhook.failurPolicy=Fail",), "/webhook", "additional properties 'failurPolicy'"),
    (("webhook.timeoutSeconds=10",), "/webhook/timeoutSeconds", "maximum"),
    (("certificates.mode=selfsigned",), "/certificates/mode", "'bootstrap', 'certManager'"),
    (
        ("certificates.bootstrap.rotationSchedule=daily",),
        "/certificates/bootstrap/rotationSchedule",
        "does not match pattern",
    ),
    (("image.digest=latest",), "/image/digest", "does not match pattern"),
    (("labelPrefix=rollout-webhook.io",), "/labelPrefix", "does not match pattern"),
    (("logFormat=yaml",), "/logFormat", "'text', 'json'"),
    (
        ("argoRollouts.controllerServiceAccount=argo-rollouts",),
        "/argoRollouts/controllerServiceAccount",
        "does not match pattern",
    ),
    (("resources.limits.cpu=1",), "/resources/limits", "additional properties 'cpu'"),
    (
        ("topologySpread.whenUnsatisfiable=Never",),
        "/topologySpread/whenUnsatisfiable",
        "'ScheduleAnyway', 'DoNotSchedule'",
    ),
    (("metrics.serviceMonitor.enabled=yes",), "/metrics/serviceMonitor/enabled", "want boolean"),
    (
        ("policy.document.environments.prod.scaleDown=sometimes",),
        "/policy/document/environments/prod/scaleDown",
        "'never', 'onsuccess', 'progressively'",
    ),
    (
        ("policy.document.environments.prod.rolout.enabled=true",),
        "/policy/document/environments/prod",
        "additional properties 'rolout'",
    ),
    (
        ('json:certificates.certManager.issuerRef={"kind":"Issuer"}',),
        "/certificates/certManager/issuerRef",
        "missing property 'name'",
    ),
    (
        ('json:networkPolicy.apiServer=[{"ipBlok":{"cidr":"10.0.0.0/8"}}]',),
        "/networkPolicy/apiServer/0",
        "additional properties 'ipBlok'",
    ),
    (("webhook.clientCA.enabled=on",), "/webhook/clientCA/enabled", "want boolean"),
    (
        ('json:webhook.excludeNamespaces=["Kube_System"]',),
        "/webhook/excludeNamespaces/0",
        "does not match pattern",
    ),
]


@pytest.mark.parametrize(
    ("sets", "path", "reason"), BAD_VALUES, ids=[b[1] + ":" + b[0][0] for b in BAD_VALUES]
)
def test_bad_values_are_refused_naming_the_value(
    render_fails: Callable[..., str], sets: tuple[str, ...], path: str, reason: str
) -> None:
    message = render_fails(*sets)
    assert "values don't meet the specifications of the schema" in message
    assert f"at '{path.strip(chr(39))}'" in message, message
    assert reason in message, message


def objects(schema: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema:
            yield where or "/", schema
        for key, value in schema.items():
            yield from objects(value, f"{where}/{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            yield from objects(value, f"{where}/{i}")


def test_every_object_with_known_keys_refuses_unknown_ones() -> None:
    found = list(objects(SCHEMA))
    assert len(found) > 20
    for where, schema in found:
        assert schema.get("additionalProperties") is False, f"{where} accepts unknown keys"


def test_values_yaml_satisfies_its_schema_and_every_key_is_described() -> None:
    jsonschema.validate(VALUES, SCHEMA)

    def keys(values: Any, schema: dict[str, Any], where: str) -> None:
        if not isinstance(values, dict) or "properties" not in schema:
            return
        for key, value in values.items():
            assert key in schema["properties"], f"{where}.{key} is not in values.schema.json"
            keys(value, schema["properties"][key], f"{where}.{key}")

    keys(VALUES, SCHEMA, "values")
