"""The policy in force, and its reload from the watched ConfigMap.

A valid new policy replaces the old one at once (admission reads ``current`` on every
request). An invalid one is refused: logged with every error, counted, and the last good
policy stays in force. A deleted ConfigMap brings back the built-in policy, the same
policy the product runs with when there never was a ConfigMap.

A ConfigMap refused before any policy was in force (at start) leaves no last good policy:
the state is ``none``, the server is ready all the same and admits without converting
(``webhook.core.admission.plan_without_policy``), so a broken edit can never keep every
replica unready. The state is exported as a metric and in ``/readyz``'s answer.

Whoever must act on a new policy (the reconciler: every opted-in service may have to
follow it) registers a listener; it is called on the watch thread after each change of
the policy in force, never for a refused one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Literal

from webhook.core.crd_schema import RolloutSchema
from webhook.core.errors import PolicyInvalid
from webhook.core.policy import Policy, builtin_policy, policy_from_configmap

log = logging.getLogger(__name__)

PolicyCondition = Literal["loading", "valid", "last-good", "none"]
POLICY_CONDITIONS: tuple[PolicyCondition, ...] = ("loading", "valid", "last-good", "none")


class PolicyState:
    """Thread-safe holder: the watch thread writes, the event loop reads."""

    def __init__(
        self,
        initial: Policy | None = None,
        *,
        on_reload: Callable[[str], None] | None = None,
        on_condition: Callable[[PolicyCondition], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._policy = initial
        self._on_reload = on_reload
        self._on_condition = on_condition
        self.last_error: PolicyInvalid | None = None
        self.listeners: list[Callable[[Policy], None]] = []
        self.rollout_schema: Callable[[], RolloutSchema | None] = lambda: None
        """The served Rollout schema a reloaded policy's strategies are checked against
        (None: by the product's rules only, as at start before the CRD's watch has it)."""
        self._tell()

    @property
    def condition(self) -> PolicyCondition:
        """loading (nothing known yet), valid, last-good (an edit was refused, the policy
        before it is in force) or none (refused with nothing before it)."""
        if self.current is None:
            return "loading" if self.last_error is None else "none"
        return "valid" if self.last_error is None else "last-good"

    @property
    def known(self) -> bool:
        """True once the server can answer: a policy is in force, or it is known that none
        can be (readiness waits for nothing more)."""
        return self.condition != "loading"

    def problem(self) -> str | None:
        """One line on what is wrong with the policy ConfigMap, or None."""
        error = self.last_error
        if error is None:
            return None
        first = str(error).splitlines()[0]
        if self.current is None:
            return f"policy ConfigMap refused, no policy in force: {first}"
        version = self.current.version
        return f"policy ConfigMap refused, the last good policy {version} in force: {first}"

    def _tell(self) -> None:
        if self._on_condition is not None:
            self._on_condition(self.condition)

    @property
    def current(self) -> Policy | None:
        with self._lock:
            return self._policy

    @property
    def loaded(self) -> bool:
        return self.current is not None

    def set(self, policy: Policy) -> None:
        with self._lock:
            self._policy = policy
        self._tell()

    def _changed(self, previous: Policy | None, policy: Policy) -> None:
        if previous is not None and previous.version == policy.version:
            return
        for listener in list(self.listeners):
            try:
                listener(policy)
            except Exception:  # one listener's bug must not stop the policy watch
                log.exception("policy listener failed")

    def _count(self, result: str) -> None:
        if self._on_reload is not None:
            self._on_reload(result)

    def apply_configmap(self, configmap: Mapping[str, Any]) -> bool:
        """Take the policy from an added or changed ConfigMap; False when refused."""
        try:
            policy = policy_from_configmap(configmap, rollout_schema=self.rollout_schema())
        except PolicyInvalid as err:
            self.last_error = err
            if self.current is None:
                log.error("policy refused and no policy in force: nothing is converted: %s", err)
            else:
                log.error("policy refused, the last good policy stays in force: %s", err)
            self._count("invalid")
            self._tell()
            return False
        previous = self.current
        self.set(policy)
        self.last_error = None
        if previous is None or previous.version != policy.version:
            log.info("policy %s applied", policy.version)
            self._count("applied")
        self._changed(previous, policy)
        self._tell()
        return True

    def configmap_absent(self, *, deleted: bool) -> None:
        """No ConfigMap (never created, or deleted): the built-in policy applies."""
        previous = self.current
        policy = builtin_policy()
        self.set(policy)
        self.last_error = None
        if deleted:
            log.warning("policy ConfigMap deleted: the built-in policy applies")
            self._count("removed")
        self._changed(previous, policy)
        self._tell()
