"""The audit record of one admission decision, and the hash chain that makes the trail
tamper-evident. Pure: the time and the previous record's hash are arguments.

Every record carries ``prev``, the SHA-256 of the canonical JSON of the record before it
(``GENESIS`` for the first). Changing, inserting or deleting a record breaks the link to the
next one, and ``verify_chain`` names the first record whose link does not hold.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

GENESIS = "0" * 64
"""The ``prev`` of the first record of a trail."""

RECORD_KIND = "AdmissionDecision"
"""A decision: written before the answer leaves the server."""
WRITES_KIND = "AdmissionWrites"
"""What became of a decision's cluster writes: written when they are done, same uid."""
RECORD_KINDS = (RECORD_KIND, WRITES_KIND)


@dataclass(frozen=True)
class ChangeOutcome:
    """One cluster change the decision wanted, and what became of it."""

    kind: str
    namespace: str
    name: str
    action: str = "apply"
    result: str = "wanted"
    """``wanted`` (not attempted), ``applied``, ``skipped: <why>`` or ``failed: <why>``."""

    def as_dict(self) -> dict[str, str]:
        return {
            "action": self.action,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "result": self.result,
        }


@dataclass(frozen=True)
class DecisionFacts:
    """What the server knows about one decision when it writes the record."""

    uid: str
    user: str
    operation: str
    kind: str
    namespace: str
    name: str
    dry_run: bool
    decision: str
    reason: str
    environment: str | None = None
    strategy: str | None = None
    policy_name: str | None = None
    policy_resource_version: str | None = None
    policy_sha256: str | None = None
    patch: Sequence[Mapping[str, Any]] = ()
    changes_wanted: Sequence[ChangeOutcome] = ()
    changes_made: Sequence[ChangeOutcome] = ()
    warnings: Sequence[str] = ()
    latency_seconds: float = 0.0
    extra: Mapping[str, str] = field(default_factory=dict)


def format_time(at: dt.datetime) -> str:
    """RFC 3339 in UTC with microseconds: sortable as text, parseable by ``parse_time``."""
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> dt.datetime:
    """An RFC 3339 timestamp (``Z`` or an offset; a date alone means midnight UTC)."""
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def build_record(
    facts: DecisionFacts, *, at: dt.datetime, prev: str, version: str, kind: str = RECORD_KIND
) -> dict[str, Any]:
    """The JSON record of one decision, linked to the record before it by ``prev``."""
    return {
        "kind": kind,
        "time": format_time(at),
        "uid": facts.uid,
        "user": facts.user,
        "operation": facts.operation,
        "objectKind": facts.kind,
        "namespace": facts.namespace,
        "name": facts.name,
        "dryRun": facts.dry_run,
        "decision": facts.decision,
        "reason": facts.reason,
        "environment": facts.environment,
        "strategy": facts.strategy,
        "policy": {
            "name": facts.policy_name,
            "resourceVersion": facts.policy_resource_version,
            "sha256": facts.policy_sha256,
        },
        "patch": [dict(op) for op in facts.patch],
        "changes": {
            "wanted": [c.as_dict() for c in facts.changes_wanted],
            "made": [c.as_dict() for c in facts.changes_made],
        },
        "warnings": list(facts.warnings),
        "latencyMs": round(facts.latency_seconds * 1000.0, 3),
        "version": version,
        "extra": dict(facts.extra),
        "prev": prev,
    }


def canonical_json(record: Mapping[str, Any]) -> str:
    """One line, keys sorted, no insignificant spaces: the form that is hashed and written."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(record: Mapping[str, Any]) -> str:
    """The hash the next record carries as ``prev``."""
    return line_hash(canonical_json(record))


def line_hash(line: str) -> str:
    """``record_hash`` of the record whose canonical JSON is ``line``."""
    return hashlib.sha256(line.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChainBreak:
    """The first record whose link to the one before does not hold."""

    line: int
    uid: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line} (uid {self.uid or '?'}): {self.message}"


@dataclass(frozen=True)
class ChainReport:
    records: int
    broken: ChainBreak | None
    last_hash: str


def is_record_line(text: str) -> bool:
    """Lines that claim to be records: JSON objects. Anything else (a log line in the same
    stream, as ``kubectl logs`` mixes standard output and error) is not part of the trail."""
    return text.lstrip().startswith("{")


def verify_chain(lines: Iterable[str], *, start: str = GENESIS) -> ChainReport:
    """Check every link of a trail given as its text lines.

    Lines that are not JSON objects are not records and are passed over; a line that
    starts like one but does not parse (torn by a crash, edited by hand) is a break.
    Stops at the first break: after it the later links may be intact, but nothing about
    the records before them can be trusted.
    """
    expected = start
    count = 0
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not is_record_line(text):
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            return ChainReport(count, ChainBreak(number, "", f"not JSON ({err.msg})"), expected)
        if not isinstance(record, dict):
            return ChainReport(count, ChainBreak(number, "", "not a JSON object"), expected)
        uid = str(record.get("uid", ""))
        prev = record.get("prev")
        if prev != expected:
            message = (
                "record has no prev hash"
                if prev is None
                else "prev hash does not match the record before it "
                "(a record was changed, inserted or removed)"
            )
            return ChainReport(count, ChainBreak(number, uid, message), expected)
        expected = record_hash(record)
        count += 1
    return ChainReport(count, None, expected)


def last_hash(lines: Iterable[str]) -> str:
    """The hash a new record appended after these lines must carry (GENESIS when empty).

    Used when the server restarts and continues an existing file: the last complete line
    is the link, whatever came before it (``verify_chain`` is the check of the whole).
    """
    last: str | None = None
    for raw in lines:
        if is_record_line(raw):
            last = raw.strip()
    if last is None:
        return GENESIS
    try:
        record = json.loads(last)
    except ValueError:
        # A torn last line (a crash in mid-write): hash its text, so verify names it.
        return hashlib.sha256(last.encode("utf-8")).hexdigest()
    if not isinstance(record, dict):
        return hashlib.sha256(last.encode("utf-8")).hexdigest()
    return record_hash(record)
