"""rollout-webhook: opt Kubernetes Deployments into Argo Rollouts with a label."""

__version__ = "0.1.0"
