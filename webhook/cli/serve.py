"""`rollout-webhook serve`: the HTTPS admission server."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from webhook.cli.errors import UsageError
from webhook.server.logs import LOG_FORMATS

HELP = """\
With no flags: https://127.0.0.1:8443, a self-signed certificate for localhost and
127.0.0.1, the built-in policy, no cluster reads or writes.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the HTTPS admission server",
        description="Run the mutating (/mutate) and validating (/validate) admission server.",
        epilog=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8443)")
    parser.add_argument(
        "--health-port",
        type=int,
        help="also serve /healthz, /readyz and /metrics in plain HTTP on this port, a "
        "listener of its own for the probes (default: only on --port)",
    )
    parser.add_argument(
        "--cert-dir",
        type=Path,
        help="directory with tls.crt and tls.key, polled for changes "
        "(default: a self-signed localhost certificate made at start-up)",
    )
    parser.add_argument(
        "--client-ca",
        type=Path,
        metavar="FILE",
        help="require a client certificate signed by a CA in this PEM file on the admission "
        "port (mutual TLS: only the API server may call it); the health port is unaffected "
        "(default: no client certificate asked for)",
    )
    parser.add_argument(
        "--policy",
        dest="policy_file",
        type=Path,
        help="a fixed policy file (policy.yaml or its ConfigMap) instead of the watched ConfigMap",
    )
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument("--kubeconfig", type=Path, help="connect to the cluster of this file")
    cluster.add_argument(
        "--in-cluster", action="store_true", default=None, help="use the Pod's service account"
    )
    parser.add_argument(
        "--no-reconcile",
        dest="reconcile",
        action="store_false",
        default=None,
        help="do not run the reconciler in this process (with a cluster it runs by default, "
        "under a Lease, converting what was admitted unconverted)",
    )
    parser.add_argument(
        "--rotate-certs",
        action="store_true",
        default=None,
        help="bootstrap and rotate the certificate in a Secret, writing it to --cert-dir "
        "(needs a cluster; the Secret, Service and Lease names come from the settings)",
    )
    parser.add_argument("--audit-file", type=Path, help="also append audit records to this file")
    parser.add_argument("--namespace", help="the webhook's namespace (policy ConfigMap's home)")
    parser.add_argument(
        "--fail-closed",
        dest="fail_closed",
        action="store_true",
        default=None,
        help="deny a request when the webhook fails internally (default: admit with a warning)",
    )
    parser.add_argument(
        "--controller-service-account",
        help="user whose requests pass through untouched "
        "(default system:serviceaccount:argo-rollouts:argo-rollouts)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="text (default) or JSON, one object a line; a line about an admission request "
        "names its uid, kind, namespace, name and user",
    )
    parser.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> Any:
    from webhook.server.settings import ServeSettings

    names = (
        "host",
        "port",
        "health_port",
        "cert_dir",
        "client_ca",
        "policy_file",
        "kubeconfig",
        "in_cluster",
        "audit_file",
        "namespace",
        "fail_closed",
        "rotate_certs",
        "reconcile",
        "controller_service_account",
        "log_format",
    )
    given = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    try:
        return ServeSettings(**given)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        flag = {"policy_file": "--policy"}.get(field, "--" + field.replace("_", "-"))
        raise UsageError(f"serve: {flag if field else 'settings'}: {first['msg']}") from None


def run(args: argparse.Namespace) -> int:
    # Imported here so `rollout-webhook convert` does not pay for the web stack.
    from webhook.server.logs import configure_logging
    from webhook.server.runner import StartupError, build_server
    from webhook.server.runner import run as run_server

    # The settings first: the log format is one of them (a bad setting is one line on
    # standard error either way).
    settings = settings_from_args(args)
    configure_logging(args.log_level, settings.log_format)
    try:
        server = build_server(settings)
    except StartupError as err:
        raise UsageError(f"serve: {err}") from None
    run_server(server)
    return 0
