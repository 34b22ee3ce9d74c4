"""docs/benchmarks.md's section on the Argo Rollouts controller, from
bench/results/LABEL-argo-sizing.json (bench/argo_sizing.py), and the controller's
requests and limits derived from it. Pure but for ``section``, which reads the file.

The rules (docs/operations.md#sizing quotes them):

- memory request: the idle RSS plus ``REQUEST_HEADROOM``, rounded up to 64 MiB;
- memory limit: the peak RSS (VmHWM: creating every Rollout at once, as after a restart
  the controller lists and reconciles every one) times ``LIMIT_FACTOR``, rounded up to 128 MiB;
- CPU request: the mean CPU while the controller works through every Rollout at its
  client rate, rounded up to 50m, at least ``MIN_CPU_M``;
- CPU limit: none advised; where one is required, at least the peak over 5 s, rounded up
  to 100m;
- a fleet larger than the largest measured (5,000 and 10,000): memory on a straight line
  through the two largest measurements (the controller with no Rollout counts as 0), the
  CPU figures of the largest; marked as extrapolated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REQUEST_HEADROOM = 0.25
LIMIT_FACTOR = 1.5
MIN_CPU_M = 100
EXTRAPOLATE_TO = (5_000, 10_000)


def round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step - 1e-9) * step)


def extrapolate(points: Mapping[int, float], target: int) -> float:
    """The value at ``target`` on the straight line through the two largest points; never
    below the largest point's value."""
    if len(points) < 2:
        raise ValueError("a line needs two points")
    (x1, y1), (x2, y2) = sorted(points.items())[-2:]
    return max(y2, y2 + (y2 - y1) / (x2 - x1) * (target - x2))


def _figures(run: Mapping[str, Any]) -> dict[str, float]:
    phases = run["phases"]
    ramp, idle = phases["ramp"], phases["idle"]
    return {
        "idle_mib": idle["rss_max_kib"] / 1024,
        "peak_mib": max(p["hwm_end_kib"] for p in phases.values()) / 1024,
        "ramp_cores": float(ramp["cores_mean"]),
        "peak_cores": max(float(p["cores_peak"]) for p in phases.values()),
        "idle_cores": float(idle["cores_mean"]),
    }


def advice(figures: Mapping[str, float]) -> dict[str, int]:
    """Requests and limits (MiB, millicores) from one fleet's figures, by the rules above."""
    request = round_up(figures["idle_mib"] * (1 + REQUEST_HEADROOM), 64)
    return {
        "memory_request_mib": request,
        "memory_limit_mib": max(request, round_up(figures["peak_mib"] * LIMIT_FACTOR, 128)),
        "cpu_request_m": max(MIN_CPU_M, round_up(figures["ramp_cores"] * 1000, 50)),
        "cpu_limit_floor_m": round_up(figures["peak_cores"] * 1000, 100),
    }


def sizing(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per measured fleet (with Rollouts), and one extrapolated to each of
    ``EXTRAPOLATE_TO`` larger than the largest measured. Memory follows a line through the
    two largest fleets, the controller before its first Rollout (the smallest run's
    ``empty`` phase) counting as a fleet of 0; the CPU figures are the largest fleet's
    (reconciling every Rollout is paced by the controller's client rate: more Rollouts
    take longer, not more cores)."""
    runs = {int(count): run for count, run in (document.get("runs") or {}).items()}
    measured = {count: _figures(run) for count, run in runs.items() if count > 0}
    rows = [
        {"rollouts": count, "basis": "measured", **figures, **advice(figures)}
        for count, figures in sorted(measured.items())
    ]
    if not measured:
        return rows
    empty = runs[min(runs)]["phases"]["empty"]
    memory = {0: {"idle_mib": empty["rss_max_kib"] / 1024, "peak_mib": empty["hwm_end_kib"] / 1024}}
    memory.update(measured)
    largest = measured[max(measured)]
    for target in EXTRAPOLATE_TO:
        if target <= max(measured):
            continue
        figures = {
            **largest,
            **{
                key: extrapolate({c: f[key] for c, f in memory.items()}, target)
                for key in ("idle_mib", "peak_mib")
            },
        }
        rows.append({"rollouts": target, "basis": "extrapolated", **figures, **advice(figures)})
    return rows


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _mib(kib: float) -> str:
    return f"{kib / 1024:.0f}"


def measured_table(document: Mapping[str, Any]) -> str:
    head = (
        "Rollouts",
        "phase",
        "seconds",
        "CPU s",
        "cores, mean",
        "cores, peak 5 s",
        "RSS median MiB",
        "RSS max MiB",
        "VmHWM MiB",
    )
    lines = [_row(*head), "|" + "---|" * len(head)]
    for count, run in sorted((document.get("runs") or {}).items(), key=lambda kv: int(kv[0])):
        for phase, p in run["phases"].items():
            lines.append(
                _row(
                    f"{int(count):,}",
                    phase,
                    f"{p['seconds']:.0f}",
                    f"{p['cpu_seconds']:.1f}",
                    f"{p['cores_mean']:.3f}",
                    f"{p['cores_peak']:.2f}",
                    _mib(p["rss_median_kib"]),
                    _mib(p["rss_max_kib"]),
                    _mib(p["hwm_end_kib"]),
                )
            )
    return "\n".join(lines)


def sizing_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "fleet (Rollouts)",
        "basis",
        "idle RSS MiB",
        "peak RSS MiB",
        "cores while reconciling all",
        "memory request",
        "memory limit",
        "CPU request",
        "CPU limit, if one is required",
    )
    lines = [_row(*head), "|" + "---|" * len(head)]
    for row in rows:
        lines.append(
            _row(
                f"up to {row['rollouts']:,}",
                row["basis"],
                f"{row['idle_mib']:.0f}",
                f"{row['peak_mib']:.0f}",
                f"{row['ramp_cores']:.2f}",
                f"{row['memory_request_mib']}Mi",
                f"{row['memory_limit_mib']}Mi",
                f"{row['cpu_request_m']}m",
                f">= {row['cpu_limit_floor_m']}m",
            )
        )
    return "\n".join(lines)


def timings_line(run: Mapping[str, Any]) -> str:
    return (
        f"{run['rollouts']:,} Rollouts in {run['namespaces']:,} namespaces on "
        f"{run['kwok_nodes']} kwok nodes ({run['pods_per_node']} pods each): the other "
        f"objects created in {run['create_seconds']} s, the Rollouts in "
        f"{run['rollouts_created_seconds']} s, every one Healthy {run['healthy_seconds']} s "
        f"after the first was created; run {run['started']} to {run['finished']}, load "
        f"average {run['load_average_start']} to {run['load_average_end']}."
    )


def others_line(run: Mapping[str, Any]) -> str:
    others = run.get("other_processes_rss_kib") or {}
    shown = ", ".join(f"{name} {_mib(kib)}" for name, kib in sorted(others.items()))
    return f"{run['rollouts']:,} Rollouts, the other processes at the end, RSS MiB: {shown}."


def render_section(document: Mapping[str, Any]) -> str:
    settings = document.get("settings") or {}
    runs = [run for _, run in sorted(document["runs"].items(), key=lambda kv: int(kv[0]))]
    parts = [
        "",
        f"### Argo Rollouts controller ({settings.get('argo_rollouts', '?')}), one Rollout "
        "per service on kwok pods",
        "",
        f"Controller flags: {settings.get('controller_flags', '?')}; one replica a service; "
        f"sampled every {settings.get('interval_seconds', '?')} s. Phases: `empty` (no "
        "Rollout yet), `fixtures` (Namespaces, ServiceAccounts, Services, Deployments "
        "created), `ramp` (the Rollouts created until every one is Healthy), `idle` "
        f"({settings.get('idle_seconds', '?'):g} s with nothing changing).",
        "",
        *(timings_line(run) for run in runs),
        "",
        measured_table(document),
        "",
        *(others_line(run) for run in runs if run.get("other_processes_rss_kib")),
        "",
        f"Requests and limits by the rules of `bench/argo_report.py` (memory request: idle "
        f"RSS + {REQUEST_HEADROOM:.0%}; limit: {LIMIT_FACTOR:g} x the peak; CPU request: the "
        f"mean while reconciling every Rollout, at least {MIN_CPU_M}m):",
        "",
        sizing_table(sizing(document)),
    ]
    return "\n".join(parts) + "\n"


def section(results: Path, label: str) -> str:
    """The section for bench/results/LABEL-argo-sizing.json ('' when there is none)."""
    path = results / f"{label}-argo-sizing.json"
    if not path.exists():
        return ""
    return render_section(json.loads(path.read_text()))
