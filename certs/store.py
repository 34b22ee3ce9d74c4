"""The bundle in a kubernetes.io/tls Secret, written so that racing writers converge.

Two rules make concurrent bootstrappers (a Helm hook Job, several replicas starting at
once) end with one bundle:

- A missing Secret is *created*, never checked-then-created: the API server refuses the
  second create with 409 AlreadyExists, and the loser reads and adopts the winner's bundle.
- An existing Secret is *replaced* with the ``resourceVersion`` it was read at: a writer
  working from a stale read gets 409 Conflict, re-reads and judges the fresh bundle, which
  normally needs nothing any more.

The cluster is reached through ``SecretAPI``, a three-method Protocol; ``KubeSecretAPI``
implements it on the official client, and tests use an in-memory fake with the same
conflict semantics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from certs import pki

SECRET_TYPE = "kubernetes.io/tls"  # noqa: S105 (a type name, not a password)
# When the last CA rotation step happened: the next step waits on it (pki.Lifetimes).
ROTATION_STEP_ANNOTATION = "rollout-webhook.io/ca-rotation-step-at"
MANAGED_BY_LABEL = ("app.kubernetes.io/managed-by", "rollout-webhook")


class StoreError(Exception):
    """The Secret could not be read or written: one line naming the Secret and the cause."""


class SecretConflict(StoreError):
    """409: the Secret already exists (create) or changed since it was read (replace)."""


@dataclass(frozen=True)
class SecretRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class StoredSecret:
    """A Secret's text data as stored, with the resourceVersion it was read at."""

    ref: SecretRef
    data: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    resource_version: str = ""


class SecretAPI(Protocol):
    def get(self, ref: SecretRef) -> StoredSecret | None:
        """The Secret, or None when it does not exist."""

    def create(self, secret: StoredSecret) -> StoredSecret:
        """Create; raise SecretConflict when it already exists."""

    def replace(self, secret: StoredSecret) -> StoredSecret:
        """Replace at ``secret.resource_version``; raise SecretConflict when it moved on."""


# ---------------------------------------------------------------------------------------
# Bundle <-> Secret data (pure)


def bundle_to_secret(
    ref: SecretRef, bundle: pki.Bundle, resource_version: str = ""
) -> StoredSecret:
    data = {
        pki.TLS_CERT_KEY: bundle.cert_pem,
        pki.TLS_KEY_KEY: bundle.key_pem,
        # ca.crt is what clients trust: during a rotation it holds every live CA.
        pki.CA_CERT_KEY: bundle.trust_pem,
        pki.CA_KEY_KEY: bundle.ca_key_pem,
    }
    if bundle.next_ca_pem.strip():
        data[pki.NEXT_CA_CERT_KEY] = bundle.next_ca_pem
        data[pki.NEXT_CA_KEY_KEY] = bundle.next_ca_key_pem
    annotations = {}
    if bundle.rotation_step_at is not None:
        annotations[ROTATION_STEP_ANNOTATION] = bundle.rotation_step_at.isoformat()
    return StoredSecret(ref, data, annotations, resource_version)


def bundle_from_secret(secret: StoredSecret) -> pki.Bundle:
    """Read a bundle back; whatever is missing or malformed is left for check_bundle."""
    data = secret.data
    trusted = pki.split_pem_certificates(data.get(pki.CA_CERT_KEY, ""))
    active = trusted[0] if trusted else data.get(pki.CA_CERT_KEY, "")
    staged = data.get(pki.NEXT_CA_CERT_KEY, "")
    staged_norm = pki.split_pem_certificates(staged)
    previous = tuple(p for p in trusted[1:] if p not in staged_norm)
    return pki.Bundle(
        ca_pem=active,
        ca_key_pem=data.get(pki.CA_KEY_KEY, ""),
        cert_pem=data.get(pki.TLS_CERT_KEY, ""),
        key_pem=data.get(pki.TLS_KEY_KEY, ""),
        next_ca_pem=staged,
        next_ca_key_pem=data.get(pki.NEXT_CA_KEY_KEY, ""),
        previous_ca_pems=previous,
        rotation_step_at=_parse_time(secret.annotations.get(ROTATION_STEP_ANNOTATION, "")),
    )


def _parse_time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


# ---------------------------------------------------------------------------------------
# Converging on one bundle


@dataclass(frozen=True)
class Target:
    """What the serving certificate must cover."""

    service: str
    namespace: str
    extra_dns: tuple[str, ...] = ()
    extra_ips: tuple[str, ...] = ()
    cluster_domain: str = pki.DEFAULT_CLUSTER_DOMAIN


@dataclass(frozen=True)
class StepResult:
    """One pass over the Secret: what was found, what was written (if anything)."""

    bundle: pki.Bundle
    decision: pki.Decision
    written: pki.Action = pki.Action.NONE
    created: bool = False
    lost_race: bool = False


def check_stored(
    bundle: pki.Bundle, target: Target, now: datetime, lifetimes: pki.Lifetimes
) -> pki.Decision:
    return pki.check_bundle(
        bundle,
        target.service,
        target.namespace,
        now,
        target.extra_dns,
        target.extra_ips,
        cluster_domain=target.cluster_domain,
        lifetimes=lifetimes,
    )


def apply_step(
    api: SecretAPI,
    ref: SecretRef,
    target: Target,
    now: datetime,
    *,
    lifetimes: pki.Lifetimes = pki.DEFAULT_LIFETIMES,
    force: pki.Action | None = None,
    hold: frozenset[pki.Action] = frozenset(),
    max_attempts: int = 5,
) -> StepResult:
    """Read the Secret, take the one action it needs now (or ``force``), write it back.

    Actions in ``hold`` are not taken this time (the caller defers them). On a conflict
    the Secret is read again and judged afresh, so the loser of a race adopts the
    winner's bundle instead of overwriting it.
    """
    lost_race = False
    for _ in range(max_attempts):
        stored = api.get(ref)
        if stored is None:
            fresh = _apply(None, pki.Action.REISSUE, target, now, lifetimes)
            decision = pki.Decision(pki.Action.REISSUE, (f"Secret {ref} does not exist",))
            try:
                api.create(bundle_to_secret(ref, fresh))
            except SecretConflict:
                lost_race = True
                continue
            return StepResult(fresh, decision, pki.Action.REISSUE, created=True)
        bundle = bundle_from_secret(stored)
        decision = check_stored(bundle, target, now, lifetimes)
        action = force if force is not None and not lost_race else decision.action
        if action is pki.Action.NONE or action in hold:
            return StepResult(bundle, decision, lost_race=lost_race)
        updated = _apply(bundle, action, target, now, lifetimes)
        try:
            api.replace(bundle_to_secret(ref, updated, stored.resource_version))
        except SecretConflict:
            lost_race = True
            continue
        return StepResult(updated, decision, action, lost_race=lost_race)
    raise StoreError(f"Secret {ref}: still conflicting after {max_attempts} attempts")


def _apply(
    bundle: pki.Bundle | None,
    action: pki.Action,
    target: Target,
    now: datetime,
    lifetimes: pki.Lifetimes,
) -> pki.Bundle:
    return pki.apply_action(
        bundle,
        action,
        target.service,
        target.namespace,
        now,
        target.extra_dns,
        target.extra_ips,
        cluster_domain=target.cluster_domain,
        lifetimes=lifetimes,
    )


# ---------------------------------------------------------------------------------------
# The adapter on the official client


class KubeSecretAPI:
    """``SecretAPI`` on ``kubernetes.client.CoreV1Api``."""

    def __init__(self, api_client: Any, request_timeout: float = 30.0) -> None:
        from kubernetes import client

        self._core = client.CoreV1Api(api_client)
        self._timeout = request_timeout

    def get(self, ref: SecretRef) -> StoredSecret | None:
        from kubernetes.client.exceptions import ApiException

        try:
            obj = self._core.read_namespaced_secret(
                ref.name, ref.namespace, _request_timeout=self._timeout
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise api_error("read", f"Secret {ref}", err) from None
        except Exception as err:
            raise connection_error("read", f"Secret {ref}", err) from err
        return _from_v1(ref, obj)

    def create(self, secret: StoredSecret) -> StoredSecret:
        from kubernetes.client.exceptions import ApiException

        try:
            obj = self._core.create_namespaced_secret(
                secret.ref.namespace, _to_v1(secret), _request_timeout=self._timeout
            )
        except ApiException as err:
            if err.status == 409:
                raise SecretConflict(f"Secret {secret.ref} already exists") from None
            raise api_error("create", f"Secret {secret.ref}", err) from None
        except Exception as err:
            raise connection_error("create", f"Secret {secret.ref}", err) from err
        return _from_v1(secret.ref, obj)

    def replace(self, secret: StoredSecret) -> StoredSecret:
        from kubernetes.client.exceptions import ApiException

        try:
            obj = self._core.replace_namespaced_secret(
                secret.ref.name,
                secret.ref.namespace,
                _to_v1(secret),
                _request_timeout=self._timeout,
            )
        except ApiException as err:
            if err.status == 409:
                raise SecretConflict(f"Secret {secret.ref} changed since it was read") from None
            raise api_error("replace", f"Secret {secret.ref}", err) from None
        except Exception as err:
            raise connection_error("replace", f"Secret {secret.ref}", err) from err
        return _from_v1(secret.ref, obj)


def _to_v1(secret: StoredSecret) -> Any:
    import base64

    from kubernetes import client

    return client.V1Secret(
        api_version="v1",
        kind="Secret",
        type=SECRET_TYPE,
        metadata=client.V1ObjectMeta(
            name=secret.ref.name,
            namespace=secret.ref.namespace,
            labels=dict([MANAGED_BY_LABEL]),
            annotations=dict(secret.annotations) or None,
            # Empty on create; on replace it is the precondition that makes a stale write 409.
            resource_version=secret.resource_version or None,
        ),
        data={k: base64.b64encode(v.encode()).decode() for k, v in secret.data.items()},
    )


def _from_v1(ref: SecretRef, obj: Any) -> StoredSecret:
    import base64
    import binascii

    data: dict[str, str] = {}
    for key, value in (obj.data or {}).items():
        try:
            data[key] = base64.b64decode(value).decode("ascii")
        except (binascii.Error, UnicodeDecodeError):
            data[key] = ""  # check_bundle reports it as missing and it gets replaced
    meta = obj.metadata
    return StoredSecret(
        ref=ref,
        data=data,
        annotations=dict(meta.annotations or {}),
        resource_version=meta.resource_version or "",
    )


def api_error(verb: str, what: str, err: Any) -> StoreError:
    """One line from an ApiException: verb, object, status, and the server's message."""
    message = ""
    try:
        message = json.loads(err.body or "{}").get("message", "")
    except (ValueError, AttributeError):
        message = ""
    detail = f": {message}" if message else ""
    return StoreError(f"cannot {verb} {what}: {err.status} {err.reason}{detail}")


def connection_error(verb: str, what: str, err: Exception) -> StoreError:
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return StoreError(f"cannot {verb} {what}: {reason}")
