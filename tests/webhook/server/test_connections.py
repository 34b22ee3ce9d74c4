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


def test_idle_connections_do_not_starve_the_probes_or_for_long_the_admissions(
    running: Running,
) -> None:
    health = f"http://127.0.0.1:{running.server.settings.health_port}"
    idle = [tls_connection(running) for _ in range(12)]  # more than max_connections (8)
    try:
        time.sleep(0.2)
        # The admission port is full: its own /healthz is refused meanwhile...
        assert running.client.get(f"{running.url}/healthz").status_code == 503
        # ...and the health port answers, with the pod's real state.
        with httpx.Client(timeout=5) as client:
            assert client.get(f"{health}/healthz").status_code == 200
            assert client.get(f"{health}/readyz").text == "ready\n"
            assert "rollout_webhook_admission_requests" in client.get(f"{health}/metrics").text
        # The idle ones are closed at the read timeout, and admissions are answered again.
        deadline = time.monotonic() + 10 * READ_TIMEOUT
        while mutate(running) != 200:
            assert time.monotonic() < deadline, "idle connections still hold the server"
            time.sleep(0.1)
        assert all(closed_within(conn, 10 * READ_TIMEOUT) for conn in idle)
    finally:
        for conn in idle:
            conn.close()
