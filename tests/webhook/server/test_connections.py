"""Connections that send nothing, or trickle, cannot hold the server: they are closed after
the read timeout, and the health port answers while they are open."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.builders import admission_request
from tests.webhook.server.conftest import FakeCluster, Running, deployment, serve, verifying_context

READ_TIMEOUT = 1.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    with serve(
        tmp_path,
        cluster=FakeCluster(),
        max_connections=8,
        read_timeout_seconds=READ_TIMEOUT,
        health_port=free_port(),
    ) as server:
        yield server


def tls_connection(running: Running) -> ssl.SSLSocket:
    """A connection that completes its TLS handshake, as an attacker's would."""
    raw = socket.create_connection(("127.0.0.1", running.port), timeout=10)
    return verifying_context(running.ca_pem).wrap_socket(raw, server_hostname="localhost")


def closed_within(conn: ssl.SSLSocket, seconds: float) -> bool:
    conn.settimeout(seconds)
    try:
        return conn.recv(1) == b""
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError):
        return True


def counter(exposition: str, sample: str) -> float:
    values = [line.split()[-1] for line in exposition.splitlines() if line.startswith(sample + " ")]
    assert values, f"{sample} not in /metrics"
    return float(values[0])


def mutate(running: Running) -> int:
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": admission_request(deployment(labels={})),
    }
    with httpx.Client(verify=verifying_context(running.ca_pem), timeout=5) as client:
        return client.post(f"{running.url}/mutate", content=json.dumps(review)).status_code


def test_a_connection_that_sends_nothing_is_closed(running: Running) -> None:
    with contextlib.closing(tls_connection(running)) as conn:
        assert closed_within(conn, 10 * READ_TIMEOUT)
    text = running.server.metrics.exposition().decode()
    assert counter(text, 'rollout_webhook_connections_closed_total{reason="read_timeout"}') == 1


def test_a_request_that_trickles_in_is_closed_at_the_deadline(running: Running) -> None:
    with contextlib.closing(tls_connection(running)) as conn:
        started = time.monotonic()
        request = b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n"
        for byte in request:  # a byte every 50 ms: the deadline is for the whole request
            try:
                conn.sendall(bytes([byte]))
            except (ConnectionError, ssl.SSLError):
                break
            time.sleep(0.05)
        assert closed_within(conn, 10 * READ_TIMEOUT)
        # Closed by the deadline, not at the end of the headers: the body never came.
        assert time.monotonic() - started < len(request) * 0.05 + 10 * READ_TIMEOUT


def test_a_keep_alive_connection_serves_request_after_request(running: Running) -> None:
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": admission_request(deployment(labels={})),
    }
    for _ in range(3):  # the deadline restarts with each request on the connection
        answer = running.client.post(f"{running.url}/mutate", content=json.dumps(review))
        assert answer.status_code == 200
        time.sleep(READ_TIMEOUT / 2)


def test_idle_connections_do_not_starve_the_probes_or_the_admissions(running: Running) -> None:
    health = f"http://127.0.0.1:{running.server.settings.health_port}"
    idle = [tls_connection(running) for _ in range(12)]  # more than max_connections (8)
    try:
        # The longest idle connections make room: admissions are answered at once...
        assert mutate(running) == 200
        assert running.client.get(f"{running.url}/healthz").status_code == 200
        # ...and the health port answers, with the pod's real state.
        with httpx.Client(timeout=5) as client:
            assert client.get(f"{health}/healthz").status_code == 200
            assert client.get(f"{health}/readyz").text == "ready\n"
            assert "rollout_webhook_admission_requests" in client.get(f"{health}/metrics").text
        assert len(running.connections) <= 8
        assert all(closed_within(conn, 10 * READ_TIMEOUT) for conn in idle)
        # Said in the metrics: connections closed to make room, and those held.
        with httpx.Client(timeout=5) as client:
            text = client.get(f"{health}/metrics").text
        assert counter(text, 'rollout_webhook_connections_closed_total{reason="made_room"}') >= 4
        assert counter(text, "rollout_webhook_connections_open") <= 8
    finally:
        for conn in idle:
            conn.close()


def test_a_connection_that_never_starts_its_handshake_is_closed(tmp_path: Path) -> None:
    with (
        serve(tmp_path, cluster=FakeCluster(), handshake_timeout_seconds=READ_TIMEOUT) as running,
        contextlib.closing(socket.create_connection(("127.0.0.1", running.port))) as raw,
    ):
        raw.settimeout(10 * READ_TIMEOUT)  # asyncio's own deadline would be 60 s
        assert raw.recv(1) == b""


def hostile_connections(running: Running, count: int) -> list[socket.socket]:
    """``count`` connections as an attacker holds them: a third never start their TLS
    handshake, a third finish it and send nothing, a third trickle request headers."""
    held: list[socket.socket] = []
    for index in range(count):
        kind = index % 3
        if kind == 0:
            held.append(socket.create_connection(("127.0.0.1", running.port), timeout=10))
            continue
        conn = tls_connection(running)
        if kind == 2:
            conn.sendall(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        held.append(conn)
    return held


def test_hundreds_of_hostile_connections_leave_admissions_and_probes_answered(
    tmp_path: Path,
) -> None:
    """390 hostile connections (260 of them past their handshake: more than
    max_connections, 256 here) held open while a legitimate admission is made: it is
    answered (the idle ones make room), and so is the health port. Generous deadlines only: the point is that nothing waits for the
    read timeout (60 s here) to be answered."""
    with serve(
        tmp_path,
        cluster=FakeCluster(),
        read_timeout_seconds=60,
        handshake_timeout_seconds=60,
        max_connections=256,
        health_port=free_port(),
    ) as running:
        held = hostile_connections(running, 390)
        try:
            assert len(running.connections) <= running.server.settings.max_connections
            started = time.monotonic()
            assert mutate(running) == 200
            with httpx.Client(timeout=10) as client:
                health = f"http://127.0.0.1:{running.server.settings.health_port}"
                assert client.get(f"{health}/healthz").status_code == 200
            assert time.monotonic() - started < 30, "answered only once connections timed out"
        finally:
            for conn in held:
                conn.close()


def test_idle_connections_to_the_health_port_do_not_keep_the_probes_out(
    running: Running,
) -> None:
    port = running.server.settings.health_port
    assert port is not None
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(40)]
    try:  # more than its 32 places, none sending anything
        with httpx.Client(timeout=10) as client:
            assert client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    finally:
        for conn in idle:
            conn.close()
