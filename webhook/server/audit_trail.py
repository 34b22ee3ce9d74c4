"""The audit sinks: stdout and, optionally, a file; one JSON line per decision.

Records are handed to one writer thread through a queue, so the event loop never
waits on a disk. The thread links each record to the one before it (the hash chain of
``webhook.core.audit``), writes, flushes and fsyncs, and only then completes the
record's future; records that queue up meanwhile share one fsync (group commit). The
admission path awaits that future before it answers, so nothing that was answered is
lost in a crash. On restart the file is continued: the first new record links to the
last one already there.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

from webhook import __version__
from webhook.core.audit import (
    GENESIS,
    RECORD_KIND,
    DecisionFacts,
    ResumePoint,
    build_record,
    build_recovery,
    canonical_json,
    line_hash,
    resume_point,
)

log = logging.getLogger(__name__)

_STOP = object()


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    """On the event loop: complete the waiters of one written batch (a waiter whose
    request stopped waiting is already cancelled and left alone)."""
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AuditSink(Protocol):
    """What the admission engine and the write worker need of the audit trail."""

    def record_on_loop(self, facts: DecisionFacts, *, kind: str = ...) -> asyncio.Future[None]:
        """Queue a record (on the event loop); the future completes once it is written."""
        ...

    def record_nowait(self, facts: DecisionFacts, *, kind: str = ...) -> None:
        """Queue a record (from any thread) and wait for nothing."""
        ...


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
        self._prev = GENESIS
        if file is not None:
            self._prev = self._open(file)
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="audit-trail", daemon=True)
        self._thread.start()
        self.written = 0

    def _open(self, path: Path) -> str:
        prev = GENESIS
        if path.exists():
            with path.open(encoding="utf-8") as existing:
                resume = resume_point(existing)
            prev = resume.prev
            if path.stat().st_size and not _ends_with_newline(path):
                # A crash tore the last line: start on a fresh line; the torn one stays
                # visible to `audit --verify`.
                with path.open("a", encoding="utf-8") as handle:
                    handle.write("\n")
            if resume.torn is not None:
                prev = self._recover(path, resume)
        self._file = path.open("a", encoding="utf-8")
        return prev

    def _recover(self, path: Path, resume: ResumePoint) -> str:
        """Append the recovery record for a torn last line; returns its hash."""
        assert resume.torn is not None
        number, text = resume.torn
        record = build_recovery(
            torn_line=number,
            torn_text=text,
            at=self._clock(),
            prev=resume.prev,
            version=self._version,
        )
        line = canonical_json(record)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        log.warning(
            "audit file %s: line %d was torn by a crash (%d bytes); recovery record written",
            path,
            number,
            len(text.encode("utf-8")),
        )
        return line_hash(line)

    def record_on_loop(
        self, facts: DecisionFacts, *, kind: str = RECORD_KIND
    ) -> asyncio.Future[None]:
        """Queue a record; the time is taken now, the link when it is written.

        The future, the event loop's own, completes once the record is on disk (and on
        standard output): the admission path waits for it before answering, so a decision
        whose answer left the process is never missing from the trail, whatever happens
        next. Every waiter of a written batch is woken by one call into its loop (a
        thread-safe future per record, chained to the loop, cost more than building and
        writing the record)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put((facts, self._clock(), kind, done))
        return done

    def record_nowait(self, facts: DecisionFacts, *, kind: str = RECORD_KIND) -> None:
        """Queue a record and wait for nothing (records about writes already made: the
        reconciler's, and what became of an admission's writes)."""
        self._queue.put((facts, self._clock(), kind, None))

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            # Group commit: whatever queued up meanwhile shares one flush and one fsync.
            while len(batch) < 256:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in batch)
            entries = [item for item in batch if item is not _STOP]
            try:
                self._write_batch(entries)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if stop:
                return

    def _write_batch(self, entries: list[object]) -> None:
        lines: list[str] = []
        futures: list[asyncio.Future[None] | None] = []
        for entry in entries:
            assert isinstance(entry, tuple)
            facts, at, kind, done = entry
            try:
                record = build_record(
                    facts, at=at, prev=self._prev, version=self._version, kind=kind
                )
            except Exception as err:
                log.exception("audit record not built")
                self._complete([done], err)
                continue
            line = canonical_json(record)
            lines.append(line + "\n")
            self._prev = line_hash(line)
            futures.append(done)
        try:
            text = "".join(lines)
            if self._file is not None and text:
                self._file.write(text)
                self._file.flush()
                os.fsync(self._file.fileno())
            self._stream.write(text)
            self._stream.flush()
        except Exception as err:
            # An audit sink that fails silently would be worse than a loud one.
            log.exception("%d audit record(s) not written", len(futures))
            self._complete(futures, err)
            return
        self.written += len(futures)
        self._complete(futures, None)

    @staticmethod
    def _complete(futures: list[asyncio.Future[None] | None], error: BaseException | None) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for done in futures:
            if done is not None:  # record_nowait's records have nobody waiting
                by_loop.setdefault(done.get_loop(), []).append(done)
        for loop, waiting in by_loop.items():
            # A loop closed meanwhile has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, waiting, error)

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
