"""The server in-process over real HTTPS, with fake cluster ports.

``serve`` builds the real server (``build_server``: certificate directory, policy, audit
trail, engine, app) and runs it under uvicorn on an ephemeral port in a thread; the
cluster is a ``FakeCluster``: an in-memory view and a writer that records what it is
asked to do. Requests go through httpx over TLS, verified against the test CA.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import itertools
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from certs import pki
from certs.files import write_bundle_dir
from tests import builders
from webhook.core.cluster import CREATE_ROLLOUTS, AccessDecision, Permission
from webhook.core.review import UserInfo, apply_patch, decode_patch
from webhook.kube.view import MemoryClusterView
from webhook.server.connections import ConnectionTable
from webhook.server.policy_state import PolicyState
from webhook.server.runner import Server, build_server, serve_until_stopped, uvicorn_config
from webhook.server.settings import ServeSettings

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
CONTROLLER = "system:serviceaccount:argo-rollouts:argo-rollouts"


@dataclass
class FakeWriter:
    """Records applies; answers SubjectAccessReviews from ``allowed_users``."""

    allowed_users: set[str] = field(default_factory=lambda: {"alice"})
    review_delay: float = 0.0
    fail_kinds: set[str] = field(default_factory=set)
    apply_delays: list[float] = field(default_factory=list)
    """Seconds the next applies take, one entry each (then none)."""
    applied: list[dict[str, Any]] = field(default_factory=list)
    reviews: list[tuple[UserInfo, str]] = field(default_factory=list)
    denied: set[tuple[str, str]] = field(default_factory=set)
    """(user, resource) pairs refused besides Rollouts, e.g. ("alice", "httproutes")."""
    scalers: set[str] = field(default_factory=lambda: {"alice"})
    """Users who may scale Rollouts (``may_scale_rollout``)."""
    scale_reviews: list[tuple[UserInfo, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def may(
        self, user: UserInfo, namespace: str, permission: Permission, *, timeout: float
    ) -> AccessDecision:
        """Rollouts: ``allowed_users``; anything else: allowed unless in ``denied``."""
        if self.review_delay:
            time.sleep(self.review_delay)
        username = str(user.get("username"))
        with self.lock:
            if permission == CREATE_ROLLOUTS:
                self.reviews.append((user, namespace))
            allowed = (
                username in self.allowed_users
                if permission == CREATE_ROLLOUTS
                else (username, permission.resource) not in self.denied
            )
        if allowed:
            return AccessDecision(True, "allowed by RBAC")
        return AccessDecision(False, "no RBAC rule allows it")

    def may_scale_rollout(
        self, user: UserInfo, namespace: str, name: str, *, timeout: float
    ) -> AccessDecision:
        with self.lock:
            self.scale_reviews.append((user, namespace, name))
        if user.get("username") in self.scalers:
            return AccessDecision(True, "allowed by RBAC")
        return AccessDecision(False, "no RBAC rule allows it")

    def apply(self, manifest: Mapping[str, Any], *, timeout: float) -> None:
        with self.lock:
            delay = self.apply_delays.pop(0) if self.apply_delays else 0.0
        time.sleep(delay)
        if manifest.get("kind") in self.fail_kinds:
            raise RuntimeError(f"the API server refused the {manifest.get('kind')}")
        with self.lock:
            self.applied.append(dict(manifest))


@dataclass
class FakeCluster:
    view: MemoryClusterView = field(default_factory=MemoryClusterView)
    writer: FakeWriter = field(default_factory=FakeWriter)
    policy: PolicyState | None = None
    policy_configmap: dict[str, Any] | None = None

    def start(self, policy: PolicyState | None) -> None:
        self.policy = policy
        if policy is not None:
            if self.policy_configmap is not None:
                policy.apply_configmap(self.policy_configmap)
            else:
                policy.configmap_absent(deleted=False)

    def stop(self) -> None:
        pass


@dataclass
class Running:
    server: Server
    port: int
    ca_pem: str
    audit_stream: io.StringIO
    cluster: FakeCluster | None
    client: httpx.Client
    connections: ConnectionTable
    """The admission port's open connections (connections.py)."""
    versions: Iterator[int] = field(default_factory=lambda: itertools.count(1000))

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def review(
        self, request: Mapping[str, Any], *, query: str = "", store: bool = True
    ) -> dict[str, Any]:
        """POST one review to /mutate and return its response.

        With ``store`` (and a fake cluster), an admitted CREATE/UPDATE that is not a dry
        run is then put into the cache, as the API server stores it and the watch
        delivers it; the writes of a CREATE wait for exactly that.
        """
        body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
        answer = self.client.post(f"{self.url}/mutate{query}", json=body)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        assert result["apiVersion"] == "admission.k8s.io/v1"
        assert result["kind"] == "AdmissionReview"
        response: dict[str, Any] = result["response"]
        obj = request.get("object")
        if (
            store
            and self.cluster is not None
            and obj is not None
            and response["allowed"]
            and not request.get("dryRun")
            and request["operation"] in ("CREATE", "UPDATE")
            and not request.get("subResource")
        ):
            stored = apply_patch(obj, decode_patch(response))
            # As the API server stores it: a new resourceVersion each time.
            stored.setdefault("metadata", {})["resourceVersion"] = str(next(self.versions))
            self.cluster.view.put(stored)
        return response

    def records(
        self, count: int = 1, timeout: float = 5.0, kind: str = "AdmissionDecision"
    ) -> list[dict[str, Any]]:
        """The audit records of one kind written so far, waiting for at least ``count``."""
        deadline = time.monotonic() + timeout
        while True:
            self.server.audit.flush()
            lines = [line for line in self.audit_stream.getvalue().splitlines() if line]
            found = [r for r in map(json.loads, lines) if r["kind"] == kind]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def writes(self, uid: str, timeout: float = 5.0) -> dict[str, Any]:
        """The AdmissionWrites record of a decision: what became of its writes."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.records(0, kind="AdmissionWrites") if r["uid"] == uid]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no AdmissionWrites record for {uid}"
            time.sleep(0.02)


def make_bundle(directory: Path, now: dt.datetime = T0) -> pki.Bundle:
    bundle = pki.self_signed_for_localhost(now)
    write_bundle_dir(bundle, directory)
    return bundle


def verifying_context(*ca_pems: str) -> ssl.SSLContext:
    return ssl.create_default_context(cadata="".join(ca_pems))


@contextlib.contextmanager
def serve(
    tmp_path: Path,
    *,
    cluster: FakeCluster | None = None,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    **settings: Any,
) -> Iterator[Running]:
    cert_dir = settings.pop("cert_dir", None)
    ca_pem = ""
    if cert_dir is None:
        cert_dir = tmp_path / "certs"
        ca_pem = make_bundle(cert_dir, now()).ca_pem
    else:
        ca_pem = (cert_dir / "ca.crt").read_text()
    stream = io.StringIO()
    server = build_server(
        ServeSettings(cert_dir=cert_dir, **settings),
        clock=now,
        audit_stream=stream,
        cluster=cluster,
    )
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn_config(server, log_level="warning")
    runner = uvicorn.Server(config)
    # On the event loop `serve` runs on: handshake deadline, small TLS buffers.
    thread = threading.Thread(
        target=serve_until_stopped, args=(runner, server.settings, [sock]), daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not runner.started:
        assert thread.is_alive(), "server thread died at start-up"
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    client = httpx.Client(verify=verifying_context(ca_pem), timeout=10)
    try:
        table = config.http.table  # type: ignore[union-attr]
        yield Running(server, port, ca_pem, stream, cluster, client, table)
    finally:
        client.close()
        runner.should_exit = True
        thread.join(timeout=15)
        sock.close()
        server.close()


@pytest.fixture
def fake_cluster() -> FakeCluster:
    return FakeCluster()


def deployment(
    name: str = "web",
    namespace: str = "shop",
    *,
    labels: Mapping[str, str] | None = None,
    replicas: int = 3,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A Deployment as the server tests send it: in ``shop``, opted in unless ``labels`` says
    otherwise, with no strategy."""
    return builders.deployment(
        name,
        namespace,
        labels=builders.OPTED_IN if labels is None else labels,
        replicas=replicas,
        annotations=annotations,
        strategy=None,
        image="nginx:1.27",
    )


def service(name: str = "web", namespace: str = "shop", app: str = "web") -> dict[str, Any]:
    return builders.service(name, namespace, {"app": app}, ports=[{"name": "http", "port": 80}])
