"""Certificate rotation under requests: real TLS handshakes, a mounted-Secret symlink swap."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
import ssl
import threading
import time
from pathlib import Path

import httpx
import pytest

from certs import pki
from tests.builders import admission_request
from tests.e2e import pki as e2e_pki
from tests.webhook.server.conftest import FakeCluster, deployment, serve
from webhook.core.review import API_VERSION, REVIEW_KIND
from webhook.server.runner import StartupError


def mount_secret(root: Path, bundle: pki.Bundle, generation: str) -> None:
    """Lay out or update a directory the way the kubelet mounts a Secret.

    The files are symlinks through ``..data``; an update writes a new timestamped
    directory and renames a fresh ``..data`` link over the old one: one atomic step,
    with no write event on ``tls.crt`` or ``tls.key`` themselves.
    """
    target = root / f"..{generation}"
    target.mkdir(parents=True)
    (target / "tls.crt").write_text(bundle.cert_pem)
    (target / "tls.key").write_text(bundle.key_pem)
    (target / "ca.crt").write_text(bundle.ca_pem)
    link = root / "..data_tmp"
    link.symlink_to(target.name)
    os.replace(link, root / "..data")
    for name in ("tls.crt", "tls.key", "ca.crt"):
        if not (root / name).is_symlink():
            (root / name).symlink_to(Path("..data") / name)


def served_certificate(port: int, trust: str) -> str:
    """SHA-256 of the certificate a fresh handshake presents."""
    context = ssl.create_default_context(cadata=trust)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return hashlib.sha256(der).hexdigest()


def fingerprint(bundle: pki.Bundle) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(bundle.cert_pem)).hexdigest()


def test_rotated_certificate_is_used_for_new_handshakes_without_a_failed_request(
    tmp_path: Path,
) -> None:
    now = dt.datetime.now(dt.UTC)
    old = pki.self_signed_for_localhost(now - dt.timedelta(days=1))
    new = pki.self_signed_for_localhost(now)
    cert_dir = tmp_path / "tls"
    mount_secret(cert_dir, old, "2030_01_01_a")
    trust = old.ca_pem + new.ca_pem  # the caBundle holds both CAs across a rotation

    body = {
        "apiVersion": API_VERSION,
        "kind": REVIEW_KIND,
        "request": admission_request(deployment(labels={})),
    }
    failures: list[str] = []
    answered = 0
    stop = threading.Event()

    with serve(tmp_path, cluster=FakeCluster(), cert_dir=cert_dir, cert_poll_seconds=0.1) as run:
        assert served_certificate(run.port, trust) == fingerprint(old)
        expiry_before = run.server.metrics.certificate_expiry._value.get()
        kept_alive = httpx.Client(verify=ssl.create_default_context(cadata=trust), timeout=10)
        assert kept_alive.post(f"{run.url}/mutate", json=body).status_code == 200

        def load() -> None:
            nonlocal answered
            context = ssl.create_default_context(cadata=trust)
            while not stop.is_set():
                try:
                    # A new connection each time: every request is a new handshake.
                    with httpx.Client(verify=context, timeout=10) as client:
                        answer = client.post(f"{run.url}/mutate", json=body)
                    if answer.status_code != 200 or not answer.json()["response"]["allowed"]:
                        failures.append(f"HTTP {answer.status_code}")
                    answered += 1
                except Exception as err:
                    failures.append(repr(err))

        workers = [threading.Thread(target=load) for _ in range(2)]
        for worker in workers:
            worker.start()
        time.sleep(0.5)
        mount_secret(cert_dir, new, "2030_01_01_b")
        deadline = time.monotonic() + 10
        while served_certificate(run.port, trust) != fingerprint(new):
            assert time.monotonic() < deadline, "the new certificate was never served"
            time.sleep(0.05)
        time.sleep(0.5)  # more requests on the new certificate
        stop.set()
        for worker in workers:
            worker.join(timeout=15)

        # The connection opened before the swap still works.
        assert kept_alive.post(f"{run.url}/mutate", json=body).status_code == 200
        kept_alive.close()
        assert failures == []
        assert answered > 10
        assert run.server.metrics.certificate_expiry._value.get() > expiry_before
        metrics = httpx.get(f"{run.url}/metrics", verify=ssl.create_default_context(cadata=trust))
        assert 'rollout_webhook_certificate_reloads_total{result="loaded"} 2.0' in metrics.text


def test_a_mismatched_pair_is_skipped_and_the_old_certificate_stays(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    good = pki.self_signed_for_localhost(now)
    other = pki.self_signed_for_localhost(now)
    cert_dir = tmp_path / "tls"
    mount_secret(cert_dir, good, "a")
    with serve(tmp_path, cluster=FakeCluster(), cert_dir=cert_dir, cert_poll_seconds=0.1) as run:
        half = pki.Bundle(ca_pem=other.ca_pem, cert_pem=other.cert_pem, key_pem=good.key_pem)
        mount_secret(cert_dir, half, "b")
        deadline = time.monotonic() + 5
        metrics = ""
        while 'certificate_reloads_total{result="invalid"}' not in metrics:
            assert time.monotonic() < deadline
            time.sleep(0.1)
            metrics = run.client.get(f"{run.url}/metrics").text
        assert served_certificate(run.port, good.ca_pem) == fingerprint(good)


# --- mutual TLS: --client-ca --------------------------------------------------------------------


def get_healthz(port: int, trust: str, client: e2e_pki.KeyPair | None, tmp_path: Path) -> bytes:
    """GET /healthz over a fresh TLS connection, showing ``client``'s certificate if given;
    the server's answer, ``refused: REASON`` (the alert the server sent), or nothing (the
    connection closed unanswered)."""
    context = ssl.create_default_context(cadata=trust)
    if client is not None:
        (tmp_path / "client.crt").write_bytes(client.cert_pem)
        (tmp_path / "client.key").write_bytes(client.key_pem)
        context.load_cert_chain(tmp_path / "client.crt", tmp_path / "client.key")
    try:
        return _get_healthz(port, context)
    except ssl.SSLError as err:
        return f"refused: {err.reason}".encode()


def _get_healthz(port: int, context: ssl.SSLContext) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        # TLS 1.3: the server checks the client's certificate after the client's side of
        # the handshake is done, so a refusal shows on the first read.
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := tls.recv(4096):
            answer += chunk
        return answer


def test_with_a_client_ca_only_clients_with_a_certificate_it_signed_get_through(
    tmp_path: Path,
) -> None:
    now = dt.datetime.now(dt.UTC)
    api_server, stranger = e2e_pki.generate(now), e2e_pki.generate(now)
    (tmp_path / "client-ca.crt").write_bytes(api_server.ca.cert_pem)
    with serve(tmp_path, client_ca=tmp_path / "client-ca.crt") as running:
        port, trust = running.port, running.ca_pem
        answer = get_healthz(port, trust, api_server.admin, tmp_path)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
        for client in (None, stranger.admin):  # none, or one signed by another CA
            refused = get_healthz(port, trust, client, tmp_path)
            assert refused in (b"", b"refused: TLSV13_ALERT_CERTIFICATE_REQUIRED") or (
                refused.startswith(b"refused: TLSV1_ALERT_UNKNOWN_CA")
            ), refused[:80]


def test_without_a_client_ca_no_client_certificate_is_asked_for(tmp_path: Path) -> None:
    with serve(tmp_path) as running:
        assert get_healthz(running.port, running.ca_pem, None, tmp_path).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"not a certificate\n", "cannot load"),
    ],
)
def test_an_unusable_client_ca_stops_the_start_with_one_line(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "client-ca.crt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(StartupError) as failed, serve(tmp_path, client_ca=path):
        pass
    assert str(failed.value).startswith(f"--client-ca {path}: {message}")
