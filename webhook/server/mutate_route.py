"""``POST /mutate`` answered on the ASGI interface itself, in front of the FastAPI app.

Every Deployment, HPA, route and scale the API server sends comes here, so this one
route skips the framework: FastAPI's middleware (error, telemetry, body limit, exception
and exit-stack layers, each wrapping ``receive`` and ``send``), its routing and its
``Request`` and ``JSONResponse`` objects make a no-op answer cost half again what it costs
here (1.03 M instructions against 0.68 M, docs/benchmarks.md). Everything else,
``/validate`` and the health endpoints included, goes on to the app unchanged.

The route keeps the app's guard and answers exactly as the app's endpoints do: the body
limit (Content-Length first, then counted as it arrives), the API server's ``?timeout=``,
the JSON and AdmissionReview checks of ``decode_review``, one-line 4xx messages counted in
``rejected_calls``, the request's deadline, an engine failure turned into the fail-open or
fail-closed answer, and the audit record on disk before the answer leaves.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

from webhook.core.keys import Keys
from webhook.core.review import AdmissionRequest, AdmissionResponse, encode_review
from webhook.server.app import (
    CallRefused,
    ServerParts,
    budget_from_query,
    carries_annotation,
    decode_review,
)
from webhook.server.cpu import INLINE_BODY_BYTES, mark_heavy, run_bounded
from webhook.server.logs import admission_context, decision_of

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PATH = "/mutate"
_JSON = (b"content-type", b"application/json")


class ClientGone(Exception):
    """The peer disconnected before its whole request arrived: nothing to answer."""


def timeout_query(query: bytes) -> str | None:
    """The ``timeout`` parameter of a query string (the last one, as the app reads it)."""
    if b"timeout" not in query:
        return None
    found = None
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if key == "timeout":
            found = value
    return found


def declared_length(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return bytes(value)
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes without reading them all."""
    declared = declared_length(scope)
    if declared is not None:
        try:
            too_big = int(declared) > limit
        except ValueError:
            raise CallRefused(400, "Content-Length is not a number") from None
        if too_big:
            raise CallRefused(413, f"request body is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise CallRefused(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_json(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def closing(send: Send) -> Send:
    """``send`` with ``Connection: close`` added to the answer's headers: the client
    learns with the answer that the connection ends, instead of finding it closed under
    its next request."""

    async def send_closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [h for h in message.get("headers", []) if h[0].lower() != b"connection"]
            message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await send(message)

    return send_closing


class MutateRoute:
    """The ASGI app ``serve`` runs: ``POST /mutate`` here, anything else to ``app``."""

    def __init__(self, app: ASGIApp, parts: ServerParts) -> None:
        self.app = app
        self.parts = parts
        self.engine = parts.engine

    draining = False
    """Set at SIGTERM (runner.BoundedServer): every answer closes its connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.draining and scope["type"] == "http":
            send = closing(send)
        if scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST":
            await self.mutate(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def mutate(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = self.parts.monotonic()
        settings = self.engine.settings
        try:
            budget = budget_from_query(
                timeout_query(scope["query_string"]), settings.default_timeout_seconds
            )
            # One deadline for the decode and the decision, kept even when they run on the
            # heavy lane (cpu.py): a request is answered at its deadline whatever the lane does.
            deadline = asyncio.get_running_loop().time() + budget
            review = await self.decoded(
                await read_body(scope, receive, settings.max_body_bytes), budget, deadline
            )
        except CallRefused as refused:
            self.parts.metrics.rejected_calls.labels(str(refused.status)).inc()
            await send_json(send, refused.status, orjson.dumps({"message": refused.message}))
            return
        except ClientGone:
            return
        response = await self.decide(review, started, budget, deadline)
        await send_json(send, 200, encode_review(response))

    @functools.cached_property
    def override_annotation(self) -> str:
        return Keys(self.engine.settings.label_prefix).rollout

    async def decoded(self, body: bytes, budget: float, deadline: float) -> AdmissionRequest:
        """The review, decoded on the heavy lane when its body is large; marks the request
        heavy (its plan on the lane too) when it is large or carries the override."""
        if len(body) > INLINE_BODY_BYTES:
            mark_heavy(True)
            try:
                async with asyncio.timeout_at(deadline):
                    return await run_bounded(decode_review, body)
            except TimeoutError:
                raise CallRefused(503, f"request body not decoded within {budget:.3g}s") from None
        review = decode_review(body)  # a few milliseconds at most: not worth a hop
        # The override annotation is YAML to parse and a Rollout to check: the lane's too.
        # (Looked up in the decoded object: the raw body may spell the key with escapes.)
        mark_heavy(carries_annotation(review, self.override_annotation))
        return review

    async def decide(
        self, review: AdmissionRequest, started: float, budget: float, deadline: float
    ) -> AdmissionResponse:
        """The engine's answer within the budget; a failure answered as the policy says."""
        engine = self.engine
        with admission_context(review):  # every line logged meanwhile names the request
            try:
                # A deadline on this task, not a task of its own per request (wait_for's).
                async with asyncio.timeout_at(deadline):
                    response = await engine.mutate(review, started=started, budget=budget)
            except TimeoutError:
                problem = f"no decision within {budget:.3g}s"
                response = await engine.failure(review, "mutate", problem, started)
            except Exception as err:
                log.exception("mutate failed for request %s", review["uid"])
                response = await engine.failure(review, "mutate", type(err).__name__, started)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("admission decided: %s", decision_of(response))
        return response
