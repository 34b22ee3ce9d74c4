"""Ten thousand services: the admission server with a fleet's caches, at 1,000 conversions/s.

The caches hold 10,000 converted services (bench/fixtures.py: Deployment, two Services,
HPA, HTTPRoute and Rollout each), 9,000 spread over namespaces of ten and 1,000 in one
crowded namespace, the one the measured requests land in. A fresh server
(bench/launcher.py) is read idle (VmRSS), then driven over TLS at a constant rate by
vegeta (open loop, at most 128 connections): conversions and, after each run, the
framework's no-op baseline at the same rate, so each run has its baseline beside it.
Then its resident memory after the load. ``--memory-only`` reads the idle server's memory
alone, into bench/results/LABEL-memory.json. The reconciler's side of the same fleet (a
resync of 10,000 services against the real control plane, start-up, API requests) is
``python -m bench.resync --services 10000 --crowded-services 1000``, written to the same
results file: bench/results/LABEL-scale.json.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench.fixtures import cluster_objects, request_bodies
from bench.run import (
    REPO,
    RESULTS,
    BenchError,
    check_answers,
    find_tool,
    launched,
    load_average,
    machine,
    rss_kib,
    say,
    vegeta_run,
)
from certs.files import write_localhost_bundle
from webhook.core.policy import builtin_policy
from webhook.kube.cache import slim
from webhook.kube.resources import BY_KIND


def results_file(label: str) -> Path:
    return RESULTS / f"{label}-scale.json"


def memory_file(label: str) -> Path:
    return RESULTS / f"{label}-memory.json"


def merge_into(label: str, key: str, value: Any) -> Path:
    """Set one key of the scale results file, keeping what other parts wrote there."""
    target = results_file(label)
    document: dict[str, Any] = json.loads(target.read_text()) if target.exists() else {}
    document[key] = value
    RESULTS.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(document, indent=2) + "\n")
    return target


def cache_bytes_by_kind(services: int, *, cached: bool = False) -> dict[str, float]:
    """Bytes each object of a kind holds, on average, as a watch delivers it (parsed from
    JSON: no string shared with another object), measured with tracemalloc; ``cached``: in
    the form the caches keep it (``webhook.kube.cache.slim``), once the rest is freed."""
    totals: collections.Counter[str] = collections.Counter()
    counts: collections.Counter[str] = collections.Counter()
    for obj in cluster_objects(services, builtin_policy()):
        text = json.dumps(obj)
        tracemalloc.start()
        parsed = json.loads(text)
        kept = slim(parsed, BY_KIND[obj["kind"]]) if cached else parsed
        del parsed
        size = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del kept
        totals[obj["kind"]] += size
        counts[obj["kind"]] += 1
    return {kind: round(totals[kind] / counts[kind]) for kind in sorted(counts)}


def measure_memory(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The server's resident memory with the caches filled, and no load: what the memory
    target is about, without the minutes of a load run."""
    cert_dir = workdir / "certs"
    write_localhost_bundle(dt.datetime.now(dt.UTC), cert_dir)
    out: dict[str, Any] = {
        "machine": machine(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average_start": load_average(),
        "settings": {"services": args.services, "crowded_services": args.crowded_services},
    }
    begun = time.monotonic()
    with launched(
        args.services, workdir, cert_dir, crowded_services=args.crowded_services
    ) as server:
        out["ready_seconds"] = round(time.monotonic() - begun, 1)
        check_answers(server, request_bodies())
        time.sleep(2)
        out["rss_idle_kib"] = rss_kib(server.process.pid)
        say(f"   RSS idle {out['rss_idle_kib'] / 1024:.0f} MiB", flush=True)
    out["object_bytes_by_kind"] = cache_bytes_by_kind(1000)
    out["cached_bytes_by_kind"] = cache_bytes_by_kind(1000, cached=True)
    out["load_average_end"] = load_average()
    return out


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    vegeta = find_tool("vegeta")
    cert_dir = workdir / "certs"
    write_localhost_bundle(dt.datetime.now(dt.UTC), cert_dir)
    bodies = request_bodies()
    out: dict[str, Any] = {
        "machine": machine(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average_start": load_average(),
        "settings": {
            "services": args.services,
            "crowded_services": args.crowded_services,
            "rate": args.rate,
            "rate_seconds": args.rate_seconds,
            "runs": args.runs,
        },
        "rate": {"convert": [], "baseline": []},
    }
    begun = time.monotonic()
    with launched(
        args.services, workdir, cert_dir, crowded_services=args.crowded_services
    ) as server:
        out["ready_seconds"] = round(time.monotonic() - begun, 1)
        check_answers(server, bodies)
        time.sleep(2)
        out["rss_idle_kib"] = rss_kib(server.process.pid)
        say(f"   RSS idle {out['rss_idle_kib'] / 1024:.0f} MiB", flush=True)
        for _ in range(args.runs):
            for case, path in (("convert", "/mutate"), ("baseline", "/baseline")):
                result = vegeta_run(
                    vegeta, server, path, bodies[case], args.rate, args.rate_seconds, workdir
                )
                out["rate"][case].append(result)
                say(
                    f"   {case:9} {result['rps']:7.0f}/s p50 {result['p50_ms']:7.2f} ms"
                    f" p99 {result['p99_ms']:8.2f} ms errors {result['errors']}",
                    flush=True,
                )
        out["rss_after_load_kib"] = rss_kib(server.process.pid)
    out["object_bytes_by_kind"] = cache_bytes_by_kind(1000)
    out["load_average_end"] = load_average()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--label", default="latest")
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--crowded-services", type=int, default=1_000)
    parser.add_argument("--rate", type=int, default=1_000)
    parser.add_argument("--rate-seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="only the idle server's resident memory and the objects' sizes, no load: "
        "into bench/results/LABEL-memory.json",
    )
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="rollout-webhook-scale-"))
    try:
        result = measure_memory(args, workdir) if args.memory_only else measure(args, workdir)
    except BenchError as err:
        sys.stderr.write(f"bench scale: {err}\n")
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.memory_only:
        target = memory_file(args.label)
        RESULTS.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(result, indent=2) + "\n")
        say(f"results: {target.relative_to(REPO)}")
        return 0
    target = merge_into(args.label, "server", result)
    say(f"results: {target.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
