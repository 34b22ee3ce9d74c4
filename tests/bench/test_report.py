"""docs/benchmarks.md's generated part: the targets' verdicts and the splice."""

from __future__ import annotations

from typing import Any

import pytest

from bench.report import BEGIN, END, ReportError, render, splice, targets


def run(rps: float, p50: float, p99: float) -> dict[str, float]:
    return {"rps": rps, "p50_ms": p50, "p90_ms": p50 * 2, "p99_ms": p99, "errors": 0}


def document(*, p99: float, convert_rps: float, rss_kib: int, resync_s: float) -> dict[str, Any]:
    return {
        "label": "t",
        "machine": {"cores": 2, "cpu": "x", "memory": "8 GB", "kernel": "6", "python": "3.11"},
        "settings": {"rate": 500, "rate_seconds": 10, "seconds": 5, "runs": 3},
        "load_average_start": [1.0, 1.0, 1.0],
        "load_average_end": [2.0, 1.0, 1.0],
        "scale": {
            "10": {"rss_idle_kib": 60 * 1024, "rss_after_load_kib": 70 * 1024},
            "1000": {"rss_idle_kib": rss_kib, "rss_after_load_kib": rss_kib * 2},
        },
        "rate": {
            "convert, 1000 services": [run(500, 2, p99)] * 3,
            "convert, 10 services": [run(500, 1, 3)] * 3,
        },
        "matrix": {
            "baseline": {"8": [run(1000, 1, 2)], "32": [run(1200, 3, 6)]},
            "convert": {"8": [run(convert_rps, 2, 4)], "32": [run(convert_rps, 6, 12)]},
        },
        "resync": {
            "services": 1000,
            "objects_created": 2000,
            "create_seconds": 9.0,
            "full": {
                "seconds": resync_s,
                "caches_synced_seconds": 1.0,
                "reconcile_passes": 1000,
                "adapter_calls": {"PATCH": 1000},
                "apiserver_requests": {"PATCH deployments": 1000},
            },
            "idle": {"seconds": 2.0, "adapter_calls": {}, "apiserver_requests": {}},
        },
    }


def test_every_target_met() -> None:
    rows = targets(document(p99=8, convert_rps=800, rss_kib=100 * 1024, resync_s=30))
    assert [r[2] for r in rows] == ["met", "met", "met idle; **missed** after load", "met"]
    # The cost is given at each connection count: 1000/800 and 1200/800.
    assert rows[1][1] == "throughput 1.2x at 8, 1.5x at 32"


def test_cost_verdict_goes_by_cpu_when_every_run_measured_it() -> None:
    doc = document(p99=8, convert_rps=800, rss_kib=100 * 1024, resync_s=30)
    for case, cpu in (("baseline", 0.5), ("convert", 1.0)):
        for runs in doc["matrix"][case].values():
            for r in runs:
                r["cpu_ms"] = cpu
    row = targets(doc)[1]
    # Throughput alone would pass (1.2x, 1.5x); the server's CPU per request is 2x.
    assert row[1] == "CPU 2.0x at 8, 2.0x at 32; throughput 1.2x at 8, 1.5x at 32"
    assert row[2] == "**missed**"


def test_every_target_missed_is_said_so() -> None:
    rows = targets(document(p99=25, convert_rps=300, rss_kib=200 * 1024, resync_s=90))
    assert all("**missed**" in r[2] for r in rows)
    assert rows[0][1] == "25.0 ms"
    assert rows[3][1] == "90.0 s"


def test_render_has_each_section_and_the_load_average() -> None:
    text = render(document(p99=8, convert_rps=800, rss_kib=100 * 1024, resync_s=30))
    for heading in ("### Targets", "### Constant rate", "### Fixed concurrency", "### Scale"):
        assert heading in text
    assert "[1.0, 1.0, 1.0]" in text
    assert "| 10 | 60 | 70 | 1.00 | 3.00 |" in text  # the scale rows, smallest first
    assert "| full resync, nothing converted yet | 30.0 | 1000 | PATCH 1000 |" in text


def test_render_refuses_a_file_that_is_not_a_results_file() -> None:
    with pytest.raises(ReportError, match="machine"):
        render({"label": "x"})


def test_splice_replaces_only_the_generated_part() -> None:
    page = f"# Title\nhand-written\n{BEGIN}\nold table\n{END}\nmore prose\n"
    out = splice(page, "new table\n")
    assert out == f"# Title\nhand-written\n{BEGIN}\nnew table\n{END}\nmore prose\n"
    assert splice(out, "new table\n") == out


def test_splice_without_markers_is_refused() -> None:
    with pytest.raises(ReportError, match="markers"):
        splice("# no markers\n", "x")


def test_what_if_and_attribution_sections_when_given() -> None:
    product = document(p99=8, convert_rps=800, rss_kib=100 * 1024, resync_s=30)
    what_if = document(p99=4, convert_rps=1000, rss_kib=100 * 1024, resync_s=30)
    what_if["label"], what_if["experiments"] = "w", ["json-copy"]
    attribution = {
        "variants": {
            "product": {
                "convert_cpu_ms": 1.7,
                "baseline_cpu_ms": 0.25,
                "cpu_vs_baseline": 6.8,
                "convert_p99_ms": 30.0,
            }
        }
    }
    text = render(product, what_if, attribution)
    assert "### What-ifs (`w`: json-copy), beside the product" in text
    assert "| convert | 8 | - | - | 800 | 1000 | 4.0 | 4.0 |" in text
    assert "| convert, 1000 services | 500 req/s | 0.00 | 0.00 | 500 | 500 | 8.0 | 4.0 |" in text
    assert "| product | 1.70 | 0.25 | 6.8x | 30.0 |" in text


def test_breakdown_section_lists_threads_and_steps() -> None:
    product = document(p99=8, convert_rps=800, rss_kib=100 * 1024, resync_s=30)
    breakdown = {
        "by_thread": {"convert": {"event_loop_ms": 1.35, "other_threads_ms": 0.32}},
        "by_step": {"decide_ms": 0.141, "patch_ms": 0.15},
    }
    text = render(product, breakdown=breakdown)
    assert "| convert | 1.35 | 0.32 |" in text
    assert "| `patch_for` (member by member; jsonpatch for lists) | 0.150 |" in text
