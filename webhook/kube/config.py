"""Connecting to a cluster: a kubeconfig file, the default one, or the Pod's account."""

from __future__ import annotations

from pathlib import Path

from kubernetes import client, config


def api_client(kubeconfig: Path | None = None, in_cluster: bool = False) -> client.ApiClient:
    """An ApiClient; nothing is called yet. Without a file: $KUBECONFIG or ~/.kube/config."""
    configuration = client.Configuration()
    if in_cluster:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None,
            client_configuration=configuration,
        )
    return client.ApiClient(configuration)
