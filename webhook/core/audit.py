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

import orjson

GENESIS = "0" * 64
"""The ``prev`` of the first record of a trail."""

RECORD_KIND = "AdmissionDecision"
"""A decision: written before the answer leaves the server."""
WRITES_KIND = "AdmissionWrites"
"""What became of a decision's cluster writes: written when they are done, same uid."""
RECOVERY_KIND = "AuditRecovery"
"""Written at start-up after a line torn by a crash: names it and links past it."""
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
    """One line, keys sorted, no insignificant spaces: the form that is hashed and written.

    The form is the standard codec's (``json.dumps`` with ``sort_keys``, compact separators
    and ``ensure_ascii=False``); orjson, compiled, writes the same text several times faster
    for every record whose floats it formats alike (finite, zero or between 1e-4 and 1e16:
    ``latencyMs`` always is), so it writes those, and the standard codec the rest. Either
    way the bytes are the same, so every trail verifies, whichever version wrote it.
    """
    if _floats_formatted_alike(record):
        try:
            return orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode()
        except TypeError:  # an integer past 64 bits, a lone surrogate, a non-string key
            pass
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _floats_formatted_alike(value: object) -> bool:
    """True when every float in ``value`` is one both codecs write the same way (the
    standard one switches to an exponent below 1e-4, orjson below 1e-5; orjson writes
    NaN and Infinity as null)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, float) and item != 0.0 and not 1e-4 <= abs(item) < 1e16:
            return False  # NaN fails the comparison too
    return True


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
class TornLine:
    """A line a crash cut short: ``recovered_at`` is the line of the recovery record the
    writer left when it started again (None: it has not started again yet)."""

    line: int
    recovered_at: int | None


@dataclass(frozen=True)
class ChainReport:
    records: int
    broken: ChainBreak | None
    last_hash: str
    torn: tuple[TornLine, ...] = ()


class RecordInvalid(ValueError):
    """A line that claims to be a record but is not one as the writer writes them."""


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise RecordInvalid(f"duplicate key {dup!r} (a reader would see only one value)")
    return record


def parse_record_line(text: str) -> dict[str, Any]:
    """A record line as the writer wrote it: one JSON object, no key twice, in the
    canonical form. Anything else raises ``RecordInvalid`` (a line edited by hand or
    torn by a crash); ``json.JSONDecodeError`` is one of them."""
    try:
        record = json.loads(text, object_pairs_hook=_refuse_duplicates)
    except json.JSONDecodeError as err:
        raise RecordInvalid(f"not JSON ({err.msg})") from None
    except RecursionError:
        raise RecordInvalid("not JSON (nested too deeply)") from None
    if not isinstance(record, dict):
        raise RecordInvalid("not a JSON object")
    if canonical_json(record) != text:
        raise RecordInvalid("not in canonical form (re-serialised or edited by hand)")
    return record


def is_record_line(text: str) -> bool:
    """Lines that claim to be records: JSON objects. Anything else (a log line in the same
    stream, as ``kubectl logs`` mixes standard output and error) is not part of the trail."""
    return text.lstrip().startswith("{")


def build_recovery(
    *, torn_line: int, torn_text: str, at: dt.datetime, prev: str, version: str
) -> dict[str, Any]:
    """The record a writer appends at start-up after a line torn by a crash.

    It names the torn line by position and hash and links to the last whole record before
    it, so the chain goes on past the torn line and a crash can be told from tampering:
    an edited or removed record still breaks the chain."""
    return {
        "kind": RECOVERY_KIND,
        "time": format_time(at),
        "torn": {
            "line": torn_line,
            "sha256": line_hash(torn_text),
            "bytes": len(torn_text.encode("utf-8")),
        },
        "version": version,
        "prev": prev,
    }


def _recovers(record: Mapping[str, Any], torn: tuple[int, str] | None) -> bool:
    if torn is None or record.get("kind") != RECOVERY_KIND:
        return False
    what = record.get("torn")
    return (
        isinstance(what, Mapping)
        and what.get("line") == torn[0]
        and what.get("sha256") == line_hash(torn[1])
    )


def verify_chain(lines: Iterable[str], *, start: str = GENESIS) -> ChainReport:
    """Check every link of a trail given as its text lines.

    Lines that are not JSON objects are not records and are passed over. A line that
    starts like one but is not a record as written (torn, edited, a key twice) is a break,
    unless the next record is the recovery record the writer leaves after a crash for
    exactly that line: then the torn line is reported and the chain goes on. A torn last
    line (the writer has not started again) is reported, not a break. Stops at the first
    break: after it the later links may be intact, but nothing about the records before
    them can be trusted.
    """
    expected = start
    count = 0
    torn: list[TornLine] = []
    pending: tuple[int, str] | None = None  # a torn line waiting for its recovery record
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not is_record_line(text):
            continue
        try:
            record = parse_record_line(text)
        except RecordInvalid as err:
            if pending is not None:
                message = "not JSON, and no recovery record for it follows"
                broken = ChainBreak(pending[0], "", message)
                return ChainReport(count, broken, expected, tuple(torn))
            if str(err).startswith("not JSON"):
                pending = (number, text)
                continue
            return ChainReport(count, ChainBreak(number, "", str(err)), expected, tuple(torn))
        if pending is not None:
            if not _recovers(record, pending):
                message = "not JSON, and no recovery record for it follows"
                broken = ChainBreak(pending[0], "", message)
                return ChainReport(count, broken, expected, tuple(torn))
            torn.append(TornLine(pending[0], number))
            pending = None
        uid = str(record.get("uid", ""))
        prev = record.get("prev")
        if prev != expected:
            message = (
                "record has no prev hash"
                if prev is None
                else "prev hash does not match the record before it "
                "(a record was changed, inserted or removed)"
            )
            return ChainReport(count, ChainBreak(number, uid, message), expected, tuple(torn))
        expected = line_hash(text)
        count += 1
    if pending is not None:
        torn.append(TornLine(pending[0], None))
    return ChainReport(count, None, expected, tuple(torn))


@dataclass(frozen=True)
class ResumePoint:
    """Where a writer continues an existing trail."""

    prev: str
    """The hash the next record carries: the last whole record's (GENESIS when none)."""
    torn: tuple[int, str] | None
    """The last line, when a crash cut it short: (line number, its text)."""


def resume_point(lines: Iterable[str]) -> ResumePoint:
    """Read when the server restarts and continues an existing file. The last whole record
    is the link, whatever came before it (``verify_chain`` is the check of the whole)."""
    prev = GENESIS
    torn: tuple[int, str] | None = None
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not is_record_line(text):
            continue
        try:
            json.loads(text)
        except ValueError:
            torn = (number, text)
            continue
        prev, torn = line_hash(text), None
    return ResumePoint(prev, torn)


def last_hash(lines: Iterable[str]) -> str:
    """The hash a new record appended after these lines carries (GENESIS when empty)."""
    return resume_point(lines).prev
