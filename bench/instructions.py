"""CPU per request as instructions counted by callgrind: repeatable on a busy machine.

Time-based CPU per request (``/proc/PID/stat``) moves with what the other processes on a
shared machine do to the caches and the scheduler; an instruction count does not. The
server (bench/launcher.py, its caches filled) runs under ``valgrind --tool=callgrind``
with instrumentation off while it starts; then, for each case, the counters are zeroed,
a fixed number of requests is sent over a few keep-alive TLS connections from this
process, the server is given a moment for the writes that follow the answers, and the
counters are dumped. Instructions per request = the dump's total / the requests, every
thread of the server included (the event loop, the audit trail's writer, the write
worker). An idle window of the same length is counted too and reported beside them.

Cases: the product's ``/mutate`` (convert, not-opted-in, hpa-update), ``/baseline`` (the
framework's no-op, the baseline of the other tables) and ``/noop`` (the same on the bare
ASGI interface: uvicorn, h11 and TLS alone). Results: bench/results/LABEL-instructions.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.fixtures import request_bodies
from bench.run import REPO, RESULTS, BenchError, free_port, load_average, machine, say
from certs.files import write_localhost_bundle

CASES = {
    "noop": "/noop",
    "baseline": "/baseline",
    "not-opted-in": "/mutate",
    "convert": "/mutate",
    "hpa-update": "/mutate",
}


def totals(dump: Path) -> int:
    """The instruction total of one callgrind dump (its ``totals:`` or ``summary:`` line)."""
    for line in dump.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise BenchError(f"{dump}: no totals line")


def per_request(total: int, idle_per_second: float, seconds: float, requests: int) -> float:
    """Instructions per request, the idle server's own ticks over the window taken out."""
    return max(0.0, total - idle_per_second * seconds) / max(1, requests)


class Connections:
    """Keep-alive TLS connections to the server, opened once: the handshakes happen during
    the warm-up, never inside a counted window (each costs more than many requests)."""

    def __init__(self, port: int, ca: Path, count: int) -> None:
        context = ssl.create_default_context(cafile=str(ca))
        self.open = [
            http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=300)
            for _ in range(count)
        ]

    def close(self) -> None:
        for connection in self.open:
            connection.close()

    def send(self, path: str, body: bytes, requests: int) -> None:
        """``requests`` POSTs spread over the connections, side by side; every answer 200."""
        errors: list[str] = []

        def one_connection(connection: http.client.HTTPSConnection, count: int) -> None:
            try:
                for _ in range(count):
                    connection.request(
                        "POST", path, body=body, headers={"Content-Type": "application/json"}
                    )
                    answer = connection.getresponse()
                    answer.read()
                    if answer.status != 200:
                        errors.append(f"POST {path}: HTTP {answer.status}")
            except OSError as err:
                errors.append(f"POST {path}: {err}")

        count = len(self.open)
        shares = [requests // count + (i < requests % count) for i in range(count)]
        threads = [
            threading.Thread(target=one_connection, args=(connection, n))
            for connection, n in zip(self.open, shares, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise BenchError(f"{len(errors)} failed requests, first: {errors[0]}")


class Counted:
    """The server under callgrind, and the control of its counters."""

    def __init__(self, workdir: Path, services: int, cert_dir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.ca = cert_dir / "ca.crt"
        self.out = workdir / "callgrind.out"
        valgrind, control = shutil.which("valgrind"), shutil.which("callgrind_control")
        if valgrind is None or control is None:
            raise BenchError("valgrind not found (Debian package valgrind; make bench installs it)")
        self.control = control
        argv = [
            valgrind,
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={self.out}",
            sys.executable,
            "-m",
            "bench.launcher",
            f"--services={services}",
            f"--cert-dir={cert_dir}",
            f"--port={self.port}",
            "--idle-timeout=60",
        ]
        self.log = (workdir / "server.log").open("wb")
        self.audit = (workdir / "audit.jsonl").open("wb")
        self.process = subprocess.Popen(  # noqa: S603  (our own argv)
            argv, cwd=REPO, stdout=self.audit, stderr=self.log
        )
        self.dumps = 0

    def wait_ready(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        context = ssl.create_default_context(cafile=str(self.ca))
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"the server exited at start-up; see {self.log.name}")
            connection = http.client.HTTPSConnection(
                "127.0.0.1", self.port, context=context, timeout=10
            )
            try:
                connection.request("GET", "/readyz")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                connection.close()
            time.sleep(1)
        raise BenchError(f"the server was not ready within {timeout:.0f} s")

    def ctl(self, *args: str) -> None:
        subprocess.run(  # noqa: S603  (our own argv)
            [self.control, *args, str(self.process.pid)],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def dump(self) -> int:
        """Dump the counters since the last zero; returns their total."""
        self.dumps += 1
        before = set(self.workdir.glob("callgrind.out*"))
        self.ctl("--dump")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            new = [p for p in self.workdir.glob("callgrind.out*") if p not in before]
            if new:
                time.sleep(0.5)  # written whole
                return totals(new[0])
            time.sleep(0.2)
        raise BenchError("callgrind wrote no dump within 60 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        self.audit.close()


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    cert_dir = workdir / "certs"
    write_localhost_bundle(dt.datetime.now(dt.UTC), cert_dir)
    bodies = request_bodies()
    bodies["noop"] = bodies["baseline"]
    server = Counted(workdir, args.services, cert_dir)
    out: dict[str, Any] = {"cases": {}}
    connections: Connections | None = None
    try:
        server.wait_ready()
        server.ctl("--instr=on")
        connections = Connections(server.port, server.ca, args.connections)
        for case, path in CASES.items():  # warm: imports, caches, the connections' handshakes
            connections.send(path, bodies[case], args.warmup)
        time.sleep(args.settle)
        server.ctl("--zero")
        started = time.monotonic()
        time.sleep(args.idle_seconds)
        idle_total = server.dump()
        idle_rate = idle_total / (time.monotonic() - started)
        out["idle_instructions_per_second"] = round(idle_rate)
        for case, path in CASES.items():
            server.ctl("--zero")
            started = time.monotonic()
            connections.send(path, bodies[case], args.requests)
            time.sleep(args.settle)  # the writes after the answers, the audit records
            total = server.dump()
            seconds = time.monotonic() - started
            out["cases"][case] = {
                "requests": args.requests,
                "instructions": total,
                "window_seconds": round(seconds, 2),
                "per_request": round(per_request(total, idle_rate, seconds, args.requests)),
            }
            say(f"   {case:13} {out['cases'][case]['per_request']:>12,} instructions/request")
    finally:
        if connections is not None:
            connections.close()
        server.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--label", default="latest")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="rollout-webhook-instructions-"))
    document: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_start": load_average(),
        "settings": {
            "services": args.services,
            "requests": args.requests,
            "connections": args.connections,
        },
    }
    try:
        document.update(measure(args, workdir))
    except BenchError as err:
        sys.stderr.write(f"bench instructions: {err}\n")
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    document["load_average_end"] = load_average()
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / f"{args.label}-instructions.json"
    target.write_text(json.dumps(document, indent=2) + "\n")
    say(f"results: {target.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
