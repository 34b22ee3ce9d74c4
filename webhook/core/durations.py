"""Durations as Argo Rollouts reads them.

A canary ``pause.duration`` is an int-or-string. Argo's ``RolloutPause.DurationSeconds``
first tries the string as a whole number of seconds, then as a Go ``time.ParseDuration``
value ("90s", "5m", "1h30m", "1.5h"); anything else makes the Rollout invalid. Experiment
durations are Go durations only. This module accepts exactly those forms, so a policy that
passes here is not refused by the controller later.
"""

from __future__ import annotations

import re

# Go's time.ParseDuration units, in nanoseconds.
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_COMPONENT = re.compile(r"(\d*)(?:\.(\d*))?([a-zµμ]+)")
_INT32_MAX = 2**31 - 1


class DurationError(ValueError):
    """A duration Argo Rollouts would not accept."""


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string; raises DurationError like time.ParseDuration fails."""
    original = text
    sign = 1.0
    if text[:1] in ("+", "-"):
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if text == "0":
        return 0.0
    if not text:
        raise DurationError(f"invalid duration {original!r}")
    total_ns = 0.0
    pos = 0
    while pos < len(text):
        match = _COMPONENT.match(text, pos)
        if match is None:
            raise DurationError(f"invalid duration {original!r}")
        whole, frac, unit = match.groups()
        if not whole and not frac:
            raise DurationError(f"invalid duration {original!r}")
        if unit not in _UNIT_NS:
            raise DurationError(f"unknown unit {unit!r} in duration {original!r}")
        number = float(f"{whole or '0'}.{frac or '0'}")
        total_ns += number * _UNIT_NS[unit]
        pos = match.end()
    return sign * total_ns / 1e9


def pause_seconds(value: object) -> int:
    """Seconds of a canary pause duration, as Argo computes them.

    Raises DurationError for anything the controller would reject (negative values,
    unparsable strings, booleans, numbers beyond int32).
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise DurationError("must be an integer number of seconds or a duration such as 5m")
    if isinstance(value, int):
        seconds = value
    elif re.fullmatch(r"[+-]?\d+", value):
        seconds = int(value)
    else:
        seconds = int(parse_go_duration(value))
    if seconds < 0:
        raise DurationError("must not be negative")
    if seconds > _INT32_MAX:
        raise DurationError("is too long (more than 2^31-1 seconds)")
    return seconds
