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
