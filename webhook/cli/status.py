"""`rollout-webhook status`: every opted-in service, what it runs, and any drift.

Reads the cluster once (one list per kind), then asks the reconciler's own planner what
it would still change for each service: that list is the drift between the cluster and
the policy. Nothing is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from webhook.cli.common import load_policy
from webhook.cli.errors import UsageError
from webhook.core.actions import Emit
from webhook.core.admission import neighbours_of
from webhook.core.convert import Conversion
from webhook.core.errors import Finding, PolicyInvalid
from webhook.core.hpa import hpas_for
from webhook.core.keys import DEFAULT_KEYS, Keys
from webhook.core.objects import annotations_of, is_generated, name_of, namespace_of
from webhook.core.policy import Policy, builtin_policy, policy_from_configmap
from webhook.core.reconcile import ReconcilePlan, plan_reconcile
from webhook.core.routes import httproute_references, virtualservice_references
from webhook.core.selection import resolve_opt_in
from webhook.core.service_state import parse_state
from webhook.kube.resources import CACHED_KINDS
from webhook.kube.view import MemoryClusterView
from webhook.server.settings import DEFAULT_NAMESPACE, DEFAULT_POLICY_CONFIGMAP


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="every opted-in service: environment, strategy, Rollout phase, HPA, routes, "
        "the reconciler's state and why, drift",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-n", "--namespace", help="only this namespace (default: all)")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    parser.add_argument(
        "--kubeconfig", type=Path, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)"
    )
    parser.add_argument("--in-cluster", action="store_true", help="use the Pod's service account")
    parser.add_argument("--policy", metavar="FILE", help="judge drift against this policy file")
    parser.add_argument(
        "--webhook-namespace",
        default=DEFAULT_NAMESPACE,
        help=f"namespace of the policy ConfigMap (default {DEFAULT_NAMESPACE})",
    )
    parser.add_argument("--policy-configmap", default=DEFAULT_POLICY_CONFIGMAP)
    parser.set_defaults(func=run)


def reconciler_state(
    deployment: Mapping[str, Any], plan: ReconcilePlan, keys: Keys = DEFAULT_KEYS
) -> dict[str, Any]:
    """What the reconciler is at for this service.

    - ``failing`` / ``blocked``: its last pass failed (retried with backoff / not retried
      until the Deployment or the policy changes), as the annotation it writes says;
    - ``blocked`` too when the planner refuses the conversion (the reason is the refusal);
    - ``pending``: no failure recorded, but its plan still has writes to make, or it waits
      on the cluster (an opt-out waits for pods): within the bounds of docs/reconciler.md
      that is the reconciler at work, beyond them read the Deployment's Events;
    - ``converged``: nothing left to do.
    """
    recorded = parse_state(annotations_of(deployment).get(keys.reconciler_state))
    if recorded is not None:
        reason = f"{recorded.get('step')}: {recorded.get('message')}"
        if recorded.get("fix"):
            reason += f". To fix: {recorded['fix']}"
        return {"state": recorded["state"], "reason": reason, "since": recorded.get("since")}
    if plan.state == "refused":
        detail = "; ".join(plan.conversion.warnings) if plan.conversion else ""
        return {
            "state": "blocked",
            "reason": f"{plan.summary}: {detail}" if detail else plan.summary,
        }
    if plan.writes or plan.requeue_after is not None:
        return {"state": "pending", "reason": plan.summary}
    return {"state": "converged", "reason": None}


def service_rows(
    objects: Mapping[str, list[dict[str, Any]]],
    policy: Policy,
    now: datetime,
    keys: Keys = DEFAULT_KEYS,
) -> list[dict[str, Any]]:
    """One row per opted-in or converted Deployment (pure: the tests feed it objects)."""
    view = MemoryClusterView(obj for items in objects.values() for obj in items)
    rows = []
    for deployment in sorted(
        view.list("Deployment", ""), key=lambda d: (namespace_of(d), name_of(d))
    ):
        ns, name = namespace_of(deployment), name_of(deployment)
        neighbours = neighbours_of(view, ns)
        rollout = neighbours.rollout_named(name)
        converted = keys.rollout_name in annotations_of(deployment) or (
            rollout is not None and is_generated(rollout, keys)
        )
        opt_in = resolve_opt_in(deployment, neighbours.namespace, keys)
        # A Deployment with an invalid opt-in label value is listed too, with the warning.
        if not opt_in.opted_in and not converted and not opt_in.findings:
            continue
        plan = plan_reconcile(ns, name, deployment, neighbours, policy, now=now, keys=keys)
        conversion = plan.conversion
        hpa = hpas_for(neighbours.hpas, name)
        stable = None
        if rollout is not None:
            strategy = (rollout.get("spec") or {}).get("strategy") or {}
            stable = (strategy.get("canary") or {}).get("stableService") or (
                strategy.get("blueGreen") or {}
            ).get("activeService")
        routes = []
        if stable:
            routes += [
                f"HTTPRoute/{name_of(r)}"
                for r in neighbours.http_routes
                if httproute_references(r, stable)
            ]
            routes += [
                f"VirtualService/{name_of(v)}"
                for v in neighbours.virtual_services
                if virtualservice_references(v, stable)
            ]
        annotations = annotations_of(deployment)
        rows.append(
            {
                "namespace": ns,
                "name": name,
                "environment": annotations.get(keys.applied_environment)
                or (conversion.environment if conversion else None),
                "strategy": annotations.get(keys.applied_strategy)
                or (conversion.strategy if conversion else None),
                "phase": ((rollout or {}).get("status") or {}).get("phase")
                or ("Missing" if rollout is None else "Unknown"),
                "hpaTarget": ((hpa[0].get("spec") or {}).get("scaleTargetRef") or {}).get("kind")
                if hpa
                else None,
                "routes": routes,
                "state": plan.state,
                "reconciler": reconciler_state(deployment, plan, keys),
                "drift": [a.why for a in plan.actions if not isinstance(a, Emit)],
                "policyVersion": annotations.get(keys.policy_version),
                "warnings": _warnings(opt_in.findings, conversion),
            }
        )
    return rows


def _warnings(label_findings: Sequence[Finding], conversion: Conversion | None) -> list[str]:
    """What the owner of the service should hear: invalid label values, and the
    conversion's warnings (a refusal's errors are in the reconciler's reason)."""
    found = [f.message for f in label_findings]
    if conversion is not None:
        found += [f.message for f in conversion.findings if not f.is_error]
    return list(dict.fromkeys(found))


def _table(rows: list[dict[str, Any]]) -> str:
    headers = (
        "NAMESPACE",
        "NAME",
        "ENVIRONMENT",
        "STRATEGY",
        "PHASE",
        "HPA",
        "ROUTES",
        "RECONCILER",
        "DRIFT",
        "REASON",
    )
    lines = [
        (
            r["namespace"],
            r["name"],
            r["environment"] or "-",
            r["strategy"] or "-",
            r["phase"],
            r["hpaTarget"] or "-",
            ",".join(r["routes"]) or "-",
            r["reconciler"]["state"],
            "; ".join(r["drift"]) or "none",
            r["reconciler"]["reason"] or "-",
        )
        for r in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *lines, strict=False)]
    out = []
    for line in [headers, *lines]:
        cells = [str(c).ljust(w) for c, w in zip(line[:-1], widths[:-1], strict=False)]
        out.append("  ".join([*cells, str(line[-1])]))
    return "\n".join(out) + "\n"


def _fetch(http: Any, namespace: str | None) -> dict[str, list[dict[str, Any]]]:
    from webhook.kube.cache import slim
    from webhook.kube.http import KubeError
    from webhook.kube.resources import BY_KIND

    objects: dict[str, list[dict[str, Any]]] = {}
    for kind in CACHED_KINDS:
        resource = BY_KIND[kind]
        path = resource.collection_path("" if kind == "Namespace" else namespace or "")
        items: list[dict[str, Any]] = []
        cont = ""
        while True:
            query = [("limit", "500")] + ([("continue", cont)] if cont else [])
            try:
                page = http.request("GET", path, query=query, timeout=30)
            except KubeError as err:
                if err.status == 404 and resource.optional:
                    break  # CRD not installed: none of them
                raise UsageError(f"cannot list {resource.plural}: {err}") from None
            items.extend(slim(o, resource) for o in page.get("items") or [])
            cont = str((page.get("metadata") or {}).get("continue") or "")
            if not cont:
                break
        objects[kind] = items
    return objects


def _cluster_policy(http: Any, args: argparse.Namespace) -> Policy:
    from webhook.kube.http import KubeError
    from webhook.kube.resources import CONFIGMAP

    if args.policy:
        return load_policy(args.policy)
    try:
        cm = http.request(
            "GET", CONFIGMAP.object_path(args.webhook_namespace, args.policy_configmap), timeout=30
        )
    except KubeError as err:
        if err.status == 404:
            return builtin_policy()
        raise UsageError(f"cannot read the policy ConfigMap: {err}") from None
    try:
        return policy_from_configmap(cm)
    except PolicyInvalid as err:
        raise UsageError(
            f"the cluster's policy is invalid (the webhook keeps its last good one): {err}"
        ) from None


def run(args: argparse.Namespace) -> int:
    from certs.kube import ClusterConfigError, load_api_client
    from webhook.kube.http import KubeHttp

    try:
        kubeconfig = str(args.kubeconfig) if args.kubeconfig else None
        http = KubeHttp(load_api_client(kubeconfig, args.in_cluster))
    except ClusterConfigError as err:
        raise UsageError(f"cannot reach a cluster: {err}") from None
    policy = _cluster_policy(http, args)
    rows = service_rows(_fetch(http, args.namespace), policy, datetime.now(UTC))
    if args.output == "json":
        json.dump({"policy": str(policy.version), "services": rows}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif rows:
        sys.stdout.write(_table(rows))
        for row in rows:
            for message in row["warnings"]:
                print(f"{row['namespace']}/{row['name']}: warning: {message}", file=sys.stderr)
    else:
        print("no opted-in services", file=sys.stderr)
    return 0
