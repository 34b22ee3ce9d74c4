"""The reconciler's full resync of many services against a real control plane.

The control plane is the end-to-end tier's (tests/e2e/harness.py: etcd and kube-apiserver
built from Go modules, cached under ~/.cache/rollout-webhook/bin, the shared CRDs). The
services are created with no webhook registered, so they are stored unconverted; then
the reconciler starts exactly as `serve --kubeconfig` starts it (``connect``, the watches,
``start_reconciler``: the Lease, ``reconcile_workers`` threads, a resync of everything once
leader), and the time is taken until every Deployment is converted and its Rollout is in
the caches.
Requests are counted twice: in the product's HTTP adapter (every call it makes, by
verb) and by the API server itself (``apiserver_request_total``, by verb and resource;
the Lease goes through the official client and is seen only there). A second pass
(``enqueue_all`` on a converted cluster, as the periodic resync does) shows what a
resync with nothing to do costs.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import http.client
import json
import os
import re
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.fixtures import deployment, namespace, namespace_name, service
from tests.e2e import binaries, harness
from webhook.core.keys import DEFAULT_KEYS
from webhook.kube.cluster import connect
from webhook.reconciler.controller import Reconciler
from webhook.server.audit_trail import AuditTrail
from webhook.server.policy_state import PolicyState
from webhook.server.runner import start_reconciler
from webhook.server.settings import ServeSettings

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
WEBHOOK_NAMESPACE = "rollout-webhook"
SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def request_totals(exposition: str) -> dict[str, float]:
    """``apiserver_request_total`` summed by "VERB resource" (resource requests only)."""
    totals: dict[str, float] = collections.defaultdict(float)
    for line in exposition.splitlines():
        match = SAMPLE.match(line)
        if match is None:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        if not labels.get("resource"):
            continue
        resource = labels["resource"]
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        totals[f"{labels.get('verb', '?')} {resource}"] += float(match["value"])
    return dict(totals)


def difference(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    keys = sorted(set(after) | set(before))
    return {
        k: int(after.get(k, 0) - before.get(k, 0))
        for k in keys
        if after.get(k, 0) > before.get(k, 0)
    }


class Counted:
    """Counts calls through the product's HTTP adapter, by method (thread-safe enough:
    the GIL makes each Counter increment atomic for our purpose of counting)."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()

    def wrap(self, http: Any) -> None:
        request: Callable[..., Any] = http.request
        watch: Callable[..., Any] = http.watch

        def counted_request(method: str, path: str, **kwargs: Any) -> Any:
            self.calls[method] += 1
            return request(method, path, **kwargs)

        def counted_watch(path: str, **kwargs: Any) -> Any:
            self.calls["WATCH"] += 1
            return watch(path, **kwargs)

        # Instance attributes shadow the methods: the adapter itself is unchanged.
        setattr(http, "request", counted_request)  # noqa: B010
        setattr(http, "watch", counted_watch)  # noqa: B010


class BigControlPlane(harness.ControlPlane):
    """The end-to-end tier's control plane with room for thousands of Services: its
    ClusterIP range (a /24, 254 addresses) holds fewer than the stable and canary
    Services of 1,000 services, and a full range makes Service creation fail with 500."""

    def _apiserver_argv(self, etcd_url: str) -> list[str]:
        return [
            "--service-cluster-ip-range=10.96.0.0/16"
            if arg.startswith("--service-cluster-ip-range=")
            else arg
            for arg in super()._apiserver_argv(etcd_url)
        ]


CREATE_WORKERS = 16
"""Concurrent creates while the fixture is made: enough to keep the API server busy, few
enough that its default limit of requests in flight (400) is never near."""


def post_all(
    plane: harness.ControlPlane,
    objects: Iterable[tuple[str, dict[str, Any]]],
    workers: int = CREATE_WORKERS,
) -> int:
    """POST each (path, body) as the admin, ``workers`` at a time, each worker on one
    keep-alive connection (a TLS handshake per object cost the API server more than the
    create); the number posted."""
    context = plane.ssl_context()
    local = threading.local()
    connections: list[http.client.HTTPSConnection] = []
    lock = threading.Lock()

    def connection() -> http.client.HTTPSConnection:
        conn: http.client.HTTPSConnection | None = getattr(local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection(
                plane.host, plane.apiserver_port, context=context, timeout=30
            )
            local.conn = conn
            with lock:
                connections.append(conn)
        return conn

    def post(item: tuple[str, dict[str, Any]]) -> None:
        path, body = item
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        for attempt in range(2):
            conn = connection()
            try:
                conn.request("POST", path, body=data, headers=headers)
                answer = conn.getresponse()
                message = answer.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                local.conn = None
                if attempt:
                    raise
                continue  # the server closed the kept-alive connection: once more, anew
            if answer.status == 409:  # created by the attempt whose answer was lost
                return
            if not 200 <= answer.status <= 299:
                text = message[:300].decode("utf-8", "replace")
                raise RuntimeError(f"POST {path}: HTTP {answer.status}: {text}")
            return

    items = list(objects)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(post, items))
    finally:
        for conn in connections:
            conn.close()
    return len(items)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (0.0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command name: state is field 3, utime and stime fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu(plane: harness.ControlPlane) -> dict[str, float]:
    """CPU seconds so far of the API server, etcd and this process (the reconciler)."""
    seconds = {p.name: cpu_seconds(p.process.pid) for p in plane.processes if p.process is not None}
    seconds["reconciler"] = cpu_seconds(os.getpid())
    return seconds


def _cpu_used(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: round(v - before.get(k, 0.0), 2) for k, v in after.items()}


def _metrics(plane: harness.ControlPlane) -> dict[str, float]:
    with urllib.request.urlopen(  # noqa: S310  (the control plane's https URL)
        f"{plane.url}/metrics", context=plane.ssl_context(), timeout=30
    ) as answer:
        return request_totals(answer.read().decode())


def _converted(reconciler: Reconciler) -> int:
    rollouts = {
        (r["metadata"].get("namespace"), r["metadata"]["name"])
        for r in reconciler.view.list("Rollout", "")
    }
    return sum(
        1
        for d in reconciler.view.list("Deployment", "")
        if ((d["metadata"].get("annotations") or {}).get(DEFAULT_KEYS.rollout_name))
        and (d["metadata"].get("namespace"), d["metadata"]["name"]) in rollouts
    )


def _wait(what: str, done: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not done():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not done within {timeout:.0f} s")
        time.sleep(0.25)
    return time.monotonic() - started


CROWDED_NAMESPACE = "prod-crowded"


def service_namespaces(services: int, crowded_services: int) -> list[str]:
    """The namespace of each service: namespaces of ``PER_NAMESPACE``, and the last
    ``crowded_services`` all in one namespace."""
    spread = max(0, services - crowded_services)
    return [namespace_name(i) if i < spread else CROWDED_NAMESPACE for i in range(services)]


def measure_resync(
    services: int,
    workdir: Path,
    timeout: float = 600.0,
    crowded_services: int = 0,
    workers: int | None = None,
) -> dict[str, Any]:
    paths = binaries.control_plane_binaries()
    tools = binaries.kube_tools()
    with BigControlPlane(
        paths["etcd"], paths["kube-apiserver"], workdir / "control-plane"
    ) as plane:
        kubectl = harness.kubectl_tool(tools["kubectl"], plane.kubeconfig, workdir / "kube")
        harness.install_crds(kubectl)
        placed = service_namespaces(services, crowded_services)
        namespaces = [namespace(ns) for ns in dict.fromkeys(placed)]
        post_all(
            plane,
            [("/api/v1/namespaces", ns) for ns in [*namespaces, namespace(WEBHOOK_NAMESPACE)]],
        )
        created_at = time.monotonic()
        objects: list[tuple[str, dict[str, Any]]] = []
        for i, ns in enumerate(placed):
            objects.append(
                (f"/apis/apps/v1/namespaces/{ns}/deployments", deployment(f"svc-{i:04d}", ns))
            )
            objects.append((f"/api/v1/namespaces/{ns}/services", service(f"svc-{i:04d}", ns)))
        created = post_all(plane, objects)
        create_seconds = time.monotonic() - created_at

        given: dict[str, Any] = {"kubeconfig": plane.kubeconfig, "namespace": WEBHOOK_NAMESPACE}
        if workers is not None:
            given["reconcile_workers"] = workers
        settings = ServeSettings.model_validate(given)
        cluster = connect(settings)
        counted = Counted()
        counted.wrap(cluster.http)
        before = _metrics(plane)
        load_start = [round(x, 2) for x in os.getloadavg()]
        cpu_before = _cpu(plane)
        with (workdir / "resync-audit.jsonl").open("w") as audit_file:
            audit = AuditTrail(stream=audit_file)
            policy = PolicyState()
            started = time.monotonic()
            cluster.start(policy)
            stop = start_reconciler(settings, cluster, policy, audit)
            try:
                # The reconciler start_reconciler made: the listener it registered.
                reconciler = cluster.listeners[-1].__self__  # type: ignore[attr-defined]
                assert isinstance(reconciler, Reconciler)
                synced_seconds = _wait("caches synced", cluster.view.synced, timeout)
                leader_seconds = synced_seconds + _wait(
                    "Lease acquired", reconciler.is_leader, timeout
                )
                _wait(
                    f"{services} services converted",
                    lambda: _converted(reconciler) >= services,
                    timeout,
                )
                full_seconds = time.monotonic() - started
                full_cpu = _cpu_used(_cpu(plane), cpu_before)
                full_calls = dict(counted.calls)
                # Requests the API server saw; the watches still open are not counted yet
                # (a request is counted when it ends).
                after_full = _metrics(plane)
                passes_before = reconciler.passes
                # Let the events of the pass's own writes settle before the idle resync.
                _wait("queue drained", lambda: len(reconciler.queue) == 0, timeout)
                time.sleep(2)
                counted.calls.clear()
                idle_before = _metrics(plane)
                idle_cpu_before = _cpu(plane)
                idle_started = time.monotonic()
                # A key is looked at once each: planned (a pass), or found unchanged since
                # its last pass found nothing to do.
                idle_passes, idle_unchanged = reconciler.passes, reconciler.unchanged
                target = idle_passes + idle_unchanged + services
                reconciler.enqueue_all()
                _wait(
                    "idle resync",
                    lambda: reconciler.passes + reconciler.unchanged >= target,
                    timeout,
                )
                idle_seconds = time.monotonic() - idle_started
                idle_cpu = _cpu_used(_cpu(plane), idle_cpu_before)
                idle_after = _metrics(plane)
                idle_calls = dict(counted.calls)
                idle_passes = reconciler.passes - idle_passes
                idle_unchanged = reconciler.unchanged - idle_unchanged
            finally:
                stop()
                cluster.stop()
                audit.close()
        return {
            "services": services,
            "crowded_services": crowded_services,
            "namespaces": len(namespaces),
            "objects_created": created,
            "create_seconds": round(create_seconds, 2),
            "cores": os.cpu_count(),
            "load_average_start": load_start,
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "full": {
                "seconds": round(full_seconds, 2),
                "caches_synced_seconds": round(synced_seconds, 2),
                "leader_seconds": round(leader_seconds, 2),
                "reconcile_passes": passes_before,
                "workers": settings.reconcile_workers,
                "adapter_calls": full_calls,
                "apiserver_requests": difference(after_full, before),
                "cpu_seconds": full_cpu,
            },
            "idle": {
                "seconds": round(idle_seconds, 2),
                "reconcile_passes": idle_passes,
                "unchanged": idle_unchanged,
                "adapter_calls": idle_calls,
                "apiserver_requests": difference(idle_after, idle_before),
                "cpu_seconds": idle_cpu,
            },
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.resync", description=__doc__)
    parser.add_argument(
        "--label", default="latest", help="adds 'resync' to bench/results/LABEL.json"
    )
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument(
        "--crowded-services", type=int, default=0, help="this many in one namespace"
    )
    parser.add_argument(
        "--scale", action="store_true", help="write to bench/results/LABEL-scale.json instead"
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--workers", type=int, default=None, help="reconcile workers (default: the product's)"
    )
    args = parser.parse_args(argv)
    try:
        binaries.control_plane_binaries()
    except binaries.Unavailable as err:
        sys.stderr.write(f"bench resync: {err}\n")
        return 1
    with tempfile.TemporaryDirectory(prefix="rollout-webhook-resync-") as tmp:
        try:
            result = measure_resync(
                args.services,
                Path(tmp),
                args.timeout,
                crowded_services=args.crowded_services,
                workers=args.workers,
            )
        except (RuntimeError, TimeoutError, ValueError, harness.ControlPlaneError) as err:
            sys.stderr.write(f"bench resync: {str(err).splitlines()[0]}\n")
            return 1
    target = RESULTS / f"{args.label}{'-scale' if args.scale else ''}.json"
    document: dict[str, Any] = json.loads(target.read_text()) if target.exists() else {}
    document["resync"] = result
    target.write_text(json.dumps(document, indent=2) + "\n")
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
