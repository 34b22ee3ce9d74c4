"""Kubernetes adapters: watch-fed caches and the one server-side-apply writer."""
