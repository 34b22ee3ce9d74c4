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
from typing import Any

from certs import pki
from certs.files import CA_CERT_FILE, TLS_CERT_FILE, TLS_KEY_FILE, read_bundle_dir, write_bundle_dir
from webhook.cli.errors import UsageError

EXIT_OK = 0
EXIT_ACTION_NEEDED = 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "certs",
        help="make, check, bootstrap and rotate the webhook's TLS certificate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
        help="say when the certificate in a directory expires and what it needs",
        description="Exit 0 when nothing is needed, 1 when the bundle needs action.",
    )
    chk.add_argument("--dir", required=True, metavar="DIR", help="directory with the bundle")
    _add_names(chk)
    chk.add_argument(
        "--at",
        metavar="TIME",
        help="judge as of this time (ISO 8601, e.g. 2027-01-31T00:00:00Z) instead of now",
    )
    chk.set_defaults(func=run_check)


def _add_names(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--service", required=True, help="the webhook's Service name")
    parser.add_argument("--namespace", required=True, help="the Service's namespace")
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
            managed=False,
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
