"""Requests that cost CPU: decided off the event loop, and answered at their deadline."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.builders import admission_request
from tests.webhook.server.conftest import (
    FakeCluster,
    Running,
    deployment,
    serve,
    service,
    verifying_context,
)

OVERRIDE = "rollout-webhook.io/rollout"


def review(obj: dict[str, Any], uid: str) -> bytes:
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": admission_request(obj, uid=uid),
    }
    return json.dumps(body, separators=(",", ":")).encode()


def costly_override() -> str:
    """16 KiB of override YAML the scanner is slowest on: flow lists 30 levels deep."""
    text = "canary:\n  x: [" + ",".join(["[" * 30 + "]" * 30] * 250) + "]\n"
    return text[: 16 * 1024 - 2] + "]\n"


def large_body(uid: str) -> bytes:
    """Near the 3 MiB limit, of small arrays: about a second of CPU to decode and plan."""
    obj = deployment()
    obj["spec"]["template"]["spec"]["x"] = [[] for _ in range(900_000)]
    return review(obj, uid)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    cluster = FakeCluster()
    cluster.view.put(service())
    with serve(tmp_path, cluster=cluster) as server:
        yield server


def post(running: Running, body: bytes, query: str = "") -> httpx.Response:
    with httpx.Client(verify=verifying_context(running.ca_pem), timeout=60) as client:
        return client.post(f"{running.url}/mutate{query}", content=body)


def test_a_costly_request_does_not_hold_the_others(running: Running) -> None:
    """While a near-3-MiB request is decoded and planned (over a second of CPU, on the
    heavy lane), a plain admission sent after it is decided, and recorded, first."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        costly = pool.submit(post, running, large_body("large"))
        deadline = time.monotonic() + 30
        while running.connections.answering() == 0:  # read whole, being decided
            assert time.monotonic() < deadline, "the large request never arrived"
            time.sleep(0.01)
        plain = review(deployment(labels={}), "plain")
        assert running.client.post(f"{running.url}/mutate", content=plain).status_code == 200
        assert costly.result().status_code == 200
    uids = [record["uid"] for record in running.records(2)]
    assert uids == ["plain", "large"]


def test_a_costly_override_is_answered_at_its_deadline(running: Running) -> None:
    """The override's parse and check take far longer than the 0.08 s this call allows
    (80% of ?timeout=100ms): the answer is the deadline's, admitting the Deployment
    unchanged with a warning (fail-open), whatever the lane is still doing."""
    obj = deployment(annotations={OVERRIDE: costly_override()})
    answer = post(running, review(obj, "costly"), "?timeout=100ms")
    assert answer.status_code == 200
    response = answer.json()["response"]
    assert response["allowed"] is True
    assert "patch" not in response
    assert "no decision within 0.08s" in response["warnings"][0]
