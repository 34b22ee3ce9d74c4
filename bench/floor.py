"""The floor: a minimal admission webhook in Go (bench/floor, standard library only).

It answers the conversion request with the same patch as the product (checked before it
is measured) and writes a hash-chained audit line before each answer, with no policy,
caches, permission check or writes: what any webhook must do. It is built here with
``go build`` (cached under ~/.cache/rollout-webhook/bin by the hash of its source; never
committed) and measured in the same run as the product: for each run, wrk at 8
connections against the product's ``/baseline``, the product's conversion, then the Go
server's conversion, each with the server's CPU time per request from ``/proc``.
Results: bench/results/LABEL-floor.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.fixtures import request_bodies
from bench.results import ResultError, parse_wrk
from bench.run import (
    CACHE_BIN,
    REPO,
    RESULTS,
    BenchError,
    Launched,
    cpu_seconds,
    find_tool,
    free_port,
    launched,
    load_average,
    machine,
    say,
)
from certs.files import write_localhost_bundle
from webhook.core.review import decode_patch

SOURCE = REPO / "bench" / "floor"
GO = os.environ.get("GO") or shutil.which("go") or "/usr/local/go/bin/go"


def source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(SOURCE.glob("*")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def build() -> Path:
    """The floor's binary, built once per source version."""
    binary = CACHE_BIN / f"admission-floor-{source_hash()}"
    if binary.is_file():
        return binary
    if not Path(GO).is_file():
        raise BenchError("go not found: the Go floor is built with the Go toolchain (GO=...)")
    CACHE_BIN.mkdir(parents=True, exist_ok=True)
    built = subprocess.run(  # noqa: S603  (our own argv)
        [GO, "build", "-o", str(binary), "."],
        cwd=SOURCE,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "CGO_ENABLED": "0"},
    )
    if built.returncode != 0:
        raise BenchError(f"go build of bench/floor failed: {built.stderr.strip()[-300:]}")
    return binary


@contextlib.contextmanager
def floor_server(
    binary: Path, cert_dir: Path, workdir: Path, policy_version: str
) -> Iterator[Launched]:
    port = free_port()
    with (workdir / "floor-audit.jsonl").open("wb") as audit:
        process = subprocess.Popen(  # noqa: S603  (our own argv)
            [
                str(binary),
                f"-address=127.0.0.1:{port}",
                f"-cert-dir={cert_dir}",
                f"-policy-version={policy_version}",
            ],
            stdout=audit,
            stderr=subprocess.DEVNULL,
        )
        server = Launched(process, port, cert_dir / "ca.crt")
        try:
            deadline = time.monotonic() + 30
            while not server.ready():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise BenchError("the Go floor did not start")
                time.sleep(0.1)
            yield server
        finally:
            process.terminate()
            process.wait(timeout=10)


def same_patch(product: dict[str, Any], floor: dict[str, Any]) -> bool:
    """The two answers patch the object the same way (JSON key order aside)."""
    return decode_patch(product) == decode_patch(floor) and bool(decode_patch(product))


def wrk_cpu(wrk: str, server: Launched, path: str, body: Path, seconds: int) -> dict[str, Any]:
    """One wrk run at 8 connections and the server's CPU per request (no write settling:
    the floor writes nothing, and the product's writes are done by the next run)."""
    before = cpu_seconds(server.process.pid)
    done = subprocess.run(  # noqa: S603  (our own argv)
        [
            wrk,
            "-t2",
            "-c8",
            f"-d{seconds}s",
            "--timeout=10s",
            "-s",
            str(REPO / "bench" / "load.lua"),
            server.url(path),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_BODY": str(body)},
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"wrk exited {done.returncode}: {done.stderr.strip()}")
    try:
        result = parse_wrk(done.stdout)
    except ResultError as err:
        raise BenchError(str(err)) from None
    time.sleep(1)  # the product's writes after the last answers
    result["cpu_ms"] = (
        1000 * (cpu_seconds(server.process.pid) - before) / max(1, result["requests"])
    )
    return result


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    binary = build()
    cert_dir = workdir / "certs"
    write_localhost_bundle(dt.datetime.now(dt.UTC), cert_dir)
    bodies = request_bodies()
    body = workdir / "convert.json"
    body.write_bytes(bodies["convert"])
    wrk = find_tool("wrk")
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "convert": [], "go-floor": []}
    with launched(args.services, workdir, cert_dir) as product:
        answer = product.post("/mutate", bodies["convert"])["response"]
        version = answer["auditAnnotations"]["policy-version"]
        with floor_server(binary, cert_dir, workdir, version) as floor:
            floor_answer = floor.post("/mutate", bodies["convert"])["response"]
            if not same_patch(answer, floor_answer):
                raise BenchError(f"the Go floor's patch differs: {floor_answer}")
            for _ in range(args.runs):
                for case, server, path in (
                    ("baseline", product, "/baseline"),
                    ("convert", product, "/mutate"),
                    ("go-floor", floor, "/mutate"),
                ):
                    result = wrk_cpu(wrk, server, path, body, args.seconds)
                    runs[case].append(result)
                    say(
                        f"   {case:9} {result['rps']:8.0f} req/s  CPU {result['cpu_ms']:.3f} ms/req"
                    )
    return {"runs": runs, "same_patch": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--label", default="latest")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="rollout-webhook-floor-"))
    document: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_start": load_average(),
        "settings": {"services": args.services, "runs": args.runs, "seconds": args.seconds},
    }
    try:
        document.update(measure(args, workdir))
    except BenchError as err:
        sys.stderr.write(f"bench floor: {err}\n")
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    document["load_average_end"] = load_average()
    target = RESULTS / f"{args.label}-floor.json"
    target.write_text(json.dumps(document, indent=2) + "\n")
    say(f"results: {target.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
