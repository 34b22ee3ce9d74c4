"""`rollout-webhook serve` as a process: the README's run command, start to SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.builders import admission_request
from tests.webhook.server.conftest import deployment
from webhook.core.audit import verify_chain
from webhook.core.review import decode_patch


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_with_no_flags_answers_over_tls_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    audit = tmp_path / "audit.jsonl"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "webhook.cli.main",
            "serve",
            f"--port={port}",
            f"--audit-file={audit}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        ca_file: Path | None = None
        deadline = time.monotonic() + 20
        assert process.stderr is not None
        while ca_file is None:
            assert time.monotonic() < deadline, "serve did not say which CA to trust"
            line = process.stderr.readline()
            assert line, "serve exited early"
            found = re.search(r"clients trust (\S+ca\.crt)", line)
            if found:
                ca_file = Path(found.group(1))
        client = httpx.Client(verify=ssl.create_default_context(cafile=ca_file), timeout=5)
        url = f"https://localhost:{port}"
        while True:
            try:
                if client.get(f"{url}/readyz").text == "ready\n":
                    break
            except httpx.ConnectError:
                pass
            assert time.monotonic() < deadline, "serve never became ready"
            time.sleep(0.1)
        body = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": admission_request(deployment(), uid="cli-1"),
        }
        answer = client.post(f"https://127.0.0.1:{port}/mutate", json=body).json()["response"]
        assert answer["uid"] == "cli-1"
        assert decode_patch(answer)
        assert answer["auditAnnotations"]["policy-version"].startswith("built-in@")
        client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    # Shut down gracefully, then uvicorn re-raises the SIGTERM it caught.
    assert process.returncode in (0, -signal.SIGTERM), err
    assert "Application shutdown complete" in err
    # Standard output is the audit trail and nothing else; the file holds the same.
    stdout_records = [json.loads(line) for line in out.splitlines()]
    assert [r["uid"] for r in stdout_records] == ["cli-1"]
    lines = audit.read_text().splitlines()
    assert verify_chain(lines).broken is None
    assert json.loads(lines[0])["uid"] == "cli-1"
    # The throw-away certificate directory is gone with the process.
    assert ca_file is not None
    assert not ca_file.parent.exists()


GRACE_SECONDS = 30
"""The pod's terminationGracePeriodSeconds: the chart keeps Kubernetes' default."""


def start_serve(
    tmp_path: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], int, int]:
    """`serve` with a health port, once /readyz answers there; (process, port, health)."""
    port, health = free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "webhook.cli.main",
            "serve",
            f"--port={port}",
            f"--health-port={health}",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "serve.log").open("w"),
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, (tmp_path / "serve.log").read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{health}/readyz", timeout=2).status_code == 200:
                return process, port, health
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "serve never became ready"
        time.sleep(0.1)


def reap(process: subprocess.Popen[str]) -> None:
    """Kill `serve` if a test left it running."""
    if process.poll() is None:
        process.kill()
        process.wait()


def slow_connections(port: int) -> list[socket.socket]:
    """What an attacker leaves open: no handshake, an idle TLS connection, headers and a
    body that trickle."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    held: list[socket.socket] = []
    for index in range(40):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        if index % 4 == 0:
            held.append(raw)
            continue
        conn = context.wrap_socket(raw)
        if index % 4 == 2:
            conn.sendall(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        if index % 4 == 3:
            conn.sendall(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
        held.append(conn)
    return held


def hostile_body() -> bytes:
    """Just under the 3 MiB limit, of small arrays: the most decoding and copying a
    request may cost (about a second of CPU each)."""
    obj = deployment()
    obj["spec"]["template"]["spec"]["x"] = [[] for _ in range(700_000)]
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": admission_request(obj, uid="hostile"),
    }
    return json.dumps(review, separators=(",", ":")).encode()


def send_without_waiting(port: int, body: bytes) -> socket.socket:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
    head = f"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    conn.sendall(head.encode() + body)
    return conn


def test_sigterm_stops_serve_within_the_grace_period_under_attack(tmp_path: Path) -> None:
    """SIGTERM while hostile requests are being decided and slow connections are open:
    the process still exits within the pod's grace period, on its own (not by the
    shutdown deadline's last resort), and meanwhile its health port kept answering."""
    process, port, health = start_serve(tmp_path)
    held: list[socket.socket] = []
    try:
        held = slow_connections(port)
        body = hostile_body()
        held += [send_without_waiting(port, body) for _ in range(3)]
        assert httpx.get(f"http://127.0.0.1:{health}/healthz", timeout=10).status_code == 200
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        process.wait(timeout=GRACE_SECONDS)
        took = time.monotonic() - signalled
    finally:
        for conn in held:
            conn.close()
        reap(process)
    log = (tmp_path / "serve.log").read_text()
    assert process.returncode in (0, -signal.SIGTERM), log
    assert "shutdown did not finish" not in log
    # The slow connections were dropped at once: they did not hold the graceful wait for
    # connections until its timeout (a TLS close would wait for their close_notify).
    assert "timeout graceful shutdown exceeded" not in log
    assert took < GRACE_SECONDS


def test_a_shutdown_past_its_deadline_ends_the_process_with_a_word(tmp_path: Path) -> None:
    """The last resort: a shutdown that takes longer than --shutdown-timeout (here less
    than uvicorn's own first pause) is cut short, said on standard error, exit code 3."""
    env = {"ROLLOUT_WEBHOOK_SHUTDOWN_TIMEOUT_SECONDS": "0.01"}
    process, _, _ = start_serve(tmp_path, env=env)
    try:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=GRACE_SECONDS)
    finally:
        reap(process)
    assert process.returncode == 3
    assert "shutdown did not finish within 0.01s" in (tmp_path / "serve.log").read_text()


def test_after_sigterm_a_kept_alive_connection_is_answered_and_told_to_close(
    tmp_path: Path,
) -> None:
    """The API server keeps connections alive to a webhook pod that is stopping: a request
    it sends on one after SIGTERM, during the drain, is answered (not met by a closed
    connection, which loses the admission) with ``Connection: close``; then the process
    exits by itself. Without the drain the request finds the connection closed."""
    process, port, _ = start_serve(tmp_path, env={"ROLLOUT_WEBHOOK_DRAIN_SECONDS": "3"})
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": admission_request(deployment(), uid="kept-alive"),
    }
    client = httpx.Client(verify=False, timeout=10)  # one kept-alive connection
    try:
        url = f"https://127.0.0.1:{port}/mutate"
        first = client.post(url, json=review)
        assert first.status_code == 200
        assert first.headers.get("connection") != "close"
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the signal handled, the drain begun
        during = client.post(url, json=review)
        assert during.status_code == 200
        assert during.json()["response"]["uid"] == "kept-alive"
        assert during.headers.get("connection") == "close"
        process.wait(timeout=GRACE_SECONDS)
    finally:
        client.close()
        reap(process)
    log = (tmp_path / "serve.log").read_text()
    assert process.returncode in (0, -signal.SIGTERM), log
    assert "draining for 3s" in log
