"""Label and annotation names: the user-facing contract of docs/labels.md.

Every name hangs off one prefix (``rollout-webhook.io/`` by default) so a platform
that runs two products side by side, or a fork, can move them all at once.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "rollout-webhook.io/"

# Written by Argo CD to track which Application owns an object. Copying them onto
# the generated Rollout would make Argo CD prune it as an orphan of the app.
ARGOCD_TRACKING_LABEL = "app.kubernetes.io/instance"
ARGOCD_PREFIX = "argocd.argoproj.io/"


@dataclass(frozen=True)
class Keys:
    """The names of every label and annotation the product reads or writes."""

    prefix: str = DEFAULT_PREFIX

    # Read: the opt-in contract.
    @property
    def enabled(self) -> str:
        """Label on a Deployment or Namespace: "true" opts in, "false" (Deployment) opts out."""
        return f"{self.prefix}enabled"

    @property
    def environment(self) -> str:
        """Label on a Deployment or Namespace naming the policy environment."""
        return f"{self.prefix}environment"

    @property
    def strategy(self) -> str:
        """Annotation on a Deployment: ``canary`` or ``bluegreen`` (where overrides are allowed)."""
        return f"{self.prefix}strategy"

    @property
    def rollout(self) -> str:
        """Annotation on a Deployment: a YAML ``rollout:`` block merged over the environment's."""
        return f"{self.prefix}rollout"

    # Written: the record of a decision.
    @property
    def rollout_name(self) -> str:
        """Annotation on a converted Deployment: the Rollout that manages it."""
        return f"{self.prefix}rollout-name"

    @property
    def original_replicas(self) -> str:
        """Annotation: the replica count the owner asked for, restored at opt-out."""
        return f"{self.prefix}original-replicas"

    @property
    def applied_environment(self) -> str:
        return f"{self.prefix}applied-environment"

    @property
    def applied_strategy(self) -> str:
        return f"{self.prefix}applied-strategy"

    @property
    def policy_version(self) -> str:
        return f"{self.prefix}policy-version"

    @property
    def applied_hash(self) -> str:
        """Annotation on every generated object: the hash of the manifest last applied, so
        a field the product no longer sets (a deleted Service, route or policy key) is drift."""
        return f"{self.prefix}applied-hash"

    @property
    def refused(self) -> str:
        """Annotation on a Deployment admitted unconverted because its requester may not
        create Rollouts (the confused-deputy check); the reconciler leaves it alone."""
        return f"{self.prefix}refused"

    @property
    def reconciler_state(self) -> str:
        """Annotation on a Deployment whose reconcile fails: JSON saying since when, at which
        step, why, and what to fix (``webhook.core.service_state``); removed once a pass
        succeeds. ``rollout-webhook status`` reads it."""
        return f"{self.prefix}reconciler"

    @property
    def managed(self) -> str:
        """Label on every object the product generates (Rollout, canary/preview Services)."""
        return f"{self.prefix}managed"

    @property
    def generated_for(self) -> str:
        """Label on generated objects: the Deployment they were generated for."""
        return f"{self.prefix}deployment"

    def written_annotations(self) -> tuple[str, ...]:
        """The annotations the product writes on a Deployment, removed again at opt-out."""
        return (
            self.rollout_name,
            self.original_replicas,
            self.applied_environment,
            self.applied_strategy,
            self.policy_version,
            self.reconciler_state,
        )


DEFAULT_KEYS = Keys()
