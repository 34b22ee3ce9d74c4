"""docs/benchmarks.md's sections for a fleet of 10,000 services, the instruction counts and
the Go floor, from bench/results/LABEL-{scale,instructions,floor,memory}.json. Pure but for
``section``, which reads the files present (a part not measured is left out)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.results import median_of

TARGET_COST = 1.5
TARGET_FLEET_RSS_MIB = 200.0
TARGET_FLEET_P99_MS = 10.0
TARGET_FLEET_RESYNC_S = 60.0
TARGET_IDLE_RESYNC_S = 1.0


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def instruction_ratios(counts: Mapping[str, Any]) -> dict[str, float]:
    """Each case's instructions per request over the framework baseline's."""
    cases = counts.get("cases") or {}
    base = float((cases.get("baseline") or {}).get("per_request") or 0)
    if base <= 0:
        return {}
    return {case: float(row["per_request"]) / base for case, row in cases.items()}


def idle_memory(
    fleet: Mapping[str, Any] | None, memory: Mapping[str, Any] | None
) -> tuple[Mapping[str, Any], str] | None:
    """The newer of the two measures of the idle server's memory: the load run's (its
    ``server`` part) or the memory-only run's (``LABEL-memory.json``), with how it was run."""
    runs = [
        (run, how)
        for run, how in (
            ((fleet or {}).get("server"), "VmRSS of the server process, caches filled"),
            (memory, "VmRSS of the server process, caches filled (`--memory-only` run)"),
        )
        if run
    ]
    if not runs:
        return None
    return max(runs, key=lambda r: str(r[0].get("started", "")))


def fleet_targets(
    counts: Mapping[str, Any] | None,
    fleet: Mapping[str, Any] | None,
    memory: Mapping[str, Any] | None = None,
) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    if counts:
        ratio = instruction_ratios(counts).get("convert")
        if ratio is not None:
            cases = counts["cases"]
            rows.append(
                (
                    f"conversion CPU <= {TARGET_COST:g}x the baseline",
                    f"{ratio:.2f}x ({cases['convert']['per_request']:,} against "
                    f"{cases['baseline']['per_request']:,} instructions a request)",
                    _verdict(ratio <= TARGET_COST),
                    "callgrind, every thread of the server, "
                    f"{counts['settings']['requests']} requests a case",
                )
            )
    measured = idle_memory(fleet, memory)
    if measured:
        run, how = measured
        services = run["settings"]["services"]
        idle = run["rss_idle_kib"] / 1024
        rows.append(
            (
                f"resident memory <= {TARGET_FLEET_RSS_MIB:g} MiB idle, {services:,} services",
                f"{idle:.0f} MiB",
                _verdict(idle <= TARGET_FLEET_RSS_MIB),
                how,
            )
        )
    server = (fleet or {}).get("server")
    if server:
        runs = server["rate"]["convert"]
        if runs:
            med = median_of(runs)
            rate = server["settings"]["rate"]
            rows.append(
                (
                    f"admission p99 <= {TARGET_FLEET_P99_MS:g} ms at {rate:,} conversions/s "
                    "over TLS, one replica",
                    f"{med['p99_ms']:.1f} ms ({med['rps']:.0f} answered/s)",
                    _verdict(med["p99_ms"] <= TARGET_FLEET_P99_MS and med["rps"] >= 0.95 * rate),
                    f"vegeta, median of {len(runs)} runs",
                )
            )
    resync = (fleet or {}).get("resync")
    if fleet and not resync:
        for target in (
            f"resync of 10,000 unconverted services <= {TARGET_FLEET_RESYNC_S:g} s",
            f"resync with nothing to do <= {TARGET_IDLE_RESYNC_S:g} s",
        ):
            rows.append((target, "-", "not measured", "no resync in this results file"))
    if resync:
        full, idle_pass = float(resync["full"]["seconds"]), float(resync["idle"]["seconds"])
        rows.append(
            (
                f"resync of {resync['services']:,} unconverted services <= "
                f"{TARGET_FLEET_RESYNC_S:g} s",
                f"{full:.1f} s",
                _verdict(full <= TARGET_FLEET_RESYNC_S),
                "real etcd + kube-apiserver, reconciler as `serve` runs it" + _busy(resync, "full"),
            )
        )
        rows.append(
            (
                f"resync with nothing to do <= {TARGET_IDLE_RESYNC_S:g} s",
                f"{idle_pass:.2f} s",
                _verdict(idle_pass <= TARGET_IDLE_RESYNC_S),
                f"{resync['services']:,} converted services enqueued at once"
                + _busy(resync, "idle"),
            )
        )
    return rows


def _busy(resync: Mapping[str, Any], part: str) -> str:
    """'; CPU: ...' for a pass whose CPU seconds were read: how much of the cores the API
    server, etcd and the reconciler took while it ran ('' without them)."""
    used = (resync.get(part) or {}).get("cpu_seconds")
    cores = resync.get("cores")
    if not used or not cores:
        return ""
    seconds = float(resync[part]["seconds"])
    spent = " + ".join(f"{k} {float(v):.1f}" for k, v in sorted(used.items()))
    return f"; CPU s: {spent} of the {cores} cores' {cores * seconds:.1f}"


def instructions_table(counts: Mapping[str, Any], before: Mapping[str, Any] | None = None) -> str:
    head = ["case", "instructions/request", "vs baseline"]
    if before:
        head += ["before", "before vs its baseline"]
    lines = [_row(*head), "|" + "---|" * len(head)]
    ratios = instruction_ratios(counts)
    old_ratios = instruction_ratios(before) if before else {}
    for case, row in (counts.get("cases") or {}).items():
        cells: list[object] = [case, f"{row['per_request']:,}", f"{ratios[case]:.2f}x"]
        if before:
            old = (before.get("cases") or {}).get(case)
            cells += [f"{old['per_request']:,}", f"{old_ratios[case]:.2f}x"] if old else ["-", "-"]
        lines.append(_row(*cells))
    return "\n".join(lines)


def floor_table(floor: Mapping[str, Any]) -> str:
    lines = [
        _row("server", "req/s at 8 connections", "p50 ms", "p99 ms", "CPU ms/req", "vs Go floor"),
        "|---|---|---|---|---|---|",
    ]
    runs = floor.get("runs") or {}
    go = median_of(runs["go-floor"])["cpu_ms"] if runs.get("go-floor") else 0.0
    names = {
        "go-floor": "Go, standard library (bench/floor)",
        "baseline": "product's no-op `/baseline`",
        "convert": "product's conversion",
    }
    for case in ("go-floor", "baseline", "convert"):
        if not runs.get(case):
            continue
        med = median_of(runs[case])
        times = f"{med['cpu_ms'] / go:.1f}x" if go > 0 else "-"
        lines.append(
            _row(
                names[case],
                f"{med['rps']:.0f}",
                f"{med['p50_ms']:.2f}",
                f"{med['p99_ms']:.2f}",
                f"{med['cpu_ms']:.3f}",
                times,
            )
        )
    return "\n".join(lines)


def fleet_rate_table(server: Mapping[str, Any]) -> str:
    rate = server["settings"]["rate"]
    lines = [
        _row(
            "case",
            "target req/s",
            "achieved req/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "server CPU ms/req",
            "errors",
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, runs in server["rate"].items():
        if not runs:
            continue
        med = median_of(runs)
        lines.append(
            _row(
                case,
                rate,
                f"{med['rps']:.0f}",
                f"{med['p50_ms']:.2f}",
                f"{med['p90_ms']:.2f}",
                f"{med['p99_ms']:.2f}",
                f"{med.get('cpu_ms', 0):.2f}",
                sum(int(r["errors"]) for r in runs),
            )
        )
    return "\n".join(lines)


def per_service_bytes(sizes: Mapping[str, float]) -> float:
    """What one cached service's objects hold (a Service twice: stable and canary)."""
    return sum(
        sizes.get(kind, 0) * times
        for kind, times in (
            ("Deployment", 1),
            ("Rollout", 1),
            ("Service", 2),
            ("HorizontalPodAutoscaler", 1),
            ("HTTPRoute", 1),
        )
    )


def objects_line(
    sizes: Mapping[str, float],
    what: str = "One object as a watch delivers it (parsed JSON, measured with tracemalloc)",
) -> str:
    """What one cached service holds, kind by kind."""
    kinds = ", ".join(f"{kind} {size / 1024:.1f}" for kind, size in sorted(sizes.items()))
    return (
        f"{what}, KiB: {kinds}; a service's six objects: "
        f"{per_service_bytes(sizes) / 1024:.1f} KiB, before the caches' index entries."
    )


def memory_part(memory: Mapping[str, Any], before: Mapping[str, Any] | None) -> list[str]:
    """The memory-only run: the idle server, and what one object takes as the caches keep it."""
    settings = memory["settings"]
    idle = memory["rss_idle_kib"] / 1024
    was = (
        f" (before: {before['rss_idle_kib'] / 1024:.0f} MiB, the same run on the code before "
        "the caches kept only the fields read, `before-memory.json`)"
        if before
        else ""
    )
    parts = [
        "",
        f"### Resident memory with {settings['services']:,} services cached "
        f"({settings['crowded_services']:,} in one namespace), no load (`--memory-only`, "
        f"{memory.get('started', '?')})",
        "",
        f"Resident memory idle: {idle:.0f} MiB{was}. The caches are filled as the reflectors "
        "fill them: pages of 500 objects parsed from JSON, each object then in the form the "
        "caches keep.",
    ]
    delivered = memory.get("object_bytes_by_kind")
    if delivered:
        parts += ["", objects_line(delivered)]
    cached = memory.get("cached_bytes_by_kind")
    if cached:
        parts += [
            "",
            objects_line(
                cached, "The same objects as the caches keep them (`webhook.core.cached`)"
            ),
        ]
    return parts


def startup_line(resync: Mapping[str, Any]) -> str:
    full = resync["full"]
    return (
        f"{resync['services']:,} services ({resync.get('crowded_services', 0):,} of them in one "
        f"namespace, {resync.get('namespaces', '?')} namespaces): "
        f"{resync['objects_created']:,} objects created unconverted in "
        f"{resync['create_seconds']} s (not part of the measure). Start-up: every cache listed "
        f"and synced {full['caches_synced_seconds']} s after the start, the reconciler's Lease "
        f"held at {full.get('leader_seconds', '-')} s."
    )


def cpu_line(resync: Mapping[str, Any], cores: int | None = None) -> str:
    """Where the CPU of each pass went ('' for results without it): the API server, etcd
    and the reconciler's process, against what the machine's cores offered meanwhile."""
    parts = []
    for name, label in (("full", "the full resync"), ("idle", "the resync with nothing to do")):
        part = resync.get(name) or {}
        used = part.get("cpu_seconds")
        if not used:
            continue
        seconds = float(part["seconds"])
        offered = (
            f" (the {cores} cores offered {cores * seconds:.1f} s in {seconds:.1f} s)"
            if cores
            else ""
        )
        spent = ", ".join(f"{k} {float(v):.1f} s" for k, v in sorted(used.items()))
        extra = ""
        if name == "idle" and "unchanged" in part:
            extra = (
                f"; {part.get('reconcile_passes', 0):,} keys planned, "
                f"{part['unchanged']:,} found settled"
            )
        if name == "full" and part.get("workers"):
            extra = f"; {part['workers']} reconcile workers"
        parts.append(f"{label}: {spent}{offered}{extra}")
    if not parts:
        return ""
    load = ""
    if resync.get("load_average_start"):
        load = (
            f" Load average (1, 5, 15 min) {resync['load_average_start']} at the start, "
            f"{resync.get('load_average_end')} at the end."
        )
    return "CPU time (user + system) during " + "; during ".join(parts) + "." + load


def render_section(
    fleet: Mapping[str, Any] | None,
    counts: Mapping[str, Any] | None,
    before: Mapping[str, Any] | None,
    floor: Mapping[str, Any] | None,
    resync_table: Any,
    memory: Mapping[str, Any] | None = None,
    memory_before: Mapping[str, Any] | None = None,
) -> str:
    """The generated text; ``resync_table`` is report.py's (same columns as the 1,000's);
    ``memory``: a memory-only run, and ``memory_before`` the one it is compared with."""
    parts = [
        "",
        "### Ten times the fleet: targets",
        "",
        "| target | measured | verdict | how |",
        "|---|---|---|---|",
        *(_row(*row) for row in fleet_targets(counts, fleet, memory)),
    ]
    if counts:
        parts += [
            "",
            f"### Instructions per request (callgrind; {counts['settings']['services']:,} "
            f"services cached, {counts['settings']['requests']} requests a case over "
            f"{counts['settings']['connections']} connections; idle server "
            f"{counts.get('idle_instructions_per_second', 0):,} instructions/s taken out)",
            "",
            "`noop`: the body read and a fixed answer on the bare ASGI interface (uvicorn, h11, "
            "TLS); `baseline`: the same through FastAPI, the baseline of every ratio here"
            + ("; before: the same harness on the code before this change." if before else "."),
            "",
            instructions_table(counts, before),
        ]
    if floor:
        parts += [
            "",
            "### The Go floor (same run, same TLS certificate, same request and patch; wrk, "
            f"median of {floor['settings']['runs']} runs of {floor['settings']['seconds']} s)",
            "",
            floor_table(floor),
        ]
    server = (fleet or {}).get("server")
    if server:
        settings = server["settings"]
        parts += [
            "",
            f"### {settings['services']:,} services cached ({settings['crowded_services']:,} in "
            f"the requests' namespace), {settings['rate']:,} requests/s over TLS "
            f"({settings['rate_seconds']} s a run, median of {settings['runs']}; load average "
            f"{server.get('load_average_start')} to {server.get('load_average_end')})",
            "",
            f"Resident memory: {server['rss_idle_kib'] / 1024:.0f} MiB idle, "
            f"{server['rss_after_load_kib'] / 1024:.0f} MiB after the load.",
            "",
            fleet_rate_table(server),
        ]
        sizes = server.get("object_bytes_by_kind")
        if sizes:
            parts += ["", objects_line(sizes)]
    if memory:
        parts += memory_part(memory, memory_before)
    resync = (fleet or {}).get("resync")
    if resync:
        parts += [
            "",
            f"### Reconciler, {resync['services']:,} services, real control plane",
            "",
            startup_line(resync),
            "",
            resync_table(resync),
        ]
        cpu = cpu_line(resync, resync.get("cores"))
        if cpu:
            parts += ["", cpu]
    return "\n".join(parts) + "\n"


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def section(results: Path, label: str, resync_table: Any) -> str:
    """The section for the files of ``label`` present under ``results`` ('' without any)."""
    fleet = _load(results / f"{label}-scale.json")
    counts = _load(results / f"{label}-instructions.json")
    before = _load(results / "before-instructions.json")
    floor = _load(results / f"{label}-floor.json")
    memory = _load(results / f"{label}-memory.json")
    memory_before = _load(results / "before-memory.json")
    if not (fleet or counts or floor or memory):
        return ""
    return render_section(fleet, counts, before, floor, resync_table, memory, memory_before)
