"""The kinds the product reads and writes, and their REST paths. Pure."""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import quote


@dataclass(frozen=True)
class Resource:
    kind: str
    group: str
    version: str
    plural: str
    namespaced: bool = True
    optional: bool = False
    """A CRD that may not be installed (Gateway API, Istio): absent means "none of them"."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def collection_path(self, namespace: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            return f"{base}/namespaces/{quote(namespace, safe='')}/{self.plural}"
        return f"{base}/{self.plural}"

    def object_path(self, namespace: str, name: str) -> str:
        return f"{self.collection_path(namespace)}/{quote(name, safe='')}"


NAMESPACE = Resource("Namespace", "", "v1", "namespaces", namespaced=False)
CONFIGMAP = Resource("ConfigMap", "", "v1", "configmaps")
CRD = Resource(
    "CustomResourceDefinition",
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    namespaced=False,
)
SERVICE = Resource("Service", "", "v1", "services")
DEPLOYMENT = Resource("Deployment", "apps", "v1", "deployments")
HPA = Resource("HorizontalPodAutoscaler", "autoscaling", "v2", "horizontalpodautoscalers")
ROLLOUT = Resource("Rollout", "argoproj.io", "v1alpha1", "rollouts", optional=True)
HTTPROUTE = Resource("HTTPRoute", "gateway.networking.k8s.io", "v1", "httproutes", optional=True)
VIRTUALSERVICE = Resource(
    "VirtualService", "networking.istio.io", "v1", "virtualservices", optional=True
)
# Read only: subset-level routing names the DestinationRule whose subsets Argo edits.
DESTINATIONRULE = Resource(
    "DestinationRule", "networking.istio.io", "v1", "destinationrules", optional=True
)

ANALYSIS_TEMPLATE = Resource(
    "AnalysisTemplate", "argoproj.io", "v1alpha1", "analysistemplates", optional=True
)
CLUSTER_ANALYSIS_TEMPLATE = Resource(
    "ClusterAnalysisTemplate",
    "argoproj.io",
    "v1alpha1",
    "clusteranalysistemplates",
    namespaced=False,
    optional=True,
)

CACHED = (
    NAMESPACE,
    DEPLOYMENT,
    SERVICE,
    HPA,
    HTTPROUTE,
    VIRTUALSERVICE,
    DESTINATIONRULE,
    ROLLOUT,
    ANALYSIS_TEMPLATE,
    CLUSTER_ANALYSIS_TEMPLATE,
)
"""What the admission path reads: every kind a decision looks at, watched cluster-wide."""

CACHED_KINDS = tuple(r.kind for r in CACHED)
"""The kinds the caches hold, by the names the decisions use."""

BY_KIND = {r.kind: r for r in (*CACHED, CONFIGMAP)}


def resource_for(manifest_kind: str, api_version: str = "") -> Resource:
    """The resource of a manifest, at the manifest's own version (``apiVersion`` wins:
    a route sent as networking.istio.io/v1beta1 is written back at v1beta1)."""
    try:
        known = BY_KIND[manifest_kind]
    except KeyError:
        raise ValueError(f"kind {manifest_kind!r} is not one the product writes") from None
    if not api_version or api_version == known.api_version:
        return known
    group, _, version = api_version.rpartition("/")
    return replace(known, group=group, version=version)
