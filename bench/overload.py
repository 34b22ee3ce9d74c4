"""Overload: legitimate admissions while hundreds or thousands of hostile connections are open.

For each number of hostile connections (0, the baseline, then 500 and 2,000 by default), a
fresh server (bench/launcher.py, 1,000 services cached, the health port on) is attacked by
one process (``--attacker``) holding that many connections open, a quarter of each kind,
each reopened as soon as the server closes it:

- ``handshake``: TCP connected, the TLS handshake never started;
- ``idle``: TLS handshake done, nothing sent;
- ``slowloris``: request headers sent a few bytes a second, never finished;
- ``slow-body``: whole headers, then the body a few bytes a second.

Meanwhile another process (``--legit``) sends conversions the way the API server does:
a few keep-alive connections, a new connection (and handshake) only when the server closes
one. The harness samples the server's resident memory and asks the health port's /healthz
once a second. Each scenario runs ``--runs`` times, each time on a fresh server; the figures
are medians. Results go to bench/results/LABEL-overload.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import http.client
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.fixtures import request_bodies
from bench.run import (
    RESULTS,
    BenchError,
    cpu_seconds,
    free_port,
    launched,
    load_average,
    machine,
    rss_kib,
    say,
)
from certs.files import write_localhost_bundle

KINDS = ("handshake", "idle", "slowloris", "slow-body")
CHART_MEMORY_LIMIT_MIB = 512
"""helm/rollout-webhook/values.yaml: resources.limits.memory."""

# -- the attacker (a process of its own) ---------------------------------------------------


class Attack:
    """Holds ``count`` hostile connections open, reopening each one the server closes."""

    def __init__(self, port: int, count: int, seconds: float, kinds: Sequence[str] = KINDS) -> None:
        self.kinds = tuple(kinds)
        self.port = port
        self.count = count
        self.deadline = time.monotonic() + seconds
        self.open = 0
        self.opened = 0
        self.closed_by_server = 0
        self.failed = 0
        self.context = ssl.create_default_context()
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE
        self.connecting = asyncio.Semaphore(64)

    async def run(self) -> None:
        slots = [self.slot(self.kinds[i % len(self.kinds)]) for i in range(self.count)]
        reporter = asyncio.create_task(self.report())
        await asyncio.gather(*slots)
        reporter.cancel()
        self.say()

    def say(self) -> None:
        line = {
            "open": self.open,
            "opened": self.opened,
            "closed_by_server": self.closed_by_server,
            "failed": self.failed,
        }
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    async def report(self) -> None:
        while True:
            self.say()
            await asyncio.sleep(0.5)

    async def slot(self, kind: str) -> None:
        while time.monotonic() < self.deadline:
            try:
                async with self.connecting:
                    reader, writer = await asyncio.wait_for(self.connect(kind), 30)
            except (OSError, TimeoutError, ssl.SSLError):
                self.failed += 1
                await asyncio.sleep(0.5)
                continue
            self.open += 1
            self.opened += 1
            try:
                await self.hold(kind, reader, writer)
                self.closed_by_server += 1
            except (OSError, ssl.SSLError):
                self.closed_by_server += 1
            except TimeoutError:
                pass
            finally:
                self.open -= 1
                writer.transport.abort()

    async def connect(self, kind: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        tls = None if kind == "handshake" else self.context
        return await asyncio.open_connection("127.0.0.1", self.port, ssl=tls)

    async def hold(
        self, kind: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Until the server closes the connection (or the attack ends: TimeoutError)."""
        trickle = {
            "slowloris": b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nX-Padding: " + b"a" * 4000,
            "slow-body": b"POST /mutate HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n" + b" " * 4000,
        }.get(kind, b"")
        sent = 0
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if sent < len(trickle):
                writer.write(trickle[sent : sent + 4])
                sent += 4
            with contextlib.suppress(TimeoutError):
                if await asyncio.wait_for(reader.read(1024), min(left, 1.0)) == b"":
                    return


def attacker(port: int, count: int, seconds: float, kinds: Sequence[str]) -> int:
    asyncio.run(Attack(port, count, seconds, kinds).run())
    return 0


# -- the legitimate client (a process of its own) ------------------------------------------


class Legit:
    """Keep-alive connections posting one review in a loop, as the API server's client."""

    def __init__(self, port: int, ca: Path, body: bytes, seconds: float) -> None:
        self.port = port
        self.context = ssl.create_default_context(cafile=str(ca))
        self.body = body
        self.deadline = time.monotonic() + seconds
        self.seconds = seconds
        self.lock = threading.Lock()
        self.statuses: dict[str, int] = {}
        self.latencies: list[float] = []
        self.handshakes = 0

    def count(self, status: str, latency: float | None = None) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if latency is not None:
                self.latencies.append(latency)

    def worker(self) -> None:
        connection: http.client.HTTPSConnection | None = None
        headers = {"Content-Type": "application/json"}
        while time.monotonic() < self.deadline:
            if connection is None:
                connection = http.client.HTTPSConnection(
                    "127.0.0.1", self.port, context=self.context, timeout=10
                )
                with self.lock:
                    self.handshakes += 1
            started = time.monotonic()
            try:
                connection.request("POST", "/mutate?timeout=10s", body=self.body, headers=headers)
                answer = connection.getresponse()
                answer.read()
            except (OSError, http.client.HTTPException) as err:
                self.count(type(err).__name__)
                connection.close()
                connection = None
                time.sleep(0.05)  # the API server's client does not spin either
                continue
            self.count(
                str(answer.status), time.monotonic() - started if answer.status == 200 else None
            )
            if answer.will_close:
                connection.close()
                connection = None
        if connection is not None:
            connection.close()

    def run(self, connections: int) -> dict[str, Any]:
        threads = [threading.Thread(target=self.worker) for _ in range(connections)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return {
            "seconds": self.seconds,
            "connections": connections,
            "statuses": self.statuses,
            "handshakes": self.handshakes,
            "latencies_ms": summary_ms(self.latencies),
        }


def legit(port: int, ca: Path, body_file: Path, seconds: float, connections: int) -> int:
    result = Legit(port, ca, body_file.read_bytes(), seconds).run(connections)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


# -- pure arithmetic -----------------------------------------------------------------------


def summary_ms(latencies: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max of latencies given in seconds, in milliseconds (zeros when none)."""
    if not latencies:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": at(0.50) * 1000, "p99": at(0.99) * 1000, "max": ordered[-1] * 1000}


def run_figures(legit_result: Mapping[str, Any]) -> dict[str, float]:
    """Goodput (answered 200 per second) and the share of calls that got anything else."""
    statuses: Mapping[str, int] = legit_result["statuses"]
    total = sum(statuses.values())
    ok = statuses.get("200", 0)
    return {
        "goodput": ok / float(legit_result["seconds"]),
        "failed_share": (total - ok) / total if total else 1.0,
        "p50_ms": float(legit_result["latencies_ms"]["p50"]),
        "p99_ms": float(legit_result["latencies_ms"]["p99"]),
        "handshakes": float(legit_result["handshakes"]),
    }


def scenario_median(runs: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Each figure's median over the runs of one scenario."""
    if not runs:
        raise ValueError("no runs to take the median of")
    rows = [{**run_figures(r["legit"]), **server_figures(r)} for r in runs]
    return {key: float(statistics.median(row[key] for row in rows)) for key in rows[0]}


def server_figures(run: Mapping[str, Any]) -> dict[str, float]:
    probes = run["health"]
    return {
        "rss_max_mib": run["rss_max_kib"] / 1024,
        "health_ok_share": probes["ok"] / probes["total"] if probes["total"] else 0.0,
        "held_max": float(run.get("held_max", 0.0)),
        "server_cpu_seconds": float(run["server_cpu_seconds"]),
        "attacker_cpu_seconds": float(run.get("attacker_cpu_seconds", 0.0)),
    }


def overload_table(document: Mapping[str, Any]) -> str:
    """The Markdown table of docs/benchmarks.md's overload section."""
    head = [
        "hostile connections",
        "most held by the server",
        "admissions answered 200 /s",
        "vs baseline",
        "other answers",
        "p50 ms",
        "p99 ms",
        "new connections (legit)",
        "RSS max MiB",
        "/healthz answered",
        "CPU s: server",
        "attacker",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    scenarios: Mapping[str, Sequence[Mapping[str, Any]]] = document.get("scenarios", {})
    base = scenario_median(scenarios["0"])["goodput"] if "0" in scenarios else 0.0
    for hostile in sorted(scenarios, key=int):
        m = scenario_median(scenarios[hostile])
        cells = [
            f"{int(hostile):,}",
            f"{m['held_max']:,.0f}",
            f"{m['goodput']:,.0f}",
            f"{m['goodput'] / base:.2f}x" if base else "-",
            f"{100 * m['failed_share']:.1f}%",
            f"{m['p50_ms']:.1f}",
            f"{m['p99_ms']:.1f}",
            f"{m['handshakes']:.0f}",
            f"{m['rss_max_mib']:.0f}",
            f"{100 * m['health_ok_share']:.0f}%",
            f"{m['server_cpu_seconds']:.1f}",
            f"{m['attacker_cpu_seconds']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(document: Mapping[str, Any]) -> str:
    settings = document.get("settings", {})
    return "\n".join(
        [
            f"### Overload (`{document.get('label')}-overload`, {document.get('started')} to "
            f"{document.get('finished')}; median of {settings.get('runs')} runs, each on a fresh "
            f"server with {settings.get('services')} services cached; load average "
            f"{document.get('load_average_start')} to {document.get('load_average_end')})",
            "",
            f"Legitimate conversions from {settings.get('legit_connections')} keep-alive "
            f"connections for {settings.get('seconds')} s while the hostile connections are held "
            f"open (a quarter each: handshake never started, idle after the handshake, headers "
            f"trickling, body trickling; each reopened when closed). The chart's memory limit "
            f"is {CHART_MEMORY_LIMIT_MIB} MiB.",
            "",
            overload_table(document),
        ]
    )


# -- the harness ---------------------------------------------------------------------------


def held(exposition: str) -> float:
    """``rollout_webhook_connections_open`` in a /metrics page (0 when absent)."""
    for line in exposition.splitlines():
        if line.startswith("rollout_webhook_connections_open "):
            return float(line.split()[-1])
    return 0.0


class Sampler:
    """Samples the server's RSS and asks its health port's /healthz, until stopped."""

    def __init__(self, pid: int, health_port: int) -> None:
        self.pid = pid
        self.health_port = health_port
        self.rss_max = 0
        self.held_max = 0.0
        """The most connections the server held at once (its own gauge)."""
        self.ok = 0
        self.total = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        tick = 0
        while not self.stopped.wait(0.25):
            with contextlib.suppress(BenchError, OSError):
                self.rss_max = max(self.rss_max, rss_kib(self.pid))
            tick += 1
            if tick % 4 == 0:
                self.total += 1
                self.ok += int(self.get("/healthz") is not None)
                self.held_max = max(self.held_max, held(self.get("/metrics") or ""))

    def get(self, path: str) -> str | None:
        """The body of a 200 from the health port, else None."""
        connection = http.client.HTTPConnection("127.0.0.1", self.health_port, timeout=5)
        try:
            connection.request("GET", path)
            answer = connection.getresponse()
            body = answer.read().decode()
            return body if answer.status == 200 else None
        except OSError:
            return None
        finally:
            connection.close()

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()


@contextlib.contextmanager
def attacking(port: int, count: int, seconds: float, nice: int = 0) -> Iterator[dict[str, Any]]:
    """The attacker process, once it holds ``count`` connections (or 20 s have passed)."""
    state: dict[str, Any] = {}
    if count == 0:
        yield state
        return
    # On this machine the attacker's CPU is taken from the same two cores as the server's
    # and the client's (in a cluster it would be its own); ``--attacker-nice`` lowers it.
    argv = ["nice", "-n", str(nice), sys.executable, "-m", "bench.overload", "--attacker"]
    argv += [f"--port={port}"]
    argv += [f"--hostile={count}", f"--seconds={seconds}"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)  # noqa: S603
    assert process.stdout is not None
    state["pid"] = process.pid
    lines = process.stdout

    def follow() -> None:
        for line in lines:
            state.update(json.loads(line))

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    deadline = time.monotonic() + 20
    while state.get("open", 0) < count * 0.95 and time.monotonic() < deadline:
        time.sleep(0.2)
    state["ramp"] = dict(state)
    try:
        yield state
    finally:
        process.terminate()
        process.wait(timeout=30)
        reader.join(timeout=5)


def one_run(
    hostile: int, args: argparse.Namespace, workdir: Path, cert_dir: Path, body_file: Path
) -> dict[str, Any]:
    health_port = free_port()
    os.environ["ROLLOUT_WEBHOOK_HEALTH_PORT"] = str(health_port)  # read by ServeSettings
    with launched(args.services, workdir, cert_dir) as server:
        pid = server.process.pid
        idle = rss_kib(pid)
        with (
            attacking(server.port, hostile, args.seconds + 40, args.attacker_nice) as attack,
            Sampler(pid, health_port) as sampler,
        ):
            cpu_before = cpu_seconds(pid)
            attacker_before = cpu_seconds(attack["pid"]) if "pid" in attack else 0.0
            argv = [sys.executable, "-m", "bench.overload", "--legit", f"--port={server.port}"]
            argv += [f"--ca={server.ca}", f"--body={body_file}", f"--seconds={args.seconds}"]
            argv += [f"--connections={args.legit_connections}"]
            done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
            if done.returncode != 0:
                raise BenchError(f"the legitimate client failed: {done.stderr.strip()[-300:]}")
            cpu = cpu_seconds(pid) - cpu_before
            # The attacker shares the machine's two cores with the server: its CPU is
            # taken from everyone else's, the legitimate client's included.
            attacker_cpu = cpu_seconds(attack["pid"]) - attacker_before if "pid" in attack else 0.0
            hostile_state = {k: v for k, v in attack.items() if k not in ("ramp", "pid")}
        result = {
            "hostile": hostile_state,
            "hostile_ramp": attack.get("ramp", {}),
            "legit": json.loads(done.stdout),
            "rss_idle_kib": idle,
            "rss_max_kib": max(sampler.rss_max, idle),
            "held_max": sampler.held_max,
            "server_cpu_seconds": cpu,
            "attacker_cpu_seconds": attacker_cpu,
            "health": {"ok": sampler.ok, "total": sampler.total},
            "load_average": load_average(),
        }
    os.environ.pop("ROLLOUT_WEBHOOK_HEALTH_PORT", None)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="rollout-webhook-overload-"))
    cert_dir = workdir / "certs"
    write_localhost_bundle(dt.datetime.now(dt.UTC), cert_dir)
    body_file = workdir / "convert.json"
    body_file.write_bytes(request_bodies()["convert"])
    out: dict[str, Any] = {
        "label": args.label,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_start": load_average(),
        "settings": {
            "runs": args.runs,
            "seconds": args.seconds,
            "services": args.services,
            "hostile": args.hostile,
            "legit_connections": args.legit_connections,
            "attacker_nice": args.attacker_nice,
            "kinds": list(KINDS),
        },
        "scenarios": {},
    }
    for _ in range(args.runs):
        # Scenarios interleaved run by run, so each median compares the same machine load.
        for hostile in args.hostile:
            result = one_run(hostile, args, workdir, cert_dir, body_file)
            out["scenarios"].setdefault(str(hostile), []).append(result)
            figures = {**run_figures(result["legit"]), **server_figures(result)}
            say(
                f"   hostile={hostile:<5} held={figures['held_max']:<5.0f} "
                f"goodput={figures['goodput']:7.1f}/s failed={100 * figures['failed_share']:5.1f}% "
                f"rss_max={figures['rss_max_mib']:4.0f} MiB "
                f"healthz={100 * figures['health_ok_share']:3.0f}%"
            )
    out["load_average_end"] = load_average()
    out["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__)
    parser.add_argument("--label", default="latest", help="bench/results/LABEL-overload.json")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15, help="length of each measurement")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--hostile", type=int, nargs="+", default=[0, 500, 2000])
    parser.add_argument("--legit-connections", type=int, default=4)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument(
        "--attacker-nice", type=int, default=0, help="run the attacker at this nice level"
    )
    # The two load processes (started by the harness).
    parser.add_argument("--attacker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--legit", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ca", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--body", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--connections", type=int, default=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.attacker:
        return attacker(args.port, args.hostile[0], args.seconds, args.kinds)
    if args.legit:
        return legit(args.port, args.ca, args.body, args.seconds, args.connections)
    try:
        out = run(args)
    except BenchError as err:
        sys.stderr.write(f"bench overload: {err}\n")
        return 1
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / f"{args.label}-overload.json"
    target.write_text(json.dumps(out, indent=2) + "\n")
    say(f"results: {target.relative_to(RESULTS.parents[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
