"""The node tier: every test under tests/node is marked `node`.

`node_cluster` (session) is a control plane plus one real node (tests/node/cluster.py), with the
images of tools/build-node-images.py loaded into containerd. Before it starts it undoes what a
killed earlier run left (tests/node/host.py, keyed by the state directory
$ROLLOUT_WEBHOOK_NODE_STATE, default /var/tmp/rollout-webhook-node); after the last test it
stops everything, restores the host and fails the session if anything stayed behind. SIGTERM
is turned into KeyboardInterrupt for the session, so a terminated run tears down too.

Where the machine cannot run it (not root, not Linux, no apt-get, no Go) the tier skips with
the reason; under CI=true it fails instead.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import NoReturn

import pytest
import yaml

from tests.e2e import binaries, harness
from tests.e2e.rollouts import controllers
from tests.node import cluster, host
from tests.node.workloads import wait_for

NODE_DIR = Path(__file__).resolve().parent
REPO = NODE_DIR.parents[1]
IMAGES_SCRIPT = REPO / "tools" / "build-node-images.py"
PRODUCT_TAG = "node"
NEXT_TAG = "node-next"
CHART = REPO / "helm" / "rollout-webhook"
RELEASE = "rollout-webhook"
NAMESPACE = "rollout-system"


def image_values(tag: str) -> tuple[str, ...]:
    """What a user sets to install the chart: where the image is; the rest is the default."""
    return ("--set", "image.repository=localhost/rollout-webhook", "--set", f"image.tag={tag}")


# Lines for the end of the test report: start-up and teardown times, memory.
SUMMARY: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARY:
        terminalreporter.section("node tier")
        for line in SUMMARY:
            terminalreporter.write_line(line)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if NODE_DIR in item.path.resolve().parents:
            item.add_marker(pytest.mark.node)


def _unavailable(message: str) -> NoReturn:
    if binaries.in_ci():
        pytest.fail(f"node tier cannot run under CI=true: {message}", pytrace=False)
    pytest.skip(f"node tier skipped: {message}")


def _script(script: Path, *args: str) -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise binaries.Unavailable(f"{script.name} {' '.join(args)}: {result.stderr.strip()}")
    lines = result.stdout.strip().splitlines()
    if not lines:
        # The script printed only a note on stderr (no root, no Go): it built nothing.
        raise binaries.Unavailable(result.stderr.strip() or f"{script.name} printed nothing")
    paths: dict[str, str] = json.loads(lines[-1])
    return paths


def _node_binaries(tools: dict[str, Path]) -> cluster.Binaries:
    # Builds what is missing (minutes, once); says "Go is not installed" and exits 0 outside CI.
    built = subprocess.run(
        [sys.executable, str(binaries.BUILD_SCRIPT), "node"], capture_output=True, text=True
    )
    if built.returncode != 0:
        raise binaries.Unavailable(f"building the node's binaries failed: {built.stderr.strip()}")
    paths = {k: Path(v) for k, v in _script(binaries.BUILD_SCRIPT, "node", "--print-paths").items()}
    missing = [name for name, path in paths.items() if not path.exists()]
    if missing:
        raise binaries.Unavailable(f"no {', '.join(missing)} binary: {binaries.ENABLE_HINT}")
    return cluster.Binaries(
        etcd=paths["etcd"],
        apiserver=paths["kube-apiserver"],
        controller_manager=paths["kube-controller-manager"],
        scheduler=paths["kube-scheduler"],
        kubelet=paths["kubelet"],
        kube_proxy=paths["kube-proxy"],
        kubectl=tools["kubectl"],
        helm=tools["helm"],
        rollouts_controller=paths["rollouts-controller"],
        argo_plugin=paths["kubectl-argo-rollouts"],
        gateway_plugin=paths["gatewayapi-plugin"],
        traefik=paths["traefik"],
        gateway_api_crds=paths["gateway-api-crds"],
    )


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    del signum, frame
    raise KeyboardInterrupt("SIGTERM")


@pytest.fixture(scope="session")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.NodeCluster]:
    if sys.platform != "linux":
        _unavailable("the node tier needs Linux")
    try:
        # `images` installs the Debian packages first when they are missing (root only).
        images = _script(IMAGES_SCRIPT, "images", "--product-tag", PRODUCT_TAG)
        node_binaries = _node_binaries(binaries.kube_tools())
    except binaries.Unavailable as error:
        _unavailable(str(error))
    reason = cluster.environment_ok()
    if reason is not None:
        _unavailable(reason)
    state = host.State(host.default_state_dir())
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    logs = tmp_path_factory.mktemp("node-logs")
    try:
        with host.locked(state):
            node = cluster.NodeCluster(
                node_binaries, {k: Path(v) for k, v in images.items()}, state, logs
            )
            started = time.monotonic()
            node.start()
            node.timings["total start"] = time.monotonic() - started
            node.ctr(
                "images",
                "tag",
                f"localhost/rollout-webhook:{PRODUCT_TAG}",
                f"localhost/rollout-webhook:{NEXT_TAG}",
            )
            SUMMARY.append(f"node tier up: {_seconds(node.timings)}; logs in {logs}")
            try:
                yield node
            finally:
                SUMMARY.append(f"node tier memory (MiB): {_mib(node.memory_mib())}")
                stopped = time.monotonic()
                problems = node.stop()
                SUMMARY.append(f"node tier down in {time.monotonic() - stopped:.1f} s")
                if problems:
                    pytest.fail("node tier teardown left: " + "; ".join(problems), pytrace=False)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _seconds(timings: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.1f} s" for name, value in timings.items())


def _mib(sizes: dict[str, float]) -> str:
    total = sum(sizes.values())
    return (
        ", ".join(f"{name} {value:.0f}" for name, value in sizes.items()) + f"; total {total:.0f}"
    )


@pytest.fixture(scope="session")
def node_kubectl(node_cluster: cluster.NodeCluster) -> harness.Tool:
    return node_cluster.kubectl()


@pytest.fixture(scope="session")
def node_helm(node_cluster: cluster.NodeCluster) -> harness.Tool:
    return node_cluster.helm()


@pytest.fixture(scope="session")
def release(node_kubectl: harness.Tool, node_helm: harness.Tool) -> Iterator[str]:
    """The chart installed as a user installs it (only the image values set), once per session;
    uninstalled after the last test if a test has not done it already."""
    harness.install_crds(node_kubectl)
    node_helm(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
        *image_values(PRODUCT_TAG), "--wait", "--timeout", "5m",
        timeout=330,
    )  # fmt: skip
    yield RELEASE
    node_helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", check=False, timeout=200)


@pytest.fixture(scope="session")
def argo(node_cluster: cluster.NodeCluster, node_kubectl: harness.Tool) -> None:
    """The Argo Rollouts controller as its own ServiceAccount (the e2e tier's RBAC and
    configuration, the Gateway API plugin registered), a process on the host like the control
    plane's."""
    node_kubectl("apply", "-f", str(controllers.RBAC_FILE))
    config = controllers.argo_config(node_cluster.binaries.gateway_plugin)
    node_kubectl("apply", "-f", "-", input=json.dumps(config))
    token = node_kubectl(
        "create", "token", controllers.ARGO_SERVICE_ACCOUNT, "-n", controllers.ARGO_NAMESPACE,
        "--duration=12h",
    ).stdout.strip()  # fmt: skip
    assert node_cluster.plane is not None
    workdir = node_cluster.work / "argo-rollouts"
    workdir.mkdir(exist_ok=True)
    kubeconfig = workdir / "argo-rollouts.kubeconfig"
    config = harness.token_kubeconfig(node_cluster.plane, controllers.ARGO_SERVICE_ACCOUNT, token)
    kubeconfig.write_text(yaml.safe_dump(config))
    kubeconfig.chmod(0o600)
    metrics_port, healthz_port = harness.free_ports(2)
    process = node_cluster.spawn(
        "rollouts-controller",
        [
            # Argo copies each file:// plugin into ./plugin-bin at start-up, and the plugin, a
            # child process, finds the cluster through KUBECONFIG: the controller's own account.
            "env",
            f"--chdir={workdir}",
            f"POD_NAMESPACE={controllers.ARGO_NAMESPACE}",
            f"KUBECONFIG={kubeconfig}",
            str(node_cluster.binaries.rollouts_controller),
            f"--kubeconfig={kubeconfig}",
            "--leader-elect=false",
            f"--metricsPort={metrics_port}",
            f"--healthzPort={healthz_port}",
            "--loglevel=info",
        ],
    )
    wait_for(lambda: process.alive() and _healthy(healthz_port), "the Argo Rollouts controller")
    # Stopped with every other process of the tier after the last test, once the tier's memory
    # figures have been read.


def _healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
        return int(response.status) == 200
