"""Running the reconciler inside `serve`: fed by the same caches, led by a Lease.

Every replica keeps its caches warm and feeds the reconciler's queue from the watch
events; only the replica holding the reconciler Lease carries plans out (the reconciler
checks ``is_leader`` per key, and resyncs everything when it becomes leader). This is
what makes fail-open safe: whatever was admitted unconverted (webhook down, a generated
name, a write that failed) is converted on the next pass.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable

from certs.leader import DEFAULT_LEASE_DURATION, KubeLeaseAPI, LeaseElector, LeaseRef
from certs.rotation import default_identity
from webhook.core.keys import Keys
from webhook.kube.actions import ReconcileAdapter
from webhook.kube.cluster import Cluster
from webhook.reconciler.controller import Reconciler
from webhook.server.audit_trail import AuditTrail
from webhook.server.policy_state import PolicyState
from webhook.server.settings import ServeSettings

log = logging.getLogger(__name__)


class LeaderLoop:
    """Keeps trying to acquire, then renew, a Lease: three times per lease duration."""

    def __init__(
        self,
        elector: LeaseElector,
        *,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.elector = elector
        self.clock = clock
        self.interval = elector.lease_duration.total_seconds() / 3
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reconciler-lease", daemon=True)

    def is_leader(self) -> bool:
        return self.elector.is_leader

    def tick(self) -> None:
        was = self.elector.is_leader
        try:
            now = self.elector.try_acquire_or_renew(self.clock())
        except Exception as err:  # an API hiccup: not leader until the next tick works
            self.elector.is_leader = False
            log.warning("reconciler Lease %s: %s", self.elector.ref, err)
            return
        if now != was:
            log.info("reconciler %s leader", "is now" if now else "is no longer")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.elector.release(self.clock())
        except Exception as err:
            log.warning("reconciler Lease not released: %s", err)


def start_reconciler(
    settings: ServeSettings, cluster: Cluster, policy: PolicyState, audit: AuditTrail
) -> Callable[[], None]:
    """Start the Lease loop and the reconciler on ``cluster``'s caches; returns the stop."""
    elector = LeaseElector(
        KubeLeaseAPI(cluster.http.api_client),
        LeaseRef(settings.namespace, settings.reconciler_lease),
        default_identity(),
        DEFAULT_LEASE_DURATION,
    )
    leader = LeaderLoop(elector)
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
    )
    cluster.listeners.append(reconciler.on_change)
    leader.start()
    reconciler.start()

    def stop() -> None:
        reconciler.stop()
        leader.stop()

    return stop
