"""`rollout-webhook convert`: the offline preview of a conversion.

Reads manifests (Deployments, Namespaces, Services, HPAs, HTTPRoutes, VirtualServices),
runs the same planner the webhook runs, and prints every object as it would be stored,
the generated Rollout and Services right after their Deployment. What is not converted
is printed unchanged, with the reason on stderr.
"""

from __future__ import annotations

import argparse
import copy
import sys
from typing import Any

from webhook.cli.common import load_policy, render
from webhook.cli.errors import UsageError
from webhook.cli.manifests import ManifestError, load_manifests
from webhook.core.convert import Neighbours, plan_conversion
from webhook.core.keys import DEFAULT_KEYS

Key = tuple[str, str, str]  # kind, namespace, name

_NEIGHBOUR_KINDS = {
    "Service": "services",
    "HorizontalPodAutoscaler": "hpas",
    "HTTPRoute": "http_routes",
    "VirtualService": "virtual_services",
    "Rollout": "rollouts",
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="preview a conversion offline: print every object as it would be stored",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-f",
        "--filename",
        dest="files",
        action="append",
        required=True,
        metavar="FILE",
        help="a manifest file, a directory of them, or - for stdin (repeatable)",
    )
    parser.add_argument("--environment", help="use this policy environment for every Deployment")
    parser.add_argument("--policy", metavar="FILE", help="a policy file or policy ConfigMap")
    parser.add_argument(
        "-n",
        "--namespace",
        default=None,
        help="namespace of objects that name none (default: default)",
    )
    parser.add_argument(
        "--enable",
        action="store_true",
        help='treat every Deployment as labelled rollout-webhook.io/enabled="true"',
    )
    parser.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    parser.set_defaults(func=run)


def _key(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return (str(obj["kind"]), str(meta.get("namespace", "")), str(meta["name"]))


def run(args: argparse.Namespace) -> int:
    try:
        manifests = load_manifests(args.files)
    except ManifestError as err:
        raise UsageError(str(err)) from None
    policy = load_policy(args.policy)
    if args.environment and policy.environment(args.environment) is None:
        known = ", ".join(sorted(policy.environments))
        raise UsageError(f"--environment {args.environment}: not in the policy (known: {known})")
    keys = DEFAULT_KEYS
    default_ns = args.namespace or "default"

    order: list[Key] = []
    current: dict[Key, dict[str, Any]] = {}
    unnamespaced: set[Key] = set()
    for manifest in manifests:
        obj = copy.deepcopy(manifest.obj)
        meta = obj.setdefault("metadata", {})
        if obj["kind"] != "Namespace" and not meta.get("namespace"):
            meta["namespace"] = default_ns
            if args.namespace is None:
                unnamespaced.add(_key(obj))
        if obj["kind"] == "Deployment" and args.enable:
            meta.setdefault("labels", {})[keys.enabled] = "true"
        key = _key(obj)
        if key in current:
            raise UsageError(f"{manifest.source}: {key[0]} {key[1]}/{key[2]} appears twice")
        order.append(key)
        current[key] = obj

    def neighbours(ns: str) -> Neighbours:
        groups: dict[str, list[dict[str, Any]]] = {v: [] for v in _NEIGHBOUR_KINDS.values()}
        namespace = None
        for (kind, obj_ns, name), obj in current.items():
            if kind == "Namespace" and name == ns:
                namespace = obj
            elif kind in _NEIGHBOUR_KINDS and obj_ns == ns:
                groups[_NEIGHBOUR_KINDS[kind]].append(obj)
        return Neighbours(namespace=namespace, **{k: tuple(v) for k, v in groups.items()})

    extras: dict[Key, list[Key]] = {}
    for key in order:
        obj = current[key]
        if key[0] != "Deployment" or obj.get("apiVersion") != "apps/v1":
            continue
        where = f"Deployment {key[1]}/{key[2]}"
        result = plan_conversion(
            obj, neighbours(key[1]), policy, operation="CREATE", environment=args.environment
        )
        for finding in result.findings:
            print(f"{where}: {finding}", file=sys.stderr)
        if not result.converted:
            print(f"{where}: not converted: {result.reason}", file=sys.stderr)
            continue
        print(f"{where}: converted to {result.environment} {result.strategy}", file=sys.stderr)
        current[key] = result.deployment
        for changed in (*result.hpas, *result.routes):
            current[_key(changed)] = changed
        generated = [o for o in (result.rollout, *result.services) if o is not None]
        extras[key] = []
        for new in generated:
            new_key = _key(new)
            if new_key in current and new_key not in extras[key]:
                raise UsageError(
                    f"{where}: would generate {new_key[0]} {new_key[2]}, "
                    "which the input already has"
                )
            current[new_key] = new
            extras[key].append(new_key)
            if key in unnamespaced:
                unnamespaced.add(new_key)

    out: list[dict[str, Any]] = []
    for key in order:
        out.append(current[key])
        out.extend(current[k] for k in extras.get(key, []))
    for obj in out:
        if _key(obj) in unnamespaced:
            obj["metadata"].pop("namespace", None)
    sys.stdout.write(render(out, args.output))
    return 0
