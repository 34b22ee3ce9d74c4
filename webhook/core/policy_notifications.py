"""Notification subscriptions: the ``notifications:`` key of a ``rollout:`` block, written
on the Rollout as Argo Rollouts' notification annotations.

The policy says, per trigger and per notification service, who is told::

    notifications:
      on-rollout-aborted: {slack: prod-alerts, email: [oncall@example.com]}

and the Rollout gets ``notifications.argoproj.io/subscribe.on-rollout-aborted.slack:
prod-alerts`` and ``...on-rollout-aborted.email: oncall@example.com``. Argo's
notifications controller reads these annotations (recipients separated by ``;``) and the
triggers and services defined in its ConfigMap, ``argo-rollouts-notification-configmap``.
A service's ``rollout`` annotation merges over the environment's subscriptions like any
other mapping; recipients ``null`` (or an empty list) remove a subscription.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

SUBSCRIBE_PREFIX = "notifications.argoproj.io/subscribe."
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_]*[A-Za-z0-9])?")
# The part of an annotation key after the "/" is a qualified name of at most 63 characters.
_MAX_NAME_PART = 63 - len(SUBSCRIBE_PREFIX.split("/", 1)[1])
_MAX_RECIPIENTS_CHARS = 4096

Problems = list[tuple[tuple[str | int, ...], str]]


def _name_problem(name: object, what: str) -> str | None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        return (
            f"{what} name {name!r} must be letters, digits, '-' or '_', starting and ending "
            "with a letter or digit (no dots: Argo splits the annotation key on them)"
        )
    return None


def _recipients(value: object) -> list[str] | None:
    """The recipients as a list, or None when the value is not a string or a list of them."""
    if value is None:
        return []
    if isinstance(value, str):
        return [r.strip() for r in value.split(";")]
    if isinstance(value, list) and all(isinstance(r, str) for r in value):
        return [r.strip() for r in value]
    return None


def _recipient_problems(value: object) -> str | None:
    recipients = _recipients(value)
    if recipients is None:
        return "recipients must be a string (several separated by ';') or a list of strings"
    for recipient in recipients:
        if not recipient:
            return "a recipient is empty"
        if ";" in recipient or any(c in recipient for c in "\r\n\t"):
            return f"recipient {recipient!r} holds ';' or a line break"
    if len(";".join(recipients)) > _MAX_RECIPIENTS_CHARS:
        return f"recipients are longer than {_MAX_RECIPIENTS_CHARS} characters"
    return None


def _trigger_problems(trigger: str, services: object) -> Problems:
    if not isinstance(services, Mapping):
        return [((trigger,), "must map notification services to recipients, e.g. {slack: team}")]
    out: Problems = []
    for service, recipients in services.items():
        where = (trigger, str(service))
        problem = _name_problem(service, "service")
        if problem is None and len(f"{trigger}.{service}") > _MAX_NAME_PART:
            problem = (
                f"annotation key {SUBSCRIBE_PREFIX}{trigger}.{service} is longer than a "
                "Kubernetes annotation name may be (63 characters after the '/')"
            )
        problem = problem or _recipient_problems(recipients)
        if problem is not None:
            out.append((where, problem))
    return out


def notification_problems(value: object) -> Problems:
    """Every problem of a ``notifications:`` value, with its path inside it."""
    if not isinstance(value, Mapping):
        return [((), "must map triggers to {service: recipients}")]
    out: Problems = []
    for trigger, services in value.items():
        problem = _name_problem(trigger, "trigger")
        if problem is not None:
            out.append(((str(trigger),), problem))
            continue
        out.extend(_trigger_problems(str(trigger), services))
    return out


def subscription_annotations(value: Mapping[str, Any] | None) -> dict[str, str]:
    """The Rollout's notification annotations for a valid ``notifications:`` value, in
    trigger then service order; subscriptions without recipients are left out."""
    out: dict[str, str] = {}
    for trigger, services in sorted((value or {}).items()):
        for service, recipients in sorted((services or {}).items()):
            listed = _recipients(recipients) or []
            if listed:
                out[f"{SUBSCRIBE_PREFIX}{trigger}.{service}"] = ";".join(listed)
    return out
