"""Start `rollout-webhook serve` for the benchmark, with its caches filled beforehand.

The server is built by the product's own factory (``build_server``) and run with the
product's own uvicorn settings (``uvicorn_config``: one process, h11, TLS from the
certificate directory, access log off), which are what the chart's Deployment runs
(``serve --in-cluster --cert-dir ... --host 0.0.0.0``). What differs, and why:

- The cluster is in memory: a ``MemoryClusterView`` (the very class the watches fill in
  production) holding the generated services of ``bench.fixtures``, each object as a
  list delivers it (parsed from JSON in pages of the reflector's size, then put in the
  form the caches keep by the reflector's own ``slim``), and a writer that
  allows every SubjectAccessReview and accepts every apply at once. Writes run after the
  answer (engine.py), so the API server's speed is not what is measured here; with no
  API server, the write worker, the access-review cache and the audit records still run.
- ``POST /baseline`` is added to the app here, not in the product: it reads the body and
  answers a fixed "allowed" review without parsing it, the floor that TLS, HTTP and the
  framework cost on the same server and the same connections.
- ``POST /noop`` does the same on the ASGI interface, in front of everything (as the
  product's ``/mutate`` is answered): the floor of uvicorn, h11 and TLS alone.

Standard output carries the audit records, as in a pod; the harness sends it to a file.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import Request
from fastapi.responses import Response

from bench.fixtures import cluster_objects
from webhook.core.cluster import CREATE_ROLLOUTS, AccessDecision, Permission
from webhook.core.policy import builtin_policy
from webhook.core.review import UserInfo
from webhook.kube.cache import PAGE_SIZE, slim
from webhook.kube.cluster import freeze_caches
from webhook.kube.resources import BY_KIND
from webhook.kube.view import MemoryClusterView
from webhook.server.policy_state import PolicyState
from webhook.server.runner import Server, build_server, serve_until_stopped, uvicorn_config
from webhook.server.settings import ServeSettings

BASELINE_ANSWER = json.dumps(
    {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "", "allowed": True},
    },
    separators=(",", ":"),
).encode()


@dataclass
class AcceptingWriter:
    """Allows every permission check and accepts every apply, counting them."""

    applied: int = 0
    reviews: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def may(
        self, user: UserInfo, namespace: str, permission: Permission, *, timeout: float
    ) -> AccessDecision:
        with self.lock:
            self.reviews += 1
        return AccessDecision(True, "allowed (benchmark)")

    def may_scale_rollout(
        self, user: UserInfo, namespace: str, name: str, *, timeout: float
    ) -> AccessDecision:
        return self.may(user, namespace, CREATE_ROLLOUTS, timeout=timeout)

    def apply(self, manifest: Mapping[str, Any], *, timeout: float) -> None:
        with self.lock:
            self.applied += 1


@dataclass
class PrefilledCluster:
    """The ``cluster`` shape ``build_server`` takes: view, writer, start, stop."""

    view: MemoryClusterView
    writer: AcceptingWriter = field(default_factory=AcceptingWriter)

    def start(self, policy: PolicyState | None) -> None:
        if policy is not None:
            policy.configmap_absent(deleted=False)  # no ConfigMap: the built-in policy
        freeze_caches()  # what the product's Cluster does once its caches have synced

    def stop(self) -> None:
        pass


def unfreeze() -> None:
    """Give the cached objects back to the cyclic garbage collector, as before the product
    froze them once its caches synced: what that freeze buys, measured."""
    gc.unfreeze()


EXPERIMENTS: dict[str, Callable[[], None]] = {
    "gc-unfrozen": unfreeze,
}


def as_listed(objects: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """The objects as the reflectors hand them to the caches: each page of ``PAGE_SIZE``
    parsed from JSON at once (a list's objects share their keys, not their values), each
    object then in the form the caches keep (``webhook.kube.cache.slim``)."""
    page: list[Mapping[str, Any]] = []
    for obj in objects:
        page.append(obj)
        if len(page) == PAGE_SIZE:
            yield from _parsed(page)
            page = []
    yield from _parsed(page)


def _parsed(page: list[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    for obj in json.loads(json.dumps(page)):
        yield slim(obj, BY_KIND[obj["kind"]])


class NoopRoute:
    """``POST /noop``: the body read and a fixed answer, on the bare ASGI interface."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/noop":
            await self.app(scope, receive, send)
            return
        while (await receive()).get("more_body", False):
            pass
        length = str(len(BASELINE_ANSWER)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", length)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": BASELINE_ANSWER})


def config(server: Server, idle_timeout: float | None = None) -> uvicorn.Config:
    """The product's uvicorn settings, with ``/noop`` in front of the product's app; with
    ``idle_timeout``, keep-alive connections may stay idle that long (the instruction
    counts keep their connections between cases, with no handshake in a counted window)."""
    overrides = {} if idle_timeout is None else {"timeout_keep_alive": idle_timeout}
    settings = uvicorn_config(server, **overrides)
    settings.app = NoopRoute(settings.app)
    return settings


def build(
    services: int,
    cert_dir: Path,
    port: int,
    *,
    crowded: bool = False,
    crowded_services: int = 0,
    idle_timeout: float | None = None,
) -> Server:
    objects = cluster_objects(
        services, builtin_policy(), crowded=crowded, crowded_services=crowded_services
    )
    view = MemoryClusterView(as_listed(objects))
    settings = ServeSettings(host="127.0.0.1", port=port, cert_dir=cert_dir)
    if idle_timeout is not None:
        settings = settings.model_copy(update={"read_timeout_seconds": idle_timeout})
    server = build_server(settings, cluster=PrefilledCluster(view))

    async def baseline(request: Request) -> Response:
        await request.body()
        return Response(BASELINE_ANSWER, media_type="application/json")

    server.app.add_api_route("/baseline", baseline, methods=["POST"])
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.launcher", description=__doc__)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--cert-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument(
        "--crowded", action="store_true", help="every service in the requests' namespace"
    )
    parser.add_argument(
        "--crowded-services",
        type=int,
        default=0,
        help="this many of the services in the requests' namespace, the others spread",
    )
    parser.add_argument(
        "--idle-timeout", type=float, help="seconds a connection may stay idle (at most 60)"
    )
    parser.add_argument("--profile", type=Path, help="cProfile the event loop into this file")
    parser.add_argument("--profile-seconds", type=float, default=20.0)
    parser.add_argument(
        "--experiment",
        choices=sorted(EXPERIMENTS),
        action="append",
        default=[],
        help="a what-if not in the product (docs/benchmarks.md): measured beside the product",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level="INFO", stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    server = build(
        args.services,
        args.cert_dir,
        args.port,
        crowded=args.crowded,
        crowded_services=args.crowded_services,
        idle_timeout=args.idle_timeout,
    )
    for name in args.experiment:
        EXPERIMENTS[name]()
    runner = uvicorn.Server(config(server, args.idle_timeout))
    if args.profile is None:
        try:
            serve_until_stopped(runner, server.settings)  # the product's event loop
        finally:
            server.close()
        return 0
    # Profiled runs end by themselves: uvicorn re-raises the SIGTERM it caught after its
    # shutdown, which would end the process before the profile is written.
    stop = threading.Timer(args.profile_seconds, lambda: setattr(runner, "should_exit", True))
    stop.daemon = True  # a server that fails to start must not wait for the timer
    stop.start()
    profiler = cProfile.Profile()
    try:
        profiler.runcall(serve_until_stopped, runner, server.settings)
    finally:
        profiler.dump_stats(args.profile)
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
