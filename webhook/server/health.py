"""The health port: /healthz, /readyz and /metrics on a server of their own.

The admission port takes at most ``max_connections`` (503 once all of them are answering
requests), so whoever can keep it that busy, or a burst of real admissions, would also fail
the kubelet's probes there: the pod restarted for being busy, or taken out of its Service
for being attacked. The health port has its own listener, its own thread and event loop,
and its own connection limit, so nothing that reaches the admission port can starve it.
It speaks plain HTTP, like the probes and most Prometheus scrapers expect, and serves
nothing but state that is already public to the pod's network (readiness, counters).
"""

from __future__ import annotations

import logging
import threading

import uvicorn
from fastapi import FastAPI

from webhook.server.connections import guarded_h11

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 32
"""The kubelet and a scraper or two: a handful of connections at a time."""


class HealthServer:
    """Runs the health app on ``host:port`` in a thread of its own."""

    def __init__(self, app: FastAPI, *, host: str, port: int, read_timeout: float) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            # Past the limit the longest-idle connection makes room (connections.py): idle
            # connections to this port cannot keep the kubelet's probes out either.
            http=guarded_h11(read_timeout, MAX_CONNECTIONS),
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        # Not the main thread: uvicorn installs no signal handlers (the admission
        # server's own handling of SIGTERM stops both).
        self._thread = threading.Thread(target=self._server.run, name="health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def started(self) -> bool:
        return bool(self._server.started)

    def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("the health server did not stop within %gs", timeout)
