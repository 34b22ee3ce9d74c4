"""Leader election on a coordination.k8s.io/v1 Lease, so one replica acts at a time.

The certificate rotation and the webhook's reconciler each hold a Lease of their own,
both kept by one ``LeaderLoop``.

The protocol is the one Kubernetes' own controllers use: the holder renews
``spec.renewTime`` well inside ``leaseDurationSeconds``; a candidate takes the Lease over
only once it has seen the record unchanged for a whole lease duration. Expiry is judged
by when *this* process observed the last change, not by comparing ``renewTime`` with the
local clock, so replicas whose clocks disagree do not steal the Lease from a live holder.
Every write carries the ``resourceVersion`` it was read at: two candidates never both win.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from certs.store import StoreError, api_error, connection_error

log = logging.getLogger(__name__)

DEFAULT_LEASE_DURATION = timedelta(seconds=60)
RETRY_PERIOD = timedelta(seconds=2)


class LeaseConflict(StoreError):
    """409: the Lease exists already (create) or changed since it was read (replace)."""


@dataclass(frozen=True)
class LeaseRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class LeaseRecord:
    holder: str
    duration: timedelta
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0
    resource_version: str = ""


class LeaseAPI(Protocol):
    def get(self, ref: LeaseRef) -> LeaseRecord | None: ...

    def create(self, ref: LeaseRef, record: LeaseRecord) -> LeaseRecord:
        """Create; raise LeaseConflict when it already exists."""

    def replace(self, ref: LeaseRef, record: LeaseRecord) -> LeaseRecord:
        """Replace at ``record.resource_version``; raise LeaseConflict when it moved on."""


class LeaseElector:
    """Call ``try_acquire_or_renew(now)`` more often than the lease duration (a third)."""

    def __init__(
        self,
        api: LeaseAPI,
        ref: LeaseRef,
        identity: str,
        lease_duration: timedelta = DEFAULT_LEASE_DURATION,
    ) -> None:
        if not identity:
            raise ValueError("a leader election identity must not be empty")
        self.api = api
        self.ref = ref
        self.identity = identity
        self.lease_duration = lease_duration
        self.is_leader = False
        self._observed_version = ""
        self._observed_at: datetime | None = None

    def try_acquire_or_renew(self, now: datetime) -> bool:
        """True when this process holds the Lease after the call."""
        self.is_leader = self._attempt(now)
        return self.is_leader

    def _attempt(self, now: datetime) -> bool:
        current = self.api.get(self.ref)
        if current is None:
            record = LeaseRecord(self.identity, self.lease_duration, now, now, 0)
            return self._write(self.api.create, record, now)
        if current.resource_version != self._observed_version or self._observed_at is None:
            self._observed_version = current.resource_version
            self._observed_at = now
        if current.holder == self.identity:
            return self._write(self.api.replace, replace(current, renew_time=now), now)
        held = bool(current.holder) and self._observed_at + current.duration > now
        if held:
            return False
        taken = LeaseRecord(
            holder=self.identity,
            duration=self.lease_duration,
            acquire_time=now,
            renew_time=now,
            transitions=current.transitions + 1,
            resource_version=current.resource_version,
        )
        if self._write(self.api.replace, taken, now):
            log.info("acquired Lease %s as %s (was %r)", self.ref, self.identity, current.holder)
            return True
        return False

    def release(self, now: datetime) -> None:
        """Give the Lease up at shutdown so another replica takes over without waiting."""
        if not self.is_leader:
            return
        self.is_leader = False
        current = self.api.get(self.ref)
        if current is None or current.holder != self.identity:
            return
        # An empty holder with a one-second duration: any candidate may take it at once.
        released = replace(current, holder="", duration=timedelta(seconds=1), renew_time=now)
        try:
            self.api.replace(self.ref, released)
        except LeaseConflict:
            log.info("Lease %s changed while being released; left as it is", self.ref)

    def _write(self, method: Any, record: LeaseRecord, now: datetime) -> bool:
        try:
            written: LeaseRecord = method(self.ref, record)
        except LeaseConflict:
            return False
        self._observed_version = written.resource_version
        self._observed_at = now
        return True


def default_identity() -> str:
    """The pod name (hostname) plus a random suffix: a restarted pod is a new candidate."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LeaderLoop:
    """Keeps a Lease on a daemon thread: every ``interval`` one election step (acquire or
    renew), then ``work(leader, now)``; when stopped, gives the Lease up so another
    replica takes over without waiting for it to expire.

    Without an elector (a single replica, a test) this process always leads. A failed
    step (the Lease API, or the work) goes to ``on_error`` and is retried on the next
    tick: the thread must outlive any cluster hiccup. A failed election counts as "not
    leader" until a later step succeeds, since another replica may have taken over.
    """

    def __init__(
        self,
        elector: LeaseElector | None,
        *,
        name: str,
        interval: timedelta | None = None,
        retry: timedelta | None = None,
        work: Callable[[bool, datetime], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.elector = elector
        self.name = name
        duration = elector.lease_duration if elector is not None else DEFAULT_LEASE_DURATION
        # A third of the lease duration: two renewals may fail before the Lease lapses.
        self.interval = interval if interval is not None else duration / 3
        # A replica that does not lead looks more often (2 s, client-go's retry period): a
        # Lease given up at shutdown goes to a replica already running, not to the one
        # that replaces the leaving pod and tries the moment it starts.
        self.retry = retry if retry is not None else min(self.interval, RETRY_PERIOD)
        self.work = work
        self.on_error = on_error if on_error is not None else self._log_error
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def is_leader(self) -> bool:
        return self.elector.is_leader if self.elector is not None else True

    def tick(self) -> None:
        """One election step, then the work. Raises nothing."""
        now = self.clock()
        try:
            leader = self._elect(now)
            if self.work is not None:
                self.work(leader, now)
        except Exception as err:
            self.on_error(err)

    def _elect(self, now: datetime) -> bool:
        if self.elector is None:
            return True
        was = self.elector.is_leader
        try:
            leader = self.elector.try_acquire_or_renew(now)
        except Exception:
            self.elector.is_leader = False
            raise
        if leader != was:
            log.info("%s %s leader", self.name, "is now" if leader else "is no longer")
        return leader

    def _log_error(self, err: Exception) -> None:
        where = f"Lease {self.elector.ref}" if self.elector is not None else "step"
        log.warning("%s %s: %s", self.name, where, err)

    def run(self) -> None:
        """Tick until ``stop()``; waits on an Event between ticks, so stopping is immediate."""
        while not self._stop.is_set():
            self.tick()
            wait = self.interval if self.is_leader() else self.retry
            self._stop.wait(wait.total_seconds())
        if self.elector is not None:
            try:
                self.elector.release(self.clock())
            except Exception as err:
                log.warning("%s: Lease %s not released: %s", self.name, self.elector.ref, err)

    def start(self) -> threading.Thread:
        self._stop.clear()
        thread_name = f"{self.name.replace(' ', '-')}-lease"
        self._thread = threading.Thread(target=self.run, name=thread_name, daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 10.0) -> None:
        """Stop ticking; the thread releases the Lease on its way out (waited for up to
        ``timeout`` seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


class KubeLeaseAPI:
    """``LeaseAPI`` on ``kubernetes.client.CoordinationV1Api``."""

    def __init__(self, api_client: Any, request_timeout: float = 10.0) -> None:
        from kubernetes import client

        self._api: Any = client.CoordinationV1Api(api_client)
        self._timeout = request_timeout

    def get(self, ref: LeaseRef) -> LeaseRecord | None:
        from kubernetes.client.exceptions import ApiException

        try:
            obj = self._api.read_namespaced_lease(
                ref.name, ref.namespace, _request_timeout=self._timeout
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise api_error("read", f"Lease {ref}", err) from None
        except Exception as err:
            raise connection_error("read", f"Lease {ref}", err) from err
        return _from_v1(obj)

    def create(self, ref: LeaseRef, record: LeaseRecord) -> LeaseRecord:
        from kubernetes.client.exceptions import ApiException

        try:
            obj = self._api.create_namespaced_lease(
                ref.namespace, _to_v1(ref, record), _request_timeout=self._timeout
            )
        except ApiException as err:
            if err.status == 409:
                raise LeaseConflict(f"Lease {ref} already exists") from None
            raise api_error("create", f"Lease {ref}", err) from None
        except Exception as err:
            raise connection_error("create", f"Lease {ref}", err) from err
        return _from_v1(obj)

    def replace(self, ref: LeaseRef, record: LeaseRecord) -> LeaseRecord:
        from kubernetes.client.exceptions import ApiException

        try:
            obj = self._api.replace_namespaced_lease(
                ref.name, ref.namespace, _to_v1(ref, record), _request_timeout=self._timeout
            )
        except ApiException as err:
            if err.status == 409:
                raise LeaseConflict(f"Lease {ref} changed since it was read") from None
            raise api_error("replace", f"Lease {ref}", err) from None
        except Exception as err:
            raise connection_error("replace", f"Lease {ref}", err) from err
        return _from_v1(obj)


def _to_v1(ref: LeaseRef, record: LeaseRecord) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "holderIdentity": record.holder,
        "leaseDurationSeconds": max(1, int(record.duration.total_seconds())),
        "leaseTransitions": record.transitions,
    }
    if record.acquire_time is not None:
        spec["acquireTime"] = _micro_time(record.acquire_time)
    if record.renew_time is not None:
        spec["renewTime"] = _micro_time(record.renew_time)
    metadata: dict[str, Any] = {"name": ref.name, "namespace": ref.namespace}
    if record.resource_version:
        metadata["resourceVersion"] = record.resource_version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": spec,
    }


def _micro_time(t: datetime) -> datetime:
    """A time the API server accepts as MicroTime.

    The client turns the body into its model and writes datetimes with ``isoformat()``,
    which drops the fraction when it is zero; the API server parses MicroTime with a
    fixed six-digit fraction and rejects such a value. One microsecond more keeps the
    fraction, and is of no consequence for a Lease.
    """
    t = t.astimezone(UTC)
    return t + timedelta(microseconds=1) if t.microsecond == 0 else t


def _from_v1(obj: Any) -> LeaseRecord:
    spec = obj.spec
    return LeaseRecord(
        holder=(spec.holder_identity or "") if spec else "",
        duration=timedelta(seconds=(spec.lease_duration_seconds or 0) if spec else 0),
        acquire_time=_as_time(spec.acquire_time if spec else None),
        renew_time=_as_time(spec.renew_time if spec else None),
        transitions=(spec.lease_transitions or 0) if spec else 0,
        resource_version=obj.metadata.resource_version or "",
    )


def _as_time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None
