"""``rollout-webhook certs ...``: generate, check, bootstrap and rotate the webhook's TLS.

``generate`` and ``check`` work on a local directory and need no cluster; ``bootstrap``
and ``rotate`` work on the Secret and the webhook configurations through the Kubernetes
API. Bad input is a one-line error with exit code 2; ``check`` exits 1 when the bundle
needs action.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certs import pki
from certs.files import CA_CERT_FILE, TLS_CERT_FILE, TLS_KEY_FILE, read_bundle_dir, write_bundle_dir
from webhook.cli.errors import UsageError

if TYPE_CHECKING:
    from certs.bootstrap import BootstrapReport, BootstrapSettings
    from certs.store import SecretRef

EXIT_OK = 0
EXIT_ACTION_NEEDED = 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "certs",
        help="make, check, bootstrap and rotate the webhook's TLS certificate",
        description=(
            "generate and check work on a local directory (check also on the Secret); "
            "bootstrap and rotate keep the Secret and the webhook configurations' caBundle "
            "current through the Kubernetes API. See docs/certificates.md."
        ),
    )
    sub = parser.add_subparsers(dest="certs_command", metavar="ACTION", required=True)

    gen = sub.add_parser(
        "generate",
        help="write a new CA and serving certificate to a directory",
        description=f"Write {TLS_CERT_FILE}, {TLS_KEY_FILE} and {CA_CERT_FILE} for a Service.",
    )
    _add_names(gen)
    gen.add_argument("--out", required=True, metavar="DIR", help="directory to write to")
    gen.add_argument(
        "--overwrite", action="store_true", help="replace files already in the directory"
    )
    gen.set_defaults(func=run_generate)

    chk = sub.add_parser(
        "check",
        help="say when the certificate expires and what it needs (directory or Secret)",
        description="Exit 0 when nothing is needed, 1 when the bundle needs action.",
    )
    source = chk.add_mutually_exclusive_group(required=True)
    source.add_argument("--dir", metavar="DIR", help="directory with the bundle")
    source.add_argument(
        "--secret", metavar="NAME", help="the kubernetes.io/tls Secret holding the bundle"
    )
    _add_names(chk)
    chk.add_argument("--secret-namespace", help="the Secret's namespace (default: --namespace)")
    where = chk.add_mutually_exclusive_group()
    where.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig file (with --secret)")
    where.add_argument("--in-cluster", action="store_true", help="use the pod's service account")
    chk.add_argument("--context", help="kubeconfig context to use (with --secret)")
    chk.add_argument(
        "--at",
        metavar="TIME",
        help="judge as of this time (ISO 8601, e.g. 2027-01-31T00:00:00Z) instead of now",
    )
    chk.set_defaults(func=run_check)

    boot = sub.add_parser(
        "bootstrap",
        help="make sure the Secret holds a valid bundle and the webhooks trust it",
        description=(
            "Idempotent: creates the Secret if missing, renews what is due, and writes the "
            "trust bundle into the caBundle of the webhook configurations. Safe to run from "
            "several places at once (a Helm hook Job, every replica at start-up)."
        ),
    )
    _add_cluster_args(boot)
    boot.set_defaults(func=run_bootstrap)

    rot = sub.add_parser(
        "rotate",
        help="take the rotation steps that are due (or start one now with --force)",
        description=(
            "Like bootstrap, and with --force starts a CA rotation now: a new CA is added to "
            "the caBundle, the serving certificate switches to it on a later run, and the "
            "old CA is dropped after a grace period. --force-leaf re-issues only the "
            "serving certificate."
        ),
    )
    _add_cluster_args(rot)
    force = rot.add_mutually_exclusive_group()
    force.add_argument("--force", action="store_true", help="start a CA rotation now")
    force.add_argument(
        "--force-leaf", action="store_true", help="re-issue the serving certificate now"
    )
    rot.set_defaults(func=run_rotate)


def _add_cluster_args(parser: argparse.ArgumentParser) -> None:
    from certs.bootstrap import (
        DEFAULT_SECRET_NAME,
        DEFAULT_SERVICE_NAME,
        DEFAULT_WEBHOOK_CONFIG_NAME,
    )

    parser.add_argument(
        "--service",
        default=DEFAULT_SERVICE_NAME,
        help="the webhook's Service name (default: %(default)s)",
    )
    parser.add_argument(
        "--namespace",
        help="the Service's namespace (default: the pod's namespace when in a cluster)",
    )
    _add_sans(parser)
    parser.add_argument(
        "--secret-name",
        default=DEFAULT_SECRET_NAME,
        help="the kubernetes.io/tls Secret (default: %(default)s)",
    )
    parser.add_argument("--secret-namespace", help="the Secret's namespace (default: --namespace)")
    parser.add_argument(
        "--mutating-webhook",
        action="append",
        metavar="NAME",
        help=f"MutatingWebhookConfiguration to inject (repeatable; '' for none; default: "
        f"{DEFAULT_WEBHOOK_CONFIG_NAME})",
    )
    parser.add_argument(
        "--validating-webhook",
        action="append",
        metavar="NAME",
        help=f"ValidatingWebhookConfiguration to inject (repeatable; '' for none; default: "
        f"{DEFAULT_WEBHOOK_CONFIG_NAME})",
    )
    parser.add_argument(
        "--no-inject", action="store_true", help="only manage the Secret, patch no caBundle"
    )
    parser.add_argument(
        "--require-webhooks",
        action="store_true",
        help="fail when a webhook configuration does not exist (default: warn)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig file to use")
    where.add_argument("--in-cluster", action="store_true", help="use the pod's service account")
    parser.add_argument("--context", help="kubeconfig context to use")


def _add_names(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--service", required=True, help="the webhook's Service name")
    parser.add_argument("--namespace", required=True, help="the Service's namespace")
    _add_sans(parser)


def _add_sans(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dns", action="append", default=[], metavar="NAME", help="an extra DNS SAN (repeatable)"
    )
    parser.add_argument(
        "--ip", action="append", default=[], metavar="IP", help="an extra IP SAN (repeatable)"
    )
    parser.add_argument(
        "--cluster-domain",
        default=pki.DEFAULT_CLUSTER_DOMAIN,
        help="the cluster's DNS domain (default: %(default)s)",
    )


def say(line: str) -> None:
    """One line of output for the user (stdout; errors go through UsageError)."""
    sys.stdout.write(line + "\n")


def now_utc() -> datetime:
    return datetime.now(UTC)


def parse_time(value: str, flag: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{flag} {value!r}: not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def run_generate(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    existing = [n for n in (TLS_CERT_FILE, TLS_KEY_FILE, CA_CERT_FILE) if (out / n).exists()]
    if existing and not args.overwrite:
        raise UsageError(f"--out {out}: already holds {', '.join(existing)} (pass --overwrite)")
    now = now_utc()
    try:
        ca = pki.make_ca(now)
        bundle = pki.make_serving_cert(
            ca,
            args.service,
            args.namespace,
            now,
            args.dns,
            args.ip,
            cluster_domain=args.cluster_domain,
        )
    except pki.CertificateError as err:
        raise UsageError(str(err)) from None
    try:
        write_bundle_dir(bundle, out)
    except OSError as err:
        raise UsageError(f"--out {out}: {err.strerror or err}") from None
    say(f"wrote {out / TLS_CERT_FILE}, {out / TLS_KEY_FILE}, {out / CA_CERT_FILE}")
    say(f"serving certificate: {pki.describe_certificate(bundle.cert_pem)}")
    return EXIT_OK


def run_check(args: argparse.Namespace) -> int:
    now = parse_time(args.at, "--at") if args.at else now_utc()
    if args.secret:
        bundle = _read_secret_bundle(args)
    else:
        try:
            bundle = read_bundle_dir(args.dir)
        except OSError as err:
            raise UsageError(f"--dir {args.dir}: {err.strerror or err}") from None
    try:
        decision = pki.check_bundle(
            bundle,
            args.service,
            args.namespace,
            now,
            args.dns,
            args.ip,
            cluster_domain=args.cluster_domain,
            # A Secret carries the CA key and the rotation state; a directory does not.
            managed=bool(args.secret),
        )
    except pki.CertificateError as err:
        raise UsageError(str(err)) from None
    print_report(bundle, decision, now)
    return EXIT_ACTION_NEEDED if decision.needed else EXIT_OK


def print_report(bundle: pki.Bundle, decision: pki.Decision, now: datetime) -> None:
    say(f"serving certificate: {pki.describe_certificate(bundle.cert_pem)}")
    say(f"CA: {pki.describe_certificate(bundle.ca_pem)}")
    for pem in _other_cas(bundle):
        say(f"also trusted: {pki.describe_certificate(pem)}")
    for label, when in (
        ("serving certificate", decision.leaf_not_after),
        ("CA", decision.ca_not_after),
    ):
        if when is not None:
            say(f"{label} expires {when:%Y-%m-%dT%H:%M:%SZ} ({_in_words(when - now)})")
    say(f"action: {decision.action.value}")
    for reason in decision.reasons:
        say(f"  - {reason}")
    if not decision.needed and decision.next_check is not None:
        say(f"next action due {decision.next_check:%Y-%m-%dT%H:%M:%SZ}")


def _other_cas(bundle: pki.Bundle) -> Sequence[str]:
    return [p for p in (bundle.next_ca_pem, *bundle.previous_ca_pems) if p.strip()]


def _in_words(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return f"{_span(-seconds)} ago"
    return f"in {_span(seconds)}"


def _span(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    if days:
        return f"{days} days"
    return f"{rest // 3600} hours"


# ---------------------------------------------------------------------------------------
# Cluster commands (the kubernetes client is imported only here, on demand)


def run_bootstrap(args: argparse.Namespace) -> int:
    return _run_cluster(args, force=None)


def run_rotate(args: argparse.Namespace) -> int:
    force = None
    if args.force:
        force = pki.Action.STAGE_CA
    elif args.force_leaf:
        force = pki.Action.RENEW_LEAF
    return _run_cluster(args, force=force)


def settings_from_args(args: argparse.Namespace) -> BootstrapSettings:
    """BootstrapSettings from the command line; UsageError on bad names."""
    from certs.bootstrap import (
        DEFAULT_WEBHOOK_CONFIG_NAME,
        BootstrapSettings,
        default_webhook_configs,
    )
    from certs.kube import in_cluster_namespace
    from certs.store import SecretRef, Target

    namespace = args.namespace or args.secret_namespace or in_cluster_namespace()
    if not namespace:
        raise UsageError("--namespace is required outside a cluster")
    secret_ns = args.secret_namespace or namespace
    try:
        pki.service_dns_names(args.service, namespace, args.cluster_domain)
        pki.normalise_dns_names(args.dns)
        pki.normalise_ips(args.ip)
    except pki.CertificateError as err:
        raise UsageError(str(err)) from None
    if pki.normalise_dns_names_or_none(args.secret_name) != args.secret_name:
        raise UsageError(f"--secret-name {args.secret_name!r} is not a valid Secret name")
    if pki.normalise_dns_names_or_none(secret_ns) != secret_ns:
        raise UsageError(f"--secret-namespace {secret_ns!r} is not a valid namespace")
    configs = (
        ()
        if args.no_inject
        else default_webhook_configs(
            # An empty name (--validating-webhook '') leaves that kind out.
            [n for n in args.mutating_webhook or (DEFAULT_WEBHOOK_CONFIG_NAME,) if n],
            [n for n in args.validating_webhook or (DEFAULT_WEBHOOK_CONFIG_NAME,) if n],
        )
    )
    return BootstrapSettings(
        secret=SecretRef(secret_ns, args.secret_name),
        target=Target(
            args.service,
            namespace,
            tuple(args.dns),
            tuple(args.ip),
            args.cluster_domain,
        ),
        webhook_configs=configs,
    )


def _read_secret_bundle(args: argparse.Namespace) -> pki.Bundle:
    from certs.bootstrap import read_bundle
    from certs.kube import ClusterConfigError, load_api_client
    from certs.store import SecretRef, StoreError

    namespace = args.secret_namespace or args.namespace
    ref = SecretRef(namespace, args.secret)
    try:
        api_client = load_api_client(args.kubeconfig, args.in_cluster, args.context)
    except ClusterConfigError as err:
        raise UsageError(str(err)) from None
    try:
        bundle = read_bundle(api_client, ref)
    except StoreError as err:
        raise UsageError(str(err), exit_code=1) from None
    finally:
        api_client.close()
    if bundle is None:
        raise UsageError(f"Secret {ref} does not exist", exit_code=1)
    return bundle


def _run_cluster(args: argparse.Namespace, force: pki.Action | None) -> int:
    from certs.bootstrap import bootstrap
    from certs.kube import ClusterConfigError, load_api_client
    from certs.store import StoreError

    settings = settings_from_args(args)
    try:
        api_client = load_api_client(args.kubeconfig, args.in_cluster, args.context)
    except ClusterConfigError as err:
        raise UsageError(str(err)) from None
    now = now_utc()
    try:
        report = bootstrap(api_client, settings, now, force=force)
    except StoreError as err:
        raise UsageError(str(err), exit_code=1) from None
    finally:
        api_client.close()
    print_bootstrap_report(report, settings.secret)
    missing = report.missing_configs
    for ref in missing:
        sys.stderr.write(f"rollout-webhook: warning: {ref} not found; its caBundle is not set\n")
    if missing and args.require_webhooks:
        return EXIT_ACTION_NEEDED
    return EXIT_OK


def print_bootstrap_report(report: BootstrapReport, secret: SecretRef) -> None:
    for step in report.steps:
        if step.written is pki.Action.NONE:
            verdict = "adopted the bundle another writer stored" if step.lost_race else "valid"
            say(f"Secret {secret}: {verdict}")
        else:
            verb = "created" if step.created else "updated"
            say(f"Secret {secret}: {verb} ({step.written.value})")
            for reason in step.decision.reasons:
                say(f"  - {reason}")
    for action in report.deferred:
        say(f"deferred to a later run: {action.value}")
    outcomes: dict[Any, set[str]] = {}
    for inj in report.injections:
        outcomes.setdefault(inj.ref, set()).add(inj.outcome.value)
    for ref, seen in outcomes.items():
        if "patched" in seen:
            say(f"{ref}: caBundle updated")
        elif "unchanged" in seen:
            say(f"{ref}: caBundle already current")
    if report.bundle is not None:
        when = pki.leaf_not_after(report.bundle)
        if when is not None:
            say(f"serving certificate expires {when:%Y-%m-%dT%H:%M:%SZ}")
