"""The `rollout-webhook` console script: a user's error is one line, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.webhook.cli.conftest import write


def test_console_script_errors_without_traceback(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", "kind: [\n")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "rollout-webhook"), "convert", "-f", bad],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("rollout-webhook: error: ")
    assert "Traceback" not in proc.stderr
