"""`rollout-webhook policy validate|show|import`: check a policy, print the effective one,
make one from the seed pattern's values files."""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from webhook.cli.common import (
    dump_yaml,
    load_policy,
    load_rollout_schema,
    load_template_schemas,
)
from webhook.cli.errors import UsageError
from webhook.cli.manifests import ManifestError, load_single_document
from webhook.core.analysis import policy_analysis_warnings, template_schema_problems
from webhook.core.convert import policy_plan_problems
from webhook.core.errors import PolicyInvalid
from webhook.core.keys import DEFAULT_KEYS
from webhook.core.policy import Policy, policy_from_document
from webhook.core.policy_import import Imported, ValuesFile, import_values
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
    validate.add_argument(
        "--analysis-crd",
        metavar="FILE",
        action="append",
        help="the AnalysisTemplate or ClusterAnalysisTemplate CustomResourceDefinition the "
        "cluster serves (repeatable): also refuse templates under analysis.templates that its "
        "schema refuses",
    )
    validate.set_defaults(func=run_validate)

    show = commands.add_parser("show", help="print the effective policy, defaults filled in")
    show.add_argument("--environment", help="print only this environment")
    show.add_argument(
        "--policy", metavar="FILE", help="a policy file (default: the built-in policy)"
    )
    show.set_defaults(func=run_show)

    imports = commands.add_parser(
        "import",
        help="make a policy and per-service overrides from the seed pattern's values files",
        description="Reads values-<environment>.yaml files (one per environment, or one per "
        "service as services/<service>/values-<environment>.yaml) and prints a policy, then "
        "for each service the labels and rollout annotation its Deployment needs. What the "
        "policy cannot say is reported on stderr. Exit 0: everything expressed; 1: something "
        "could not be (the report says what); 2: a file cannot be read or named.",
    )
    imports.add_argument("files", nargs="+", metavar="FILE", help="values-<environment>.yaml")
    imports.add_argument(
        "--layout",
        choices=("auto", "environment", "service"),
        default="auto",
        help="one file per environment, or per service (named by its folder); auto: per "
        "service when an environment has more than one file",
    )
    imports.add_argument(
        "--only", choices=("policy", "services"), help="print only the policy or the services"
    )
    imports.add_argument(
        "--crd", metavar="FILE", help="the Rollout CRD: judge the blocks by its schema too"
    )
    imports.set_defaults(func=run_import)


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
        if isinstance(doc, dict) and "rollout" in doc and "environments" not in doc:
            print(
                f"{args.file}: this looks like a Helm values file of the seed pattern: "
                f"`rollout-webhook policy import {args.file}` makes a policy of it",
                file=sys.stderr,
            )
        return 2
    refused = () if schema is None else policy_plan_problems(policy, schema)
    templates = template_schema_problems(policy.analysis, load_template_schemas(args.analysis_crd))
    refused = (*refused, *(str(found) for found in templates))
    if refused:
        print(f"{args.file}: invalid, {len(refused)} error(s):", file=sys.stderr)
        for refusal in refused:
            print(f"  {refusal}", file=sys.stderr)
        return 2
    rollouts = {name: env.rollout for name, env in policy.environments.items()}
    for warned in policy_analysis_warnings(policy.analysis, rollouts):
        print(f"{args.file}: warning: {warned}", file=sys.stderr)
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
        **_analysis_templates_view(policy),
    }


def _analysis_templates_view(policy: Policy) -> dict[str, Any]:
    templates = [
        {"kind": t.kind, "name": t.name, "spec": dict(t.spec)} for t in policy.analysis.templates
    ]
    return {"analysis": {"templates": templates}} if templates else {}


def _analysis_view(policy: Policy, name: str) -> dict[str, Any]:
    analysis = policy.analysis.environments.get(name)
    if analysis is None:
        return {}
    view: dict[str, Any] = {
        "template": analysis.template,
        "clusterScope": analysis.cluster_scope,
        "mode": analysis.mode,
    }
    if analysis.at_step is not None:
        view["atStep"] = analysis.at_step
    if analysis.starting_step is not None:
        view["startingStep"] = analysis.starting_step
    if analysis.prometheus_address:
        view["prometheus"] = {"address": analysis.prometheus_address}
    view["args"] = dict(analysis.arg_names)
    return {"analysis": view}


def environment_view(policy: Policy, name: str) -> dict[str, Any]:
    env = policy.environments[name]
    rollout = {"enabled": env.enabled, "strategy": env.strategy}
    rollout.update({k: v for k, v in env.rollout.items() if k not in rollout})
    return {
        "scaleDown": env.scale_down,
        "allowServiceOverrides": env.allow_service_overrides,
        "trafficRouting": env.traffic_routing,
        **_analysis_view(policy, name),
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


_VALUES_NAME = re.compile(r"values-(?P<environment>[a-z0-9]([-a-z0-9]*[a-z0-9])?)\.ya?ml")


def _values_files(names: list[str], layout: str) -> list[ValuesFile]:
    named: list[tuple[str, str]] = []
    for name in names:
        match = _VALUES_NAME.fullmatch(Path(name).name)
        if match is None:
            raise UsageError(
                f"{name}: not named values-<environment>.yaml (the environment comes from it)"
            )
        named.append((name, match["environment"]))
    counts = Counter(env for _, env in named)
    per_service = layout == "service" or (layout == "auto" and max(counts.values()) > 1)
    if not per_service and max(counts.values()) > 1:
        twice = sorted(env for env, n in counts.items() if n > 1)
        raise UsageError(f"--layout environment: environment {twice[0]} has several files")
    files = []
    for name, environment in named:
        try:
            values = load_single_document(name)
        except ManifestError as err:
            raise UsageError(str(err)) from None
        service = Path(name).resolve().parent.name if per_service else None
        files.append(ValuesFile(name, environment, service, values))
    return files


def _service_fragment(imported: Imported) -> list[str]:
    """Each service's Deployment labels and annotation, as a fragment to merge into it."""
    keys = DEFAULT_KEYS
    out = []
    for settings in imported.services:
        labels = {keys.enabled: "true" if settings.enabled else "false"}
        labels[keys.environment] = settings.environment
        metadata: dict[str, Any] = {"name": settings.service, "labels": labels}
        if settings.override is not None and settings.enabled:
            metadata["annotations"] = {keys.rollout: dump_yaml(dict(settings.override))}
        fragment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata}
        where = f"# {settings.source}: service {settings.service} in {settings.environment}"
        out.append(f"---\n{where}\n{dump_yaml(fragment)}")
    return out


def run_import(args: argparse.Namespace) -> int:
    schema = load_rollout_schema(args.crd)
    files = _values_files(args.files, args.layout)
    imported = import_values(files, schema)
    if schema is None:
        print(f"note: {NO_SCHEMA_NOTE}", file=sys.stderr)
    for note in imported.notes:
        print(f"note: {note}", file=sys.stderr)
    for problem in imported.not_expressed:
        print(f"not expressed: {problem}", file=sys.stderr)
    if imported.policy and args.only != "services":
        sys.stdout.write(f"---\n{dump_yaml(imported.policy)}")
    if args.only != "policy":
        sys.stdout.write("".join(_service_fragment(imported)))
    if imported.not_expressed:
        print(f"{len(imported.not_expressed)} thing(s) not expressed", file=sys.stderr)
        return 1
    return 0
