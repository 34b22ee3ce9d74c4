"""The HTTP guard and the plain endpoints: broken calls get a 4xx and a message."""

from __future__ import annotations

import concurrent.futures
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.builders import admission_request
from tests.webhook.server.conftest import FakeCluster, FakeWriter, Running, deployment, serve
from webhook.kube.view import MemoryClusterView
from webhook.server.policy_state import PolicyState

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with serve(tmp_path_factory.mktemp("guard"), cluster=FakeCluster()) as server:
        yield server


def post(running: Running, body: bytes, query: str = "") -> httpx.Response:
    return running.client.post(f"{running.url}/mutate{query}", content=body)


def test_body_over_3_mib_is_413(running: Running) -> None:
    request = admission_request(deployment())
    request["object"]["metadata"]["annotations"] = {"big": "x" * (3 * MIB)}
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    answer = post(running, json.dumps(review).encode())
    assert answer.status_code == 413
    assert "limit" in answer.json()["message"]


def test_body_just_under_the_limit_is_read(running: Running) -> None:
    request = admission_request(deployment(labels={}))
    request["object"]["metadata"]["annotations"] = {"big": "x" * (3 * MIB - 4096)}
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    answer = post(running, json.dumps(review).encode())
    assert answer.status_code == 200


def test_chunked_body_over_the_limit_is_413(running: Running) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(4):
            yield b" " * MIB

    answer = running.client.post(f"{running.url}/mutate", content=chunks())
    assert answer.status_code == 413


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (b"{not json", "not JSON (line 1, column 2"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}', "apiVersion"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "request"),
        (
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}',
            "request.uid",
        ),
    ],
)
def test_not_an_admission_review_is_400_with_a_message(
    running: Running, body: bytes, message: str
) -> None:
    answer = post(running, body)
    assert answer.status_code == 400
    assert message in answer.json()["message"]


def _nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


@pytest.mark.parametrize(
    "body",
    [
        _nested(10_000).encode(),  # past the parser's recursion limit
        _nested(500).encode(),  # within it, past what any object needs
        # A deep object inside a well-formed review.
        json.dumps(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {**admission_request(deployment()), "object": "@"},
            }
        )
        .replace('"@"', '{"a":' * 900 + "1" + "}" * 900)
        .encode(),
        ('{"a":' * 10_000 + "1" + "}" * 10_000).encode(),
        # Closing brackets in an earlier string must not hide the depth that follows.
        ('{"a":"' + "]" * 300 + '","b":' + "[" * 150 + "1" + "]" * 150 + "}").encode(),
    ],
)
def test_deep_json_is_400(running: Running, body: bytes) -> None:
    answer = post(running, body)
    assert answer.status_code == 400
    assert "nests deeper than 100 levels" in answer.json()["message"]
    assert running.client.get(f"{running.url}/healthz").status_code == 200


def test_brackets_inside_strings_do_not_count_as_depth(running: Running) -> None:
    request = admission_request(deployment(labels={}))
    request["object"]["metadata"]["annotations"] = {"query": "[" * 300 + "{" * 300}
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    answer = post(running, json.dumps(review).encode())
    assert answer.status_code == 200


def test_bad_operation_is_named(running: Running) -> None:
    request = admission_request(deployment(), operation="PATCH")
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    answer = post(running, json.dumps(body).encode())
    assert answer.status_code == 400
    assert "request.operation" in answer.json()["message"]


@pytest.mark.parametrize("timeout", ["soon", "-1s", "0s"])
def test_bad_timeout_query_is_400(running: Running, timeout: str) -> None:
    request = admission_request(deployment(labels={}))
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    answer = post(running, json.dumps(body).encode(), query=f"?timeout={timeout}")
    assert answer.status_code == 400
    assert "timeout" in answer.json()["message"]


def test_health_ready_and_metrics(running: Running) -> None:
    assert running.client.get(f"{running.url}/healthz").text == "ok\n"
    assert running.client.get(f"{running.url}/readyz").status_code == 200
    metrics = running.client.get(f"{running.url}/metrics")
    assert metrics.status_code == 200
    text = metrics.text
    assert "rollout_webhook_admission_duration_seconds_bucket" in text
    assert 'rollout_webhook_rejected_calls_total{code="413"}' in text
    assert "rollout_webhook_certificate_expiry_timestamp_seconds " in text
    assert 'rollout_webhook_admission_requests_total{decision="skip",endpoint="mutate"' in text


def test_tls_is_1_2_or_newer_and_http_1_1(running: Running) -> None:
    assert running.server.ssl_context().minimum_version == ssl.TLSVersion.TLSv1_2
    context = ssl.create_default_context(cadata=running.ca_pem)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    answer = httpx.get(f"{running.url}/healthz", verify=context)
    assert answer.status_code == 200
    assert answer.http_version == "HTTP/1.1"


def test_not_ready_until_policy_and_caches(tmp_path: Path) -> None:
    class SlowCluster(FakeCluster):
        def start(self, policy: PolicyState | None) -> None:
            self.policy = policy  # the ConfigMap's first list has not come back yet

    cluster = SlowCluster(view=MemoryClusterView(synced=False))
    with serve(tmp_path, cluster=cluster) as running:
        answer = running.client.get(f"{running.url}/readyz")
        assert answer.status_code == 503
        assert answer.text == "not ready: policy, caches\n"
        assert cluster.policy is not None
        cluster.policy.configmap_absent(deleted=False)
        cluster.view.mark_synced()
        assert running.client.get(f"{running.url}/readyz").status_code == 200


def test_past_max_connections_the_longest_idle_connection_makes_room(tmp_path: Path) -> None:
    """Idle keep-alive connections do not keep a new one out: past the cap, the one idle
    the longest is closed, and the newcomer is answered."""
    with serve(tmp_path, max_connections=8) as server:
        context = ssl.create_default_context(cadata=server.ca_pem)
        held: list[httpx.Client] = []
        try:
            for _ in range(7):  # with the fixture's own client: 8 open connections
                client = httpx.Client(verify=context, timeout=5)
                assert client.get(f"{server.url}/healthz").status_code == 200
                held.append(client)
            for _ in range(3):
                extra = httpx.Client(verify=context, timeout=5)
                held.append(extra)
                assert extra.get(f"{server.url}/healthz").status_code == 200
            # The first ones were closed to make room; a client reconnects and is answered.
            assert held[0].get(f"{server.url}/healthz").status_code == 200
        finally:
            for client in held:
                client.close()


def test_when_every_connection_is_answering_a_new_one_gets_503(tmp_path: Path) -> None:
    """Overload: all the connections have a request being decided, so there is nothing
    to make room with; the newcomer gets 503 at once and the API server applies the
    failure policy instead of waiting."""
    cluster = FakeCluster(writer=FakeWriter(review_delay=5.0))
    with serve(
        tmp_path, cluster=cluster, max_connections=8, access_review_timeout_seconds=8
    ) as server:
        server.client.close()  # the fixture's own connection would be idle: not counted
        context = ssl.create_default_context(cadata=server.ca_pem)
        body = json.dumps(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": admission_request(deployment(), uid="busy"),
            }
        )

        def converting() -> int:
            with httpx.Client(verify=context, timeout=20) as client:
                return client.post(f"{server.url}/mutate", content=body).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            busy = [pool.submit(converting) for _ in range(8)]
            deadline = time.monotonic() + 20
            while server.connections.answering() < 8:  # all in the permission check
                assert time.monotonic() < deadline, "the requests did not arrive"
                time.sleep(0.05)
            with httpx.Client(verify=context, timeout=5) as newcomer:
                answer = newcomer.get(f"{server.url}/healthz")
            assert answer.status_code == 503
            assert answer.headers["connection"] == "close"
            metrics = server.server.metrics.exposition().decode()
            assert 'rollout_webhook_connections_closed_total{reason="refused"} 1.0' in metrics
            assert [f.result() for f in busy] == [200] * 8
