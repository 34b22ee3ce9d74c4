"""The benchmark's arithmetic: parsing the load tools' output, medians, ratios, tables."""

from __future__ import annotations

import json

import pytest

from bench.results import (
    ResultError,
    matrix_table,
    median_of,
    parse_vegeta,
    parse_wrk,
    rate_table,
    ratio_to_baseline,
)

WRK_OUTPUT = """\
Running 5s test @ https://127.0.0.1:8443/mutate
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms    1.00ms  30.00ms   90.00%
  4000 requests in 5.00s, 3.00MB read
Requests/sec:    800.00
BENCH-RESULT {"requests":4000,"duration_us":5000000,"bytes":3000000,\
"errors":{"connect":0,"read":1,"write":0,"status":2,"timeout":0},\
"latency_us":{"p50":1500,"p90":2500,"p99":9000,"max":30000,"mean":2100.0}}
"""

VEGETA_REPORT = {
    "latencies": {
        "total": 1,
        "mean": 2_000_000,
        "50th": 1_800_000,
        "90th": 3_000_000,
        "95th": 4_000_000,
        "99th": 12_500_000,
        "max": 40_000_000,
        "min": 900_000,
    },
    "requests": 5000,
    "rate": 500.1,
    "throughput": 499.7,
    "success": 0.9998,
    "status_codes": {"200": 4999, "0": 1},
    "errors": ["Post ...: EOF"],
}


def run(
    rps: float, p50: float, p99: float, errors: int = 0, cpu: float | None = None
) -> dict[str, float]:
    out = {"rps": rps, "p50_ms": p50, "p90_ms": p50 * 1.5, "p99_ms": p99, "errors": errors}
    if cpu is not None:
        out["cpu_ms"] = cpu
    return out


def test_wrk_line_gives_rate_latencies_in_ms_and_every_error() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert result["requests"] == 4000
    assert result["rps"] == pytest.approx(800.0)
    assert (result["p50_ms"], result["p90_ms"], result["p99_ms"]) == (1.5, 2.5, 9.0)
    assert result["max_ms"] == 30.0
    assert result["errors"] == 3  # a read error and two non-2xx answers


def test_wrk_output_without_the_script_line_is_refused() -> None:
    with pytest.raises(ResultError, match="no BENCH-RESULT line"):
        parse_wrk("Requests/sec: 800.00\n")


def test_wrk_malformed_line_is_refused_in_one_line() -> None:
    with pytest.raises(ResultError, match="malformed"):
        parse_wrk('BENCH-RESULT {"requests": 1}\n')


def test_vegeta_report_in_ms_and_non_200_counted_as_errors() -> None:
    result = parse_vegeta(json.dumps(VEGETA_REPORT))
    assert result["rate"] == pytest.approx(500.1)
    assert result["rps"] == pytest.approx(499.7)
    assert result["p50_ms"] == pytest.approx(1.8)
    assert result["p99_ms"] == pytest.approx(12.5)
    assert result["max_ms"] == pytest.approx(40.0)
    assert result["errors"] == 1


def test_vegeta_report_that_is_not_json_is_refused() -> None:
    with pytest.raises(ResultError, match="vegeta report is malformed"):
        parse_vegeta("Requests [total] 5000")


def test_median_is_taken_per_metric_and_errors_are_summed() -> None:
    runs = [run(100, 5, 50, 1), run(300, 1, 10), run(200, 9, 20, 2)]
    med = median_of(runs)
    assert med["rps"] == 200
    assert med["p50_ms"] == 5
    assert med["p99_ms"] == 20
    assert med["errors"] == 3
    assert med["runs"] == 3


def test_median_of_an_even_number_of_runs_is_the_mean_of_the_middle_two() -> None:
    assert median_of([run(100, 1, 1), run(300, 3, 3)])["rps"] == 200


def test_median_of_nothing_is_refused() -> None:
    with pytest.raises(ResultError):
        median_of([])


def test_ratio_cost_is_time_per_request_relative_to_the_baseline() -> None:
    ratio = ratio_to_baseline(run(500, 4, 30), run(2000, 1, 10))
    assert ratio["cost"] == pytest.approx(4.0)
    assert ratio["p50"] == pytest.approx(4.0)
    assert ratio["p99"] == pytest.approx(3.0)


def test_cpu_ratio_only_when_both_sides_measured_it() -> None:
    both = ratio_to_baseline(run(500, 4, 30, cpu=1.5), run(2000, 1, 10, cpu=0.5))
    assert both["cpu"] == pytest.approx(3.0)
    assert "cpu" not in ratio_to_baseline(run(500, 4, 30, cpu=1.5), run(2000, 1, 10))


def test_median_skips_a_metric_some_runs_lack() -> None:
    med = median_of([run(100, 1, 1, cpu=2.0), run(300, 3, 3)])
    assert "cpu_ms" not in med
    assert median_of([run(100, 1, 1, cpu=2.0), run(300, 3, 3, cpu=4.0)])["cpu_ms"] == 3.0


def test_ratio_of_a_case_that_answered_nothing_is_infinite_not_a_crash() -> None:
    ratio = ratio_to_baseline(run(0, 0, 0), run(2000, 1, 4))
    assert ratio["cost"] == float("inf")
    assert ratio_to_baseline(run(500, 4, 30), run(2000, 0, 0))["p50"] == float("inf")


def test_matrix_table_puts_each_case_beside_the_baseline_of_its_connection_count() -> None:
    matrix = {
        "baseline": {"8": [run(2000, 1, 4, cpu=0.4)], "32": [run(2400, 4, 12, cpu=0.4)]},
        "convert": {"32": [run(600, 12, 48, cpu=1.2)], "8": [run(500, 4, 20)]},
    }
    lines = matrix_table(matrix).splitlines()
    assert lines[0].startswith("| case | connections | req/s")
    convert_8 = next(line for line in lines if line.startswith("| convert | 8 |"))
    # No CPU measured for this case: its CPU columns say so instead of guessing.
    assert "| - | 4.00x | - | 4.00x | 5.00x |" in convert_8
    convert_32 = next(line for line in lines if line.startswith("| convert | 32 |"))
    assert "| 1.20 | 4.00x | 3.00x | 3.00x | 4.00x |" in convert_32
    # Rows by connection count, smallest first, whatever order they were recorded in.
    assert lines.index(convert_8) < lines.index(convert_32)


def test_rate_table_marks_a_p99_over_the_target() -> None:
    table = rate_table({"fast": [run(500, 1, 4)], "slow": [run(480, 3, 25)]}, 500)
    assert "| fast | 500 | 500 | 1.00 | 1.50 | 4.00 | - | 0 |" in table
    assert "**25.00**" in table
