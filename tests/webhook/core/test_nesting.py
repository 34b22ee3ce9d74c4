"""Bracket depth, counted before a parser sees hostile text."""

from __future__ import annotations

import pytest

from webhook.core.nesting import exceeds_bracket_depth


@pytest.mark.parametrize(
    ("data", "limit", "exceeds"),
    [
        (b"", 0, False),
        (b'{"a": [1, {"b": 2}]}', 3, False),
        (b'{"a": [1, {"b": 2}]}', 2, True),
        (b"[]" * 10_000, 1, False),  # wide is not deep
        (b"[" * 65, 64, True),
        (b"[" * 64 + b"]" * 64, 64, False),
        (b"]" * 300 + b"[" * 65, 64, True),  # leading closers do not lower the count
        (b"text with no brackets", 0, False),
    ],
)
def test_depth_is_counted_over_the_brackets(data: bytes, limit: int, exceeds: bool) -> None:
    assert exceeds_bracket_depth(data, limit) is exceeds
