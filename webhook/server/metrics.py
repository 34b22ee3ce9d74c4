"""Prometheus metrics of the server, in a registry of their own.

One registry per app rather than the process-wide default, so that tests (and a
benchmark's baseline app) can build several apps in one process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "rollout_webhook_admission_requests",
            "Admission requests answered, by object kind, operation and decision.",
            ["endpoint", "kind", "operation", "decision"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rollout_webhook_admission_duration_seconds",
            "Time to answer an admission request, from body read to response.",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.rejected_calls = Counter(
            "rollout_webhook_rejected_calls",
            "Calls refused before any decision (HTTP 4xx), by status code.",
            ["code"],
            registry=self.registry,
        )
        self.policy_reloads = Counter(
            "rollout_webhook_policy_reloads",
            "Policy reloads from the ConfigMap, by result (applied, invalid, removed).",
            ["result"],
            registry=self.registry,
        )
        self.policy_condition = Gauge(
            "rollout_webhook_policy_condition",
            "1 for the condition of the policy in force: loading, valid, last-good (an edit "
            "was refused) or none (refused with no policy before it: nothing is converted).",
            ["condition"],
            registry=self.registry,
        )
        self.certificate_expiry = Gauge(
            "rollout_webhook_certificate_expiry_timestamp_seconds",
            "Expiry (notAfter, Unix time) of the serving certificate in use.",
            registry=self.registry,
        )
        self.certificate_reloads = Counter(
            "rollout_webhook_certificate_reloads",
            "Serving certificate reloads from the certificate directory, by result.",
            ["result"],
            registry=self.registry,
        )
        self.cluster_writes = Counter(
            "rollout_webhook_cluster_writes",
            "Server-side applies made on behalf of admission decisions, by kind and result.",
            ["kind", "result"],
            registry=self.registry,
        )
        self.write_jobs_pending = Gauge(
            "rollout_webhook_write_jobs_pending",
            "Admission decisions whose writes are queued or in progress (at most 2,000; "
            "past that, writes are left to the reconciler).",
            registry=self.registry,
        )
        self.connections_open = Gauge(
            "rollout_webhook_connections_open",
            "TLS connections the admission port holds (past their handshake).",
            registry=self.registry,
        )
        self.connections_closed = Counter(
            "rollout_webhook_connections_closed",
            "Admission-port connections closed by the server's defences, by reason: "
            "made_room (idle or slow, closed for a newcomer past max_connections), "
            "refused (503: every connection was answering a request), read_timeout.",
            ["reason"],
            registry=self.registry,
        )
        self.audit_late = Counter(
            "rollout_webhook_audit_records_late",
            "Answers sent before their audit record was written (the disk stalled or failed).",
            registry=self.registry,
        )
        self.access_reviews = Counter(
            "rollout_webhook_access_reviews",
            "SubjectAccessReviews for rollouts.argoproj.io, by result (allowed, denied, "
            "error, cached).",
            ["result"],
            registry=self.registry,
        )

        self.reconcile_failure_count = Counter(
            "rollout_webhook_reconcile_failures",
            "Failed reconcile passes, by reason (invalid, forbidden, not-found, conflict, "
            "throttled, server-error, unreachable, internal, refused), step (plan, apply, "
            "patch, delete, delete-orphans, event) and kind of the object concerned.",
            ["reason", "step", "kind"],
            registry=self.registry,
        )
        self.reconcile_service_states = Gauge(
            "rollout_webhook_reconcile_services",
            "Services whose last reconcile pass failed: failing (retried with backoff) or "
            "blocked (not retried until the Deployment or the policy changes).",
            ["state"],
            registry=self.registry,
        )

    # The reconciler's ReconcileMetrics (webhook/reconciler/failures.py).
    def reconcile_failed(self, reason: str, step: str, kind: str) -> None:
        self.reconcile_failure_count.labels(reason, step, kind).inc()

    def reconcile_services(self, failing: int, blocked: int) -> None:
        self.reconcile_service_states.labels("failing").set(failing)
        self.reconcile_service_states.labels("blocked").set(blocked)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def show_policy_condition(self, condition: str) -> None:
        for each in ("loading", "valid", "last-good", "none"):
            self.policy_condition.labels(each).set(1 if each == condition else 0)
