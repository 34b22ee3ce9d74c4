"""`rollout-webhook policy validate|show`: check a policy, print the effective one."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from webhook.cli.common import dump_yaml, load_policy, load_rollout_schema
from webhook.cli.errors import UsageError
from webhook.cli.manifests import ManifestError, load_single_document
from webhook.core.convert import policy_plan_problems
from webhook.core.errors import PolicyInvalid
from webhook.core.policy import Policy, policy_from_document
from webhook.core.policy_strategy import NO_SCHEMA_NOTE


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("policy", help="validate or show a policy")
    commands = parser.add_subparsers(dest="policy_command", metavar="ACTION", required=True)

    validate = commands.add_parser(
        "validate",
        help="check a policy file or ConfigMap manifest: exit 0 if valid, 2 with every error",
    )
    validate.add_argument(
        "file", metavar="FILE", help="policy YAML, a ConfigMap holding policy.yaml, or -"
    )
    validate.add_argument(
        "--crd",
        metavar="FILE",
        help="the Rollout CustomResourceDefinition the cluster serves: judge strategies by its "
        "schema (every Argo field and step kind) and refuse a policy whose environments make "
        "Rollouts it refuses; without it, only the product's rules apply",
    )
    validate.set_defaults(func=run_validate)

    show = commands.add_parser("show", help="print the effective policy, defaults filled in")
    show.add_argument("--environment", help="print only this environment")
    show.add_argument(
        "--policy", metavar="FILE", help="a policy file (default: the built-in policy)"
    )
    show.set_defaults(func=run_show)


def run_validate(args: argparse.Namespace) -> int:
    schema = load_rollout_schema(args.crd)
    if schema is None:
        print(f"{args.file}: note: {NO_SCHEMA_NOTE}", file=sys.stderr)
    try:
        doc = load_single_document(args.file)
        policy = policy_from_document(doc, source=args.file, name=args.file, rollout_schema=schema)
    except ManifestError as err:
        raise UsageError(str(err)) from None
    except PolicyInvalid as err:
        print(f"{args.file}: invalid, {len(err.errors)} error(s):", file=sys.stderr)
        for problem in err.errors:
            print(f"  {problem}", file=sys.stderr)
        return 2
    refused = () if schema is None else policy_plan_problems(policy, schema)
    if refused:
        print(f"{args.file}: invalid, {len(refused)} error(s):", file=sys.stderr)
        for refusal in refused:
            print(f"  {refusal}", file=sys.stderr)
        return 2
    names = ", ".join(policy.environments)
    print(
        f"{args.file}: valid ({len(policy.environments)} environment(s): {names}; "
        f"sha256 {policy.version.sha256[:12]})"
    )
    return 0


def effective(policy: Policy) -> dict[str, Any]:
    """The policy with every default written out: what the webhook will actually apply."""
    return {
        "defaultEnvironment": policy.default_environment,
        "rolloutUpdates": policy.rollout_updates,
        "namespaces": [
            {"pattern": r.pattern, "environment": r.environment} for r in policy.namespaces
        ],
        "environments": {name: environment_view(policy, name) for name in policy.environments},
    }


def environment_view(policy: Policy, name: str) -> dict[str, Any]:
    env = policy.environments[name]
    rollout = {"enabled": env.enabled, "strategy": env.strategy}
    rollout.update({k: v for k, v in env.rollout.items() if k not in rollout})
    return {
        "scaleDown": env.scale_down,
        "allowServiceOverrides": env.allow_service_overrides,
        "trafficRouting": env.traffic_routing,
        "rollout": rollout,
    }


def run_show(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    print(f"# policy {policy.version}")
    if args.environment:
        if policy.environment(args.environment) is None:
            known = ", ".join(sorted(policy.environments))
            raise UsageError(
                f"--environment {args.environment}: not in the policy (known: {known})"
            )
        sys.stdout.write(dump_yaml({args.environment: environment_view(policy, args.environment)}))
    else:
        sys.stdout.write(dump_yaml(effective(policy)))
    return 0
