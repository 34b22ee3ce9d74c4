"""The overload benchmark's arithmetic: goodput, medians over runs, the table."""

from __future__ import annotations

from typing import Any

import pytest

from bench.overload import overload_table, render, run_figures, scenario_median, summary_ms


def one_run(ok: int, failed: int, rss_mib: float, health_ok: int = 10) -> dict[str, Any]:
    return {
        "legit": {
            "seconds": 10,
            "statuses": {"200": ok, **({"503": failed} if failed else {})},
            "handshakes": 4,
            "latencies_ms": {"p50": 5.0, "p99": 50.0, "max": 90.0},
        },
        "hostile": {"open": 470},
        "held_max": 480,
        "rss_max_kib": rss_mib * 1024,
        "server_cpu_seconds": 3.0,
        "health": {"ok": health_ok, "total": 10},
    }


def test_summary_ms_takes_quantiles_in_milliseconds() -> None:
    latencies = [i / 1000 for i in range(1, 101)]  # 1 ms .. 100 ms
    assert summary_ms(latencies) == {"p50": 51.0, "p99": 100.0, "max": 100.0}
    assert summary_ms([]) == {"p50": 0.0, "p99": 0.0, "max": 0.0}


def test_goodput_counts_only_answers_200() -> None:
    figures = run_figures(one_run(ok=900, failed=100, rss_mib=100)["legit"])
    assert figures["goodput"] == 90.0
    assert figures["failed_share"] == pytest.approx(0.1)


def test_a_scenario_is_the_median_of_its_runs() -> None:
    runs = [one_run(1000, 0, 100), one_run(500, 0, 300), one_run(800, 0, 200)]
    median = scenario_median(runs)
    assert median["goodput"] == 80.0
    assert median["rss_max_mib"] == 200.0
    with pytest.raises(ValueError, match="no runs"):
        scenario_median([])


def test_the_table_compares_each_scenario_with_the_baseline_of_the_same_run() -> None:
    document = {
        "label": "t",
        "settings": {"runs": 1, "services": 1000, "seconds": 10, "legit_connections": 4},
        "scenarios": {
            "2000": [one_run(500, 5, 150, health_ok=9)],
            "0": [one_run(1000, 0, 90)],
        },
    }
    table = overload_table(document)
    rows = table.splitlines()[2:]
    assert rows[0].startswith("| 0 | 480 | 100 | 1.00x | 0.0% |")
    assert rows[1].startswith("| 2,000 | 480 | 50 | 0.50x | 1.0% |")
    assert rows[1].endswith("| 150 | 90% | 3.0 | 0.0 |")
    assert table in render(document)
