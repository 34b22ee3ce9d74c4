"""The built-in policy: the seed document's dev, staging and prod examples.

Used when no policy ConfigMap exists, so the product works out of the box. Kept as
YAML text (not a file read at run time) because the core does no I/O.
"""

from __future__ import annotations

DEFAULT_POLICY_YAML = """\
# Services in a namespace no pattern matches get the slowest, safest strategy.
defaultEnvironment: prod
# Existing Rollouts follow a policy change at their Deployment's next change.
rolloutUpdates: nextChange
namespaces:
  - {pattern: "dev", environment: dev}
  - {pattern: "dev-*", environment: dev}
  - {pattern: "*-dev", environment: dev}
  - {pattern: "staging", environment: staging}
  - {pattern: "staging-*", environment: staging}
  - {pattern: "*-staging", environment: staging}
  - {pattern: "prod", environment: prod}
  - {pattern: "prod-*", environment: prod}
  - {pattern: "*-prod", environment: prod}
environments:
  dev:
    scaleDown: onsuccess
    allowServiceOverrides: true
    trafficRouting: auto
    rollout:
      enabled: true
      strategy: canary
      canary:
        steps:
          - setWeight: 100  # Instant rollout in dev
  staging:
    scaleDown: onsuccess
    allowServiceOverrides: true
    trafficRouting: auto
    rollout:
      enabled: true
      strategy: canary
      canary:
        steps:
          - setWeight: 50
          - pause: {duration: 5m}
  prod:
    scaleDown: onsuccess
    allowServiceOverrides: true
    trafficRouting: auto
    rollout:
      enabled: true
      strategy: canary
      canary:
        steps:
          - setWeight: 10
          - pause: {duration: 10m}
          - setWeight: 25
          - pause: {duration: 10m}
          - setWeight: 50
          - pause: {duration: 15m}
          - setWeight: 75
          - pause: {duration: 10m}
"""
