"""The chart's admission-port hardening, rendered with the real helm: the NetworkPolicy
(only the API server to the admission port) and mutual TLS (``webhook.clientCA``)."""

from __future__ import annotations

from collections.abc import Callable

from tests.helm.conftest import Render, all_of, find

API_SERVER = 'json:networkPolicy.apiServer=[{"ipBlock":{"cidr":"10.0.0.0/24"}}]'
MONITORING = 'json:networkPolicy.health=[{"namespaceSelector":{"matchLabels":{"name":"mon"}}}]'
CLIENT_CA = ("webhook.clientCA.enabled=true", "webhook.clientCA.configMap=apiserver-client-ca")


def container_args(docs: list[dict[str, object]]) -> list[str]:
    deployment = find(docs, "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]["args"]  # type: ignore[no-any-return]


def test_by_default_there_is_no_network_policy_and_no_client_certificate(render: Render) -> None:
    docs = render()
    assert all_of(docs, "NetworkPolicy") == []
    assert not [a for a in container_args(docs) if a.startswith("--client-ca")]


def test_the_admission_port_admits_only_the_api_server(render: Render) -> None:
    docs = render("networkPolicy.enabled=true", API_SERVER, MONITORING)
    policy = find(docs, "NetworkPolicy")
    deployment = find(docs, "Deployment")
    assert (
        policy["spec"]["podSelector"]["matchLabels"]
        == deployment["spec"]["selector"]["matchLabels"]
    )
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress: it calls the API server
    admission, health = policy["spec"]["ingress"]
    assert admission == {
        "ports": [{"port": "https", "protocol": "TCP"}],
        "from": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
    }
    assert health["ports"] == [{"port": "health", "protocol": "TCP"}]
    assert health["from"] == [{"namespaceSelector": {"matchLabels": {"name": "mon"}}}]
    # The ports it names are the container's, by name.
    ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert ports == {"https", "health"}


def test_the_health_port_is_open_to_any_source_unless_told(render: Render) -> None:
    policy = find(render("networkPolicy.enabled=true", API_SERVER), "NetworkPolicy")
    _, health = policy["spec"]["ingress"]
    assert "from" not in health  # the kubelet's probes come from the node


def test_a_network_policy_without_the_api_servers_address_is_refused(
    render_fails: Callable[..., str],
) -> None:
    message = render_fails("networkPolicy.enabled=true")
    assert "at '/networkPolicy/apiServer'" in message and "minItems" in message


def test_mutual_tls_mounts_the_ca_and_passes_it_to_serve(render: Render) -> None:
    docs = render(*CLIENT_CA)
    assert "--client-ca=/etc/rollout-webhook/client-ca/ca.crt" in container_args(docs)
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "client-ca"]
    assert volume["configMap"] == {
        "name": "apiserver-client-ca",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "client-ca"]
    assert mount == {
        "name": "client-ca",
        "mountPath": "/etc/rollout-webhook/client-ca",
        "readOnly": True,
    }


def test_with_mutual_tls_prometheus_scrapes_the_health_port(render: Render) -> None:
    docs = render(*CLIENT_CA, "metrics.serviceMonitor.enabled=true")
    (endpoint,) = find(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["scheme"]) == ("health", "http")
    ports = {p["name"]: p["targetPort"] for p in find(docs, "Service")["spec"]["ports"]}
    assert ports == {"https": "https", "health": "health"}
    # Without mutual TLS: the https port, as before, and the Service has no health port.
    plain = render("metrics.serviceMonitor.enabled=true")
    (endpoint,) = find(plain, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["port"] == "https"
    assert [p["name"] for p in find(plain, "Service")["spec"]["ports"]] == ["https"]


def test_mutual_tls_without_a_configmap_is_refused(render_fails: Callable[..., str]) -> None:
    message = render_fails("webhook.clientCA.enabled=true")
    assert "at '/webhook/clientCA/configMap'" in message and "minLength" in message
