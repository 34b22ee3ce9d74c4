"""The Argo Rollouts controller's sizing: reading /proc, summarising samples, the advice."""

from __future__ import annotations

from typing import Any

import pytest

from bench.argo_report import advice, extrapolate, render_section, round_up, sizing
from bench.argo_sizing import (
    Sample,
    cpu_ticks,
    nodes_for,
    parse_status,
    pods_per_node,
    rollout_phases,
    service_objects,
    summarise,
)
from webhook.core.policy import builtin_policy


def test_status_and_stat_are_read() -> None:
    status = "Name:\trollouts-contro\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t12\n"
    assert parse_status(status) == (102400, 204800)
    with pytest.raises(ValueError, match="VmRSS"):
        parse_status("Name:\tx\nVmRSS:\t1 kB\n")
    # The command name may hold spaces and parentheses; utime and stime are fields 14, 15.
    stat = "4242 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 300 45 0 0 20"
    assert cpu_ticks(stat) == 345


def test_a_phase_is_summarised() -> None:
    # 10 s; 0.5 s of CPU a second for 6 s, then 2 s of CPU a second for 4 s.
    cpu = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0, 7.0, 9.0, 11.0]
    rss = [100, 110, 120, 130, 140, 150, 160, 170, 180, 190, 150]
    samples = [Sample(float(t), rss[t] * 1024, 190 * 1024, cpu[t]) for t in range(11)]
    out = summarise(samples, window=4.0)
    assert out["seconds"] == 10.0
    assert out["cpu_seconds"] == 11.0
    assert out["cores_mean"] == 1.1
    assert out["cores_peak"] == 2.0  # the last four seconds
    assert out["rss_max_kib"] == 190 * 1024
    assert out["rss_median_kib"] == 150 * 1024
    assert out["rss_end_kib"] == 150 * 1024
    assert out["hwm_end_kib"] == 190 * 1024
    # Shorter than the window: the peak is the mean.
    assert summarise(samples[:3], window=4.0)["cores_peak"] == 0.5
    with pytest.raises(ValueError, match="two samples"):
        summarise(samples[:1])


def test_kwok_nodes_hold_the_pods_with_room() -> None:
    stages = 'x\n      allocatable: {cpu: "64", memory: 256Gi, pods: "500"}\n'
    assert pods_per_node(stages) == 500
    assert nodes_for(5000, 500) == 13  # 6,250 pods' room
    assert nodes_for(1000, 500) == 3
    assert nodes_for(0, 500) == 2


def test_a_service_is_created_as_the_product_converts_it() -> None:
    objects = service_objects(12, builtin_policy())
    kinds = [(path.rsplit("/", 1)[1], obj["kind"]) for path, obj in objects]
    assert kinds == [
        ("serviceaccounts", "ServiceAccount"),
        ("services", "Service"),
        ("deployments", "Deployment"),
        ("services", "Service"),
        ("rollouts", "Rollout"),
    ]
    deployment, rollout = objects[2][1], objects[4][1]
    assert deployment["spec"]["replicas"] == 0
    assert rollout["spec"]["replicas"] == 1
    assert rollout["spec"]["workloadRef"]["name"] == deployment["metadata"]["name"] == "svc-00012"
    assert deployment["metadata"]["namespace"] == "prod-team-001"


def test_healthy_counts_only_at_its_generation() -> None:
    def item(phase: str, observed: str) -> dict[str, Any]:
        return {
            "metadata": {"generation": 2},
            "status": {"phase": phase, "observedGeneration": observed},
        }

    phases = rollout_phases(
        {"items": [item("Healthy", "2"), item("Healthy", "1"), item("Progressing", "2")]}
    )
    assert phases == {"Healthy": 1, "Healthy, older generation": 1, "Progressing": 1}


def phase(rss_mib: float, hwm_mib: float, cores: float, peak: float) -> dict[str, float]:
    return {
        "seconds": 60,
        "cpu_seconds": cores * 60,
        "cores_mean": cores,
        "cores_peak": peak,
        "rss_median_kib": rss_mib * 1024,
        "rss_max_kib": rss_mib * 1024,
        "rss_end_kib": rss_mib * 1024,
        "hwm_end_kib": hwm_mib * 1024,
    }


def run(count: int, idle_mib: float, hwm_mib: float, ramp_cores: float) -> dict[str, Any]:
    return {
        "rollouts": count,
        "namespaces": count // 10,
        "kwok_nodes": 3,
        "pods_per_node": 500,
        "create_seconds": 10.0,
        "rollouts_created_seconds": 5.0,
        "healthy_seconds": 50.0,
        "started": "s",
        "finished": "f",
        "load_average_start": [1.0, 1.0, 1.0],
        "load_average_end": [1.0, 1.0, 1.0],
        "phases": {
            "empty": phase(40, 40, 0.01, 0.02),
            "ramp": phase(idle_mib, hwm_mib, ramp_cores, ramp_cores * 2),
            "idle": phase(idle_mib, hwm_mib, 0.01, 0.05),
        },
    }


def test_advice_follows_the_stated_rules() -> None:
    assert round_up(100, 64) == 128
    assert round_up(128, 64) == 128
    out = advice({"idle_mib": 200, "peak_mib": 300, "ramp_cores": 0.32, "peak_cores": 0.71})
    assert out == {
        "memory_request_mib": 256,  # 250 -> 256
        "memory_limit_mib": 512,  # 450 -> 512
        "cpu_request_m": 350,
        "cpu_limit_floor_m": 800,
    }
    low = advice({"idle_mib": 10, "peak_mib": 10, "ramp_cores": 0.01, "peak_cores": 0.01})
    assert low["cpu_request_m"] == 100
    assert low["memory_limit_mib"] == 128


def test_ten_thousand_is_extrapolated_from_the_two_largest_fleets() -> None:
    assert extrapolate({1000: 100.0, 5000: 300.0}, 10_000) == 550.0
    assert extrapolate({0: 9.0, 1000: 100.0, 5000: 300.0}, 10_000) == 550.0
    # A value that fell between the two never extrapolates below the last one.
    assert extrapolate({1000: 0.4, 5000: 0.3}, 10_000) == 0.3
    with pytest.raises(ValueError, match="two points"):
        extrapolate({1000: 1.0}, 10_000)
    document = {"runs": {"1000": run(1000, 100, 150, 0.3), "5000": run(5000, 300, 400, 0.4)}}
    rows = sizing(document)
    assert [(r["rollouts"], r["basis"]) for r in rows] == [
        (1000, "measured"),
        (5000, "measured"),
        (10_000, "extrapolated"),
    ]
    assert rows[2]["idle_mib"] == 550.0
    assert rows[2]["peak_mib"] == 712.5
    assert rows[2]["memory_request_mib"] == 704  # 687.5 -> 704
    # The CPU figures are the largest fleet's, not extrapolated.
    assert rows[2]["ramp_cores"] == 0.4
    assert rows[2]["cpu_request_m"] == 400
    # One fleet measured: the line runs from the controller with no Rollout (40 MiB).
    alone = sizing({"runs": {"1000": run(1000, 100, 150, 0.3)}})
    assert [(r["rollouts"], r["basis"]) for r in alone] == [
        (1000, "measured"),
        (5000, "extrapolated"),
        (10_000, "extrapolated"),
    ]
    assert alone[1]["idle_mib"] == 340.0  # 40 + 60 x 5
    assert alone[2]["peak_mib"] == 1140.0  # 40 + 110 x 10


def test_the_section_shows_every_phase_and_the_advice() -> None:
    document = {
        "settings": {"argo_rollouts": "v1.9.2", "idle_seconds": 60, "interval_seconds": 1},
        "runs": {"1000": run(1000, 100, 150, 0.3), "5000": run(5000, 300, 400, 0.4)},
    }
    text = render_section(document)
    assert "Argo Rollouts controller (v1.9.2)" in text
    assert "| 5,000 | ramp | 60 | 24.0 | 0.400 | 0.80 | 300 | 300 | 400 |" in text
    assert (
        "| up to 10,000 | extrapolated | 550 | 712 | 0.40 | 704Mi | 1152Mi | 400m | >= 800m |"
        in (text)
    )
