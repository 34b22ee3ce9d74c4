"""Assemble the server from its settings and run it under uvicorn over TLS.

Everything with a side effect is built here (certificate files, the audit file, the
cluster adapters, the watch threads) and handed to ``create_app`` as parts; the app
itself builds nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import shutil
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from certs.files import write_localhost_bundle
from webhook.core.admission import decide_mutation
from webhook.core.errors import PolicyInvalid
from webhook.core.policy import Policy, builtin_policy, load_yaml, policy_from_document
from webhook.server.app import ServerParts, create_app
from webhook.server.audit_trail import AuditTrail
from webhook.server.engine import AdmissionEngine
from webhook.server.memory import tune_allocator
from webhook.server.metrics import Metrics
from webhook.server.policy_state import PolicyState
from webhook.server.ports import ClusterWriter, MemoryClusterView
from webhook.server.settings import ServeSettings
from webhook.server.tls import CertificateError, CertificatePair, ReloadingCertificate

log = logging.getLogger(__name__)


def _always() -> bool:
    return True


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
    settings: ServeSettings
    engine: AdmissionEngine
    certificate: ReloadingCertificate
    audit: AuditTrail
    metrics: Metrics
    cleanups: list[Callable[[], None]] = field(default_factory=list)

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


def build_server(
    settings: ServeSettings,
    *,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    audit_stream: Any = None,
    cluster: Any = None,
) -> Server:
    """Build the server; raises StartupError for anything the operator must fix.

    Whatever was made before the error (a temporary certificate, watch threads) is
    undone before it is raised.

    ``cluster`` is a ``webhook.kube.cluster.Cluster`` (or a test double with the same
    shape: ``view``, ``writer``, ``start(policy_state)``, ``stop()``); without one, and
    without --kubeconfig / --in-cluster, the server reads an empty view and writes nothing.
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
    audit_stream: Any,
    cluster: Any,
    cleanups: list[Callable[[], None]],
) -> Server:
    metrics = Metrics()

    # Cluster first (nothing is called yet): the certificate may come from it.
    if cluster is None and settings.has_cluster:
        from webhook.kube.cluster import connect  # the kubernetes client only when needed

        try:
            cluster = connect(settings)
        except Exception as err:  # the client raises several types for a bad config
            where = "--in-cluster" if settings.in_cluster else f"--kubeconfig {settings.kubeconfig}"
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise StartupError(f"{where}: {message}") from None

    # Certificate: the directory given (kept current by the rotation loop with
    # --rotate-certs), else a self-signed localhost bundle made now.
    cert_dir = settings.cert_dir
    if settings.rotate_certs:
        if cluster is None or cert_dir is None:
            raise StartupError("--rotate-certs needs a cluster and a writable --cert-dir")
        cleanups.append(start_rotation(settings, cluster, cert_dir))
    if cert_dir is None:
        paths = write_localhost_bundle(clock())
        cert_dir = paths.directory
        temp_dir = cert_dir
        cleanups.append(lambda: shutil.rmtree(temp_dir, ignore_errors=True))
        log.info(
            "no --cert-dir: self-signed certificate for localhost and 127.0.0.1; clients trust %s",
            paths.ca,
        )

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

    # Policy: a fixed file; else (with a cluster) the watched ConfigMap; else built-in.
    policy_state = PolicyState(on_reload=lambda result: metrics.policy_reloads.labels(result).inc())
    if settings.policy_file is not None:
        policy_state.set(load_policy_file(settings.policy_file))
    elif cluster is None:
        policy_state.set(builtin_policy())

    # Cluster: watch-fed caches and the writer, or an empty view and no writes.
    view: Any = MemoryClusterView()
    writer: ClusterWriter | None = None
    caches_synced: Callable[[], bool] = _always
    if cluster is not None:
        view = cluster.view
        writer = cluster.writer
        caches_synced = view.synced
        cluster.start(policy_state if settings.policy_file is None else None)
        cleanups.append(cluster.stop)

    try:
        audit = AuditTrail(file=settings.audit_file, stream=audit_stream, clock=clock)
    except OSError as err:
        raise StartupError(f"--audit-file {settings.audit_file}: {err.strerror}") from None
    cleanups.append(audit.close)

    if cluster is not None and settings.reconcile and settings.has_cluster:
        from webhook.server.reconciling import start_reconciler

        cleanups.append(start_reconciler(settings, cluster, policy_state, audit))

    engine = AdmissionEngine(
        settings=settings,
        reader=view,
        policy=lambda: policy_state.current,
        decide=decide_mutation,
        audit=audit,
        metrics=metrics,
        writer=writer,
    )
    cleanups.append(engine.close)
    parts = ServerParts(
        engine=engine,
        metrics=metrics,
        certificate_loaded=lambda: certificate.current is not None,
        policy_loaded=lambda: policy_state.loaded,
        caches_synced=caches_synced,
        background=[certificate.poll_forever],
    )
    if engine.worker is not None:
        worker = engine.worker
        parts.background.append(worker.run)
        parts.on_shutdown.append(lambda: worker.drain(settings.write_timeout_seconds))
    server = Server(create_app(parts), settings, engine, certificate, audit, metrics, cleanups)

    async def close_at_shutdown() -> None:
        # In the app's shutdown, not after the server returns: uvicorn re-raises the
        # SIGTERM it caught once it has shut down, and code after that never runs.
        await asyncio.to_thread(server.close)

    parts.on_shutdown.append(close_at_shutdown)
    return server


def start_rotation(settings: ServeSettings, cluster: Any, cert_dir: Path) -> Callable[[], None]:
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
    if rotator.last_error is not None and not (cert_dir / "tls.crt").exists():
        raise StartupError(f"--rotate-certs: {rotator.last_error}")
    rotator.start()
    return rotator.stop


def uvicorn_config(server: Server, **overrides: Any) -> uvicorn.Config:
    """HTTP/1.1 (h11) over the server's own TLS context, the one the poller reloads."""
    options: dict[str, Any] = {
        "host": server.settings.host,
        "port": server.settings.port,
        "http": "h11",
        "lifespan": "on",
        "log_level": "info",
        "access_log": False,
        # uvicorn's own lines go through the process's handler (serve's --log-format), not
        # a formatter of its own: one format on standard error, JSON lines stay JSON.
        "log_config": None,
        "ssl_context_factory": lambda config, default: server.ssl_context(),
        "timeout_graceful_shutdown": 10,
        "limit_concurrency": server.settings.max_connections,
    }
    options.update(overrides)
    return uvicorn.Config(server.app, **options)


def run(server: Server) -> None:
    try:
        uvicorn.Server(uvicorn_config(server)).run()
    finally:
        server.close()
