"""The end-to-end tier: every test under tests/e2e is marked e2e.

The tier's fixtures (`control_plane`, `kube`, `kubectl`, `helm`, `kube_tools`, `namespace`,
`register_webhook`) are in tests/e2e/fixtures.py, registered for the whole tests/ tree by
tests/conftest.py: one control plane per test session, shared by every test that asks for it.

Where Go is missing the tier skips, saying how to enable it; under CI=true it fails instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

E2E_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test under tests/e2e is an e2e test, so `-m "not e2e"` gives the fast suite.
    for item in items:
        if E2E_DIR in item.path.resolve().parents:
            item.add_marker(pytest.mark.e2e)
