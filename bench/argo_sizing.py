"""The Argo Rollouts controller's memory and CPU with a fleet of converted services.

The control plane and the controllers are the progressive-delivery tier's
(tests/e2e/harness.py, tests/e2e/rollouts/controllers.py: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok and the Argo Rollouts controller, each built
from source and cached under ~/.cache/rollout-webhook/bin), with as many kwok nodes as the
pods need. Each service is what the conversion core makes of a team's Deployment
(bench/fixtures.py, one replica): its Service, the canary Service, the Deployment as stored
after admission (0 replicas) and the Rollout that points at it through ``workloadRef``; kwok
turns the Rollout's pod Running and Ready.

For each fleet size, on a fresh control plane, the controller process is sampled once a
second (VmRSS and VmHWM from /proc/PID/status, user + system CPU from /proc/PID/stat) through
four phases: ``empty`` (started, no Rollout), ``fixtures`` (Namespaces, Services and
Deployments created), ``ramp`` (the Rollouts created, until every one is Healthy at its
generation) and ``idle`` (nothing changes). The controller runs with its default client
rate (40 requests a second, bursts of 80), as its manifests install it; the other
controllers get a higher one so that they are not the bottleneck.
Results: bench/results/LABEL-argo-sizing.json, one entry per fleet size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import ssl
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from bench.fixtures import PER_NAMESPACE, deployment, namespace, namespace_name, service
from bench.resync import BigControlPlane, post_all
from bench.run import load_average, machine, say
from tests.e2e import binaries, harness
from tests.e2e.rollouts.controllers import (
    KWOK_STAGES_FILE,
    Controllers,
    ControllersError,
    controller_binaries,
)
from webhook.core.convert import Neighbours, plan_conversion
from webhook.core.policy import Policy, builtin_policy

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CONTROLLER = "rollouts-controller"
ROLLOUTS = "/apis/argoproj.io/v1alpha1/rollouts"
PEAK_WINDOW = 5.0
"""Seconds over which the peak CPU rate is taken (one-second samples are too noisy)."""
NODE_SPARE = 0.25
"""Pod room the kwok nodes keep beyond the fleet's pods (a rollout's surge)."""
# The other controllers' client rates: the defaults (20 and 50 requests a second) would
# make kube-controller-manager and the scheduler, not the Argo controller, set the pace.
CLIENT_RATES = {
    "kube-controller-manager": ("--kube-api-qps=200", "--kube-api-burst=400"),
    "kube-scheduler": ("--kube-api-qps=200", "--kube-api-burst=400"),
}


class Sample(NamedTuple):
    seconds: float
    """Since sampling began."""
    rss_kib: int
    hwm_kib: int
    cpu_seconds: float
    """User + system CPU of the process since it started."""


def parse_status(text: str) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB from the text of /proc/PID/status."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    if len(found) != 2:
        raise ValueError("/proc/PID/status has no VmRSS or VmHWM")
    return found["VmRSS"], found["VmHWM"]


def cpu_ticks(stat: str) -> int:
    """utime + stime, in clock ticks, from the text of /proc/PID/stat (fields 14 and 15;
    the command name, field 2, may hold spaces, so fields are counted after its ')')."""
    fields = stat.rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def summarise(samples: Sequence[Sample], window: float = PEAK_WINDOW) -> dict[str, float]:
    """What a phase's samples say: its length, the CPU it took (in all and as cores: the
    mean, and the highest rate over any ``window`` seconds), and its memory."""
    if len(samples) < 2:
        raise ValueError("a phase needs at least two samples")
    first, last = samples[0], samples[-1]
    span = last.seconds - first.seconds
    if span <= 0:
        raise ValueError("samples out of order")
    cpu = last.cpu_seconds - first.cpu_seconds
    peak = 0.0
    end = 0
    for start, sample in enumerate(samples):
        end = max(end, start + 1)
        while end < len(samples) and samples[end].seconds - sample.seconds < window:
            end += 1
        if end == len(samples):
            break
        other = samples[end]
        peak = max(
            peak, (other.cpu_seconds - sample.cpu_seconds) / (other.seconds - sample.seconds)
        )
    mean = cpu / span
    return {
        "seconds": round(span, 1),
        "cpu_seconds": round(cpu, 2),
        "cores_mean": round(mean, 3),
        # A phase shorter than the window has only its mean.
        "cores_peak": round(max(peak, mean), 3),
        "rss_max_kib": max(s.rss_kib for s in samples),
        "rss_median_kib": int(statistics.median(s.rss_kib for s in samples)),
        "rss_end_kib": last.rss_kib,
        "hwm_end_kib": last.hwm_kib,
    }


def pods_per_node(stages: str) -> int:
    """The pods a kwok node takes, from the stages file's node status template."""
    match = re.search(r'allocatable:\s*\{[^}]*pods:\s*"(\d+)"', stages)
    if match is None:
        raise ValueError("the kwok stages give nodes no allocatable pods")
    return int(match[1])


def nodes_for(pods: int, per_node: int, spare: float = NODE_SPARE, least: int = 2) -> int:
    """Fake nodes enough for ``pods`` with ``spare`` room beyond them, at least ``least``."""
    return max(least, math.ceil(pods * (1 + spare) / per_node))


class Sampler:
    """Samples one process once every ``interval`` seconds on a thread, by phase."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        self.pid = pid
        self.interval = interval
        self.phases: list[tuple[str, list[Sample]]] = []
        self._started = time.monotonic()
        self._tick = os.sysconf("SC_CLK_TCK")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()

    def read(self) -> Sample:
        rss, hwm = parse_status(Path(f"/proc/{self.pid}/status").read_text())
        ticks = cpu_ticks(Path(f"/proc/{self.pid}/stat").read_text())
        return Sample(round(time.monotonic() - self._started, 3), rss, hwm, ticks / self._tick)

    def mark(self, phase: str) -> None:
        """Begin ``phase``: a sample now ends the last phase and opens this one."""
        sample = self.read()
        with self._lock:
            if self.phases:
                self.phases[-1][1].append(sample)
            self.phases.append((phase, [sample]))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            sample = self.read()
            with self._lock:
                if self.phases:
                    self.phases[-1][1].append(sample)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.mark("end")

    def summaries(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {name: summarise(samples) for name, samples in self.phases if len(samples) > 1}


def service_objects(index: int, policy: Policy) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, object) for one service, in the order a cluster gets them: its
    ServiceAccount and Service, then what the webhook writes (the Deployment at admission,
    then the Rollout and the canary Service). The Rollout is returned last, created in a
    phase of its own."""
    name, ns = f"svc-{index:05d}", namespace_name(index)
    team = deployment(name, ns)
    team["spec"]["replicas"] = 1
    stable = service(name, ns)
    conversion = plan_conversion(
        team, Neighbours(namespace=namespace(ns), services=(stable,)), policy, operation="CREATE"
    )
    if not conversion.converted or conversion.rollout is None:
        raise ValueError(f"{ns}/{name} was not converted: {conversion.reason}")
    core, apps = f"/api/v1/namespaces/{ns}", f"/apis/apps/v1/namespaces/{ns}"
    # The pods run as the service's own account, as the fixture's pod template says.
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": ns},
    }
    out = [(f"{core}/serviceaccounts", account), (f"{core}/services", stable)]
    out.append((f"{apps}/deployments", conversion.deployment))
    out += [(f"{core}/services", svc) for svc in conversion.services]
    out.append((f"/apis/argoproj.io/v1alpha1/namespaces/{ns}/rollouts", conversion.rollout))
    return out


def rollout_phases(listed: Mapping[str, Any]) -> Counter[str]:
    """Rollouts by phase; "Healthy" counts only one whose status is of its generation."""
    phases: Counter[str] = Counter()
    for item in listed.get("items") or []:
        status = item.get("status") or {}
        phase = str(status.get("phase") or "none")
        generation = str(item["metadata"].get("generation"))
        if phase == "Healthy" and str(status.get("observedGeneration")) != generation:
            phase = "Healthy, older generation"
        phases[phase] += 1
    return phases


def _get_json(plane: harness.ControlPlane, context: ssl.SSLContext, path: str) -> Any:
    with urllib.request.urlopen(  # noqa: S310  (the control plane's https URL)
        f"{plane.url}{path}", context=context, timeout=120
    ) as answer:
        return json.loads(answer.read())


def wait_healthy(plane: harness.ControlPlane, count: int, timeout: float) -> float:
    """Seconds until ``count`` Rollouts are Healthy at their generation."""
    context = plane.ssl_context()
    started = time.monotonic()
    last_said = 0.0
    while True:
        phases = rollout_phases(_get_json(plane, context, ROLLOUTS))
        elapsed = time.monotonic() - started
        if phases["Healthy"] >= count:
            return elapsed
        if elapsed > timeout:
            raise TimeoutError(f"{count} Rollouts not Healthy in {timeout:.0f} s: {dict(phases)}")
        if elapsed - last_said >= 30:
            say(f"   {elapsed:5.0f} s: {dict(sorted(phases.items()))}")
            last_said = elapsed
        time.sleep(5 if count > 0 else 0.5)


def _pid_of(controllers: Controllers, name: str) -> int:
    [process] = [p for p in controllers.processes if p.name == name]
    assert process.process is not None
    pid = process.process.pid
    # setpriv and env exec the controller: the process started is the controller itself.
    command = Path(f"/proc/{pid}/comm").read_text().strip()
    if not name.startswith(command):
        raise ControllersError(f"pid {pid} is {command!r}, not {name}")
    return pid


def _others(plane: harness.ControlPlane, controllers: Controllers) -> dict[str, int]:
    """Every other process's VmRSS (KiB), for scale."""
    out = {}
    for process in [*plane.processes, *controllers.processes]:
        if process.name != CONTROLLER and process.alive() and process.process is not None:
            status = Path(f"/proc/{process.process.pid}/status").read_text()
            out[process.name] = parse_status(status)[0]
    return out


def _create(plane: harness.ControlPlane, count: int, workers: int) -> tuple[list[Any], float]:
    """Namespaces, then each service's Services and Deployment; the Rollouts are returned,
    to be created as the ramp. Returns them and the seconds the rest took."""
    policy = builtin_policy()
    started = time.monotonic()
    names = dict.fromkeys(namespace_name(i) for i in range(count))
    post_all(plane, [("/api/v1/namespaces", namespace(ns)) for ns in names], workers)
    rest: list[tuple[str, dict[str, Any]]] = []
    rollouts: list[tuple[str, dict[str, Any]]] = []
    for index in range(count):
        *objects, rollout = service_objects(index, policy)
        rest += objects
        rollouts.append(rollout)
    post_all(plane, rest, workers)
    return rollouts, time.monotonic() - started


def measure(count: int, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One fleet size on a fresh control plane: the controller's phases, summarised."""
    paths = binaries.control_plane_binaries()
    tools = binaries.kube_tools()
    controller_paths = controller_binaries()
    out: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average_start": load_average(),
    }
    with BigControlPlane(
        paths["etcd"], paths["kube-apiserver"], workdir / "control-plane"
    ) as plane:
        kubectl = harness.kubectl_tool(tools["kubectl"], plane.kubeconfig, workdir / "kube")
        harness.install_crds(kubectl)
        per_node = pods_per_node(KWOK_STAGES_FILE.read_text())
        nodes = nodes_for(count, per_node)
        controllers = Controllers(
            plane,
            controller_paths,
            kubectl,
            workdir / "controllers",
            nodes=tuple(f"kwok-node-{i}" for i in range(nodes)),
            extra_args=CLIENT_RATES,
        )
        controllers.start()
        try:
            sampler = Sampler(_pid_of(controllers, CONTROLLER), args.interval)
            sampler.mark("empty")
            sampler.start()
            time.sleep(args.empty_seconds)
            sampler.mark("fixtures")
            rollouts, create_seconds = _create(plane, count, args.workers)
            say(f"   {count:,} services' other objects created in {create_seconds:.0f} s")
            sampler.mark("ramp")
            ramp_started = time.monotonic()
            post_all(plane, rollouts, args.workers)
            rollouts_created = time.monotonic() - ramp_started
            healthy = wait_healthy(plane, count, args.timeout)
            say(f"   {count:,} Rollouts Healthy {rollouts_created + healthy:.0f} s after the first")
            sampler.mark("idle")
            time.sleep(args.idle_seconds)
            sampler.stop()
            out["other_processes_rss_kib"] = _others(plane, controllers)
        finally:
            controllers.stop()
    out.update(
        {
            "rollouts": count,
            "namespaces": math.ceil(count / PER_NAMESPACE),
            "kwok_nodes": nodes,
            "pods_per_node": per_node,
            "create_seconds": round(create_seconds, 1),
            "rollouts_created_seconds": round(rollouts_created, 1),
            "healthy_seconds": round(rollouts_created + healthy, 1),
            "phases": sampler.summaries(),
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "load_average_end": load_average(),
        }
    )
    return out


def results_file(label: str) -> Path:
    return RESULTS / f"{label}-argo-sizing.json"


def record(label: str, settings: Mapping[str, Any], count: int, run: Mapping[str, Any]) -> Path:
    """Add one fleet size's run to the results file, keeping the sizes already there."""
    target = results_file(label)
    document: dict[str, Any] = json.loads(target.read_text()) if target.exists() else {}
    runs = document.get("runs") or {}
    runs[str(count)] = run
    document.update(
        {
            "label": label,
            "machine": machine(),
            "settings": dict(settings),
            "runs": dict(sorted(runs.items(), key=lambda kv: int(kv[0]))),
        }
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(document, indent=2) + "\n")
    return target


def _version(path: Path) -> str:
    """The version in the cache directory's name (rollouts-controller-v1.9.2)."""
    return path.parent.name.rpartition("-")[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.argo_sizing", description=__doc__)
    parser.add_argument("--label", default="latest")
    parser.add_argument("--rollouts", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--empty-seconds", type=float, default=30.0)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=8, help="concurrent creates")
    parser.add_argument("--timeout", type=float, default=2400.0, help="for the ramp, seconds")
    args = parser.parse_args(argv)
    try:
        paths = controller_binaries()
    except binaries.Unavailable as err:
        sys.stderr.write(f"bench argo-sizing: {err}\n")
        return 1
    settings = {
        "argo_rollouts": _version(paths[CONTROLLER]),
        "controller_flags": "defaults (--qps 40 --burst 80, 10 rollout threads)",
        "other_client_rates": {k: " ".join(v) for k, v in CLIENT_RATES.items()},
        "replicas_per_service": 1,
        "empty_seconds": args.empty_seconds,
        "idle_seconds": args.idle_seconds,
        "interval_seconds": args.interval,
        "peak_window_seconds": PEAK_WINDOW,
        "create_workers": args.workers,
    }
    for count in args.rollouts:
        say(f"{count:,} Rollouts")
        with tempfile.TemporaryDirectory(prefix="rollout-webhook-argo-sizing-") as tmp:
            try:
                run = measure(count, Path(tmp), args)
            except (
                RuntimeError,
                TimeoutError,
                ControllersError,
                harness.ControlPlaneError,
                harness.CommandFailed,
            ) as err:
                sys.stderr.write(f"bench argo-sizing: {str(err).splitlines()[0]}\n")
                return 1
        target = record(args.label, settings, count, run)
        say(f"   results: {target.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
