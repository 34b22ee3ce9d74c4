"""The node itself: real pods from the locally built images, Services through kube-proxy, and
pods that reach the API server through the `kubernetes` Service and nothing else of the host."""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e import harness
from tests.node import cluster, host, pki
from tests.node.workloads import apply, ask, get, sample_deployment, sample_service, wait_for

# Run in a pod with the sample image: the API server's /version through the kubernetes
# Service, authenticated with the pod's ServiceAccount token (no DNS: the Service's address
# comes from the environment the kubelet sets).
IN_CLUSTER_CALL = """
import json, os, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
url = "https://%s:%s/version" % (os.environ["KUBERNETES_SERVICE_HOST"],
                                 os.environ["KUBERNETES_SERVICE_PORT"])
context = ssl.create_default_context(cafile=sa + "/ca.crt")
token = open(sa + "/token").read()
request = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
print(json.dumps({"url": url, "version": json.load(urllib.request.urlopen(request,
      context=context, timeout=5))["gitVersion"]}))
"""

# Run in a pod: try a TCP connection to each address; prints {address: "open" | error}.
CONNECT = """
import json, socket, sys
out = {}
for target in sys.argv[1:]:
    address, port = target.rsplit(":", 1)
    try:
        socket.create_connection((address, int(port)), timeout=2).close()
        out[target] = "open"
    except OSError as error:
        out[target] = type(error).__name__
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def sample_namespace(node_kubectl: harness.Tool) -> Iterator[str]:
    name = f"node-{uuid.uuid4().hex[:6]}"
    node_kubectl("create", "namespace", name)
    yield name
    node_kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def sample(node_kubectl: harness.Tool, sample_namespace: str) -> str:
    """The sample application, 2 replicas behind a Service; returns its ClusterIP."""
    apply(
        node_kubectl,
        sample_service("sample", sample_namespace),
        sample_deployment("sample", sample_namespace, "1.0.0", 2),
    )
    node_kubectl(
        "rollout",
        "status",
        "deployment/sample",
        "-n",
        sample_namespace,
        "--timeout=180s",
        timeout=200,
    )
    address: str = get(node_kubectl, "service", "sample", "-n", sample_namespace)["spec"][
        "clusterIP"
    ]
    return address


def _pod(kubectl: harness.Tool, namespace: str) -> str:
    pods = get(kubectl, "pods", "-n", namespace, "-l", "app=sample")["items"]
    name: str = pods[0]["metadata"]["name"]
    return name


def test_the_node_is_ready_with_the_tier_s_address(node_kubectl: harness.Tool) -> None:
    node = get(node_kubectl, "node", pki.NODE_NAME)
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == host.NODE_ADDRESS
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "True"
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.35.4"
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://1.6")


def test_pods_run_from_local_images_and_answer_through_their_service(
    node_kubectl: harness.Tool, sample_namespace: str, sample: str
) -> None:
    pods = get(node_kubectl, "pods", "-n", sample_namespace, "-l", "app=sample")["items"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["podIP"].startswith("10.213.1.")
        answer = ask(f"http://{pod['status']['podIP']}:8080/")
        assert answer == {"version": "1.0.0", "pod": pod["metadata"]["name"]}
    # Through the ClusterIP (kube-proxy's nftables rules in the node's namespace), both pods.
    names: set[str] = set()
    expected = {pod["metadata"]["name"] for pod in pods}

    def both_answered() -> bool:
        names.add(ask(f"http://{sample}/")["pod"])
        return names == expected

    # kube-proxy picks an endpoint at random per connection; both are in once both answered.
    wait_for(both_answered, "both pods answering through the ClusterIP", interval=0.1)
    assert names == expected


def test_logs_and_exec_go_through_the_kubelet(
    node_kubectl: harness.Tool, sample_namespace: str, sample: str
) -> None:
    del sample
    pod = _pod(node_kubectl, sample_namespace)
    result = node_kubectl("exec", "-n", sample_namespace, pod, "--", "id", "-u")
    assert result.stdout.strip() == "10002"
    node_kubectl("logs", "-n", sample_namespace, pod)  # served by the kubelet, empty is fine


def test_pods_reach_the_api_server_through_the_kubernetes_service(
    node_kubectl: harness.Tool, sample_namespace: str, sample: str
) -> None:
    del sample
    pod = _pod(node_kubectl, sample_namespace)
    result = node_kubectl(
        "exec", "-n", sample_namespace, pod, "--", "python3", "-c", IN_CLUSTER_CALL
    )
    answer = json.loads(result.stdout)
    assert answer == {
        "url": f"https://{host.KUBERNETES_SERVICE_IP}:443/version",
        "version": "v1.35.4",
    }


def test_pods_reach_nothing_else_of_the_host(
    node_cluster: cluster.NodeCluster,
    node_kubectl: harness.Tool,
    sample_namespace: str,
    sample: str,
) -> None:
    """etcd and the API server's other addresses are out of a pod's reach: etcd listens on the
    host's loopback only, and the API server only on the tier's veth address."""
    del sample
    assert node_cluster.plane is not None
    port = node_cluster.plane.apiserver_port
    etcd_ports = _etcd_ports(node_cluster)
    pod = _pod(node_kubectl, sample_namespace)
    targets = [f"{host.HOST_ADDRESS}:{port}", f"{_host_address()}:{port}"]
    targets += [f"{host.HOST_ADDRESS}:{p}" for p in etcd_ports]
    result = node_kubectl(
        "exec", "-n", sample_namespace, pod, "--", "python3", "-c", CONNECT, *targets
    )
    reached = json.loads(result.stdout)
    assert reached[f"{host.HOST_ADDRESS}:{port}"] == "open"
    assert [t for t, outcome in reached.items() if outcome == "open"] == [
        f"{host.HOST_ADDRESS}:{port}"
    ], reached


def _etcd_ports(node_cluster: cluster.NodeCluster) -> list[int]:
    assert node_cluster.plane is not None
    etcd = next(p for p in node_cluster.plane.processes if p.name == "etcd")
    ports = []
    for argument in etcd.argv:
        if argument.startswith(("--listen-client-urls=", "--listen-peer-urls=")):
            ports.append(int(argument.rsplit(":", 1)[1]))
    return ports


def _host_address() -> str:
    """The host's own address on its default route (not the tier's)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("1.1.1.1", 9))  # UDP: nothing is sent
        address: str = probe.getsockname()[0]
        return address


def test_the_node_s_rules_stay_in_its_namespace(
    node_cluster: cluster.NodeCluster, sample: str
) -> None:
    """kube-proxy's nftables tables and the pod bridge exist in the node's namespace only."""
    del node_cluster, sample
    inside = subprocess.run(
        host.in_netns("nft", "list", "tables"), capture_output=True, text=True, check=True
    ).stdout
    outside = subprocess.run(
        ["nft", "list", "tables"], capture_output=True, text=True, check=True
    ).stdout
    assert "kube-proxy" in inside
    assert "kube-proxy" not in outside
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert "rwnode0" not in links
