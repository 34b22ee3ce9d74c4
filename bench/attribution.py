"""Each what-if of bench/launcher.py alone: the conversion's CPU per request with it.

A short run: for the product and for each what-if, a server with 1,000 services cached
and three wrk runs of the conversion at 8 connections, each followed by a baseline run;
the server's CPU time per request (the measure other processes on the machine disturb
least) and the ratio to the baseline. Results go to bench/results/LABEL-attribution.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.fixtures import request_bodies
from bench.launcher import EXPERIMENTS
from bench.run import RESULTS, BenchError, find_tool, launched, load_average, say, wrk_run
from certs.files import write_localhost_bundle


def measure(args: argparse.Namespace) -> dict[str, Any]:
    wrk = find_tool("wrk")
    workdir = Path(tempfile.mkdtemp(prefix="rollout-webhook-attribution-"))
    cert_dir = workdir / "certs"
    write_localhost_bundle(dt.datetime.now(dt.UTC), cert_dir)
    files = {}
    for case in ("convert", "baseline"):
        files[case] = workdir / f"{case}.json"
        files[case].write_bytes(request_bodies()[case])
    out: dict[str, Any] = {"load_average_start": load_average(), "variants": {}}
    variants: list[tuple[list[str], bool]] = [
        ([], False),
        *(([name], False) for name in sorted(EXPERIMENTS)),
        *([(sorted(EXPERIMENTS), False)] if len(EXPERIMENTS) > 1 else []),
        # The worst case for one request: its namespace holds every service.
        ([], True),
    ]
    for experiments, crowded in variants:
        name = "+".join(experiments) or "product"
        if crowded:
            name += f", all {args.services} services in the request's namespace"
        runs: dict[str, list[dict[str, Any]]] = {"convert": [], "baseline": []}
        with launched(
            args.services, workdir, cert_dir, experiments=experiments, crowded=crowded
        ) as server:
            for _ in range(args.runs):
                for case, path in (("convert", "/mutate"), ("baseline", "/baseline")):
                    runs[case].append(wrk_run(wrk, server, path, files[case], 8, args.seconds))
        convert = statistics.median(r["cpu_ms"] for r in runs["convert"])
        baseline = statistics.median(r["cpu_ms"] for r in runs["baseline"])
        out["variants"][name] = {
            "convert_cpu_ms": round(convert, 3),
            "baseline_cpu_ms": round(baseline, 3),
            "cpu_vs_baseline": round(convert / baseline, 2),
            "convert_p99_ms": statistics.median(r["p99_ms"] for r in runs["convert"]),
            "runs": runs,
        }
        say(f"   {name:40} convert {convert:.2f} ms CPU/req ({convert / baseline:.1f}x baseline)")
    out["load_average_end"] = load_average()
    shutil.rmtree(workdir, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.attribution", description=__doc__)
    parser.add_argument("--label", default="latest")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        out = measure(args)
    except BenchError as err:
        sys.stderr.write(f"bench attribution: {err}\n")
        return 1
    target = RESULTS / f"{args.label}-attribution.json"
    target.write_text(json.dumps(out, indent=2) + "\n")
    say(f"results: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
