"""`make bench`: the admission server under load from separate load-generator processes.

For 10, 100 and 1,000 opted-in services in the caches, a fresh server (bench/launcher.py)
is measured: its resident memory (VmRSS) idle and after load, and the conversion path at
a constant 500 requests/s (vegeta, open loop: a slow answer does not slow the senders,
so the tail is not hidden). With 1,000 services, every case is also driven by wrk at
fixed concurrency next to the baseline endpoint, each run of a case followed by a run of
the baseline, so the ratios compare numbers taken under the same machine load. Then a
profiled server gives the hot path (bench/results/<label>-profile.txt). Results go to
bench/results/<label>.json; bench/resync.py adds the reconciler's resync to it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import http.client
import io
import json
import os
import platform
import pstats
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.fixtures import request_bodies
from bench.results import ResultError, parse_vegeta, parse_wrk
from certs.files import write_localhost_bundle

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CACHE_BIN = Path.home() / ".cache" / "rollout-webhook" / "bin"
EXPECTED = {"convert": "convert", "not-opted-in": "skip", "hpa-update": "convert"}


class BenchError(Exception):
    """The benchmark cannot go on: one line saying why."""


def say(text: str, flush: bool = True) -> None:
    """Progress on standard output (the results go to the JSON file)."""
    sys.stdout.write(text + "\n")
    if flush:
        sys.stdout.flush()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"/proc/{pid}/status has no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (/proc/PID/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Launched:
    def __init__(self, process: subprocess.Popen[bytes], port: int, ca: Path) -> None:
        self.process = process
        self.port = port
        self.ca = ca

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def post(self, path: str, body: bytes) -> dict[str, Any]:
        context = ssl.create_default_context(cafile=str(self.ca))
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=context)
        try:
            headers = {"Content-Type": "application/json"}
            connection.request("POST", path, body=body, headers=headers)
            answer = connection.getresponse()
            data = answer.read()
        finally:
            connection.close()
        if answer.status != 200:
            raise BenchError(f"POST {path}: HTTP {answer.status}: {data[:200]!r}")
        result: dict[str, Any] = json.loads(data)
        return result

    def ready(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca))
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=2)
        try:
            connection.request("GET", "/readyz")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()


@contextlib.contextmanager
def launched(
    services: int,
    workdir: Path,
    cert_dir: Path,
    *,
    profile: Path | None = None,
    seconds: float = 0,
    experiments: Sequence[str] = (),
    crowded: bool = False,
    crowded_services: int = 0,
) -> Iterator[Launched]:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "bench.launcher",
        f"--services={services}",
        f"--cert-dir={cert_dir}",
        f"--port={port}",
    ]
    if profile is not None:
        argv += [f"--profile={profile}", f"--profile-seconds={seconds}"]
    argv += [f"--experiment={name}" for name in experiments]
    if crowded:
        argv.append("--crowded")
    if crowded_services:
        argv.append(f"--crowded-services={crowded_services}")
    with (
        (workdir / f"audit-{services}.jsonl").open("wb") as audit,
        (workdir / f"server-{services}.log").open("wb") as log,
    ):
        process = subprocess.Popen(  # noqa: S603  (our own argv)
            argv, cwd=REPO, stdout=audit, stderr=log
        )
        server = Launched(process, port, cert_dir / "ca.crt")
        try:
            # 10,000 services take a minute to generate on a busy machine.
            wait = 120 + services // 20
            deadline = time.monotonic() + wait
            while not server.ready():
                if process.poll() is not None:
                    raise BenchError(f"the server exited at start-up; see {log.name}")
                if time.monotonic() > deadline:
                    raise BenchError(f"the server was not ready within {wait} s; see {log.name}")
                time.sleep(0.2)
            yield server
        finally:
            if process.poll() is None and profile is None:
                process.terminate()
            try:
                process.wait(timeout=60 if profile is not None else 20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _counter_total(exposition: str, name: str, **labels: str) -> float:
    """The sum of one counter's samples whose labels include ``labels``."""
    total = 0.0
    for line in exposition.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def settle(server: Launched, timeout: float = 120.0) -> float:
    """Wait until the write worker has caught up; returns the seconds waited.

    Under a sustained burst of conversions the writes queue up behind the answers (they
    run after them, on the same event loop); the next run must not pay for this one's.
    Every converting decision here plans exactly one Rollout.
    """
    started = time.monotonic()
    while True:
        context = ssl.create_default_context(cafile=str(server.ca))
        connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=context)
        try:
            connection.request("GET", "/metrics")
            text = connection.getresponse().read().decode()
        finally:
            connection.close()
        decided = _counter_total(
            text, "rollout_webhook_admission_requests_total", decision="convert"
        )
        applied = _counter_total(text, "rollout_webhook_cluster_writes_total", kind="Rollout")
        waited = time.monotonic() - started
        if applied >= decided or waited > timeout:
            return round(waited, 2)
        time.sleep(0.5)


def check_answers(server: Launched, bodies: dict[str, bytes]) -> None:
    """Each case gets the decision it is meant to measure, before it is measured."""
    for case, decision in EXPECTED.items():
        answer = server.post("/mutate", bodies[case])["response"]
        got = (answer.get("auditAnnotations") or {}).get("decision")
        if not answer.get("allowed") or got != decision:
            raise BenchError(f"case {case}: expected decision {decision}, got {answer}")
    if not server.post("/baseline", bodies["baseline"])["response"]["allowed"]:
        raise BenchError("the baseline endpoint did not answer allowed")


def wrk_run(
    wrk: str, server: Launched, path: str, body_file: Path, connections: int, seconds: int
) -> dict[str, Any]:
    command = [
        wrk,
        "-t2",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout=10s",
        "-s",
        str(REPO / "bench" / "load.lua"),
        server.url(path),
    ]
    cpu_before = cpu_seconds(server.process.pid)
    done = subprocess.run(  # noqa: S603  (our own argv)
        command,
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_BODY": str(body_file)},
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"wrk exited {done.returncode}: {done.stderr.strip()}")
    try:
        result = parse_wrk(done.stdout)
    except ResultError as err:
        raise BenchError(f"{err}; wrk said: {done.stdout.strip()[-300:]}") from None
    # After the writes have caught up: their cost belongs to the requests that made them.
    result["write_backlog_seconds"] = settle(server)
    result["server_cpu_seconds"] = cpu_seconds(server.process.pid) - cpu_before
    result["cpu_ms"] = 1000 * result["server_cpu_seconds"] / max(1, result["requests"])
    result["load_average"] = load_average()
    return result


def vegeta_run(
    vegeta: str,
    server: Launched,
    path: str,
    body: bytes,
    rate: int,
    seconds: int,
    workdir: Path,
    max_connections: int = 128,
) -> dict[str, Any]:
    target = {
        "method": "POST",
        "url": server.url(path),
        "body": base64.b64encode(body).decode(),
        "header": {"Content-Type": ["application/json"]},
    }
    targets = workdir / "targets.json"
    targets.write_text(json.dumps(target) + "\n")
    cpu_before = cpu_seconds(server.process.pid)
    attack = subprocess.run(  # noqa: S603  (our own argv)
        [
            vegeta,
            "attack",
            "-format=json",
            f"-targets={targets}",
            f"-rate={rate}/1s",
            f"-duration={seconds}s",
            f"-root-certs={server.ca}",
            "-timeout=10s",
            # As many connections as wrk's largest run at most: unbounded, an overloaded
            # server is sent thousands of new TLS connections, each a handshake and some
            # 130 KiB of buffers, and the run measures that storm instead of the webhook.
            f"-max-workers={max_connections}",
        ],
        capture_output=True,
        check=False,
    )
    if attack.returncode != 0:
        raise BenchError(f"vegeta attack exited {attack.returncode}: {attack.stderr!r}")
    report = subprocess.run(  # noqa: S603  (our own argv)
        [vegeta, "report", "-type=json"],
        input=attack.stdout,
        capture_output=True,
        check=False,
    )
    if report.returncode != 0:
        raise BenchError(f"vegeta report exited {report.returncode}: {report.stderr!r}")
    result = parse_vegeta(report.stdout.decode())
    # After the writes have caught up: their cost belongs to the requests that made them.
    result["write_backlog_seconds"] = settle(server)
    result["server_cpu_seconds"] = cpu_seconds(server.process.pid) - cpu_before
    result["cpu_ms"] = 1000 * result["server_cpu_seconds"] / max(1, result["requests"])
    result["load_average"] = load_average()
    return result


def find_tool(name: str) -> str:
    found = shutil.which(name) or (str(CACHE_BIN / name) if (CACHE_BIN / name).is_file() else None)
    if found is None:
        raise BenchError(f"{name} not found (make bench installs it: see docs/benchmarks.md)")
    return found


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError):
        memory = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


# The steps of the conversion path, so the profile shows each even when it is not in the
# top of the list (cProfile sees the event loop's thread only; the audit trail's thread
# shows in the server's CPU time, not here).
STEPS = (
    r"mutate_route.py:\d+\((mutate|decide)\)|engine.py:\d+\(mutate\)|decode_review|parse_review"
    r"|admission.py:\d+\(decide_deployment\)|plan_conversion|review.py:\d+\(make_patch\)"
    r"|copy.py:128\(deepcopy\)|engine.py:\d+\(_finish\)|engine.py:\d+\(recorded\)"
    r"|engine.py:\d+\(check\)|review_response|responses.py:\d+\(render\)"
    r"|engine.py:\d+\(_run_one\)|h11_impl.py:\d+\(data_received\)|sslproto"
)


def profile_table(path: Path, limit: int = 30) -> str:
    stream = io.StringIO()
    stats = pstats.Stats(str(path), stream=stream)
    stats.strip_dirs().sort_stats("cumulative").print_stats(STEPS)
    stats.sort_stats("cumulative").print_stats(limit)
    stats.sort_stats("tottime").print_stats(limit)
    return stream.getvalue()


def run(args: argparse.Namespace) -> dict[str, Any]:
    wrk, vegeta = find_tool("wrk"), find_tool("vegeta")
    workdir = Path(tempfile.mkdtemp(prefix="rollout-webhook-bench-"))
    cert_dir = workdir / "certs"
    write_localhost_bundle(dt.datetime.now(dt.UTC), cert_dir)
    bodies = request_bodies()
    files = {}
    for case, body in bodies.items():
        files[case] = workdir / f"{case}.json"
        files[case].write_bytes(body)
    paths = {case: "/baseline" if case == "baseline" else "/mutate" for case in bodies}
    out: dict[str, Any] = {
        "label": args.label,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_start": load_average(),
        "settings": {
            "runs": args.runs,
            "seconds": args.seconds,
            "rate": args.rate,
            "rate_seconds": args.rate_seconds,
            "connections": args.connections,
            "scales": args.scales,
            "body_bytes": {case: len(body) for case, body in bodies.items()},
        },
        "experiments": args.experiment,
        "scale": {},
        "scale_wrk": {},
        "matrix": {},
        "rate": {},
    }
    for services in [] if args.profile_only else args.scales:
        say(f"== {services} services in the caches", flush=True)
        with launched(services, workdir, cert_dir, experiments=args.experiment) as server:
            check_answers(server, bodies)
            idle = rss_kib(server.process.pid)
            rate_runs = []
            for _ in range(args.runs):
                rate_runs.append(
                    vegeta_run(
                        vegeta,
                        server,
                        "/mutate",
                        bodies["convert"],
                        args.rate,
                        args.rate_seconds,
                        workdir,
                    )
                )
            out["rate"][f"convert, {services} services"] = rate_runs
            # Closed loop too: at a rate near the machine's capacity the open-loop tail
            # is mostly queueing; 8 connections show the per-request cost at each scale.
            out["scale_wrk"][str(services)] = [
                wrk_run(wrk, server, "/mutate", files["convert"], 8, args.seconds)
                for _ in range(args.runs)
            ]
            if services == max(args.scales):
                out["rate"][f"baseline, {services} services"] = [
                    vegeta_run(
                        vegeta,
                        server,
                        "/baseline",
                        bodies["baseline"],
                        args.rate,
                        args.rate_seconds,
                        workdir,
                    )
                    for _ in range(args.runs)
                ]
                matrix: dict[str, dict[str, list[dict[str, Any]]]] = {
                    case: {} for case in ("baseline", *EXPECTED)
                }
                for _ in range(args.runs):
                    for connections in args.connections:
                        for case in EXPECTED:
                            for measured in (case, "baseline"):
                                result = wrk_run(
                                    wrk,
                                    server,
                                    paths[measured],
                                    files[measured],
                                    connections,
                                    args.seconds,
                                )
                                matrix[measured].setdefault(str(connections), []).append(result)
                                say(
                                    f"   {measured:13} c={connections:<4}"
                                    f" {result['rps']:8.0f} req/s"
                                    f" p99 {result['p99_ms']:7.2f} ms",
                                    flush=True,
                                )
                out["matrix"] = matrix
            out["scale"][str(services)] = {
                "rss_idle_kib": idle,
                "rss_after_load_kib": rss_kib(server.process.pid),
            }
            say(f"   RSS {out['scale'][str(services)]}", flush=True)
    if args.profile:
        say("== profile of the conversion path", flush=True)
        profile = workdir / "convert.prof"
        seconds = args.seconds * 2
        with launched(
            max(args.scales),
            workdir,
            cert_dir,
            profile=profile,
            seconds=seconds + 8,
            experiments=args.experiment,
        ) as server:
            out["profile_run"] = wrk_run(wrk, server, "/mutate", files["convert"], 32, seconds)
        text = profile_table(profile)
        (RESULTS / f"{args.label}-profile.txt").write_text(text)
    out["load_average_end"] = load_average()
    out["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    shutil.rmtree(workdir, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--label", default="latest", help="results file: bench/results/LABEL.json")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--rate-seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--scales", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--profile-only", action="store_true", help="only the profiled run")
    parser.add_argument(
        "--experiment",
        action="append",
        default=[],
        help="run the server with a what-if of bench/launcher.py (not the product's behaviour)",
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.seconds < 1:
        parser.error("--runs and --seconds must be at least 1")
    try:
        out = run(args)
    except BenchError as err:
        sys.stderr.write(f"bench: {err}\n")
        return 1
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.profile_only:
        say(f"profile: {RESULTS.relative_to(REPO)}/{args.label}-profile.txt")
        return 0
    target = RESULTS / f"{args.label}.json"
    target.write_text(json.dumps(out, indent=2) + "\n")
    say(f"results: {target.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
