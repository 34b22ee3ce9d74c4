"""`rollout-webhook convert`: the offline preview of a conversion.

Reads manifests (Deployments, Namespaces, Services, HPAs, HTTPRoutes, VirtualServices),
runs the same planner the webhook runs, and prints every object as it would be stored,
the generated Rollout and Services right after their Deployment. What is not converted
is printed unchanged, with the reason on stderr.

Its own output is valid input: a Rollout or Service it generated for a Deployment of the
input (the product's labels say for which) is that Deployment's, and is replaced by the
new plan, so converting twice prints the same objects.

Exit status: 0 when every opted-in Deployment is converted; 1 when one is refused (its
overrides, its replicas, a pre-flight check, the Rollout schema), unless
--allow-refused; 2 for input that cannot be read.
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import dataclass, field
from typing import Any

from webhook.cli.common import load_policy, load_rollout_schema, render
from webhook.cli.errors import UsageError
from webhook.cli.manifests import Manifest, ManifestError, load_manifests
from webhook.core.convert import Neighbours, plan_conversion
from webhook.core.crd_schema import RolloutSchema
from webhook.core.keys import DEFAULT_KEYS
from webhook.core.objects import is_generated, labels_of
from webhook.core.policy import Policy
from webhook.core.policy_strategy import NO_SCHEMA_NOTE

ObjectRef = tuple[str, str, str]  # kind, namespace, name

_NEIGHBOUR_KINDS = {
    "Service": "services",
    "HorizontalPodAutoscaler": "hpas",
    "HTTPRoute": "http_routes",
    "VirtualService": "virtual_services",
    "DestinationRule": "destination_rules",
    "Rollout": "rollouts",
    "AnalysisTemplate": "analysis_templates",
}
_CLUSTER_KINDS = ("Namespace", "ClusterAnalysisTemplate")


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
    parser.add_argument(
        "--crd",
        metavar="FILE",
        help="the Rollout CustomResourceDefinition the cluster serves: a Deployment whose "
        "Rollout its schema refuses is not converted (without it, Rollouts are not checked)",
    )
    parser.add_argument(
        "--allow-refused",
        action="store_true",
        help="exit 0 even when an opted-in Deployment is refused (default: exit 1)",
    )
    parser.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    parser.set_defaults(func=run)


def _ref(obj: dict[str, Any]) -> ObjectRef:
    meta = obj["metadata"]
    return (str(obj["kind"]), str(meta.get("namespace", "")), str(meta["name"]))


@dataclass
class _Objects:
    """Every object of the input by reference, as it will be printed, in input order."""

    order: list[ObjectRef] = field(default_factory=list)
    current: dict[ObjectRef, dict[str, Any]] = field(default_factory=dict)
    # Objects printed without a namespace: given none, and no -n to give them one.
    unnamespaced: set[ObjectRef] = field(default_factory=set)
    # What a conversion generates, printed right after its Deployment.
    generated: dict[ObjectRef, list[ObjectRef]] = field(default_factory=dict)

    def neighbours(self, ns: str) -> Neighbours:
        groups: dict[str, list[dict[str, Any]]] = {v: [] for v in _NEIGHBOUR_KINDS.values()}
        namespace = None
        for (kind, obj_ns, name), obj in self.current.items():
            if kind == "Namespace" and name == ns:
                namespace = obj
            elif kind in _NEIGHBOUR_KINDS and obj_ns == ns:
                groups[_NEIGHBOUR_KINDS[kind]].append(obj)
        cluster_templates = tuple(
            obj for (kind, _, _), obj in self.current.items() if kind == "ClusterAnalysisTemplate"
        )
        return Neighbours(
            namespace=namespace,
            cluster_analysis_templates=cluster_templates,
            **{k: tuple(v) for k, v in groups.items()},
        )

    def printed(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for ref in self.order:
            out.append(self.current[ref])
            out.extend(self.current[r] for r in self.generated.get(ref, []))
        for obj in out:
            if _ref(obj) in self.unnamespaced:
                obj["metadata"].pop("namespace", None)
        return out


def run(args: argparse.Namespace) -> int:
    try:
        manifests = load_manifests(args.files)
    except ManifestError as err:
        raise UsageError(str(err)) from None
    schema = load_rollout_schema(args.crd)
    if schema is None:
        print(f"note: {NO_SCHEMA_NOTE}", file=sys.stderr)
    policy = load_policy(args.policy, schema)
    if args.environment and policy.environment(args.environment) is None:
        known = ", ".join(sorted(policy.environments))
        raise UsageError(f"--environment {args.environment}: not in the policy (known: {known})")
    objects = _read(manifests, args)
    refused = 0
    for ref in list(objects.order):
        obj = objects.current[ref]
        if ref[0] == "Deployment" and obj.get("apiVersion") == "apps/v1":
            refused += not _convert(ref, objects, policy, args.environment, schema)
    sys.stdout.write(render(objects.printed(), args.output))
    if refused and not args.allow_refused:
        print(f"{refused} Deployment(s) refused", file=sys.stderr)
        return 1
    return 0


def _read(manifests: list[Manifest], args: argparse.Namespace) -> _Objects:
    """The input objects, each with a namespace (the -n option's, else default), and
    every Deployment opted in under --enable."""
    objects = _Objects()
    default_ns = args.namespace or "default"
    for manifest in manifests:
        obj = copy.deepcopy(manifest.obj)
        meta = obj.setdefault("metadata", {})
        if obj["kind"] not in _CLUSTER_KINDS and not meta.get("namespace"):
            meta["namespace"] = default_ns
            if args.namespace is None:
                objects.unnamespaced.add(_ref(obj))
        if obj["kind"] == "Deployment" and args.enable:
            meta.setdefault("labels", {})[DEFAULT_KEYS.enabled] = "true"
        ref = _ref(obj)
        if ref in objects.current:
            raise UsageError(f"{manifest.source}: {ref[0]} {ref[1]}/{ref[2]} appears twice")
        objects.order.append(ref)
        objects.current[ref] = obj
    return objects


def _convert(
    ref: ObjectRef,
    objects: _Objects,
    policy: Policy,
    environment: str | None,
    schema: RolloutSchema | None,
) -> bool:
    """Plan one Deployment's conversion, say what happened on stderr, and put every object
    it changes or generates in place of the input's; False when it is refused."""
    where = f"Deployment {ref[1]}/{ref[2]}"
    result = plan_conversion(
        objects.current[ref],
        objects.neighbours(ref[1]),
        policy,
        operation="CREATE",
        environment=environment,
        rollout_schema=schema,
    )
    for finding in result.findings:
        print(f"{where}: {finding}", file=sys.stderr)
    if not result.converted:
        print(f"{where}: not converted: {result.reason}", file=sys.stderr)
        return result.decision != "refuse"
    print(f"{where}: converted to {result.environment} {result.strategy}", file=sys.stderr)
    objects.current[ref] = result.deployment
    for changed in (*result.hpas, *result.routes):
        objects.current[_ref(changed)] = changed
    generated = objects.generated.setdefault(ref, [])
    _add_templates(result.analysis_templates, objects, generated)
    for new in (o for o in (result.rollout, *result.services) if o is not None):
        new_ref = _ref(new)
        if new_ref in objects.current and new_ref not in generated:
            if not _generated_for(objects.current[new_ref], ref[2]):
                raise UsageError(
                    f"{where}: would generate {new_ref[0]} {new_ref[2]}, which the input "
                    "already has (not generated by rollout-webhook for this Deployment)"
                )
            # An earlier conversion's output: the new plan takes its place, after the
            # Deployment, as it was printed the first time.
            objects.order.remove(new_ref)
        objects.current[new_ref] = new
        generated.append(new_ref)
        if ref in objects.unnamespaced:
            objects.unnamespaced.add(new_ref)
    return True


def _add_templates(
    templates: tuple[dict[str, Any], ...], objects: _Objects, generated: list[ObjectRef]
) -> None:
    """The policy's templates a Rollout uses, printed once (the first Deployment that uses
    one prints it; an input copy is replaced by the policy's)."""
    printed = {r for refs in objects.generated.values() for r in refs}
    for template in templates:
        template_ref = _ref(template)
        objects.current[template_ref] = template
        if template_ref not in printed and template_ref not in objects.order:
            generated.append(template_ref)


def _generated_for(obj: dict[str, Any], deployment: str) -> bool:
    """Whether ``obj`` is what the product generated for the Deployment named so."""
    return (
        is_generated(obj, DEFAULT_KEYS)
        and labels_of(obj).get(DEFAULT_KEYS.generated_for) == deployment
    )
