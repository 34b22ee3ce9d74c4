"""Make a ``kubernetes.client.ApiClient`` the way kubectl finds its cluster."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class ClusterConfigError(Exception):
    """No usable cluster configuration: one line saying which source failed and why."""


def load_api_client(
    kubeconfig: str | None = None,
    in_cluster: bool = False,
    context: str | None = None,
    *,
    connections: int | None = None,
) -> Any:
    """In-cluster config when asked (or when running in a pod with no kubeconfig given),
    else the kubeconfig file (``--kubeconfig``, ``$KUBECONFIG``, ``~/.kube/config``).

    ``connections``: how many idle connections to the API server are kept for reuse (the
    client's default is five per CPU). A call that finds none idle opens one; one given
    back to a full pool is closed (with a warning), and a later call pays a new TLS
    handshake for it."""
    from kubernetes import client, config

    configuration = client.Configuration()
    if connections is not None:
        configuration.connection_pool_maxsize = connections
    use_in_cluster = in_cluster or (
        kubeconfig is None
        and "KUBECONFIG" not in os.environ
        and "KUBERNETES_SERVICE_HOST" in os.environ
    )
    try:
        if use_in_cluster:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
    except config.ConfigException as err:
        source = "in-cluster service account" if use_in_cluster else _kubeconfig_name(kubeconfig)
        raise ClusterConfigError(f"{source}: {str(err).splitlines()[0]}") from None
    except (OSError, ValueError, TypeError, KeyError) as err:
        source = "in-cluster service account" if use_in_cluster else _kubeconfig_name(kubeconfig)
        raise ClusterConfigError(f"{source}: {type(err).__name__}: {err}") from None
    return client.ApiClient(configuration)


def in_cluster_namespace() -> str | None:
    """The pod's namespace, when running in a pod."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


def _kubeconfig_name(kubeconfig: str | None) -> str:
    if kubeconfig:
        return f"kubeconfig {kubeconfig}"
    env = os.environ.get("KUBECONFIG")
    return f"kubeconfig {env}" if env else "kubeconfig ~/.kube/config"
