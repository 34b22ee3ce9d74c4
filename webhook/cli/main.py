"""Entry point of the `rollout-webhook` console script.

Each sub-command lives in its own module with a ``register(subparsers)`` function
that adds its parser and sets ``func``: a callable taking the parsed arguments and
returning the exit code. Errors the user can fix are raised as ``UsageError`` and
printed as one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from webhook import __version__
from webhook.cli.errors import UsageError

# Modules that contribute sub-commands, in the order `--help` lists them.
COMMAND_MODULES = (
    "webhook.cli.convert",
    "webhook.cli.policy",
    "webhook.cli.certs",
    "webhook.cli.serve",
    "webhook.cli.audit",
    "webhook.cli.status",
)


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rollout-webhook",
        description="Opt Kubernetes Deployments into Argo Rollouts with a label, by policy.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in modules:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None, modules: Sequence[str] = COMMAND_MODULES) -> int:
    parser = build_parser(modules)
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except UsageError as err:
        print(f"rollout-webhook: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
