"""What a connection may hold, and for how long: the admission port's defences.

Anything that reaches the port may be hostile or slow, and the API server's own calls must
still be answered. uvicorn alone bounds none of this: a TLS handshake may take asyncio's
default of 60 s, nothing bounds the time before the first request or a request whose
headers or body trickle in, its ``limit_concurrency`` counts idle connections (a few
hundred connections that send nothing turn every request into a 503, and each 503 closes
the API server's connection, so the next call pays a new handshake), and each TLS
connection holds a 256 KiB read buffer (asyncio's), so a thousand of them outgrow the
pod's memory limit. Here:

- **Handshake**: the server's TLS handshakes must finish within a deadline, and a TLS
  close waits briefly for the peer's close_notify (asyncio waits 30 s by default).
- **Reading**: each request must be read whole within ``read_timeout`` of the connection's
  start or of the previous answer; a connection that sends nothing or trickles is aborted.
- **Connections**: at most ``max_connections`` are open after their handshake. Past it,
  the connection that has waited longest without a request being answered on it (idle,
  or still sending one) is closed to make room: idle or slow connections cannot keep the
  API server out, and its busy connections are never taken. Only when every connection is
  answering a request is the new one refused (a 503, then closed), which is overload.
- **Memory**: the TLS read buffer is 16 KiB (one TLS record), not 256 KiB: a connection
  costs tens of KiB, not hundreds (measured in docs/benchmarks.md, "Overload").

Once a request is read, the engine's own budget (the ``?timeout=`` the API server gives)
bounds the answer.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

# A request is still being read while the peer is here: no request yet (IDLE), or its
# body not complete (SEND_BODY).
_READING = (h11.IDLE, h11.SEND_BODY)

TLS_READ_BUFFER = 16 * 1024 + 512
"""Bytes asyncio reads from a TLS socket at once: a full TLS record (16 KiB of data and
its overhead). asyncio's default, 256 KiB a connection, is allocated (and touched) for
every connection from its first byte, handshake included."""

TLS_CLOSE_TIMEOUT = 1.0
"""Seconds a TLS close waits for the peer's close_notify before the socket is dropped."""


class ConnectionTable:
    """The open connections of one server, the longest without an answered request first."""

    def __init__(self, limit: int | None, on_close: Callable[[str], None] | None = None) -> None:
        self.limit = limit
        self._open: OrderedDict[GuardedH11, None] = OrderedDict()
        self.on_close = on_close or (lambda reason: None)
        """Told why the server closed a connection: made_room, refused, read_timeout."""

    def __len__(self) -> int:
        return len(self._open)

    def answering(self) -> int:
        """How many connections are answering a request now."""
        return sum(1 for connection in self._open if connection.answering)

    def opened(self, connection: GuardedH11) -> bool:
        """Register a connection whose handshake is done; False when it must be refused."""
        self._open[connection] = None
        if self.limit is None or len(self._open) <= self.limit:
            return True
        for candidate in self._open:
            if candidate is not connection and not candidate.answering:
                # Out of the table now: the abort's connection_lost comes a turn later.
                del self._open[candidate]
                self.on_close("made_room")
                candidate.evict()
                return True
        self._open.pop(connection)
        self.on_close("refused")
        return False

    def touched(self, connection: GuardedH11) -> None:
        if connection in self._open:
            self._open.move_to_end(connection)

    def closed(self, connection: GuardedH11) -> None:
        self._open.pop(connection, None)


class GuardedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a read deadline per request and a bounded table of
    connections (``ConnectionTable``)."""

    read_timeout: float = 5.0
    table: ConnectionTable | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None
        self._seen_cycle: object = None

    @property
    def answering(self) -> bool:
        """A whole request is read and its answer not yet sent: the connection is busy."""
        cycle = self.cycle
        return (
            cycle is not None
            and not cycle.response_complete
            and self.conn.their_state is not h11.SEND_BODY
        )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.table is not None and not self.table.opened(self):
            # Every connection is answering a request: overload. uvicorn answers the first
            # request 503 and closes, and the API server applies the failure policy.
            log.warning("%d connections are all answering requests: refusing one", len(self.table))
            self.limit_concurrency = 0
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not self._seen_cycle:  # a new request: this connection is in use
            self._seen_cycle = self.cycle
            if self.table is not None:
                self.table.touched(self)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.table is not None:
            self.table.touched(self)
        self._arm()  # the next request on this connection gets the same time

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.table is not None:
            self.table.closed(self)
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """At shutdown, a connection not answering a request is dropped at once: a TLS
        close would wait for a close_notify that a hostile peer never sends."""
        if self.answering:
            super().shutdown()
        else:
            self.transport.abort()

    def evict(self) -> None:
        self._disarm()
        self.transport.abort()

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
            if self.table is not None:
                self.table.on_close("read_timeout")
            # abort, not close: a TLS close waits for the peer's close_notify, which a
            # peer that sends nothing never sends, and the connection would keep its
            # place meanwhile.
            self.transport.abort()


def guarded_h11(
    read_timeout: float,
    max_connections: int | None = None,
    on_close: Callable[[str], None] | None = None,
) -> type[GuardedH11]:
    """The protocol class for uvicorn's ``http=``: this read timeout, and a table of its
    own holding at most ``max_connections`` (none: no limit here)."""
    table = ConnectionTable(max_connections, on_close)
    attributes = {"read_timeout": read_timeout, "table": table}
    return type("GuardedH11", (GuardedH11,), attributes)


class GuardedLoop(asyncio.SelectorEventLoop):
    """asyncio's event loop whose TLS servers have a handshake deadline and a short close."""

    def __init__(self, handshake_timeout: float) -> None:
        super().__init__()
        self.handshake_timeout = handshake_timeout

    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
        # uvicorn passes neither: asyncio's defaults are 60 s and 30 s.
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_handshake_timeout", self.handshake_timeout)
            kwargs.setdefault("ssl_shutdown_timeout", TLS_CLOSE_TIMEOUT)
        return await super().create_server(*args, **kwargs)


def guarded_loop_factory(handshake_timeout: float) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop `serve` runs on; also sets the TLS read buffer of the process.

    The buffer size is a class attribute of asyncio's TLS protocol, so it is set for the
    process: `serve`'s process has no other asyncio TLS connection (the Kubernetes client
    is synchronous).
    """
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER

    def factory() -> asyncio.AbstractEventLoop:
        return GuardedLoop(handshake_timeout)

    return factory
