"""Where a conversion's CPU goes: by thread in the running server, and by pure step alone.

cProfile sees only the event loop's thread and inflates code that makes many small
Python calls, so its shares mislead. Two measures instead:

- by thread: the server (1,000 services cached) is driven by wrk at 8 connections for
  each case, and each thread's CPU time (``/proc/PID/task/TID/stat``) is divided by the
  requests. The event loop is the thread whose id is the process id; the others are
  the audit trail's writer and the pools that make the writes and permission checks.
- by step: the pure steps of the conversion timed in this process, one after another,
  on the same request and caches: parsing, the decision, the patch, an audit record.

Results go to bench/results/LABEL-breakdown.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.fixtures import cluster_objects, request_bodies
from bench.run import (
    RESULTS,
    BenchError,
    Launched,
    find_tool,
    launched,
    load_average,
    say,
    wrk_run,
)
from certs.files import write_localhost_bundle
from webhook.core.admission import decide_mutation
from webhook.core.audit import DecisionFacts, build_record, canonical_json, record_hash
from webhook.core.keys import DEFAULT_KEYS
from webhook.core.policy import builtin_policy
from webhook.core.review import parse_review, patch_for
from webhook.kube.view import MemoryClusterView

CASES = {"baseline": "/baseline", "not-opted-in": "/mutate", "convert": "/mutate"}


def thread_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of a process, by thread id."""
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        fields = stat.rpartition(")")[2].split()
        out[tid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def per_request(
    before: dict[str, float], after: dict[str, float], main: str, requests: int
) -> dict[str, float]:
    """Milliseconds of CPU per request: the event loop's thread, and every other one."""
    spent = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    loop = spent.pop(main, 0.0)
    return {
        "event_loop_ms": 1000 * loop / max(1, requests),
        "other_threads_ms": 1000 * sum(spent.values()) / max(1, requests),
    }


def by_thread(server: Launched, wrk: str, files: dict[str, Path], seconds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pid = server.process.pid
    for case, path in CASES.items():
        before = thread_seconds(pid)
        run = wrk_run(wrk, server, path, files[case], 8, seconds)
        out[case] = {
            **per_request(before, thread_seconds(pid), str(pid), run["requests"]),
            "requests": run["requests"],
        }
        say(f"   {case:13} {out[case]}")
    return out


def timed(step: Callable[[], object], repeat: int) -> float:
    started = time.process_time()
    for _ in range(repeat):
        step()
    return 1000 * (time.process_time() - started) / repeat


def by_step(services: int, repeat: int) -> dict[str, float]:
    policy = builtin_policy()
    view = MemoryClusterView(cluster_objects(services, policy))
    body = request_bodies()["convert"]
    request = parse_review(json.loads(body))
    plan = decide_mutation(request, view, policy, keys=DEFAULT_KEYS)
    patch = patch_for(request, plan)
    facts = DecisionFacts(
        uid=request["uid"],
        user="bench",
        operation="CREATE",
        kind="Deployment",
        namespace=request.get("namespace", ""),
        name="web",
        dry_run=False,
        decision=plan.decision,
        reason=plan.reason,
        environment=plan.environment,
        strategy=plan.strategy,
        policy_name="built-in",
        policy_resource_version="",
        policy_sha256="0" * 64,
        patch=tuple(patch),
        changes_wanted=(),
        warnings=(),
        latency_seconds=0.001,
    )
    now = dt.datetime.now(dt.UTC)

    def audit_record() -> None:
        record = build_record(facts, at=now, prev="0" * 64, version="bench")
        canonical_json(record)
        record_hash(record)

    return {
        "parse_ms": timed(lambda: parse_review(json.loads(body)), repeat),
        "decide_ms": timed(
            lambda: decide_mutation(request, view, policy, keys=DEFAULT_KEYS), repeat
        ),
        "patch_ms": timed(lambda: patch_for(request, plan), repeat),
        "audit_record_ms": timed(audit_record, repeat),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.breakdown", description=__doc__)
    parser.add_argument("--label", default="latest")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="rollout-webhook-breakdown-"))
    try:
        cert_dir = workdir / "certs"
        write_localhost_bundle(dt.datetime.now(dt.UTC), cert_dir)
        files = {}
        for case, body in request_bodies().items():
            files[case] = workdir / f"{case}.json"
            files[case].write_bytes(body)
        out: dict[str, Any] = {"load_average_start": load_average()}
        with launched(args.services, workdir, cert_dir) as server:
            out["by_thread"] = by_thread(server, find_tool("wrk"), files, args.seconds)
        out["by_step"] = by_step(args.services, args.repeat)
        say(f"   steps alone {out['by_step']}")
        out["load_average_end"] = load_average()
    except BenchError as err:
        sys.stderr.write(f"bench breakdown: {err}\n")
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    target = RESULTS / f"{args.label}-breakdown.json"
    target.write_text(json.dumps(out, indent=2) + "\n")
    say(f"results: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
