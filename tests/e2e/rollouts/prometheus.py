"""A real Prometheus for the analysis scenarios, scraping request counters the test sets.

`ServiceMetrics` is a small HTTP server in the test process: for every service a test
registers, each scrape of `/metrics` adds that service's requests per scrape to
`http_requests_total{job=<service>, status=...}`, so `rate()` over them gives the success
rate the test chose. Prometheus (built from Go modules by tools/build-control-plane.py)
scrapes it every second with `honor_labels`, so the `job` label is the service's name, as
in the seed's success-rate query (`job="{{args.service-name}}"`).

Both listen on 127.0.0.1: the Argo Rollouts controller of the tier runs on the host, so
its Prometheus provider reaches the address the policy gives it.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.e2e import harness

SCRAPE_INTERVAL = "1s"
READY_TIMEOUT = 60.0


class ServiceMetrics:
    """The counters the scenarios control, served in the Prometheus text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._per_scrape: dict[str, dict[str, int]] = {}
        self._totals: dict[tuple[str, str], int] = {}
        self.scrapes = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def serve(self, service: str, **requests_per_scrape: int) -> None:
        """From now on each scrape counts these requests for ``service``, by status code
        (``serve("web", ok=99, error=1)`` is a 99% success rate)."""
        codes = {"ok": "200", "error": "500"}
        with self._lock:
            self._per_scrape[service] = {codes[k]: v for k, v in requests_per_scrape.items()}

    def exposition(self) -> str:
        with self._lock:
            self.scrapes += 1
            for service, counts in self._per_scrape.items():
                for status, count in counts.items():
                    key = (service, status)
                    self._totals[key] = self._totals.get(key, 0) + count
            lines = ["# TYPE http_requests_total counter"]
            lines.extend(
                f'http_requests_total{{job="{service}",status="{status}"}} {total}'
                for (service, status), total in sorted(self._totals.items())
            )
        return "\n".join(lines) + "\n"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = metrics.exposition().encode()
                self.send_response(200)
                # Prometheus 3 refuses a scrape without a content type it knows.
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                del format, args

        return Handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class PrometheusError(Exception):
    """Prometheus did not start; the message has its log's tail."""


@dataclass
class Prometheus:
    """One Prometheus process scraping ``metrics``; ``address`` is what the policy names."""

    binary: Path
    metrics: ServiceMetrics
    workdir: Path
    process: harness.ManagedProcess | None = None
    address: str = ""

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {"scrape_interval": SCRAPE_INTERVAL},
                    "scrape_configs": [
                        {
                            "job_name": "e2e-services",
                            "honor_labels": True,
                            "static_configs": [{"targets": [self.metrics.target]}],
                        }
                    ],
                }
            )
        )
        (port,) = harness.free_ports(1)
        self.address = f"http://127.0.0.1:{port}"
        self.process = harness.ManagedProcess(
            "prometheus",
            [
                str(self.binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            self.workdir / "prometheus.log",
        )
        self.process.start()
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(f"{self.address}/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if not self.process.alive() or time.monotonic() > deadline:
                self.process.stop()
                raise PrometheusError(
                    f"prometheus did not become ready; log {self.process.log_path}:\n"
                    + self.process.log_tail()
                )
            time.sleep(0.25)

    def query(self, promql: str) -> list[float]:
        """The values of an instant query's vector (empty while there is no data)."""
        url = f"{self.address}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as answer:
            data = json.load(answer)["data"]
        if data["resultType"] == "scalar":
            return [float(data["result"][1])]
        return [float(sample["value"][1]) for sample in data["result"]]

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
