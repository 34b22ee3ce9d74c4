"""Steady HTTP traffic to a Service, every answer counted by the version that gave it.

One thread sends GETs to the Service's ClusterIP from the host, a new connection each (so
kube-proxy picks an endpoint for each), and records each answer's version or the failure.
`counts(since, until)` counts what was answered between two moments (one canary step).
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

from tests.node.workloads import ask

FAILED = "failed"


@dataclass
class Counts:
    answers: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.answers.values()) + len(self.failures)

    def share(self, version: str) -> float:
        answered = sum(self.answers.values())
        return self.answers[version] / answered if answered else 0.0

    def describe(self) -> str:
        versions = ", ".join(f"{v}: {n}" for v, n in sorted(self.answers.items()))
        return f"{self.total} requests ({versions}; {len(self.failures)} failed)"


@dataclass
class Traffic:
    url: str
    interval: float = 0.02
    _log: list[tuple[float, str, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Traffic:
        self._thread = threading.Thread(target=self._loop, name="traffic", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                outcome, detail = ask(self.url, timeout=3.0)["version"], ""
            except (OSError, ValueError, KeyError) as error:
                outcome, detail = FAILED, f"{type(error).__name__}: {error}"
            with self._lock:
                self._log.append((time.monotonic(), outcome, detail))
            time.sleep(self.interval)

    def counts(self, since: float = 0.0, until: float = float("inf")) -> Counts:
        counts = Counts()
        with self._lock:
            entries = [e for e in self._log if since <= e[0] < until]
        for _, outcome, detail in entries:
            if outcome == FAILED:
                counts.failures.append(detail)
            else:
                counts.answers[outcome] += 1
        return counts

    def wait_for_requests(self, count: int, since: float, timeout: float = 120.0) -> Counts:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = self.counts(since)
            if counts.total >= count:
                return counts
            time.sleep(0.2)
        raise AssertionError(f"{count} requests not sent in {timeout:.0f} s")
