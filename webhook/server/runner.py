"""Assemble the server from its settings and run it under uvicorn over TLS.

Everything with a side effect is built here (certificate files, the audit file, the
cluster adapters, the watch threads) and handed to ``create_app`` as parts; the app
itself builds nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import shutil
import socket
import ssl
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, Protocol

import uvicorn
from fastapi import FastAPI

from certs.files import TLS_CERT_FILE, write_localhost_bundle
from webhook.core.admission import decide_mutation
from webhook.core.cluster import ClusterWriter
from webhook.core.crd_schema import RolloutSchema
from webhook.core.errors import PolicyInvalid
from webhook.core.keys import Keys
from webhook.core.policy import Policy, builtin_policy, load_yaml, policy_from_document
from webhook.kube.view import MemoryClusterView
from webhook.server import cpu
from webhook.server.app import ServerParts, create_app, create_health_app
from webhook.server.audit_trail import AuditTrail
from webhook.server.connections import guarded_h11, guarded_loop_factory
from webhook.server.engine import AdmissionEngine
from webhook.server.health import HealthServer
from webhook.server.memory import tune_allocator
from webhook.server.metrics import Metrics
from webhook.server.mutate_route import MutateRoute
from webhook.server.policy_state import PolicyState
from webhook.server.settings import ServeSettings
from webhook.server.tls import (
    CertificateError,
    CertificatePair,
    ReloadingCertificate,
    require_client_certificates,
)

if TYPE_CHECKING:
    from webhook.kube.cluster import Cluster

log = logging.getLogger(__name__)


class StartupError(Exception):
    """Something the operator must fix before the server can start: one line."""


def load_policy_file(path: Path) -> Policy:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise StartupError(f"--policy {path}: cannot read ({err.strerror})") from None
    try:
        return policy_from_document(load_yaml(text, str(path)), source=str(path))
    except PolicyInvalid as err:
        raise StartupError(f"--policy {err}") from None


@dataclass
class Server:
    """Everything `serve` runs: the app, the live TLS context and what must be closed."""

    app: FastAPI
    """Everything but ``POST /mutate``; the launcher of the benchmark adds a route to it."""
    asgi: MutateRoute
    """What uvicorn runs: ``POST /mutate`` itself, the rest handed to ``app``."""
    settings: ServeSettings
    engine: AdmissionEngine
    certificate: ReloadingCertificate
    audit: AuditTrail
    metrics: Metrics
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    hand_over: list[Callable[[], None]] = field(default_factory=list)
    """Run at the first SIGTERM, before the drain: what another replica should take over
    at once (the reconciler's Lease), while this one still answers admissions."""

    def ssl_context(self) -> ssl.SSLContext:
        return self.certificate.context

    def close(self) -> None:
        """Undo everything, last made first; each step runs even if one before it fails."""
        cleanups, self.cleanups = self.cleanups, []
        for cleanup in reversed(cleanups):
            try:
                cleanup()
            except Exception:
                log.exception("shutdown step failed")


class WatchedCluster(Protocol):
    """The cluster `serve` runs on: ``webhook.kube.cluster.Cluster``, or an in-memory
    double (tests, benchmarks) with the same caches and a writer of its own."""

    @property
    def view(self) -> MemoryClusterView:
        """The caches the watches keep current (``synced()`` once each has listed)."""
        ...

    @property
    def writer(self) -> ClusterWriter: ...

    def start(self, policy: PolicyState | None) -> None:
        """Start the watches; with a policy state, also the policy ConfigMap's."""
        ...

    def stop(self) -> None: ...


def build_server(
    settings: ServeSettings,
    *,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    audit_stream: IO[str] | None = None,
    cluster: WatchedCluster | None = None,
) -> Server:
    """Build the server; raises StartupError for anything the operator must fix.

    Whatever was made before the error (a temporary certificate, watch threads) is
    undone before it is raised.

    Without ``cluster``, and without --kubeconfig / --in-cluster, the server reads an
    empty view and writes nothing. The reconciler and --rotate-certs need the API
    connection of a ``webhook.kube.cluster.Cluster``.
    """
    tune_allocator()
    cleanups: list[Callable[[], None]] = []
    try:
        return _build(settings, clock, audit_stream, cluster, cleanups)
    except BaseException:
        for cleanup in reversed(cleanups):
            cleanup()
        raise


def _build(
    settings: ServeSettings,
    clock: Callable[[], dt.datetime],
    audit_stream: IO[str] | None,
    cluster: WatchedCluster | None,
    cleanups: list[Callable[[], None]],
) -> Server:
    metrics = Metrics()
    # Cluster first (nothing is called yet): the certificate may come from it.
    if cluster is None and settings.has_cluster:
        cluster = _connect(settings)
    certificate = _load_certificate(
        settings, _cert_dir(settings, cluster, clock, cleanups), metrics
    )
    policy_state = _policy_state(settings, metrics, with_cluster=cluster is not None)
    policy_state.rollout_schema = _rollout_schema(cluster)

    # Cluster: watch-fed caches and the writer, or an empty view and no writes.
    view = MemoryClusterView() if cluster is None else cluster.view
    if cluster is not None:
        cluster.start(policy_state if settings.policy_file is None else None)
        cleanups.append(cluster.stop)

    try:
        audit = AuditTrail(file=settings.audit_file, stream=audit_stream, clock=clock)
    except OSError as err:
        raise StartupError(f"--audit-file {settings.audit_file}: {err.strerror}") from None
    cleanups.append(audit.close)

    hand_over: list[Callable[[], None]] = []
    if settings.reconcile and settings.has_cluster:
        connection = _api_connection(cluster)
        if connection is not None:
            stop_reconciler = start_reconciler(settings, connection, policy_state, audit, metrics)
            cleanups.append(stop_reconciler)
            hand_over.append(stop_reconciler)

    engine = AdmissionEngine(
        settings=settings,
        reader=view,
        policy=lambda: policy_state.current,
        policy_problem=policy_state.problem,
        rollout_schema=_rollout_schema(cluster),
        template_schemas=_template_schemas(cluster),
        decide=decide_mutation,
        audit=audit,
        metrics=metrics,
        writer=None if cluster is None else cluster.writer,
    )
    cleanups.append(engine.close)
    cleanups.append(cpu.shutdown)
    parts = ServerParts(
        engine=engine,
        metrics=metrics,
        certificate_loaded=lambda: certificate.current is not None,
        policy_loaded=lambda: policy_state.known,
        policy_detail=policy_state.problem,
        caches_synced=view.synced,
        background=[certificate.poll_forever],
    )
    return _assemble(parts, settings, certificate, audit, cleanups, hand_over)


def _rollout_schema(cluster: WatchedCluster | None) -> Callable[[], RolloutSchema | None]:
    """The served Rollout schema, as the cluster's watch keeps it (none without one)."""
    store = getattr(cluster, "rollout_schema", None)
    if store is None:
        return lambda: None
    return lambda: store.current


def _template_schemas(
    cluster: WatchedCluster | None,
) -> Callable[[], Mapping[str, RolloutSchema]]:
    """The served AnalysisTemplate / ClusterAnalysisTemplate schemas, by kind."""
    stores = getattr(cluster, "template_schema_stores", None)
    if not stores:
        return dict
    from webhook.kube.cluster import template_schemas

    return lambda: template_schemas(stores)


def _connect(settings: ServeSettings) -> Cluster:
    from webhook.kube.cluster import connect  # the kubernetes client only when needed

    try:
        return connect(settings)
    except Exception as err:  # the client raises several types for a bad config
        where = "--in-cluster" if settings.in_cluster else f"--kubeconfig {settings.kubeconfig}"
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise StartupError(f"{where}: {message}") from None


def _api_connection(cluster: WatchedCluster | None) -> Cluster | None:
    """The cluster as the Lease-led jobs need it (an API client, the watch listeners):
    None for an in-memory double."""
    if cluster is None:
        return None
    from webhook.kube.cluster import Cluster

    return cluster if isinstance(cluster, Cluster) else None


def _cert_dir(
    settings: ServeSettings,
    cluster: WatchedCluster | None,
    clock: Callable[[], dt.datetime],
    cleanups: list[Callable[[], None]],
) -> Path:
    """The certificate directory: the one given (kept current by the rotation loop with
    --rotate-certs), else a self-signed localhost bundle made now."""
    cert_dir = settings.cert_dir
    if settings.rotate_certs:
        connection = _api_connection(cluster)
        if connection is None or cert_dir is None:
            raise StartupError("--rotate-certs needs a cluster and a writable --cert-dir")
        cleanups.append(start_rotation(settings, connection, cert_dir))
    if cert_dir is not None:
        return cert_dir
    paths = write_localhost_bundle(clock())
    cleanups.append(lambda: shutil.rmtree(paths.directory, ignore_errors=True))
    log.info(
        "no --cert-dir: self-signed certificate for localhost and 127.0.0.1; clients trust %s",
        paths.ca,
    )
    return paths.directory


def _load_certificate(
    settings: ServeSettings, cert_dir: Path, metrics: Metrics
) -> ReloadingCertificate:
    def certificate_loaded(pair: CertificatePair) -> None:
        metrics.certificate_expiry.set(pair.not_after.timestamp())
        metrics.certificate_reloads.labels("loaded").inc()

    certificate = ReloadingCertificate(
        cert_dir,
        poll_seconds=settings.cert_poll_seconds,
        on_loaded=certificate_loaded,
        on_error=lambda err: metrics.certificate_reloads.labels("invalid").inc(),
    )
    try:
        certificate.load()
    except CertificateError as err:
        raise StartupError(f"--cert-dir {err}") from None
    if settings.client_ca is not None:
        try:
            require_client_certificates(certificate.context, settings.client_ca)
        except CertificateError as err:
            raise StartupError(f"--client-ca {err}") from None
        log.info("admission port: client certificates required (CA %s)", settings.client_ca)
    return certificate


def _policy_state(settings: ServeSettings, metrics: Metrics, *, with_cluster: bool) -> PolicyState:
    """A fixed file; else (with a cluster) the watched ConfigMap; else the built-in policy."""
    policy_state = PolicyState(
        on_reload=lambda result: metrics.policy_reloads.labels(result).inc(),
        on_condition=metrics.show_policy_condition,
    )
    if settings.policy_file is not None:
        policy_state.set(load_policy_file(settings.policy_file))
    elif not with_cluster:
        policy_state.set(builtin_policy())
    return policy_state


def _assemble(
    parts: ServerParts,
    settings: ServeSettings,
    certificate: ReloadingCertificate,
    audit: AuditTrail,
    cleanups: list[Callable[[], None]],
    hand_over: list[Callable[[], None]],
) -> Server:
    """The app around the engine, and the server that closes everything at shutdown."""
    engine, metrics = parts.engine, parts.metrics
    if engine.worker is not None:
        worker = engine.worker
        parts.background.append(worker.run)
        parts.on_shutdown.append(lambda: worker.drain(settings.write_timeout_seconds))
    if settings.health_port is not None:
        health = HealthServer(
            create_health_app(parts),
            host=settings.host,
            port=settings.health_port,
            read_timeout=settings.read_timeout_seconds,
        )
        health.start()
        cleanups.append(health.stop)
    app = create_app(parts)
    server = Server(
        app,
        MutateRoute(app, parts),
        settings,
        engine,
        certificate,
        audit,
        metrics,
        cleanups,
        hand_over,
    )

    async def close_at_shutdown() -> None:
        # In the app's shutdown, not after the server returns: uvicorn re-raises the
        # SIGTERM it caught once it has shut down, and code after that never runs.
        await asyncio.to_thread(server.close)

    parts.on_shutdown.append(close_at_shutdown)
    return server


def start_rotation(settings: ServeSettings, cluster: Cluster, cert_dir: Path) -> Callable[[], None]:
    """Run the certificate rotation loop of the certs package; returns its stop.

    One pass runs before serving, so a first start with an empty directory bootstraps
    the Secret and writes the bundle the server then loads; afterwards the loop writes
    each new bundle to the directory, where the poller picks it up.
    """
    from certs.bootstrap import BootstrapSettings, default_webhook_configs
    from certs.leader import LeaseRef
    from certs.rotation import CertificateRotator, RotationSettings
    from certs.store import SecretRef, Target

    namespace = settings.namespace
    rotation = RotationSettings(
        BootstrapSettings(
            SecretRef(namespace, settings.tls_secret),
            Target(settings.service_name, namespace),
            default_webhook_configs(
                (settings.webhook_configuration,), (settings.webhook_configuration,)
            ),
        ),
        lease=LeaseRef(namespace, settings.certs_lease),
        cert_dir=cert_dir,
    )
    rotator = CertificateRotator.from_api_client(cluster.http.api_client, rotation)
    rotator.run_once()
    if rotator.last_error is not None and not (cert_dir / TLS_CERT_FILE).exists():
        raise StartupError(f"--rotate-certs: {rotator.last_error}")
    rotator.start()
    return rotator.stop


def start_reconciler(
    settings: ServeSettings,
    cluster: Cluster,
    policy: PolicyState,
    audit: AuditTrail,
    metrics: Metrics | None = None,
) -> Callable[[], None]:
    """Run the reconciler on ``cluster``'s caches, led by a Lease; returns its stop.

    Every replica keeps its caches warm and feeds the reconciler's queue from the watch
    events; only the replica holding the reconciler Lease carries plans out (the
    reconciler checks ``is_leader`` per key, and resyncs everything when it becomes
    leader). This is what makes fail-open safe: whatever was admitted unconverted (webhook
    down, a generated name, a write that failed) is converted on the next pass.
    """
    from certs.leader import KubeLeaseAPI, LeaderLoop, LeaseElector, LeaseRef, default_identity
    from webhook.kube.actions import ReconcileAdapter
    from webhook.reconciler.controller import Reconciler

    elector = LeaseElector(
        KubeLeaseAPI(cluster.http.api_client),
        LeaseRef(settings.namespace, settings.reconciler_lease),
        default_identity(),
    )
    leader = LeaderLoop(elector, name="reconciler")
    reconciler = Reconciler(
        cluster.view,
        lambda: policy.current,
        ReconcileAdapter(cluster.http, field_manager=settings.field_manager),
        keys=Keys(settings.label_prefix),
        audit=audit.record_nowait,
        is_leader=leader.is_leader,
        synced=cluster.view.synced,
        excluded_namespaces=settings.reconciler_excluded_namespaces,
        orphan_grace=dt.timedelta(seconds=settings.orphan_grace_seconds),
        rollout_schema=lambda: cluster.rollout_schema.current,
        metrics=metrics,
    )
    cluster.listeners.append(reconciler.on_change)
    policy.listeners.append(reconciler.policy_changed)
    leader.start()
    reconciler.start(workers=settings.reconcile_workers)

    def stop() -> None:
        reconciler.stop()
        leader.stop(timeout=5)

    return stop


def uvicorn_config(server: Server, **overrides: Any) -> uvicorn.Config:
    """HTTP/1.1 (h11) over the server's own TLS context, the one the poller reloads."""
    metrics = server.metrics
    protocol = guarded_h11(
        server.settings.read_timeout_seconds,
        server.settings.max_connections,
        on_close=lambda reason: metrics.connections_closed.labels(reason).inc(),
    )
    table = protocol.table
    metrics.connections_open.set_function(lambda: len(table) if table is not None else 0)
    options: dict[str, Any] = {
        "host": server.settings.host,
        "port": server.settings.port,
        "lifespan": "on",
        "log_level": "info",
        "access_log": False,
        # uvicorn's own lines go through the process's handler (serve's --log-format), not
        # a formatter of its own: one format on standard error, JSON lines stay JSON.
        "log_config": None,
        "ssl_context_factory": lambda config, default: server.ssl_context(),
        "timeout_graceful_shutdown": 10,
        # Not uvicorn's limit_concurrency, which counts idle connections too: the
        # protocol's table (connections.py) closes idle ones to make room instead.
        "limit_concurrency": None,
        "http": protocol,
    }
    options.update(overrides)
    return uvicorn.Config(server.asgi, **options)


class BoundedServer(uvicorn.Server):
    """uvicorn's server, whose shutdown after SIGTERM or SIGINT has a deadline.

    uvicorn's own steps are each bounded (connections answering a request get
    ``timeout_graceful_shutdown``, the write worker its drain time), but they add up, and
    a step that hangs would hold the pod until the kubelet kills it without a word. At
    the deadline the process says so on standard error and exits.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        shutdown_timeout: float,
        drain_seconds: float = 0.0,
        route: MutateRoute | None = None,
        hand_over: Sequence[Callable[[], None]] = (),
    ) -> None:
        super().__init__(config)
        self.shutdown_timeout = shutdown_timeout
        self.drain_seconds = drain_seconds
        self.route = route
        self.hand_over = tuple(hand_over)
        self._watchdog: threading.Timer | None = None
        self._drain: asyncio.TimerHandle | None = None
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._watchdog is None:
            self._watchdog = threading.Timer(self.shutdown_timeout, self._give_up)
            self._watchdog.daemon = True
            self._watchdog.start()
            if self.hand_over:
                threading.Thread(target=self._hand_over, name="hand-over", daemon=True).start()
        if not self._draining and self.drain_seconds > 0 and self.route is not None:
            self._draining = True
            # First signal: drain (settings.drain_seconds), then uvicorn's shutdown. uvicorn
            # installs this with signal.signal: it runs in the loop's thread but between any
            # two bytecodes, so the timer is set from a callback, not from here.
            log.info("draining for %gs: every answer closes its connection", self.drain_seconds)
            self.route.draining = True
            loop = asyncio.get_running_loop()
            loop.call_soon_threadsafe(self._start_drain, loop, sig, frame)
            return
        if self._drain is not None:
            self._drain.cancel()  # a second signal: stop now
        super().handle_exit(sig, frame)

    def _start_drain(
        self, loop: asyncio.AbstractEventLoop, sig: int, frame: FrameType | None
    ) -> None:
        self._drain = loop.call_later(self.drain_seconds, super().handle_exit, sig, frame)

    def _hand_over(self) -> None:
        for step in self.hand_over:
            try:
                step()
            except Exception:
                log.exception("hand-over step failed")

    def _give_up(self) -> None:
        log.error(
            "shutdown did not finish within %gs of the signal: exiting now",
            self.shutdown_timeout,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_SHUTDOWN_TIMEOUT)


EXIT_SHUTDOWN_TIMEOUT = 3


def serve_until_stopped(
    runner: uvicorn.Server, settings: ServeSettings, sockets: list[socket.socket] | None = None
) -> None:
    """Run ``runner`` on the guarded event loop (handshake deadline, small TLS buffers)."""
    factory = guarded_loop_factory(settings.handshake_timeout_seconds)
    with asyncio.Runner(loop_factory=factory) as loop:
        loop.run(runner.serve(sockets=sockets))


def run(server: Server) -> None:
    settings = server.settings
    runner = BoundedServer(
        uvicorn_config(server),
        settings.shutdown_timeout_seconds,
        settings.drain_seconds,
        server.asgi,
        server.hand_over,
    )
    try:
        serve_until_stopped(runner, server.settings)
    finally:
        server.close()
