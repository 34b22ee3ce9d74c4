"""The benchmark's numbers: parsing the load tools' output, medians, ratios, tables. Pure."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

WRK_MARKER = "BENCH-RESULT "
METRICS = ("rps", "p50_ms", "p90_ms", "p99_ms")


class ResultError(ValueError):
    """Output of a load tool that cannot be read: one line saying what is missing."""


def parse_wrk(output: str) -> dict[str, Any]:
    """One wrk run (bench/load.lua's ``done`` line) as rps, latency in ms and errors."""
    lines = [line for line in output.splitlines() if line.startswith(WRK_MARKER)]
    if not lines:
        raise ResultError("wrk output has no BENCH-RESULT line (was bench/load.lua used?)")
    try:
        raw = json.loads(lines[-1][len(WRK_MARKER) :])
        seconds = raw["duration_us"] / 1e6
        latency = raw["latency_us"]
        errors = sum(int(v) for v in raw["errors"].values())
        requests = int(raw["requests"])
        result = {
            "requests": requests,
            "rps": requests / seconds if seconds > 0 else 0.0,
            "p50_ms": latency["p50"] / 1000,
            "p90_ms": latency["p90"] / 1000,
            "p99_ms": latency["p99"] / 1000,
            "max_ms": latency["max"] / 1000,
            "errors": errors,
        }
    except (ValueError, KeyError, TypeError) as err:
        raise ResultError(f"wrk BENCH-RESULT line is malformed: {err!r}") from None
    return result


def parse_vegeta(report: str) -> dict[str, Any]:
    """One ``vegeta report -type=json``: achieved rate, latency in ms, errors."""
    try:
        raw = json.loads(report)
        latencies = raw["latencies"]
        codes: Mapping[str, int] = raw.get("status_codes") or {}
        requests = int(raw["requests"])
        ok = int(codes.get("200", 0))
        return {
            "requests": requests,
            "rate": float(raw["rate"]),
            "rps": float(raw["throughput"]),
            "p50_ms": latencies["50th"] / 1e6,
            "p90_ms": latencies["90th"] / 1e6,
            "p99_ms": latencies["99th"] / 1e6,
            "max_ms": latencies["max"] / 1e6,
            "errors": requests - ok,
        }
    except (ValueError, KeyError, TypeError) as err:
        raise ResultError(f"vegeta report is malformed: {err!r}") from None


def median_of(runs: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The median of each metric over the runs (each metric on its own)."""
    if not runs:
        raise ResultError("no runs to take the median of")
    present = [m for m in (*METRICS, "cpu_ms") if all(m in r for r in runs)]
    out = {m: float(statistics.median(float(r[m]) for r in runs)) for m in present}
    out["errors"] = float(sum(int(r.get("errors", 0)) for r in runs))
    out["runs"] = float(len(runs))
    return out


def ratio_to_baseline(case: Mapping[str, float], baseline: Mapping[str, float]) -> dict[str, float]:
    """How many times the baseline a case costs.

    ``cost`` is time per request at saturation (baseline throughput / case throughput);
    the latency ratios are case / baseline. 1.0 means as cheap as the baseline.
    """

    def div(a: float, b: float) -> float:
        return a / b if b > 0 else float("inf")

    ratios = {
        "cost": div(baseline["rps"], case["rps"]),
        "p50": div(case["p50_ms"], baseline["p50_ms"]),
        "p99": div(case["p99_ms"], baseline["p99_ms"]),
    }
    if "cpu_ms" in case and "cpu_ms" in baseline:
        # The server's own CPU per request: what other processes on the machine take
        # does not enter it, unlike throughput and latency.
        ratios["cpu"] = div(case["cpu_ms"], baseline["cpu_ms"])
    return ratios


def _row(cells: Iterable[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _num(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def matrix_table(matrix: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]]) -> str:
    """``matrix[case][connections]`` = runs; one row per case and connection count."""
    head = [
        "case",
        "connections",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "server CPU ms/req",
        "cost vs baseline",
        "CPU vs baseline",
        "p50 vs baseline",
        "p99 vs baseline",
        "errors",
    ]
    lines = [_row(head), _row("---" for _ in head)]
    baseline = matrix.get("baseline", {})
    for case, by_connections in matrix.items():
        for connections, runs in sorted(by_connections.items(), key=lambda kv: int(kv[0])):
            med = median_of(runs)
            base = baseline.get(connections)
            ratio = ratio_to_baseline(med, median_of(base)) if base else None
            lines.append(
                _row(
                    [
                        case,
                        connections,
                        _num(med["rps"], 0),
                        _num(med["p50_ms"], 2),
                        _num(med["p90_ms"], 2),
                        _num(med["p99_ms"], 2),
                        _num(med["cpu_ms"], 2) if "cpu_ms" in med else "-",
                        f"{ratio['cost']:.2f}x" if ratio else "-",
                        f"{ratio['cpu']:.2f}x" if ratio and "cpu" in ratio else "-",
                        f"{ratio['p50']:.2f}x" if ratio else "-",
                        f"{ratio['p99']:.2f}x" if ratio else "-",
                        int(med["errors"]),
                    ]
                )
            )
    return "\n".join(lines)


def rate_table(rows: Mapping[str, Sequence[Mapping[str, Any]]], rate: int) -> str:
    """Constant-rate runs: ``rows[label]`` = runs."""
    head = [
        "case",
        "target req/s",
        "achieved req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "server CPU ms/req",
        "errors",
    ]
    lines = [_row(head), _row("---" for _ in head)]
    for label, runs in rows.items():
        med = median_of(runs)
        p99 = f"**{_num(med['p99_ms'], 2)}**" if med["p99_ms"] > 10 else _num(med["p99_ms"], 2)
        lines.append(
            _row(
                [
                    label,
                    rate,
                    _num(med["rps"], 0),
                    _num(med["p50_ms"], 2),
                    _num(med["p90_ms"], 2),
                    p99,
                    _num(med["cpu_ms"], 2) if "cpu_ms" in med else "-",
                    int(med["errors"]),
                ]
            )
        )
    return "\n".join(lines)
