"""Fixtures for the whole tests/ tree.

The end-to-end tier's fixtures are a plugin (tests/e2e/fixtures.py), so any test that asks
for `control_plane`, `kubectl`, `kube`, ... shares the one session control plane, started
only when first asked for.
"""

pytest_plugins = ("tests.e2e.fixtures",)
