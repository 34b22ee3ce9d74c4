"""The audit record and its hash chain: what a record holds, what breaks the chain."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from tests.builders import AUDIT_PATCH, audit_lines, decision_facts
from webhook.core.audit import (
    GENESIS,
    TornLine,
    build_record,
    canonical_json,
    last_hash,
    verify_chain,
)

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


def test_record_carries_every_field() -> None:
    record = build_record(decision_facts("u1"), at=T0, prev=GENESIS, version="0.1.0")
    assert record["time"] == "2030-01-01T12:00:00.000000Z"
    assert record["uid"] == "u1"
    assert record["policy"] == {
        "name": "rollout-system/rollout-webhook-policy",
        "resourceVersion": "42",
        "sha256": "ab" * 32,
    }
    assert record["patch"] == AUDIT_PATCH
    assert record["changes"]["made"][0]["result"] == "applied"
    assert record["latencyMs"] == 2.1
    assert record["version"] == "0.1.0"
    assert record["prev"] == GENESIS


def test_an_intact_chain_verifies() -> None:
    lines = audit_lines(decision_facts("a"), decision_facts("b"), decision_facts("c"))
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
    lines = tamper(audit_lines(decision_facts("a"), decision_facts("b"), decision_facts("c")))
    report = verify_chain(lines)
    assert report.broken is not None
    assert report.broken.line == line


def test_a_torn_last_line_is_reported_not_a_break() -> None:
    lines = audit_lines(decision_facts("a"), decision_facts("b"), decision_facts("c"))
    report = verify_chain([lines[0], lines[1], lines[2][:40]])
    assert report.broken is None
    assert report.records == 2
    assert report.torn == (TornLine(3, None),)


def test_a_duplicate_key_is_named() -> None:
    lines = audit_lines(decision_facts("a"), decision_facts("b"))
    forged = lines[1][:-1] + ',"decision":"skip"}'
    report = verify_chain([lines[0], forged])
    assert report.broken is not None
    assert "duplicate key 'decision'" in report.broken.message


@pytest.mark.parametrize(
    "value",
    [
        0.0,
        -0.0,
        0.001,
        1.5,
        123456.789,
        9.5e-05,  # the standard codec's exponent starts below 1e-4, orjson's below 1e-5
        1.2e-07,
        1e16,
        float("inf"),
        float("nan"),
        2**70,
        'é ünïcode \u2028 \x7f \x00\x1f "quoted" back\\slash',
        "\ud800",  # a lone surrogate, which only the standard codec writes
        [{"z": 1, "a": None, "é": True, "e": [1, 2.5]}],
    ],
)
def test_canonical_json_is_the_standard_codecs_text_whichever_codec_writes_it(
    value: Any,
) -> None:
    record = {**build_record(decision_facts("u-1"), at=T0, prev=GENESIS, version="v"), "x": value}
    expected = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(record) == expected
