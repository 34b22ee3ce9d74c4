"""The fleet's, the instruction counts' and the Go floor's tables and verdicts."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from bench.floor import same_patch
from bench.instructions import per_request, totals
from bench.report import resync_table
from bench.resync import CROWDED_NAMESPACE, service_namespaces
from bench.scale_report import (
    cpu_line,
    fleet_targets,
    instruction_ratios,
    render_section,
    section,
)


def counts(convert: int, baseline: int = 1_000_000) -> dict[str, Any]:
    return {
        "settings": {"services": 1000, "requests": 300, "connections": 4},
        "idle_instructions_per_second": 1000,
        "cases": {
            "noop": {"per_request": 800_000},
            "baseline": {"per_request": baseline},
            "convert": {"per_request": convert},
        },
    }


def wrk(cpu_ms: float) -> dict[str, Any]:
    return {"rps": 1000.0, "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0, "cpu_ms": cpu_ms}


def fleet(rss_mib: float, p99: float, rps: float, full: float, idle: float) -> dict[str, Any]:
    run = {"rps": rps, "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": p99, "errors": 0, "cpu_ms": 0.5}
    return {
        "server": {
            "settings": {
                "services": 10_000,
                "crowded_services": 1_000,
                "rate": 1000,
                "rate_seconds": 10,
                "runs": 1,
            },
            "rss_idle_kib": rss_mib * 1024,
            "rss_after_load_kib": rss_mib * 1024,
            "rate": {"convert": [run], "baseline": [run]},
            "object_bytes_by_kind": {"Deployment": 6144, "Service": 1024, "Rollout": 2048},
        },
        "resync": {
            "services": 10_000,
            "crowded_services": 1_000,
            "namespaces": 901,
            "objects_created": 20_000,
            "create_seconds": 90.0,
            "full": {
                "seconds": full,
                "caches_synced_seconds": 1.5,
                "leader_seconds": 1.6,
                "reconcile_passes": 12_000,
                "adapter_calls": {"PATCH": 30_000},
                "apiserver_requests": {"APPLY rollouts": 10_000},
            },
            "idle": {"seconds": idle, "adapter_calls": {}, "apiserver_requests": {}},
        },
    }


@pytest.mark.parametrize(
    ("convert", "verdict"), [(1_400_000, "met"), (1_500_000, "met"), (1_600_000, "**missed**")]
)
def test_the_cost_target_is_judged_on_instructions(convert: int, verdict: str) -> None:
    (row,) = fleet_targets(counts(convert), None)
    assert row[2] == verdict
    assert instruction_ratios(counts(convert))["noop"] == pytest.approx(0.8)


def test_each_fleet_target_is_met_or_missed_on_its_own_measure() -> None:
    good = {row[0]: row[2] for row in fleet_targets(None, fleet(150, 5.0, 1000, 50, 0.5))}
    assert set(good.values()) == {"met"}
    assert len(good) == 4
    bad = fleet_targets(None, fleet(250, 50.0, 1000, 70, 3.0))
    assert [row[2] for row in bad] == ["**missed**"] * 4
    # A p99 measured at a rate the server did not keep up with is no pass.
    slow = fleet_targets(None, fleet(150, 5.0, 400, 50, 0.5))
    assert slow[1][2] == "**missed**"


def test_the_section_has_every_part_and_the_before_column() -> None:
    floor = {
        "settings": {"runs": 1, "seconds": 5},
        "runs": {"go-floor": [wrk(0.1)], "baseline": [wrk(0.3)], "convert": [wrk(0.6)]},
    }
    text = render_section(
        fleet(150, 5.0, 1000, 50, 0.5), counts(1_400_000), counts(3_000_000), floor, resync_table
    )
    assert "| convert | 1,400,000 | 1.40x | 3,000,000 | 3.00x |" in text
    assert "| product's conversion | 1000 | 1.00 | 3.00 | 0.600 | 6.0x |" in text
    assert "Lease held at 1.6 s" in text
    assert "a service's six objects: 10.0 KiB" in text
    assert "10,000 services cached (1,000 in the requests' namespace)" in text


def test_without_results_there_is_no_section(tmp_path: Path) -> None:
    assert section(tmp_path, "latest", resync_table) == ""


def test_callgrind_totals_and_the_idle_server_taken_out(tmp_path: Path) -> None:
    dump = tmp_path / "callgrind.out.1"
    dump.write_text("version: 1\nevents: Ir\nfl=x\n1 5\nsummary: 123456\ntotals: 123456\n")
    assert totals(dump) == 123456
    assert per_request(1_000_000, idle_per_second=10_000, seconds=10, requests=300) == 3000
    assert per_request(10, idle_per_second=10_000, seconds=10, requests=0) == 0


def _answer(ops: list[dict[str, Any]]) -> dict[str, Any]:
    return {"patch": base64.b64encode(json.dumps(ops).encode()).decode()}


def test_the_floor_must_send_the_same_patch() -> None:
    ops = [{"op": "add", "path": "/metadata/annotations", "value": {"a": "1", "b": "2"}}]
    reordered = [{"value": {"b": "2", "a": "1"}, "path": "/metadata/annotations", "op": "add"}]
    assert same_patch(_answer(ops), _answer(reordered))
    assert not same_patch(_answer(ops), _answer([]))
    assert not same_patch({}, {})


def test_the_crowded_namespace_takes_the_last_services() -> None:
    placed = service_namespaces(25, 5)
    assert placed[-5:] == [CROWDED_NAMESPACE] * 5
    assert len(set(placed[:20])) == 2
    assert service_namespaces(3, 0) == [placed[0]] * 3


def test_a_fleet_without_its_resync_says_so() -> None:
    partial = fleet(150, 5.0, 1000, 50, 0.5)
    del partial["resync"]
    rows = fleet_targets(None, partial)
    assert [row[2] for row in rows] == ["met", "met", "not measured", "not measured"]


def test_the_cpu_of_each_pass_is_set_against_what_the_cores_offered() -> None:
    resync = fleet(150, 5.0, 1000, 50, 0.5)["resync"]
    assert cpu_line(resync, 2) == ""  # results from before the CPU was read
    resync["full"]["cpu_seconds"] = {"kube-apiserver": 70.0, "etcd": 10.0, "reconciler": 15.5}
    resync["full"]["workers"] = 8
    resync["idle"].update(cpu_seconds={"reconciler": 0.4}, reconcile_passes=3, unchanged=9_997)
    resync["load_average_start"] = [1.0, 1.0, 1.0]
    line = cpu_line(resync, 2)
    assert "the full resync: etcd 10.0 s, kube-apiserver 70.0 s, reconciler 15.5 s" in line
    assert "(the 2 cores offered 100.0 s in 50.0 s); 8 reconcile workers" in line
    assert "3 keys planned, 9,997 found settled" in line
    assert "Load average (1, 5, 15 min) [1.0, 1.0, 1.0] at the start" in line


def test_the_resync_verdicts_say_how_busy_the_cores_were() -> None:
    measured = fleet(150, 5.0, 1000, 50, 0.5)
    rows = fleet_targets(None, measured)
    assert rows[2][3] == "real etcd + kube-apiserver, reconciler as `serve` runs it"
    measured["resync"]["cores"] = 2
    measured["resync"]["full"]["cpu_seconds"] = {"kube-apiserver": 70.0, "reconciler": 20.0}
    rows = fleet_targets(None, measured)
    assert rows[2][3].endswith(
        "; CPU s: kube-apiserver 70.0 + reconciler 20.0 of the 2 cores' 100.0"
    )
    assert rows[3][1] == "0.50 s"


def memory_run(rss_mib: float, started: str) -> dict[str, Any]:
    return {
        "started": started,
        "settings": {"services": 10_000, "crowded_services": 1_000},
        "rss_idle_kib": rss_mib * 1024,
        "object_bytes_by_kind": {"Deployment": 6144, "Service": 1024, "Rollout": 2048},
        "cached_bytes_by_kind": {"Deployment": 2048, "Service": 1024, "Rollout": 2048},
    }


def test_the_newer_of_the_load_run_and_the_memory_only_run_judges_the_memory_target() -> None:
    loaded = fleet(250, 5.0, 1000, 50, 0.5)
    loaded["server"]["started"] = "2026-01-01T00:00:00+00:00"
    newer = memory_run(150, "2026-01-02T00:00:00+00:00")
    older = memory_run(150, "2025-12-31T00:00:00+00:00")
    (memory_row, *_) = fleet_targets(None, loaded, newer)
    assert memory_row[1:3] == ("150 MiB", "met")
    assert "--memory-only" in memory_row[3]
    (memory_row, *_) = fleet_targets(None, loaded, older)
    assert memory_row[1:3] == ("250 MiB", "**missed**")
    (memory_row,) = fleet_targets(None, None, newer)
    assert memory_row[2] == "met"


def test_the_memory_only_run_has_its_part_with_the_before_figure(tmp_path: Path) -> None:
    results = tmp_path
    (results / "latest-memory.json").write_text(
        json.dumps(memory_run(180, "2026-01-02T00:00:00+00:00"))
    )
    (results / "before-memory.json").write_text(
        json.dumps(memory_run(240, "2026-01-01T00:00:00+00:00"))
    )
    text = section(results, "latest", resync_table)
    assert "Resident memory idle: 180 MiB (before: 240 MiB" in text
    assert "a service's six objects: 10.0 KiB" in text
    assert "as the caches keep them (`webhook.core.cached`), KiB: Deployment 2.0" in text
    assert "a service's six objects: 6.0 KiB" in text
    assert "| resident memory <= 200 MiB idle, 10,000 services | 180 MiB | met |" in text
