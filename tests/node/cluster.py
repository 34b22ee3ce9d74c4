"""A control plane with one real node: the node tier's harness.

The control plane runs on the host: etcd on loopback, kube-apiserver on the host's end of the
tier's veth pair (10.213.0.1), kube-controller-manager and kube-scheduler. The node runs in the
tier's own network namespace (`rwnode`): containerd with runc, the CNI bridge for pods, the
kubelet and kube-proxy (nftables). Pods reach the API server through the `kubernetes` Service
or the veth address, nothing else of the host; the host routes the Service and pod ranges into
the namespace, so the API server calls webhooks through their Services' ClusterIPs.

Processes are started like the end-to-end tier's (tests/e2e/harness.py: own process group,
killed by the kernel if the test run dies) and recorded in the state directory, so
tests.node.host.teardown can stop them and undo the host changes after a killed run too.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.e2e import harness
from tests.node import host, pki

CONTAINERD = "/usr/bin/containerd"
RUNC = "/usr/sbin/runc"
CNI_BIN = "/usr/lib/cni"
READY_TIMEOUT = 180.0


class NodeError(Exception):
    """The node could not be brought up; the message names the step and holds a log tail."""


@dataclass
class NodeControlPlane(harness.ControlPlane):
    """The e2e tier's control plane, listening on the tier's veth address, with the Node
    authorizer, the tier's Service range, the kubernetes Service's endpoint kept, and kubelet
    client credentials."""

    node_pki: pki.NodePki | None = None

    @property
    def url(self) -> str:
        return f"https://{host.HOST_ADDRESS}:{self.apiserver_port}"

    def _start(self) -> None:
        assert self.node_pki is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.credentials = self.node_pki.control_plane
        self.files = self.node_pki.write(self.workdir / "pki")
        # The admission configuration the e2e harness gives its API server (the webhook
        # client certificate it presents to webhooks that ask for one).
        self.files.update(harness._write_webhook_client(self.workdir / "pki"))
        etcd_client_url = self._start_etcd()
        (self.apiserver_port,) = harness.free_ports(1)
        apiserver = harness.ManagedProcess(
            "kube-apiserver",
            self._apiserver_argv(etcd_client_url),
            self.workdir / "kube-apiserver.log",
        )
        self.processes.append(apiserver)
        apiserver.start()
        context = self.ssl_context()
        harness._wait_until(apiserver, lambda: self._get("/readyz", context) == b"ok", "/readyz")
        self._write_kubeconfig()

    def _apiserver_argv(self, etcd_url: str) -> list[str]:
        replaced = (
            "--bind-address=",
            "--advertise-address=",
            "--authorization-mode=",
            "--service-cluster-ip-range=",
            "--endpoint-reconciler-type=",
            "--service-account-issuer=",
        )
        argv = [a for a in super()._apiserver_argv(etcd_url) if not a.startswith(replaced)]
        f = self.files
        return [
            *argv,
            f"--bind-address={host.HOST_ADDRESS}",
            f"--advertise-address={host.HOST_ADDRESS}",
            "--authorization-mode=Node,RBAC",
            f"--service-cluster-ip-range={host.SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--kubelet-client-certificate={f['apiserver-kubelet-client.crt']}",
            f"--kubelet-client-key={f['apiserver-kubelet-client.key']}",
            f"--kubelet-certificate-authority={f['ca.crt']}",
            "--kubelet-preferred-address-types=InternalIP",
        ]


@dataclass
class Binaries:
    etcd: Path
    apiserver: Path
    controller_manager: Path
    scheduler: Path
    kubelet: Path
    kube_proxy: Path
    kubectl: Path
    helm: Path
    rollouts_controller: Path
    argo_plugin: Path
    gateway_plugin: Path  # Argo Rollouts' Gateway API traffic-router plugin
    traefik: Path  # the Gateway API data plane
    gateway_api_crds: Path  # a folder: the standard channel's CRDs of Traefik's version


@dataclass
class NodeCluster:
    """The control plane and the node; start() brings both up, stop() undoes everything."""

    binaries: Binaries
    images: dict[str, Path]
    state: host.State
    logs: Path
    plane: NodeControlPlane | None = None
    processes: list[harness.ManagedProcess] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def work(self) -> Path:
        return self.state.work

    @property
    def kubeconfig(self) -> Path:
        assert self.plane is not None
        return self.plane.kubeconfig

    def kubectl(self) -> harness.Tool:
        return harness.kubectl_tool(self.binaries.kubectl, self.kubeconfig, self.work / "kube")

    def helm(self) -> harness.Tool:
        return harness.helm_tool(self.binaries.helm, self.kubeconfig, self.work / "helm")

    # --- start / stop --------------------------------------------------------------------

    def start(self) -> None:
        problems = host.teardown(self.state)  # a killed run's leftovers
        if problems:
            raise NodeError("leftovers of an earlier run stay: " + "; ".join(problems))
        host.record_baseline(self.state)
        self.work.mkdir(parents=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            self._timed("network", setup_network)
            self._timed("cgroups", setup_cgroups)
            credentials = pki.generate(datetime.datetime.now(datetime.UTC))
            self._timed("control plane", lambda: self._start_control_plane(credentials))
            self._timed("containerd", self._start_containerd)
            self._timed("images", self._load_images)
            self._timed("kubelet", self._start_kubelet)
            self._timed("kube-proxy", self._start_kube_proxy)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> list[str]:
        """Stop every process and undo every host change; returns what stayed behind."""
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        if self.plane is not None:
            self.plane.stop()
        self._keep_logs()
        return host.teardown(self.state)

    def _timed(self, name: str, step: Callable[[], None]) -> None:
        started = time.monotonic()
        step()
        self.timings[name] = time.monotonic() - started

    def spawn(self, name: str, argv: list[str]) -> harness.ManagedProcess:
        process = harness.ManagedProcess(name, argv, self.logs / f"{name}.log")
        process.start()
        assert process.process is not None
        host.record_process(self.state, name, process.process.pid)
        self.processes.append(process)
        return process

    def _keep_logs(self) -> None:
        if self.plane is not None:
            for name in ("kube-apiserver.log", "etcd.log"):
                source = self.plane.workdir / name
                if source.is_file():
                    shutil.copyfile(source, self.logs / name)

    # --- control plane -------------------------------------------------------------------

    def _start_control_plane(self, credentials: pki.NodePki) -> None:
        plane = NodeControlPlane(
            self.binaries.etcd, self.binaries.apiserver, self.work / "control-plane"
        )
        plane.node_pki = credentials
        self.plane = plane
        plane.start()
        for process in plane.processes:
            assert process.process is not None
            host.record_process(self.state, process.name, process.process.pid)
        files = plane.files
        configs = self._kubeconfigs(credentials)
        self.spawn(
            "kube-controller-manager",
            [
                str(self.binaries.controller_manager),
                f"--kubeconfig={configs['kube-controller-manager']}",
                f"--service-account-private-key-file={files['sa.key']}",
                f"--root-ca-file={files['ca.crt']}",
                # Each controller as its own ServiceAccount: the rights RBAC gives controllers
                # are bound to those, not to the manager's own user.
                "--use-service-account-credentials=true",
                # The default client rate (20 requests a second for each controller) leaves
                # the Deployment controller minutes behind while the admission load creates
                # Deployments as fast as it can, and the chart's own rollout in `helm upgrade`
                # waits its turn (seen: "Updated: 1/2" for over 3 minutes after the new pod
                # was Ready). The tier measures the webhook, not that queue.
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--leader-elect=false",
                f"--service-cluster-ip-range={host.SERVICE_CIDR}",
                "--allocate-node-cidrs=false",
                "--secure-port=0",
                "--v=1",
            ],
        )
        self.spawn(
            "kube-scheduler",
            [
                str(self.binaries.scheduler),
                f"--kubeconfig={configs['kube-scheduler']}",
                "--leader-elect=false",
                "--secure-port=0",
                "--v=1",
            ],
        )

    def _kubeconfigs(self, credentials: pki.NodePki) -> dict[str, Path]:
        assert self.plane is not None
        directory = self.work / "kubeconfigs"
        directory.mkdir(exist_ok=True)
        ca = credentials.control_plane.ca.cert_pem
        return {
            name: pki.write_kubeconfig(
                directory / f"{name}.kubeconfig",
                pki.kubeconfig(self.plane.url, ca, pki.CLIENTS[name][0], credentials.clients[name]),
            )
            for name in ("kubelet", "kube-proxy", "kube-controller-manager", "kube-scheduler")
        }

    # --- containerd ----------------------------------------------------------------------

    @property
    def containerd_socket(self) -> Path:
        return self.work / "run" / "containerd" / "containerd.sock"

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return host.run("ctr", "--address", str(self.containerd_socket), "-n", "k8s.io", *args)

    def _start_containerd(self) -> None:
        config = self.work / "etc" / "containerd.toml"
        cni_conf = self.work / "etc" / "cni"
        config.parent.mkdir(parents=True, exist_ok=True)
        cni_conf.mkdir(parents=True)
        config.write_text(containerd_config(self.work, cni_conf))
        (cni_conf / "10-rollout-webhook-node.conflist").write_text(
            json.dumps(cni_config(self.work), indent=2)
        )
        process = self.spawn("containerd", host.in_netns(CONTAINERD, "--config", str(config)))
        _wait(process, lambda: self.ctr("version").returncode == 0, "containerd's socket")

    def _load_images(self) -> None:
        for archive in self.images.values():
            self.ctr("images", "import", str(archive))

    # --- kubelet and kube-proxy ----------------------------------------------------------

    def _start_kubelet(self) -> None:
        assert self.plane is not None
        config = self.work / "etc" / "kubelet.yaml"
        config.write_text(yaml.safe_dump(kubelet_config(self.work, self.plane.files)))
        kubeconfig = self.work / "kubeconfigs" / "kubelet.kubeconfig"
        process = self.spawn(
            "kubelet",
            host.in_netns(
                str(self.binaries.kubelet),
                f"--config={config}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.work / 'kubelet'}",
                f"--hostname-override={pki.NODE_NAME}",
                f"--node-ip={host.NODE_ADDRESS}",
                "--v=1",
            ),
        )
        kubectl = self.kubectl()
        _wait(
            process,
            lambda: _node_ready(kubectl),
            f"node {pki.NODE_NAME} Ready",
        )

    def _start_kube_proxy(self) -> None:
        config = self.work / "etc" / "kube-proxy.yaml"
        kubeconfig = self.work / "kubeconfigs" / "kube-proxy.kubeconfig"
        config.write_text(yaml.safe_dump(kube_proxy_config(kubeconfig)))
        process = self.spawn(
            "kube-proxy",
            host.in_netns(str(self.binaries.kube_proxy), f"--config={config}", "--v=1"),
        )
        # Ready once the kubernetes Service answers through kube-proxy's rules in the namespace.
        _wait(process, kubernetes_service_answers, "the kubernetes Service through kube-proxy")

    # --- measurements --------------------------------------------------------------------

    def memory_mib(self) -> dict[str, float]:
        """Resident memory of each program of the tier and of the pods' cgroup, in MiB."""
        sizes: dict[str, float] = {}
        every = list(self.processes) + (list(self.plane.processes) if self.plane else [])
        for process in every:
            if process.process is not None:
                sizes[process.name] = _rss_mib(process.process.pid)
        pods = host.CGROUP_FS / "memory" / host.CGROUP_ROOT / "kubepods"
        usage = pods / "memory.usage_in_bytes"
        stat = pods / "memory.stat"
        if usage.is_file() and stat.is_file():
            fields = dict(line.split() for line in stat.read_text().splitlines())
            sizes["pods (rss)"] = int(fields.get("total_rss", 0)) / 2**20
        return sizes


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _wait(process: harness.ManagedProcess, ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if not process.alive():
            raise NodeError(
                f"{process.name} exited while waiting for {what}; log {process.log_path}:\n"
                + process.log_tail()
            )
        try:
            if ready():
                return
        except (OSError, urllib.error.URLError, RuntimeError, harness.CommandFailed):
            pass
        time.sleep(0.5)
    raise NodeError(
        f"{what} not reached in {READY_TIMEOUT:.0f}s; log {process.log_path}:\n"
        + process.log_tail()
    )


def _node_ready(kubectl: harness.Tool) -> bool:
    result = kubectl("get", "node", pki.NODE_NAME, "-o", "json", check=False)
    if result.returncode != 0:
        return False
    conditions = json.loads(result.stdout)["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def kubernetes_service_answers() -> bool:
    # A TCP connect to the Service's ClusterIP from the host: routed into the namespace and
    # translated there by kube-proxy to the API server's address.
    with socket.create_connection((host.KUBERNETES_SERVICE_IP, 443), timeout=2):
        return True


# --- host set-up -----------------------------------------------------------------------------


def setup_network() -> None:
    run = host.run
    run("ip", "netns", "add", host.NETNS)
    run("ip", "link", "add", host.HOST_VETH, "type", "veth", "peer", "name", host.NODE_VETH)
    run("ip", "link", "set", host.NODE_VETH, "netns", host.NETNS)
    run("ip", "addr", "add", f"{host.HOST_ADDRESS}/{host.VETH_PREFIX}", "dev", host.HOST_VETH)
    run("ip", "link", "set", host.HOST_VETH, "up")
    inside = host.in_netns
    node_address = f"{host.NODE_ADDRESS}/{host.VETH_PREFIX}"
    run(*inside("ip", "addr", "add", node_address, "dev", host.NODE_VETH))
    run(*inside("ip", "link", "set", host.NODE_VETH, "up"))
    run(*inside("ip", "link", "set", "lo", "up"))
    run(*inside("ip", "route", "add", "default", "via", host.HOST_ADDRESS))
    # Per network namespace: forwarding between the veth and the pod bridge, and bridged pod
    # traffic through netfilter (a pod calling a Service whose endpoint is on the same bridge).
    run(*inside("sysctl", "-qw", "net.ipv4.ip_forward=1"))
    run(*inside("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"), check=False)
    # The host sends the tier's Service and pod ranges into the namespace (routes that go with
    # the veth).
    for cidr in (host.SERVICE_CIDR, host.POD_CIDR):
        run("ip", "route", "add", cidr, "via", host.NODE_ADDRESS, "dev", host.HOST_VETH)


def setup_cgroups() -> None:
    """The kubelet's cgroup root, in every cgroup v1 hierarchy (it must exist beforehand)."""
    seen = set()
    for hierarchy in sorted(host.CGROUP_FS.iterdir()):
        real = hierarchy.resolve()
        if real in seen or not real.is_dir():
            continue
        seen.add(real)
        root = real / host.CGROUP_ROOT
        root.mkdir(exist_ok=True)
        if (real / "cpuset.cpus").is_file():
            # A new cpuset is empty until given the parent's CPUs and memory nodes.
            for name in ("cpuset.cpus", "cpuset.mems"):
                (root / name).write_text((real / name).read_text())


# --- configuration files -------------------------------------------------------------------


def containerd_config(work: Path, cni_conf: Path) -> str:
    run = work / "run" / "containerd"
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""\
version = 2
root = "{work / "containerd"}"
state = "{run}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{run / "containerd.sock"}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{work / "containerd-opt"}"
[ttrpc]
  address = ""
[{cri}]
  # Compiled from Kubernetes' pause.c and imported: there is no registry.
  sandbox_image = "localhost/rollout-webhook-node/pause:3.10.1"
  # The machine's capability set lacks CAP_SYS_RESOURCE: runc must not lower oom_score_adj.
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        # runc: crun refuses this machine's hybrid cgroup v1 layout.
        BinaryName = "{RUNC}"
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{cni_conf}"
    max_conf_num = 1
"""


def cni_config(work: Path) -> dict[str, Any]:
    gateway = host.POD_CIDR.replace("0/24", "1")
    return {
        "cniVersion": "1.0.0",
        "name": "rollout-webhook-node",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "rwnode0",
                "isGateway": True,
                # No masquerade: the host routes the pod range back into the namespace.
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": host.POD_CIDR, "gateway": gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(work / "cni" / "networks"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(work: Path, files: dict[str, Path]) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # The machines run cgroup v1, which kubelet v1.35 refuses unless told.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{host.CGROUP_ROOT}",
        "containerRuntimeEndpoint": f"unix://{work / 'run' / 'containerd' / 'containerd.sock'}",
        "failSwapOn": False,
        "address": host.NODE_ADDRESS,
        "healthzBindAddress": "127.0.0.1",
        "readOnlyPort": 0,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(files["ca.crt"])},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(files["kubelet-serving.crt"]),
        "tlsPrivateKeyFile": str(files["kubelet-serving.key"]),
        "podLogsDir": str(work / "pod-logs"),
        "volumePluginDir": str(work / "volume-plugins"),
        "clusterDomain": "cluster.local",
        "resolvConf": "/etc/resolv.conf",
        "hairpinMode": "hairpin-veth",
        "maxPods": 60,
        "serializeImagePulls": False,
        # A shared machine: other tenants' disk use must not evict the tier's pods.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "nodeStatusReportFrequency": "10s",
    }


def kube_proxy_config(kubeconfig: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "nftables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": pki.NODE_NAME,
        "clusterCIDR": host.POD_CIDR,
        # Conntrack limits are host-wide: leave them as they are.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "metricsBindAddress": "127.0.0.1:10249",
        "healthzBindAddress": "127.0.0.1:10256",
    }


def environment_ok() -> str | None:
    """Why this machine cannot run the tier (None when it can)."""
    if os.geteuid() != 0:
        return "the node tier needs root"
    for program in ("ip", "nsenter", "ctr", "nft", "setpriv"):
        if shutil.which(program) is None:
            return f"{program} is missing: run `make node-deps`"
    for path in (CONTAINERD, RUNC, f"{CNI_BIN}/bridge"):
        if not Path(path).exists():
            return f"{path} is missing: run `make node-deps`"
    return None
