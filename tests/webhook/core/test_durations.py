from __future__ import annotations

import pytest

from webhook.core.durations import DurationError, parse_go_duration, pause_seconds


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (30, 30),
        ("30", 30),
        ("90s", 90),
        ("5m", 300),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("1m30.5s", 90),
        ("0", 0),
        ("500ms", 0),
        ("2h0m0s", 7200),
    ],
)
def test_pause_durations_argo_accepts(value: int | str, seconds: int) -> None:
    assert pause_seconds(value) == seconds


@pytest.mark.parametrize(
    "value", ["5x", "m", "", "5 m", "five", "-5m", -1, True, 1.5, None, "1d", ".s", "99999999999"]
)
def test_pause_durations_argo_rejects(value: object) -> None:
    with pytest.raises(DurationError):
        pause_seconds(value)


@pytest.mark.parametrize(
    ("text", "seconds"), [("10m", 600.0), ("1us", 1e-6), ("1µs", 1e-6), ("+2s", 2.0), ("-1s", -1.0)]
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)
