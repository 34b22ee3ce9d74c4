"""``POST /mutate`` in front of the app: the query, a peer that leaves, what goes on to the app."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from webhook.server.app import CallRefused
from webhook.server.mutate_route import ClientGone, MutateRoute, read_body, timeout_query


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"", None),
        (b"dryRun=true", None),
        (b"timeout=10s", "10s"),
        (b"timeout=1s&timeout=3s", "3s"),  # the last one, as the app's query parsing reads it
        (b"timeout=", ""),
        (b"x=1&timeout=2s%20", "2s "),
    ],
)
def test_the_timeout_query_is_read_as_the_app_reads_it(query: bytes, expected: str | None) -> None:
    assert timeout_query(query) == expected


def _receive(*messages: dict[str, Any]) -> Any:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    return receive


def test_a_body_in_chunks_is_joined_and_a_peer_that_leaves_gets_nothing() -> None:
    scope: dict[str, Any] = {"headers": []}
    chunks = _receive(
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"c", "more_body": False},
    )
    assert asyncio.run(read_body(scope, chunks, 10)) == b"abc"
    gone = _receive(
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.disconnect"},
    )
    with pytest.raises(ClientGone):
        asyncio.run(read_body(scope, gone, 10))


@pytest.mark.parametrize(("length", "status"), [(b"11", 413), (b"ten", 400), (b"-", 400)])
def test_a_content_length_over_the_limit_or_not_a_number_is_refused_unread(
    length: bytes, status: int
) -> None:
    scope: dict[str, Any] = {"headers": [(b"content-length", length)]}

    async def never() -> dict[str, Any]:
        raise AssertionError("the body must not be read")

    with pytest.raises(CallRefused) as refused:
        asyncio.run(read_body(scope, never, 10))
    assert refused.value.status == status


@pytest.mark.parametrize(
    "scope",
    [
        {"type": "http", "path": "/mutate", "method": "GET"},
        {"type": "http", "path": "/validate", "method": "POST"},
        {"type": "lifespan"},
    ],
)
def test_anything_but_post_mutate_goes_on_to_the_app(scope: dict[str, Any]) -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)

    parts = SimpleNamespace(engine=None)  # never reached: nothing here is POST /mutate
    route = MutateRoute(app, parts)  # type: ignore[arg-type]
    asyncio.run(route(scope, _receive(), _receive()))
    assert seen == [scope]
