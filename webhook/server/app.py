"""The FastAPI app: the HTTP guard and the endpoints, around the admission engine.

Two error channels, kept apart: a call that is broken (too big, not JSON, not an
AdmissionReview, a bad ``?timeout=``) gets an HTTP 4xx with a message; a well-formed
review always gets an AdmissionReview back, whose ``allowed`` says what happens to the
object.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from webhook.core.durations import DurationError, parse_go_duration
from webhook.core.keys import Keys
from webhook.core.nesting import exceeds_bracket_depth
from webhook.core.review import (
    AdmissionRequest,
    ReviewInvalid,
    load_json,
    parse_review,
    review_response,
)
from webhook.server.cpu import INLINE_BODY_BYTES, mark_heavy, run_bounded
from webhook.server.engine import AdmissionEngine
from webhook.server.logs import admission_context, decision_of
from webhook.server.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger(__name__)

# Of the API server's ?timeout=, the share the webhook spends deciding: the rest is for
# the answer to travel back before the API server gives up on the call.
BUDGET_SHARE = 0.8


class CallRefused(Exception):
    """A broken call: answered with an HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class ServerParts:
    """What the app is built from: the engine and the state behind /readyz and /metrics."""

    engine: AdmissionEngine
    metrics: Metrics
    certificate_loaded: Callable[[], bool]
    policy_loaded: Callable[[], bool]
    policy_detail: Callable[[], str | None] = lambda: None
    """What is wrong with the policy ConfigMap, when something is (shown by /readyz)."""
    caches_synced: Callable[[], bool] = lambda: True
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    """Coroutines to run while the app is up (certificate polling, the write worker)."""
    on_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    monotonic: Callable[[], float] = time.monotonic


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes without reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise CallRefused(413, f"request body is over the limit of {limit} bytes")
        except ValueError:
            raise CallRefused(400, "Content-Length is not a number") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise CallRefused(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def budget_from_query(value: str | None, default: float) -> float:
    """Seconds the webhook may spend, from the API server's ``?timeout=`` (a Go duration)."""
    if value is None:
        return default * BUDGET_SHARE
    try:
        seconds = parse_go_duration(value)
    except DurationError as err:
        raise CallRefused(400, f"query parameter timeout: {err}") from None
    if seconds <= 0:
        raise CallRefused(400, f"query parameter timeout: must be positive, got {value!r}")
    return min(seconds, 30.0) * BUDGET_SHARE


MAX_JSON_DEPTH = 100
"""A Deployment nests about 15 levels deep, an AdmissionReview adds 3; the API server never
sends more than its types allow. Deeper bodies are forged, and would exhaust the recursion
limit of the parser or of whatever walks the object next."""


def _depth(document: object) -> int:
    """The nesting depth of a parsed document, without recursion."""
    deepest = 0
    stack: list[tuple[object, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, depth)
            stack.extend((item, depth + 1) for item in value)
    return deepest


def decode_review(body: bytes) -> AdmissionRequest:
    if not body:
        raise CallRefused(400, "request body is empty: expected an AdmissionReview")
    # Counted over the brackets, confirmed on the parsed document (strings may hold some).
    suspicious = exceeds_bracket_depth(body, MAX_JSON_DEPTH)
    try:
        document = load_json(body)
    except json.JSONDecodeError as err:
        if suspicious:  # the parser's own depth limit, past ours
            raise CallRefused(
                400, f"request body nests deeper than {MAX_JSON_DEPTH} levels"
            ) from None
        raise CallRefused(
            400, f"request body is not JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from None
    if suspicious and _depth(document) > MAX_JSON_DEPTH:
        raise CallRefused(400, f"request body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return parse_review(document)
    except ReviewInvalid as err:
        raise CallRefused(400, f"not an AdmissionReview v1: {err}") from None


def carries_annotation(request: AdmissionRequest, key: str) -> bool:
    """Whether the object (or the old one) has annotation ``key``, whatever its value."""
    for member in ("object", "oldObject"):
        obj = request.get(member)
        metadata = obj.get("metadata") if isinstance(obj, dict) else None
        annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
        if isinstance(annotations, dict) and key in annotations:
            return True
    return False


def create_app(parts: ServerParts) -> FastAPI:
    app = FastAPI(
        title="rollout-webhook",
        lifespan=_lifespan(parts),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(CallRefused)
    async def refused(request: Request, exc: CallRefused) -> Response:
        parts.metrics.rejected_calls.labels(str(exc.status)).inc()
        return JSONResponse({"message": exc.message}, status_code=exc.status)

    _add_admission_endpoints(app, parts)
    _add_health_endpoints(app, parts)
    return app


def _lifespan(
    parts: ServerParts,
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """Run the background coroutines while the app is up; at shutdown, the shutdown steps
    first (the write worker drains while the loop still runs), then cancel them."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(run()) for run in parts.background]
        try:
            yield
        finally:
            for shutdown in parts.on_shutdown:
                await shutdown()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    return lifespan


def _add_admission_endpoints(app: FastAPI, parts: ServerParts) -> None:
    """/validate: the HTTP guard, the budget, then the engine. ``POST /mutate`` is answered
    in front of the app, with the same guard (``webhook.server.mutate_route``)."""
    engine = parts.engine
    settings = engine.settings
    override_annotation = Keys(settings.label_prefix).rollout

    async def admission(
        request: Request,
        endpoint: str,
        handle: Callable[[AdmissionRequest, float, float], Awaitable[dict[str, object]]],
    ) -> Response:
        started = parts.monotonic()
        budget = budget_from_query(
            request.query_params.get("timeout"), settings.default_timeout_seconds
        )
        body = await read_body(request, settings.max_body_bytes)
        # One deadline for the decode and the decision, kept even when they run on the
        # heavy lane (cpu.py): a request is answered at its deadline whatever the lane does.
        deadline = asyncio.get_running_loop().time() + budget
        if len(body) > INLINE_BODY_BYTES:
            mark_heavy(True)
            try:
                async with asyncio.timeout_at(deadline):
                    review = await run_bounded(decode_review, body)
            except TimeoutError:
                raise CallRefused(503, f"request body not decoded within {budget:.3g}s") from None
        else:
            review = decode_review(body)  # a few milliseconds at most: not worth a hop
        # The override annotation is YAML to parse and a Rollout to check: the lane's too.
        # (Looked up in the decoded object: the raw body may spell the key with escapes.)
        mark_heavy(
            endpoint == "validate"
            or len(body) > INLINE_BODY_BYTES
            or carries_annotation(review, override_annotation)
        )
        del body
        with admission_context(review):  # every line logged meanwhile names the request
            try:
                # A deadline on this task, not a task of its own per request (wait_for's).
                async with asyncio.timeout_at(deadline):
                    response = await handle(review, started, budget)
            except TimeoutError:
                problem = f"no decision within {budget:.3g}s"
                response = dict(await engine.failure(review, endpoint, problem, started))
            except Exception as err:
                log.exception("%s failed for request %s", endpoint, review["uid"])
                response = dict(await engine.failure(review, endpoint, type(err).__name__, started))
            log.debug("admission decided: %s", decision_of(response))
        return JSONResponse(review_response(response))  # type: ignore[arg-type]

    async def validate_handler(
        review: AdmissionRequest, started: float, budget: float
    ) -> dict[str, object]:
        return dict(await engine.validate(review, started=started, budget=budget))

    @app.post("/validate")
    async def validate(request: Request) -> Response:
        return await admission(request, "validate", validate_handler)


def create_health_app(parts: ServerParts) -> FastAPI:
    """/healthz, /readyz and /metrics alone: the app of the health port."""
    app = FastAPI(title="rollout-webhook health", docs_url=None, redoc_url=None, openapi_url=None)
    _add_health_endpoints(app, parts)
    return app


def _add_health_endpoints(app: FastAPI, parts: ServerParts) -> None:
    """/healthz (the process answers), /readyz (it can decide) and /metrics."""

    @app.get("/healthz")
    async def healthz() -> Response:
        return PlainTextResponse("ok\n")

    @app.get("/readyz")
    async def readyz() -> Response:
        missing = [
            what
            for what, ok in (
                ("certificate", parts.certificate_loaded()),
                ("policy", parts.policy_loaded()),
                ("caches", parts.caches_synced()),
            )
            if not ok
        ]
        if missing:
            return PlainTextResponse(f"not ready: {', '.join(missing)}\n", status_code=503)
        detail = parts.policy_detail()
        return PlainTextResponse("ready\n" if detail is None else f"ready; {detail}\n")

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(parts.metrics.exposition(), media_type=CONTENT_TYPE)
