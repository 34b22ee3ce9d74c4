"""`rollout-webhook audit`: read the audit trail.

A table of decisions (filtered by namespace, name, decision, time), one decision in full
with its patch shown as a diff, or ``--verify``: check the hash chain and name the first
broken record.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import yaml

from webhook.cli.errors import UsageError
from webhook.core.audit import (
    RECORD_KIND,
    RECORD_KINDS,
    RECOVERY_KIND,
    WRITES_KIND,
    ChainReport,
    RecordInvalid,
    is_record_line,
    parse_record_line,
    parse_time,
    verify_chain,
)
from webhook.core.durations import DurationError, parse_go_duration

COLUMNS = ("TIME", "OPERATION", "KIND", "OBJECT", "DECISION", "ENVIRONMENT", "STRATEGY", "USER")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="read the audit trail: filter, show one decision's patch, verify the chain",
        description="Read audit records (one JSON object a line) written by `serve`.",
    )
    parser.add_argument(
        "file", nargs="?", default="-", help="audit file, or - for standard input (default)"
    )
    parser.add_argument("--namespace", "-n", help="only this namespace")
    parser.add_argument("--name", help="only objects of this name")
    parser.add_argument(
        "--decision", help="only this decision (convert, skip, refuse, error, allow, deny)"
    )
    parser.add_argument(
        "--since",
        help="only records at or after this time: RFC 3339 (2026-01-31T12:00:00Z) "
        "or a duration back from now (90m, 24h)",
    )
    parser.add_argument("--show", metavar="UID", help="show one decision in full, patch as a diff")
    parser.add_argument(
        "--verify", action="store_true", help="check the hash chain; exit 1 at the first break"
    )
    parser.set_defaults(func=run)


def _open(source: str) -> IO[str]:
    if source == "-":
        return sys.stdin
    try:
        return Path(source).open(encoding="utf-8")
    except OSError as err:
        raise UsageError(f"audit: {source}: cannot read ({err.strerror})", exit_code=1) from None


def _since(text: str | None, now: dt.datetime) -> dt.datetime | None:
    if text is None:
        return None
    try:
        return now - dt.timedelta(seconds=parse_go_duration(text))
    except DurationError:
        pass
    try:
        return parse_time(text)
    except ValueError:
        raise UsageError(
            f"audit: --since {text!r}: not an RFC 3339 time or a duration such as 24h"
        ) from None


def read_records(lines: Iterator[str], source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record); broken records are reported on stderr, other lines skipped."""
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not is_record_line(text):
            continue  # a log line in the same stream (kubectl logs mixes them)
        try:
            record = parse_record_line(text)
        except RecordInvalid as err:
            print(f"audit: {source}:{number}: {err}, skipped", file=sys.stderr)
            continue
        if record.get("kind") == RECOVERY_KIND:
            continue  # the writer's note about a torn line: --verify reports it
        if record.get("kind") not in RECORD_KINDS:
            print(f"audit: {source}:{number}: not an audit record, skipped", file=sys.stderr)
            continue
        yield number, record


def matches(record: dict[str, Any], args: argparse.Namespace, since: dt.datetime | None) -> bool:
    if args.namespace is not None and record.get("namespace") != args.namespace:
        return False
    if args.name is not None and record.get("name") != args.name:
        return False
    if args.decision is not None and record.get("decision") != args.decision:
        return False
    if since is not None:
        try:
            if parse_time(str(record.get("time", ""))) < since:
                return False
        except ValueError:
            return False
    return True


def _row(record: dict[str, Any]) -> tuple[str, ...]:
    obj = "/".join(p for p in (record.get("namespace") or "", record.get("name") or "") if p)
    decision = str(record.get("decision", ""))
    if record.get("dryRun"):
        decision += " (dry run)"
    return (
        str(record.get("time", ""))[:19].replace("T", " "),
        str(record.get("operation", "")),
        str(record.get("objectKind", "")),
        obj,
        decision,
        str(record.get("environment") or "-"),
        str(record.get("strategy") or "-"),
        str(record.get("user", "")),
    )


def printable(text: str) -> str:
    """``text`` with control and format characters escaped (``\\x1b``, ``\\n``,
    ``\\u202e``): names and reasons in records come from requests, and a newline or a
    terminal escape in them must not forge a row or drive the reader's terminal."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def format_table(records: Sequence[dict[str, Any]]) -> str:
    rows = [COLUMNS, *(tuple(printable(cell) for cell in _row(r)) for r in records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _value(value: Any) -> list[str]:
    if isinstance(value, dict | list) and value:
        return yaml.safe_dump(value, sort_keys=False, default_flow_style=False).splitlines()
    return [json.dumps(value)]


def format_patch(record: dict[str, Any]) -> str:
    """The JSON Patch as a diff: ``+`` added, ``-`` removed, ``~`` replaced."""
    what = f"{record.get('objectKind', '')} {record.get('namespace', '')}/{record.get('name', '')}"
    lines = [f"--- {what} (as sent)", f"+++ {what} (as admitted)"]
    marks = {"add": "+", "remove": "-", "replace": "~", "move": ">", "copy": "=", "test": "?"}
    for op in record.get("patch") or []:
        mark = marks.get(str(op.get("op")), "?")
        path = str(op.get("path", ""))
        if op.get("op") in ("move", "copy"):
            lines.append(f"{mark} {path} (from {op.get('from')})")
        elif op.get("op") == "remove":
            lines.append(f"{mark} {path}")
        else:
            value = _value(op.get("value"))
            if len(value) == 1 and not isinstance(op.get("value"), dict | list):
                lines.append(f"{mark} {path}: {value[0]}")
            else:
                lines.append(f"{mark} {path}:")
                lines.extend(f"{mark}     {v}" for v in value)
    if len(lines) == 2:
        lines.append("  (no patch: admitted as sent)")
    return "\n".join(lines)


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(str(k)): _escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    return value


def format_record(record: dict[str, Any], writes: Sequence[dict[str, Any]] = ()) -> str:
    """One decision in full; ``writes`` (its AdmissionWrites records) say what was made.
    Every string is shown with its control characters escaped (``printable``)."""
    record = _escaped(record)
    writes = [_escaped(w) for w in writes]
    policy = record.get("policy") or {}
    changes = dict(record.get("changes") or {})
    if writes:
        changes["made"] = (writes[-1].get("changes") or {}).get("made") or []
    out = [
        f"uid:          {record.get('uid')}",
        f"time:         {record.get('time')}",
        f"user:         {record.get('user')}",
        f"request:      {record.get('operation')} {record.get('objectKind')} "
        f"{record.get('namespace')}/{record.get('name')}"
        + (" (dry run)" if record.get("dryRun") else ""),
        f"decision:     {record.get('decision')}: {record.get('reason')}",
        f"environment:  {record.get('environment') or '-'}",
        f"strategy:     {record.get('strategy') or '-'}",
        f"policy:       {policy.get('name')} resourceVersion={policy.get('resourceVersion') or '-'}"
        f" sha256={policy.get('sha256') or '-'}",
        f"latency:      {record.get('latencyMs')} ms (version {record.get('version')})",
    ]
    for title, key in (("changes wanted", "wanted"), ("changes made", "made")):
        items = changes.get(key) or []
        out.append(f"{title + ':':<14}{'' if items else ' none'}")
        out.extend(
            f"  {c.get('action')} {c.get('kind')} {c.get('namespace')}/{c.get('name')}"
            + (f": {c.get('result')}" if key == "made" else "")
            for c in items
        )
    warnings = record.get("warnings") or []
    out.append(f"warnings:     {'' if warnings else 'none'}".rstrip())
    out.extend(f"  {w}" for w in warnings)
    out.append("")
    out.append(format_patch(record))
    return "\n".join(out)


def print_verification(report: ChainReport, source: str) -> int:
    """The verdict of ``--verify``; 1 when the chain is broken."""
    for torn in report.torn:
        if torn.recovered_at is None:
            print(
                f"audit: {source}: line {torn.line} is torn (the writer stopped in mid-record, "
                "a crash?); the server writes a recovery record for it when it starts again"
            )
        else:
            print(
                f"audit: {source}: line {torn.line} is torn (a crash); the chain continues "
                f"from the recovery record at line {torn.recovered_at}"
            )
    if report.broken is not None:
        print(f"audit: {source}: chain broken at {printable(str(report.broken))}")
        print(f"audit: the {report.records} record(s) before it are intact")
        return 1
    print(f"audit: {source}: {report.records} record(s), chain intact")
    print(f"audit: last hash {report.last_hash} (keep it outside the pod: docs/audit.md)")
    return 0


def run(args: argparse.Namespace) -> int:
    source = "stdin" if args.file == "-" else args.file
    handle = _open(args.file)
    try:
        if args.verify:
            return print_verification(verify_chain(handle), source)
        since = _since(args.since, dt.datetime.now(dt.UTC))
        if args.show is not None:
            found = [r for _, r in read_records(handle, source) if r.get("uid") == args.show]
            decisions = [r for r in found if r.get("kind") == RECORD_KIND]
            if not decisions:
                raise UsageError(f"audit: no record with uid {args.show} in {source}", 1)
            writes = [r for r in found if r.get("kind") == WRITES_KIND]
            print("\n\n".join(format_record(r, writes) for r in decisions))
            return 0
        selected = [
            r
            for _, r in read_records(handle, source)
            if r.get("kind") == RECORD_KIND and matches(r, args, since)
        ]
        print(format_table(selected))
        return 0
    finally:
        if handle is not sys.stdin:
            handle.close()
