"""Settings of `rollout-webhook serve`, validated once at start-up.

Flags override environment variables (``ROLLOUT_WEBHOOK_<NAME>``), which override the
defaults. The defaults are the README's `make run`: 127.0.0.1:8443, a self-signed
certificate, the built-in policy, no cluster.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from certs.bootstrap import DEFAULT_SECRET_NAME, DEFAULT_SERVICE_NAME, DEFAULT_WEBHOOK_CONFIG_NAME
from certs.rotation import DEFAULT_LEASE_NAME
from webhook.core.keys import DEFAULT_PREFIX
from webhook.server.logs import LogFormat

MIB = 1024 * 1024
DEFAULT_CONTROLLER_ACCOUNT = "system:serviceaccount:argo-rollouts:argo-rollouts"
DEFAULT_NAMESPACE = "rollout-webhook"
DEFAULT_POLICY_CONFIGMAP = "rollout-webhook-policy"


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROLLOUT_WEBHOOK_", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=1, le=65535)
    cert_dir: Path | None = None
    """tls.crt and tls.key; none: a self-signed localhost certificate made at start-up."""
    client_ca: Path | None = None
    """PEM CA certificate(s): the admission port then requires a client certificate signed
    by one of them (the API server's, see docs/security.md); none: no client certificate
    asked for. The health port is never affected."""
    policy_file: Path | None = None
    """A fixed policy (a policy.yaml or its ConfigMap); none: the ConfigMap, else built-in."""
    kubeconfig: Path | None = None
    in_cluster: bool = False
    audit_file: Path | None = None
    namespace: str = DEFAULT_NAMESPACE
    """The webhook's own namespace, where the policy ConfigMap lives."""
    policy_configmap: str = DEFAULT_POLICY_CONFIGMAP
    label_prefix: str = DEFAULT_PREFIX
    field_manager: str = "rollout-webhook"
    controller_service_account: str = DEFAULT_CONTROLLER_ACCOUNT
    """Requests from this user pass through untouched: the Argo Rollouts controller scales
    the referenced Deployment itself, and a webhook that rewrote it would fight it."""
    service_account: str = ""
    """The webhook's own user (empty: system:serviceaccount:<namespace>:rollout-webhook)."""
    reconcile: bool = True
    """With a cluster: run the reconciler (under the Lease ``reconciler_lease``)."""
    reconciler_lease: str = "rollout-webhook-reconciler"
    reconcile_workers: int = Field(default=8, ge=1, le=64)
    """Threads carrying the reconciler's passes out at once. A pass spends most of its time
    waiting on the API server (an apply, a patch, an Event, one after another), so a fleet
    converted in one resync is converted about this many times faster than by one thread,
    until the API server itself is the limit (docs/benchmarks.md). Each keeps one
    connection to the API server open."""
    excluded_namespaces: tuple[str, ...] = ("kube-system", "kube-node-lease")
    """Namespaces the reconciler never touches, like the webhook configuration's
    namespaceSelector (the webhook's own namespace is always excluded). From the
    environment as a JSON list."""
    orphan_grace_seconds: float = Field(default=60.0, ge=0, le=3600)
    """How old a generated Rollout or Service whose Deployment is gone must be before the
    reconciler deletes it. Its ownerReference lets the garbage collector delete it first in
    a normal cluster; the grace covers the moment between admission's writes and the
    Deployment being stored."""
    rotate_certs: bool = False
    """Bootstrap and rotate the serving certificate in a Secret (certs package), writing
    each bundle to --cert-dir; needs a cluster."""
    tls_secret: str = DEFAULT_SECRET_NAME
    service_name: str = DEFAULT_SERVICE_NAME
    """The webhook's Service: the certificate's DNS names are made from it."""
    webhook_configuration: str = DEFAULT_WEBHOOK_CONFIG_NAME
    """The Mutating- and ValidatingWebhookConfiguration whose caBundle --rotate-certs keeps
    current (the chart names both after its fullname)."""
    certs_lease: str = DEFAULT_LEASE_NAME
    """The Lease (in --namespace) whose holder rotates the certificate."""
    fail_closed: bool = False
    """On an internal error: deny (true) or admit unchanged with a warning (false)."""
    max_body_bytes: int = Field(default=3 * MIB, ge=1024)
    max_connections: int = Field(default=1024, ge=8, le=65536)
    """TLS connections held open at once. Past it, the connection waiting longest without
    a request being answered on it (idle, or still sending one) is closed to make room;
    only when all are answering requests is a new one answered 503 and closed, so the API
    server applies the failure policy instead of waiting. Bounds what connections cost in
    memory (some 40 KiB each, docs/benchmarks.md "Overload"); high enough that hundreds
    of hostile connections are closed by their read timeout, not by the churn of making
    room (each connection closed that way comes back as a new handshake)."""
    handshake_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    """Time a TLS handshake may take before the connection is dropped (asyncio's default is
    60 s, during which a connection that never starts one holds its buffers)."""
    drain_seconds: float = Field(default=5.0, ge=0, le=60)
    """After SIGTERM, how long the server keeps answering before it stops listening, each
    answer with ``Connection: close``. The API server keeps connections alive to the pod
    it was routed to; closing an idle one just as it sends a request on it loses that
    admission (with failurePolicy Fail, the user's request). Meanwhile the pod leaves the
    Service's endpoints, and every connection still used is closed cleanly after an
    answer. Counted within ``shutdown_timeout_seconds``."""
    shutdown_timeout_seconds: float = Field(default=25.0, gt=0, le=3600)
    """From SIGTERM to exit, at most: within the pod's terminationGracePeriodSeconds (the
    chart keeps Kubernetes' 30 s). Past it, whatever is still running is abandoned and the
    process exits, rather than being killed by the kubelet without a word."""
    default_timeout_seconds: float = Field(default=10.0, gt=0, le=30)
    """The admission budget when the request carries no ?timeout= (the API server's default)."""
    access_review_timeout_seconds: float = Field(default=2.0, gt=0, le=10)
    cert_poll_seconds: float = Field(default=2.0, gt=0, le=300)
    write_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    health_port: int | None = Field(default=None, ge=1, le=65535)
    """A port of its own, plain HTTP on ``host``, for /healthz, /readyz and /metrics, so
    that no load on the admission port can fail the probes (none: only the admission port
    serves them). They stay on the admission port either way."""
    read_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    """Time a connection has to deliver each whole request (headers and body) before it is
    closed; the API server sends a review in one write."""
    log_format: LogFormat = "text"
    """Lines on standard error: text for people, JSON (one object a line) for a log
    pipeline. Either way a line about an admission request names it (uid, kind,
    namespace, name, user)."""

    @model_validator(mode="after")
    def _one_cluster_source(self) -> ServeSettings:
        if self.kubeconfig is not None and self.in_cluster:
            raise ValueError("--kubeconfig and --in-cluster exclude each other")
        return self

    @property
    def has_cluster(self) -> bool:
        return self.kubeconfig is not None or self.in_cluster

    @property
    def own_service_account(self) -> str:
        return self.service_account or (f"system:serviceaccount:{self.namespace}:rollout-webhook")

    @property
    def reconciler_excluded_namespaces(self) -> frozenset[str]:
        return frozenset({*self.excluded_namespaces, self.namespace})

    @property
    def passthrough_users(self) -> frozenset[str]:
        return frozenset({self.controller_service_account, self.own_service_account})
