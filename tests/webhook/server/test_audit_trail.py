"""The audit trail: a file sink flushed per record, one chain across restarts, threads and
crashes, and the waiters on the event loop."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.builders import audit_lines, decision_facts, recovered_audit_lines
from webhook.core.audit import (
    RECORD_KIND,
    RECOVERY_KIND,
    WRITES_KIND,
    TornLine,
    record_hash,
    verify_chain,
)
from webhook.server.audit_trail import AuditTrail

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


def test_file_sink_flushes_each_record_and_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    out = io.StringIO()
    first = AuditTrail(file=path, stream=out, clock=lambda: T0)
    first.record_nowait(decision_facts("a"))
    first.record_nowait(decision_facts("b"))
    assert first.flush()
    # Flushed per record: readable before the sink is closed.
    assert len(path.read_text().splitlines()) == 2
    first.close()
    second = AuditTrail(file=path, stream=io.StringIO(), clock=lambda: T0)
    second.record_nowait(decision_facts("c"))
    second.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line)["uid"] for line in lines] == ["a", "b", "c"]
    assert verify_chain(lines).broken is None
    assert out.getvalue().splitlines() == lines[:2]


def test_after_a_crash_the_chain_continues_from_a_recovery_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = audit_lines(decision_facts("a"), decision_facts("b"))
    path.write_text(lines[0] + "\n" + lines[1][:30])  # the crash
    sink = AuditTrail(file=path, stream=io.StringIO(), clock=lambda: T0)
    sink.record_nowait(decision_facts("c"))
    sink.close()
    written = path.read_text().splitlines()
    assert written[1] == lines[1][:30]  # the torn line stays visible
    recovery = json.loads(written[2])
    assert recovery["kind"] == RECOVERY_KIND
    assert recovery["torn"]["line"] == 2
    assert recovery["prev"] == record_hash(json.loads(lines[0]))
    report = verify_chain(written)
    assert report.broken is None
    assert report.torn == (TornLine(2, 3),)
    assert [json.loads(line).get("uid") for line in written[3:]] == ["c"]


@pytest.mark.parametrize(
    ("forge", "line", "message"),
    [
        # A record removed before the torn line: the recovery record no longer links.
        (lambda w: [w[0], w[2], w[3], w[4]], 2, "prev hash does not match"),
        # A torn line made up later: the recovery record names another line.
        (lambda w: [w[0], w[1], w[2], '{"kind": "Admiss', w[3], w[4]], 4, "no recovery record"),
        # The torn text swapped: the recovery record carries the hash of the real one.
        (lambda w: [*w[:3], w[3][:20], w[4]], 4, "no recovery record"),
    ],
)
def test_a_forged_recovery_is_a_break(tmp_path: Path, forge: Any, line: int, message: str) -> None:
    written = recovered_audit_lines(tmp_path)
    assert verify_chain(written).broken is None
    report = verify_chain(forge(written))
    assert report.broken is not None
    assert report.broken.line == line
    assert message in report.broken.message


CRASH = """
import datetime as dt, os, sys
from pathlib import Path
from tests.builders import decision_facts
from webhook.server.audit_trail import AuditTrail

import asyncio

trail = AuditTrail(file=Path(sys.argv[1]), stream=open(os.devnull, "w"))


async def answer(uid):
    await trail.record_on_loop(decision_facts(uid))  # what the server awaits before answering


for uid in ("a", "b", "c"):
    asyncio.run(answer(uid))
os._exit(9)  # a crash: no close, no flush, no atexit
"""


def test_a_record_awaited_before_the_answer_survives_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    repo = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-c", CRASH, str(path)], cwd=repo, capture_output=True, timeout=60
    )
    assert done.returncode == 9, done.stderr
    lines = path.read_text().splitlines()
    assert [json.loads(line)["uid"] for line in lines] == ["a", "b", "c"]
    assert verify_chain(lines).broken is None


def test_records_from_many_threads_share_commits_and_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = AuditTrail(file=path, stream=io.StringIO(), clock=lambda: T0)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: sink.record_nowait(decision_facts(f"u{i}")), range(200)))
    sink.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 200
    assert verify_chain(lines).broken is None
    assert {json.loads(line)["uid"] for line in lines} == {f"u{i}" for i in range(200)}


def test_waiters_on_the_event_loop_complete_once_their_records_are_on_disk(
    tmp_path: Path,
) -> None:
    import asyncio

    path = tmp_path / "audit.jsonl"
    sink = AuditTrail(file=path, stream=io.StringIO(), clock=lambda: T0)

    async def admit(uid: str) -> int:
        await sink.record_on_loop(decision_facts(uid))
        # The answer may leave only now: the record is already in the file.
        return sum(json.loads(line)["uid"] == uid for line in path.read_text().splitlines())

    async def many() -> list[int]:
        return await asyncio.gather(*(admit(f"u{i}") for i in range(100)))

    assert asyncio.run(many()) == [1] * 100
    sink.record_nowait(decision_facts("after"), kind=WRITES_KIND)
    sink.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 101 and json.loads(lines[-1])["kind"] == WRITES_KIND
    assert verify_chain(lines).broken is None


def test_a_waiter_that_gave_up_does_not_stop_the_trail(tmp_path: Path) -> None:
    import asyncio

    sink = AuditTrail(stream=io.StringIO(), clock=lambda: T0)
    sink._queue.put(("not facts", T0, RECORD_KIND, None))  # a record that cannot be built

    async def run() -> None:
        waiting = sink.record_on_loop(decision_facts("late"))
        waiting.cancel()  # the request's budget ran out: it answered without the record
        await sink.record_on_loop(decision_facts("next"))

    asyncio.run(asyncio.wait_for(run(), 10))
    sink.close()
    assert sink.written == 2
