"""Every audit record of the run verifies (issue 7): the last module of the package.

Every server of this package appended to one audit file (each start continues the chain
of the one before), so `rollout-webhook audit FILE --verify`, the operator's own check,
covers the whole run: admission decisions, their writes, dry runs and the reconciler's
records, across every restart.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e import harness
from tests.e2e.scenarios.support import BINARY, audit_records


def test_every_audit_record_of_the_run_verifies(
    control_plane: harness.ControlPlane, audit_file: Path
) -> None:
    del control_plane  # skips (or fails under CI=true) with the tier when it cannot run
    records = audit_records(audit_file)
    if not records:
        pytest.skip("no scenario of this package ran before this test: nothing to verify")
    result = subprocess.run(
        [str(BINARY), "audit", str(audit_file), "--verify"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(records)} record(s), chain intact" in result.stdout
    kinds = Counter((r["kind"], r["operation"]) for r in records)
    assert kinds[("AdmissionDecision", "CREATE")] > 0
    assert kinds[("AdmissionWrites", "CREATE")] > 0
    assert any(r["operation"] == "RECONCILE" for r in records)
    assert any(r["dryRun"] for r in records)
