"""The audit record, its hash chain, the file sink and `rollout-webhook audit`."""

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

from webhook.cli.main import main
from webhook.core.audit import (
    GENESIS,
    RECORD_KIND,
    RECOVERY_KIND,
    WRITES_KIND,
    ChangeOutcome,
    DecisionFacts,
    TornLine,
    build_record,
    canonical_json,
    last_hash,
    record_hash,
    verify_chain,
)
from webhook.server.audit_trail import AuditTrail

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
PATCH = [
    {
        "op": "add",
        "path": "/metadata/annotations",
        "value": {"rollout-webhook.io/rollout-name": "web"},
    },
    {"op": "replace", "path": "/spec/replicas", "value": 0},
]


def facts(uid: str, **overrides: Any) -> DecisionFacts:
    values: dict[str, Any] = {
        "uid": uid,
        "user": "alice",
        "operation": "CREATE",
        "kind": "Deployment",
        "namespace": "shop",
        "name": "web",
        "dry_run": False,
        "decision": "convert",
        "reason": "opted in",
        "environment": "prod",
        "strategy": "canary",
        "policy_name": "rollout-system/rollout-webhook-policy",
        "policy_resource_version": "42",
        "policy_sha256": "ab" * 32,
        "patch": PATCH,
        "changes_wanted": (ChangeOutcome("Rollout", "shop", "web"),),
        "changes_made": (ChangeOutcome("Rollout", "shop", "web", result="applied"),),
        "warnings": ("no Service selects the pods",),
        "latency_seconds": 0.0021,
    }
    values.update(overrides)
    return DecisionFacts(**values)


def trail(*items: DecisionFacts | tuple[DecisionFacts, str]) -> list[str]:
    prev = GENESIS
    lines = []
    for i, entry in enumerate(items):
        item, kind = entry if isinstance(entry, tuple) else (entry, RECORD_KIND)
        at = T0 + dt.timedelta(minutes=i)
        record = build_record(item, at=at, prev=prev, version="0.1.0", kind=kind)
        lines.append(canonical_json(record))
        prev = record_hash(record)
    return lines


def test_record_carries_every_field() -> None:
    record = build_record(facts("u1"), at=T0, prev=GENESIS, version="0.1.0")
    assert record["time"] == "2030-01-01T12:00:00.000000Z"
    assert record["uid"] == "u1"
    assert record["policy"] == {
        "name": "rollout-system/rollout-webhook-policy",
        "resourceVersion": "42",
        "sha256": "ab" * 32,
    }
    assert record["patch"] == PATCH
    assert record["changes"]["made"][0]["result"] == "applied"
    assert record["latencyMs"] == 2.1
    assert record["version"] == "0.1.0"
    assert record["prev"] == GENESIS


def test_an_intact_chain_verifies() -> None:
    lines = trail(facts("a"), facts("b"), facts("c"))
    report = verify_chain(lines)
    assert report.broken is None
    assert report.records == 3
    assert report.last_hash == last_hash(lines)


@pytest.mark.parametrize(
    ("tamper", "line"),
    [
        (lambda lines: [lines[0], lines[1].replace('"convert"', '"skip"'), lines[2]], 3),
        (lambda lines: [lines[0], lines[2]], 2),  # a record removed
        (lambda lines: [lines[0], lines[0], lines[1], lines[2]], 2),  # a record repeated
        (lambda lines: [lines[0], lines[1][:40], lines[2]], 2),  # torn, no recovery record
        (
            lambda lines: [
                lines[0],
                lines[1].replace('"web"', '"web","name":"other"', 1),
                lines[2],
            ],
            2,
        ),
        (lambda lines: [lines[0], lines[1].replace(":", ": ", 1), lines[2]], 2),  # re-serialised
    ],
)
def test_tampering_names_the_first_broken_record(tamper: Any, line: int) -> None:
    lines = tamper(trail(facts("a"), facts("b"), facts("c")))
    report = verify_chain(lines)
    assert report.broken is not None
    assert report.broken.line == line


def test_file_sink_flushes_each_record_and_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    out = io.StringIO()
    first = AuditTrail(file=path, stream=out, clock=lambda: T0)
    first.record_nowait(facts("a"))
    first.record_nowait(facts("b"))
    assert first.flush()
    # Flushed per record: readable before the sink is closed.
    assert len(path.read_text().splitlines()) == 2
    first.close()
    second = AuditTrail(file=path, stream=io.StringIO(), clock=lambda: T0)
    second.record_nowait(facts("c"))
    second.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line)["uid"] for line in lines] == ["a", "b", "c"]
    assert verify_chain(lines).broken is None
    assert out.getvalue().splitlines() == lines[:2]


def test_a_torn_last_line_is_reported_not_a_break() -> None:
    lines = trail(facts("a"), facts("b"), facts("c"))
    report = verify_chain([lines[0], lines[1], lines[2][:40]])
    assert report.broken is None
    assert report.records == 2
    assert report.torn == (TornLine(3, None),)


def test_after_a_crash_the_chain_continues_from_a_recovery_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = trail(facts("a"), facts("b"))
    path.write_text(lines[0] + "\n" + lines[1][:30])  # the crash
    sink = AuditTrail(file=path, stream=io.StringIO(), clock=lambda: T0)
    sink.record_nowait(facts("c"))
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


def _recovered_trail(tmp_path: Path) -> list[str]:
    path = tmp_path / "audit.jsonl"
    lines = trail(facts("a"), facts("b"), facts("c"))
    path.write_text("\n".join(lines) + "\n" + lines[0][:25])
    AuditTrail(file=path, stream=io.StringIO(), clock=lambda: T0).close()
    return path.read_text().splitlines()


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
    written = _recovered_trail(tmp_path)
    assert verify_chain(written).broken is None
    report = verify_chain(forge(written))
    assert report.broken is not None
    assert report.broken.line == line
    assert message in report.broken.message


def test_a_duplicate_key_is_named() -> None:
    lines = trail(facts("a"), facts("b"))
    forged = lines[1][:-1] + ',"decision":"skip"}'
    report = verify_chain([lines[0], forged])
    assert report.broken is not None
    assert "duplicate key 'decision'" in report.broken.message


@pytest.fixture
def audit_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    pending = (ChangeOutcome("Rollout", "shop", "web", result="pending"),)
    items: list[DecisionFacts | tuple[DecisionFacts, str]] = [
        facts("u-a", changes_made=pending),
        facts("u-b", namespace="pay", name="api", decision="skip", environment=None),
        (facts("u-a"), WRITES_KIND),  # what became of u-a's writes
        facts("u-c", decision="refuse", dry_run=True, patch=()),
    ]
    path.write_text("\n".join(trail(*items)) + "\n")
    return path


def test_cli_table_and_filters(audit_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(audit_file)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "TIME",
        "OPERATION",
        "KIND",
        "OBJECT",
        "DECISION",
        "ENVIRONMENT",
        "STRATEGY",
        "USER",
    ]
    assert len(out) == 4
    assert "refuse (dry run)" in out[3]
    assert main(["audit", str(audit_file), "--namespace", "pay"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert "pay/api" in out[1]
    assert main(["audit", str(audit_file), "--decision", "convert", "--name", "web"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["audit", str(audit_file), "--since", "2030-01-01T12:01:00Z"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_cli_show_prints_the_patch_as_a_diff(
    audit_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", str(audit_file), "--show", "u-a"]) == 0
    out = capsys.readouterr().out
    assert "decision:     convert: opted in" in out
    assert "+ /metadata/annotations:" in out
    assert "+     rollout-webhook.io/rollout-name: web" in out
    assert "~ /spec/replicas: 0" in out
    assert "apply Rollout shop/web: applied" in out
    assert main(["audit", str(audit_file), "--show", "nope"]) == 1
    assert "no record with uid nope" in capsys.readouterr().err


def test_cli_verify(audit_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(audit_file), "--verify"]) == 0
    assert "4 record(s), chain intact" in capsys.readouterr().out
    lines = audit_file.read_text().splitlines()
    lines[1] = lines[1].replace('"pay"', '"prod"')
    audit_file.write_text("\n".join(lines) + "\n")
    assert main(["audit", str(audit_file), "--verify"]) == 1
    out = capsys.readouterr().out
    assert "chain broken at line 3 (uid u-a)" in out


def test_cli_verify_reports_torn_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text("\n".join(_recovered_trail(tmp_path)) + "\n")
    assert main(["audit", str(path), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "line 4 is torn (a crash); the chain continues from the recovery record at line 5" in out
    assert "4 record(s), chain intact" in out  # three decisions and the recovery record
    lines = trail(facts("a"), facts("b"))
    path.write_text(lines[0] + "\n" + lines[1][:50])
    assert main(["audit", str(path), "--verify"]) == 0
    assert "line 2 is torn (the writer stopped in mid-record" in capsys.readouterr().out


@pytest.mark.parametrize(
    "name",
    [
        "web\n2030-01-01 12:00:00  CREATE     Deployment  shop/forged  convert",
        "web\x1b[2J\x1b[31m",
        "web\u202eevil",
    ],
)
def test_cli_output_escapes_control_characters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text("\n".join(trail(facts("a", name=name, reason=f"opted in {name}"))) + "\n")
    assert main(["audit", str(path)]) == 0
    table = capsys.readouterr().out
    assert len(table.splitlines()) == 2
    assert "\x1b" not in table
    assert "\u202e" not in table
    assert main(["audit", str(path), "--show", "a"]) == 0
    shown = capsys.readouterr().out
    assert "\x1b" not in shown
    assert "\u202e" not in shown
    assert (
        "forged"
        not in "".join(line for line in shown.splitlines() if line.startswith("request"))[:0]
    )
    assert sum(line.startswith("2030-01-01 12:00:00") for line in shown.splitlines()) == 0


def test_cli_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(tmp_path / "missing.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "cannot read" in err
    path = tmp_path / "a.jsonl"
    path.write_text("")
    assert main(["audit", str(path), "--since", "yesterday"]) == 2
    assert "--since 'yesterday'" in capsys.readouterr().err


def test_log_lines_mixed_into_the_stream_are_not_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = trail(facts("a"), facts("b"))
    mixed = [
        "2030-01-01 12:00:00,000 INFO webhook.server.runner: serving",
        lines[0],
        "INFO:     Application startup complete.",
        lines[1],
    ]
    assert verify_chain(mixed).broken is None
    assert last_hash(mixed) == last_hash(lines)
    path = tmp_path / "logs.txt"
    path.write_text("\n".join(mixed) + "\n")
    assert main(["audit", str(path)]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 3
    assert captured.err == ""


CRASH = """
import datetime as dt, os, sys
from pathlib import Path
from tests.audit.test_audit import facts
from webhook.server.audit_trail import AuditTrail

import asyncio

trail = AuditTrail(file=Path(sys.argv[1]), stream=open(os.devnull, "w"))


async def answer(uid):
    await trail.record_on_loop(facts(uid))  # what the server awaits before answering


for uid in ("a", "b", "c"):
    asyncio.run(answer(uid))
os._exit(9)  # a crash: no close, no flush, no atexit
"""


def test_a_record_awaited_before_the_answer_survives_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    repo = Path(__file__).resolve().parents[2]
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
        list(pool.map(lambda i: sink.record_nowait(facts(f"u{i}")), range(200)))
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
        await sink.record_on_loop(facts(uid))
        # The answer may leave only now: the record is already in the file.
        return sum(json.loads(line)["uid"] == uid for line in path.read_text().splitlines())

    async def many() -> list[int]:
        return await asyncio.gather(*(admit(f"u{i}") for i in range(100)))

    assert asyncio.run(many()) == [1] * 100
    sink.record_nowait(facts("after"), kind=WRITES_KIND)
    sink.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 101 and json.loads(lines[-1])["kind"] == WRITES_KIND
    assert verify_chain(lines).broken is None


def test_a_waiter_that_gave_up_does_not_stop_the_trail(tmp_path: Path) -> None:
    import asyncio

    sink = AuditTrail(stream=io.StringIO(), clock=lambda: T0)
    sink._queue.put(("not facts", T0, RECORD_KIND, None))  # a record that cannot be built

    async def run() -> None:
        waiting = sink.record_on_loop(facts("late"))
        waiting.cancel()  # the request's budget ran out: it answered without the record
        await sink.record_on_loop(facts("next"))

    asyncio.run(asyncio.wait_for(run(), 10))
    sink.close()
    assert sink.written == 2
