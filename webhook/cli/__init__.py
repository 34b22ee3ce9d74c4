"""The `rollout-webhook` command line."""
