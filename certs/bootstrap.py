"""One idempotent pass: make the Secret hold a valid bundle and the webhooks trust it.

Used by ``rollout-webhook certs bootstrap`` (a Helm hook Job), ``certs rotate``, and the
in-process rotation loop. The order of writes is what keeps every admission call working
through a CA rotation:

1. Inject what the Secret holds now (repairs a caBundle an earlier run left behind).
2. Take the due action on the Secret (create-or-conflict / replace at resourceVersion).
3. Inject the new trust bundle after every Secret write.

A staged CA is never promoted in the same pass that staged it or that had to change a
caBundle first, and old CAs are never retired in the pass that promoted: each step
waits for a later pass, so API servers and replicas have time to load the last change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from certs import pki
from certs.inject import (
    MUTATING,
    VALIDATING,
    InjectResult,
    KubeWebhookConfigAPI,
    Outcome,
    WebhookConfigAPI,
    WebhookConfigRef,
    inject_ca_bundle,
)
from certs.store import (
    KubeSecretAPI,
    SecretAPI,
    SecretRef,
    StepResult,
    Target,
    apply_step,
    bundle_from_secret,
)

DEFAULT_SECRET_NAME = "rollout-webhook-tls"  # noqa: S105 (a name, not a password)
DEFAULT_SERVICE_NAME = "rollout-webhook"
DEFAULT_WEBHOOK_CONFIG_NAME = "rollout-webhook"
MAX_STEPS = 6


@dataclass(frozen=True)
class BootstrapSettings:
    secret: SecretRef
    target: Target
    webhook_configs: tuple[WebhookConfigRef, ...] = ()
    lifetimes: pki.Lifetimes = pki.DEFAULT_LIFETIMES


def default_webhook_configs(
    mutating: Sequence[str] = (DEFAULT_WEBHOOK_CONFIG_NAME,),
    validating: Sequence[str] = (DEFAULT_WEBHOOK_CONFIG_NAME,),
) -> tuple[WebhookConfigRef, ...]:
    return tuple(WebhookConfigRef(MUTATING, n) for n in mutating) + tuple(
        WebhookConfigRef(VALIDATING, n) for n in validating
    )


@dataclass
class BootstrapReport:
    """What one pass found and did, for the CLI to print and the loop to log."""

    bundle: pki.Bundle | None = None
    steps: list[StepResult] = field(default_factory=list)
    injections: list[InjectResult] = field(default_factory=list)
    deferred: list[pki.Action] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(s.written is not pki.Action.NONE for s in self.steps) or any(
            i.outcome is Outcome.PATCHED for i in self.injections
        )

    @property
    def missing_configs(self) -> list[WebhookConfigRef]:
        return sorted(
            {i.ref for i in self.injections if i.outcome is Outcome.MISSING},
            key=str,
        )


def converge(
    secrets: SecretAPI,
    webhooks: WebhookConfigAPI | None,
    settings: BootstrapSettings,
    now: datetime,
    *,
    force: pki.Action | None = None,
) -> BootstrapReport:
    """Run due actions until the bundle needs nothing now (or only waits on time)."""
    report = BootstrapReport()
    hold: set[pki.Action] = set()

    def inject(bundle: pki.Bundle) -> bool:
        if webhooks is None or not settings.webhook_configs or not bundle.trust_pem:
            return False
        results = inject_ca_bundle(webhooks, settings.webhook_configs, bundle.trust_pem)
        report.injections.extend(results)
        return any(r.outcome is Outcome.PATCHED for r in results)

    stored = secrets.get(settings.secret)
    if stored is not None:
        current = bundle_from_secret(stored)
        if pki.split_pem_certificates(current.trust_pem) and inject(current):
            hold.add(pki.Action.PROMOTE_CA)

    pending_force = force
    for _ in range(MAX_STEPS):
        step = apply_step(
            secrets,
            settings.secret,
            settings.target,
            now,
            lifetimes=settings.lifetimes,
            force=pending_force,
            hold=frozenset(hold),
        )
        pending_force = None
        report.steps.append(step)
        report.bundle = step.bundle
        if step.written is pki.Action.NONE:
            report.deferred = [
                a for a in (step.decision.action, *step.decision.pending) if a in hold
            ]
            break
        if inject(step.bundle) or step.written in (pki.Action.STAGE_CA, pki.Action.REISSUE):
            hold.add(pki.Action.PROMOTE_CA)
        if step.written is pki.Action.PROMOTE_CA:
            # Replicas need time to load the new leaf before the old CA goes away.
            hold.add(pki.Action.RETIRE_CA)
    return report


def bootstrap(
    api_client: Any,
    settings: BootstrapSettings,
    now: datetime,
    *,
    force: pki.Action | None = None,
) -> BootstrapReport:
    """``converge`` against a real cluster through a ``kubernetes.client.ApiClient``."""
    webhooks = KubeWebhookConfigAPI(api_client) if settings.webhook_configs else None
    return converge(KubeSecretAPI(api_client), webhooks, settings, now, force=force)


def read_bundle(api_client: Any, secret: SecretRef) -> pki.Bundle | None:
    """The bundle the Secret holds now, or None when there is no Secret."""
    stored = KubeSecretAPI(api_client).get(secret)
    return bundle_from_secret(stored) if stored else None
