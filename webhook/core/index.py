"""Index keys: how the caches find a Deployment's neighbours without reading its namespace.

The conversion of a Deployment reads, of its namespace, only the Services that select its
pods, the HPAs that scale it and the routes that send traffic to those Services. The
caches keep each Service, HPA and route under the keys below, and the admission path looks
up the keys of one Deployment: what it gets back is a superset of what the conversion
reads (the conversion still applies its own exact tests), found at the cost of the
matches instead of the namespace's size (docs/benchmarks.md: a namespace of 1,000
services). Pure: the keys are computed from the object alone.

The reconciler looks the other way, from a watch event to the Deployments it concerns:
Deployments are kept under their pod labels (the Deployments a Service selects), and
Rollouts under the Services their strategy names (the Rollouts a Service event may
concern once its selector points elsewhere).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from webhook.core.objects import pod_labels, spec_of
from webhook.core.references import rollout_references
from webhook.core.services import own_selector

NO_KEYS: frozenset[str] = frozenset()


def selector_key(label: str, value: object) -> str:
    return f"selector\0{label}\0{value}"


def backend_key(service: str) -> str:
    return f"backend\0{service}"


def target_key(name: object) -> str:
    return f"target\0{name}"


def naming_key(kind: str, name: str) -> str:
    """The key of the Rollouts whose strategy names the object (kind, name)."""
    return f"names\0{kind}\0{name}"


def index_keys(kind: str, obj: Mapping[str, Any]) -> frozenset[str]:
    """The keys an object is found under (none for kinds that are not looked up)."""
    if kind == "Service":
        return _service_keys(obj)
    if kind == "Deployment":
        return selecting_keys(pod_labels(obj))
    if kind == "Rollout":
        return frozenset(naming_key(k, n) for k, n in rollout_references(obj))
    if kind == "HorizontalPodAutoscaler":
        ref = spec_of(obj).get("scaleTargetRef")
        name = ref.get("name") if isinstance(ref, Mapping) else None
        return frozenset({target_key(name)}) if isinstance(name, str) else NO_KEYS
    if kind == "HTTPRoute":
        return frozenset(backend_key(n) for n in _httproute_backends(obj))
    if kind == "VirtualService":
        return frozenset(backend_key(n) for n in _virtualservice_backends(obj))
    if kind == "DestinationRule":
        host = spec_of(obj).get("host")
        # Found as the Service its host names, in any spelling (short, .ns, ..., FQDN).
        return frozenset({backend_key(host.split(".", 1)[0])}) if isinstance(host, str) else NO_KEYS
    return NO_KEYS


def _service_keys(service: Mapping[str, Any]) -> frozenset[str]:
    # A Service selects the pods when every pair of its selector is among their labels:
    # one pair (the first label, by name) is enough to be found by every such Deployment.
    selector = own_selector(service)
    labels = sorted(k for k in selector if isinstance(k, str))
    if not labels:
        return NO_KEYS
    return frozenset({selector_key(labels[0], selector[labels[0]])})


def selecting_keys(labels: Mapping[str, Any]) -> frozenset[str]:
    """The keys of every Service that may select pods with these labels (and the keys of a
    Deployment whose pods have them)."""
    return frozenset(selector_key(k, v) for k, v in labels.items())


def selected_keys(service: Mapping[str, Any]) -> frozenset[str]:
    """The keys of every Deployment whose pods the Service may select."""
    return _service_keys(service)


def backend_keys(services: Iterable[str]) -> frozenset[str]:
    return frozenset(backend_key(s) for s in services)


def _httproute_backends(route: Mapping[str, Any]) -> set[str]:
    names: set[str] = set()
    for rule in _dicts(spec_of(route).get("rules")):
        for ref in _dicts(rule.get("backendRefs")):
            if isinstance(ref.get("name"), str):
                names.add(ref["name"])
    return names


def _virtualservice_backends(vs: Mapping[str, Any]) -> set[str]:
    # Every spelling of a Service's host (short, .ns, .ns.svc, FQDN) starts with its name.
    names: set[str] = set()
    for http in _dicts(spec_of(vs).get("http")):
        for route in _dicts(http.get("route")):
            destination = route.get("destination")
            host = destination.get("host") if isinstance(destination, Mapping) else None
            if isinstance(host, str):
                names.add(host.split(".", 1)[0])
    return names


def _dicts(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []
