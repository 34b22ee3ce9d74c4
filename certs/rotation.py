"""The in-process rotation loop that ``serve`` runs in a background thread.

Every replica runs the loop (``certs.leader.LeaderLoop``); only the holder of the Lease
writes. Each tick:

1. try to acquire or renew the Lease;
2. the leader runs one ``converge`` pass (check, rotate, inject);
3. every replica reads the Secret and, when the serving certificate changed, hands the
   new bundle to ``on_bundle`` (and writes it to ``cert_dir`` if set, where the server's
   certificate poller picks it up), and reports the leaf's expiry through ``on_expiry``
   and the ``leaf_not_after`` attribute (the server's Prometheus gauge reads it).

Errors are logged and retried on the next tick: a cluster hiccup must never kill the
thread that keeps the certificate alive. The callbacks run on the rotation thread; an
asyncio server hands their work to its loop (``loop.call_soon_threadsafe``).

Usage from the server::

    rotator = CertificateRotator.from_api_client(api_client, settings, on_expiry=gauge_setter)
    rotator.start()           # daemon thread
    ...
    rotator.stop()            # releases the Lease so another replica takes over at once
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from certs import pki
from certs.bootstrap import BootstrapReport, BootstrapSettings, converge
from certs.files import write_bundle_dir
from certs.inject import KubeWebhookConfigAPI, WebhookConfigAPI
from certs.leader import (
    DEFAULT_LEASE_DURATION,
    KubeLeaseAPI,
    LeaderLoop,
    LeaseAPI,
    LeaseElector,
    LeaseRef,
    default_identity,
)
from certs.store import KubeSecretAPI, SecretAPI, StoreError, bundle_from_secret

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = timedelta(seconds=20)  # a third of the Lease duration: renewals never lapse
DEFAULT_LEASE_NAME = "rollout-webhook-certs"


@dataclass(frozen=True)
class RotationSettings:
    bootstrap: BootstrapSettings
    # None: no election (a single replica, or a test) and this process always acts.
    lease: LeaseRef | None = None
    identity: str = field(default_factory=default_identity)
    interval: timedelta = DEFAULT_INTERVAL
    lease_duration: timedelta = DEFAULT_LEASE_DURATION
    cert_dir: Path | None = None


class CertificateRotator:
    def __init__(
        self,
        settings: RotationSettings,
        secrets: SecretAPI,
        webhooks: WebhookConfigAPI | None,
        leases: LeaseAPI | None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_bundle: Callable[[pki.Bundle], None] | None = None,
        on_expiry: Callable[[datetime | None], None] | None = None,
    ) -> None:
        self.settings = settings
        self.secrets = secrets
        self.webhooks = webhooks
        self.clock = clock
        self.on_bundle = on_bundle
        self.on_expiry = on_expiry
        self.elector = (
            LeaseElector(leases, settings.lease, settings.identity, settings.lease_duration)
            if leases is not None and settings.lease is not None
            else None
        )
        self.leaf_not_after: datetime | None = None
        self.bundle: pki.Bundle | None = None
        self.last_report: BootstrapReport | None = None
        self.last_error: str | None = None
        self.loop = LeaderLoop(
            self.elector,
            name="certificate rotation",
            interval=settings.interval,
            work=self._pass,
            on_error=self._failed,
            clock=clock,
        )

    @classmethod
    def from_api_client(
        cls,
        api_client: Any,
        settings: RotationSettings,
        *,
        on_bundle: Callable[[pki.Bundle], None] | None = None,
        on_expiry: Callable[[datetime | None], None] | None = None,
    ) -> CertificateRotator:
        return cls(
            settings,
            KubeSecretAPI(api_client),
            KubeWebhookConfigAPI(api_client) if settings.bootstrap.webhook_configs else None,
            KubeLeaseAPI(api_client) if settings.lease else None,
            on_bundle=on_bundle,
            on_expiry=on_expiry,
        )

    @property
    def is_leader(self) -> bool:
        return self.loop.is_leader()

    def seconds_to_expiry(self) -> float | None:
        """For a gauge: seconds until the served leaf expires (negative once expired)."""
        if self.leaf_not_after is None:
            return None
        return (self.leaf_not_after - self.clock()).total_seconds()

    def run_once(self) -> None:
        """One tick. Raises nothing: failures are logged and kept in ``last_error``."""
        self.loop.tick()

    def _pass(self, leader: bool, now: datetime) -> None:
        if leader:
            self.last_report = converge(self.secrets, self.webhooks, self.settings.bootstrap, now)
            _log_report(self.last_report)
        self._refresh()
        self.last_error = None

    def _failed(self, err: Exception) -> None:
        if isinstance(err, StoreError):
            self.last_error = str(err)
            log.warning("certificate rotation: %s (retrying in %s)", err, self.settings.interval)
        else:  # the loop must survive anything; log it in full
            self.last_error = f"{type(err).__name__}: {err}"
            log.error("certificate rotation failed unexpectedly", exc_info=err)

    def _refresh(self) -> None:
        stored = self.secrets.get(self.settings.bootstrap.secret)
        if stored is None:
            return
        bundle = bundle_from_secret(stored)
        if self.bundle is not None and (
            bundle.cert_pem == self.bundle.cert_pem and bundle.trust_pem == self.bundle.trust_pem
        ):
            return
        self.bundle = bundle
        self.leaf_not_after = pki.leaf_not_after(bundle)
        if self.settings.cert_dir is not None:
            write_bundle_dir(bundle, self.settings.cert_dir)
        if self.on_bundle is not None:
            self.on_bundle(bundle)
        if self.on_expiry is not None:
            self.on_expiry(self.leaf_not_after)

    def start(self) -> threading.Thread:
        """Tick on a daemon thread until ``stop()``, which releases the Lease."""
        return self.loop.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.loop.stop(timeout)


def _log_report(report: BootstrapReport) -> None:
    for step in report.steps:
        if step.written is not pki.Action.NONE:
            log.info(
                "certificate %s: %s",
                step.written.value,
                "; ".join(step.decision.reasons) or "requested",
            )
        elif step.lost_race:
            log.info("another writer updated the certificate Secret first; adopted its bundle")
    for inj in report.injections:
        if inj.outcome.value != "unchanged":
            log.info("caBundle of %s: %s", inj.ref, inj.outcome.value)
    for action in report.deferred:
        log.info("certificate %s deferred to the next pass", action.value)
