"""The reconciler: makes the cluster match the policy, whatever admission saw."""
