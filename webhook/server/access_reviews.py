"""The permission check of admission: may the requesting user create Rollouts here (or,
for a scale of a converted Deployment, scale its Rollout)?

A SubjectAccessReview for the requesting user (the confused-deputy check: the webhook
writes with its own rights, so it first asks whether the user could have made the writes
themselves), run off the event loop with a short timeout and cached briefly.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from webhook.core.cluster import CREATE_ROLLOUTS, AccessDecision, ClusterWriter, Permission
from webhook.core.review import UserInfo
from webhook.server.metrics import Metrics

log = logging.getLogger(__name__)


def _identity(user: UserInfo, namespace: str, scaled: object) -> tuple[object, ...]:
    extra = user.get("extra", {})
    return (
        user.get("username", ""),
        user.get("uid", ""),
        tuple(sorted(user.get("groups", []))),
        tuple(sorted((k, tuple(v)) for k, v in extra.items())),
        namespace,
        scaled,
    )


class AccessReviews:
    """SubjectAccessReviews off the event loop, with a short-lived cache.

    The cache follows the API server's own webhook authorizer: allowed answers are kept
    longer than denied ones, so a freshly granted RoleBinding takes effect quickly. A
    review that fails or times out counts as "not allowed": the webhook never writes on
    behalf of a user it could not check.
    """

    def __init__(
        self,
        writer: ClusterWriter,
        *,
        timeout: float,
        metrics: Metrics,
        allowed_ttl: float = 30.0,
        denied_ttl: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._writer = writer
        self._timeout = timeout
        self._metrics = metrics
        self._ttl = {True: allowed_ttl, False: denied_ttl}
        self._monotonic = monotonic
        self._cache: dict[tuple[object, ...], tuple[float, AccessDecision]] = {}
        # Threads of their own: slow writes must not hold up permission checks, which
        # sit on the request path.
        self._threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="access-review")

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def check(
        self,
        user: UserInfo,
        namespace: str,
        *,
        budget: float,
        permissions: tuple[Permission, ...] = (CREATE_ROLLOUTS,),
        scaled_rollout: str = "",
    ) -> AccessDecision:
        """May the user do every one of ``permissions`` in the namespace (each asked at
        once, each cached), or, given ``scaled_rollout``, scale that Rollout?"""
        if scaled_rollout:
            call = functools.partial(
                self._writer.may_scale_rollout, user, namespace, scaled_rollout
            )
            return await self._one(user, namespace, ("scale", scaled_rollout), call, budget)
        fresh = [self._fresh(user, namespace, p) for p in permissions]
        if all(a is not None for a in fresh):  # the usual case: no task, no thread
            self._metrics.access_reviews.labels("cached").inc(len(fresh))
            return self._combined(permissions, fresh)  # type: ignore[arg-type]
        answers = await asyncio.gather(
            *(
                self._one(
                    user,
                    namespace,
                    p,
                    functools.partial(self._writer.may, user, namespace, p),
                    budget,
                )
                for p in permissions
            )
        )
        return self._combined(permissions, answers)

    @staticmethod
    def _combined(
        permissions: tuple[Permission, ...], answers: Sequence[AccessDecision]
    ) -> AccessDecision:
        missing = tuple(p for p, a in zip(permissions, answers, strict=True) if not a.allowed)
        if not missing:
            return AccessDecision(True, "allowed by RBAC")
        first = next(a for a in answers if not a.allowed)
        return AccessDecision(False, first.reason, missing)

    def _fresh(self, user: UserInfo, namespace: str, what: object) -> AccessDecision | None:
        """The cached answer while it is fresh; None without one."""
        cached = self._cache.get(_identity(user, namespace, what))
        if cached is None or cached[0] <= self._monotonic():
            return None
        return cached[1]

    async def _one(
        self,
        user: UserInfo,
        namespace: str,
        what: object,
        call: Callable[..., AccessDecision],
        budget: float,
    ) -> AccessDecision:
        key = _identity(user, namespace, what)
        now = self._monotonic()
        cached = self._fresh(user, namespace, what)
        if cached is not None:
            self._metrics.access_reviews.labels("cached").inc()
            return cached
        timeout = max(0.05, min(self._timeout, budget))
        try:
            decision = await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(
                    self._threads, functools.partial(call, timeout=timeout)
                ),
                timeout=timeout,
            )
        except TimeoutError:
            self._metrics.access_reviews.labels("error").inc()
            return AccessDecision(False, f"the permission check timed out after {timeout:g}s")
        except Exception as err:
            self._metrics.access_reviews.labels("error").inc()
            log.warning("SubjectAccessReview failed: %s", err)
            return AccessDecision(False, f"the permission check failed ({type(err).__name__})")
        self._metrics.access_reviews.labels("allowed" if decision.allowed else "denied").inc()
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now + self._ttl[decision.allowed], decision)
        return decision
