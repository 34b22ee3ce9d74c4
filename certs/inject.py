"""Put the trust bundle into the webhook configurations' ``clientConfig.caBundle``.

Only the caBundle fields are patched, with a JSON Patch whose every write is guarded by a
``test`` of the webhook's name at that index: nothing else in the configuration is
touched (a GitOps tool or Helm owns the rest), and a configuration reordered between our
read and our patch makes the patch fail instead of writing a bundle into the wrong entry.
A configuration already carrying the bundle is not patched at all.

During a CA rotation the bundle holds the old and the new CA (see ``pki.Bundle.trust_pem``).
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from certs.store import StoreError, api_error, connection_error

Kind = Literal["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]
MUTATING: Kind = "MutatingWebhookConfiguration"
VALIDATING: Kind = "ValidatingWebhookConfiguration"


class InjectError(StoreError):
    """A webhook configuration could not be read or patched."""


@dataclass(frozen=True)
class WebhookEntry:
    """One webhook of a configuration: its name and current caBundle (base64, may be '')."""

    name: str
    ca_bundle: str


class WebhookConfigAPI(Protocol):
    def get_webhooks(self, kind: Kind, name: str) -> list[WebhookEntry] | None:
        """The configuration's webhooks in order, or None when it does not exist."""

    def patch(self, kind: Kind, name: str, patch: list[dict[str, Any]]) -> None:
        """Apply a JSON Patch (RFC 6902) to the configuration."""


@dataclass(frozen=True)
class WebhookConfigRef:
    kind: Kind
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


class Outcome(enum.Enum):
    PATCHED = "patched"
    UNCHANGED = "unchanged"
    MISSING = "missing"


@dataclass(frozen=True)
class InjectResult:
    ref: WebhookConfigRef
    outcome: Outcome
    webhooks: int = 0


def ca_bundle_patch(webhooks: Sequence[WebhookEntry], trust_pem: str) -> list[dict[str, Any]]:
    """The JSON Patch setting every webhook's caBundle to ``trust_pem`` (pure)."""
    wanted = encode_ca_bundle(trust_pem)
    ops: list[dict[str, Any]] = []
    for index, hook in enumerate(webhooks):
        if hook.ca_bundle == wanted:
            continue
        ops.append({"op": "test", "path": f"/webhooks/{index}/name", "value": hook.name})
        # "add" sets an object member whether or not it exists (RFC 6902 section 4.1).
        ops.append(
            {"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": wanted}
        )
    return ops


def encode_ca_bundle(trust_pem: str) -> str:
    return base64.b64encode(trust_pem.encode()).decode()


def inject_ca_bundle(
    api: WebhookConfigAPI, configs: Sequence[WebhookConfigRef], trust_pem: str
) -> list[InjectResult]:
    """Make every webhook of these configurations trust exactly ``trust_pem``."""
    results = []
    for ref in configs:
        hooks = api.get_webhooks(ref.kind, ref.name)
        if hooks is None:
            results.append(InjectResult(ref, Outcome.MISSING))
            continue
        patch = ca_bundle_patch(hooks, trust_pem)
        if patch:
            api.patch(ref.kind, ref.name, patch)
        outcome = Outcome.PATCHED if patch else Outcome.UNCHANGED
        results.append(InjectResult(ref, outcome, len(patch) // 2))
    return results


class KubeWebhookConfigAPI:
    """``WebhookConfigAPI`` on ``kubernetes.client.AdmissionregistrationV1Api``."""

    def __init__(self, api_client: Any, request_timeout: float = 30.0) -> None:
        from kubernetes import client

        self._api = client.AdmissionregistrationV1Api(api_client)
        self._timeout = request_timeout

    def get_webhooks(self, kind: Kind, name: str) -> list[WebhookEntry] | None:
        from kubernetes.client.exceptions import ApiException

        read = (
            self._api.read_mutating_webhook_configuration
            if kind == MUTATING
            else self._api.read_validating_webhook_configuration
        )
        try:
            obj = read(name, _request_timeout=self._timeout)
        except ApiException as err:
            if err.status == 404:
                return None
            raise _inject_error(api_error("read", f"{kind} {name}", err)) from None
        except Exception as err:
            raise _inject_error(connection_error("read", f"{kind} {name}", err)) from err
        entries = []
        for hook in obj.webhooks or []:
            raw = hook.client_config.ca_bundle if hook.client_config else None
            entries.append(WebhookEntry(hook.name, _as_base64(raw)))
        return entries

    def patch(self, kind: Kind, name: str, patch: list[dict[str, Any]]) -> None:
        from kubernetes.client.exceptions import ApiException

        method = (
            self._api.patch_mutating_webhook_configuration
            if kind == MUTATING
            else self._api.patch_validating_webhook_configuration
        )
        try:
            method(
                name,
                patch,
                _content_type="application/json-patch+json",
                _request_timeout=self._timeout,
            )
        except ApiException as err:
            raise _inject_error(api_error("patch", f"{kind} {name}", err)) from None
        except Exception as err:
            raise _inject_error(connection_error("patch", f"{kind} {name}", err)) from err


def _as_base64(raw: object) -> str:
    # The client leaves the byte field as the base64 text it received; accept bytes too.
    if raw is None:
        return ""
    if isinstance(raw, bytes):
        return base64.b64encode(raw).decode()
    return str(raw)


def _inject_error(err: StoreError) -> InjectError:
    return InjectError(str(err))
