"""The audit sinks: stdout and, optionally, a file; one JSON line per decision.

Records are handed to one writer thread through a queue, so the event loop never
waits on a disk. The thread links each record to the one before it (the hash chain of
``webhook.core.audit``) and flushes every record as it writes it (the file is also
fsync'ed), so a crash loses nothing that was handed over before it. On restart the file
is continued: the first new record links to the last one already there.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from webhook import __version__
from webhook.core.audit import DecisionFacts, build_record, canonical_json, last_hash, record_hash

log = logging.getLogger(__name__)

_STOP = object()


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AuditTrail:
    """Thread-safe: ``record`` may be called from the event loop or any worker thread."""

    def __init__(
        self,
        *,
        file: Path | None = None,
        stream: IO[str] | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
        version: str = __version__,
    ) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._clock = clock
        self._version = version
        self._file: IO[str] | None = None
        self._prev = "0" * 64
        if file is not None:
            self._prev = self._open(file)
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="audit-trail", daemon=True)
        self._thread.start()
        self.written = 0

    def _open(self, path: Path) -> str:
        prev = "0" * 64
        if path.exists():
            with path.open(encoding="utf-8") as existing:
                prev = last_hash(existing)
            if path.stat().st_size and not _ends_with_newline(path):
                # A crash tore the last line: start on a fresh line, the torn one stays
                # visible to `audit --verify`.
                with path.open("a", encoding="utf-8") as handle:
                    handle.write("\n")
        self._file = path.open("a", encoding="utf-8")
        return prev

    def record(self, facts: DecisionFacts) -> None:
        """Queue a decision; the time is taken now, the link when it is written."""
        self._queue.put((facts, self._clock()))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                assert isinstance(item, tuple)
                facts: DecisionFacts = item[0]
                at: dt.datetime = item[1]
                self._write(build_record(facts, at=at, prev=self._prev, version=self._version))
            except Exception:
                # An audit sink that dies silently would be worse than a loud one.
                log.exception("audit record not written")
            finally:
                self._queue.task_done()

    def _write(self, record: dict[str, Any]) -> None:
        line = canonical_json(record) + "\n"
        if self._file is not None:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
        self._stream.write(line)
        self._stream.flush()
        self._prev = record_hash(record)
        self.written += 1

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued record is written (tests, shutdown)."""
        done = threading.Event()

        def waiter() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=waiter, daemon=True).start()
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._file is not None:
            self._file.close()
            self._file = None


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"
