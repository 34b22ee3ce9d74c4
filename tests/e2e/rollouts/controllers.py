"""The controllers beside the end-to-end control plane, for the progressive-delivery scenarios.

kube-controller-manager (Deployments -> ReplicaSets -> Pods, garbage collection, the HPA
controller), kube-scheduler (kwok fakes kubelets, not the scheduler), kwok (fake nodes whose
Pods turn Running and Ready without a kubelet) and the Argo Rollouts controller, each a local
process started the way the harness starts etcd and kube-apiserver: its own process group, the
kernel's parent-death signal, its log in a file. Argo Rollouts runs as its own ServiceAccount
`argo-rollouts/argo-rollouts` with the project's RBAC (tests/e2e/argo/rbac.yaml), so a rule it
lacks shows up here as it would in a cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.e2e import binaries, harness

ARGO_DIR = Path(__file__).resolve().parents[1] / "argo"
RBAC_FILE = ARGO_DIR / "rbac.yaml"
CONFIG_FILE = ARGO_DIR / "argo-rollouts-config.yaml"
KWOK_STAGES_FILE = ARGO_DIR / "kwok-stages.yaml"

ARGO_NAMESPACE = "argo-rollouts"
ARGO_SERVICE_ACCOUNT = "argo-rollouts"
NODE_LABEL = "rollout-webhook.io/e2e-kwok-node"
NODE_NAMES = ("kwok-node-0", "kwok-node-1")
COMPONENTS = (
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "rollouts-controller",
    "kubectl-argo-rollouts",
    "gatewayapi-plugin",
)
# The traffic-router plugin's name, as Rollouts name it under trafficRouting.plugins.
GATEWAY_PLUGIN = "argoproj-labs/gatewayAPI"
START_TIMEOUT = 60.0


class ControllersError(Exception):
    """A controller could not be started or died; the message has its log tail."""


def controller_binaries() -> dict[str, Path]:
    """The six binaries, built on first use (minutes cold) and cached by version afterwards."""
    script = str(binaries.BUILD_SCRIPT)
    listed = subprocess.run(
        [sys.executable, script, "--print-paths", "rollouts"],
        capture_output=True,
        text=True,
        check=False,
    )
    if listed.returncode != 0:
        raise binaries.Unavailable(f"{binaries.BUILD_SCRIPT.name}: {listed.stderr.strip()}")
    paths = {name: Path(path) for name, path in json.loads(listed.stdout).items()}
    if not all(path.is_file() for path in paths.values()):
        built = subprocess.run(
            [sys.executable, script, "rollouts"], capture_output=True, text=True, check=False
        )
        if built.returncode != 0:
            raise binaries.Unavailable(
                f"building the progressive-delivery controllers failed: {built.stderr.strip()}"
            )
    missing = [name for name, path in paths.items() if not path.is_file()]
    if missing:
        raise binaries.Unavailable(
            f"no {', '.join(missing)} binary: {binaries.ENABLE_HINT} "
            "(`make progressive-delivery` builds these)"
        )
    return paths


def _env_prefix(*options: str, **variables: str) -> list[str]:
    # ManagedProcess inherits the test run's environment; `env` adds to it without touching it.
    env = shutil.which("env") or "/usr/bin/env"
    return [env, *options, *(f"{key}={value}" for key, value in variables.items())]


def argo_config(plugin: Path) -> dict[str, object]:
    """`argo-rollouts-config` with the Gateway API plugin registered at its built path."""
    config: dict[str, object] = yaml.safe_load(CONFIG_FILE.read_text())
    data = config["data"]
    assert isinstance(data, dict)
    data["trafficRouterPlugins"] = yaml.safe_dump(
        [{"name": GATEWAY_PLUGIN, "location": f"file://{plugin}"}], sort_keys=False
    )
    return config


def _wait(what: str, process: harness.ManagedProcess, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last = "not ready"
    while time.monotonic() < deadline:
        if not process.alive():
            raise ControllersError(
                f"{process.name} exited while waiting for {what}; log {process.log_path}:\n"
                + process.log_tail()
            )
        try:
            if ready():
                return
        except (OSError, harness.CommandFailed, ValueError) as error:
            last = str(error)
        time.sleep(harness.POLL_INTERVAL * 2)
    raise ControllersError(
        f"{process.name}: {what} not reached in {START_TIMEOUT:.0f}s ({last}); "
        f"log {process.log_path}:\n{process.log_tail()}"
    )


@dataclass
class Controllers:
    """The controllers of one test session (or package); start() and stop().

    ``nodes``: the fake nodes kwok runs (500 pods each, tests/e2e/argo/kwok-stages.yaml);
    ``extra_args``: more flags for a process, by its name (a benchmark's client rates).
    """

    plane: harness.ControlPlane
    paths: dict[str, Path]
    kubectl: harness.Tool
    workdir: Path
    processes: list[harness.ManagedProcess] = field(default_factory=list)
    nodes: Sequence[str] = NODE_NAMES
    extra_args: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        for name in self.nodes:
            self.kubectl("delete", "node", name, "--ignore-not-found", "--wait=false", check=False)

    def plugin_path_env(self) -> dict[str, str]:
        """PATH with the kubectl-argo-rollouts plugin first, so `kubectl argo rollouts` works."""
        plugin_dir = self.paths["kubectl-argo-rollouts"].parent
        return {"PATH": f"{plugin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        files = self.plane.files
        kubeconfig = str(self.plane.kubeconfig)

        manager = self._process(
            "kube-controller-manager",
            [
                str(self.paths["kube-controller-manager"]),
                f"--kubeconfig={kubeconfig}",
                "--controllers=*",
                "--leader-elect=false",
                "--secure-port=0",  # no metrics or health endpoint is needed
                f"--service-account-private-key-file={files['sa.key']}",
                f"--root-ca-file={files['ca.crt']}",
                "--use-service-account-credentials=false",
                # Short syncs keep the scenarios fast (the HPA's default is 15s).
                "--horizontal-pod-autoscaler-sync-period=5s",
                "--v=1",
            ],
        )
        self._process(
            "kube-scheduler",
            [
                str(self.paths["kube-scheduler"]),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                "--v=1",
            ],
        )
        kwok = self._process(
            "kwok",
            [
                str(self.paths["kwok"]),
                f"--kubeconfig={kubeconfig}",
                f"--config={KWOK_STAGES_FILE}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-label-selector={NODE_LABEL}=true",
                "--node-lease-duration-seconds=40",
            ],
        )
        for name in self.nodes:
            self.kubectl("apply", "-f", "-", input=json.dumps(node_manifest(name)))

        def nodes_ready() -> bool:
            listed = json.loads(self.kubectl("get", "nodes", "-l", NODE_LABEL, "-o", "json").stdout)
            ready = [
                item
                for item in listed["items"]
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in item.get("status", {}).get("conditions", [])
                )
            ]
            return len(ready) == len(self.nodes)

        _wait("fake nodes Ready", kwok, nodes_ready)
        _wait("the default ServiceAccount", manager, self._default_service_account)
        self._start_argo()

    def _default_service_account(self) -> bool:
        # The serviceaccount controller is running once `default` exists in a namespace.
        found = self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False)
        return found.returncode == 0

    def _start_argo(self) -> None:
        self.kubectl("apply", "-f", str(RBAC_FILE))
        config = argo_config(self.paths["gatewayapi-plugin"])
        self.kubectl("apply", "-f", "-", input=json.dumps(config))
        token = self.kubectl(
            "create",
            "token",
            ARGO_SERVICE_ACCOUNT,
            "-n",
            ARGO_NAMESPACE,
            "--duration=12h",
        ).stdout.strip()
        kubeconfig = self.workdir / "argo-rollouts.kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(harness.token_kubeconfig(self.plane, ARGO_SERVICE_ACCOUNT, token))
        )
        kubeconfig.chmod(0o600)
        metrics_port, healthz_port = harness.free_ports(2)
        argo = self._process(
            "rollouts-controller",
            [
                # Argo copies each file:// plugin into ./plugin-bin at start-up: the working
                # directory is the controller's own, never the checkout.
                # The traffic-router plugin, a child process, finds its cluster through
                # KUBECONFIG (client-go's default loading rules): the controller's own account.
                *_env_prefix(
                    f"--chdir={self.workdir}",
                    POD_NAMESPACE=ARGO_NAMESPACE,
                    KUBECONFIG=str(kubeconfig),
                ),
                str(self.paths["rollouts-controller"]),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                # Both listen on every interface (upstream fixes the address); free ports.
                f"--metricsPort={metrics_port}",
                f"--healthzPort={healthz_port}",
                "--loglevel=info",
            ],
        )

        def healthy() -> bool:
            url = f"http://127.0.0.1:{healthz_port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status) == 200

        _wait("/healthz", argo, healthy)

    def _process(self, name: str, argv: Sequence[str]) -> harness.ManagedProcess:
        argv = [*argv, *self.extra_args.get(name, ())]
        process = harness.ManagedProcess(name, argv, self.workdir / f"{name}.log")
        self.processes.append(process)
        process.start()
        return process


def node_manifest(name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                NODE_LABEL: "true",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "type": "kwok",
            },
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {},
    }
