"""Connections that do not send their request in time are closed.

uvicorn closes a keep-alive connection that stays idle after a response, but nothing
bounds the time before the first request, nor a request whose headers or body trickle in:
a connection that completes its TLS handshake and then sends nothing holds a place under
``limit_concurrency`` for ever, and a few hundred of them turn every request into a 503.
The API server sends a review at once (its whole body in one write, after a handshake it
has cached), so a connection that has not delivered a whole request within the read
timeout is not the API server, or is one whose call has long timed out: it is closed.

Only reading is bounded here; once a request is read, the engine's own budget (the
``?timeout=`` the API server gives) bounds the answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

# A request is still being read while the peer is here: no request yet (IDLE), or its
# body not complete (SEND_BODY).
_READING = (h11.IDLE, h11.SEND_BODY)


class ReadGuardedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for reading each request."""

    read_timeout: float = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request on this connection gets the same time

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.conn.their_state in _READING:
            # abort, not close: a TLS close waits (up to 30 s) for the peer's close_notify,
            # which a peer that sends nothing never sends, and the connection would keep
            # its place meanwhile.
            self.transport.abort()


def read_guarded_h11(read_timeout: float) -> type[H11Protocol]:
    """The protocol class for uvicorn's ``http=`` with this read timeout."""
    return type("ReadGuardedH11", (ReadGuardedH11,), {"read_timeout": read_timeout})
