"""Rendering the chart with the real helm binary (v4, extracted from a dev dependency).

`render(*sets)` runs `helm template` once per distinct set of values in a session and
returns the parsed documents; `render_fails(*sets)` returns helm's error output.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import binaries

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "rollout-webhook"
RELEASE = "rollout-webhook"
NAMESPACE = "platform-rollouts"
KUBE_VERSION = "1.35.0"

Docs = list[dict[str, Any]]
Render = Callable[..., Docs]


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    # A dev dependency of the project: not finding it is a broken install, never a skip.
    return binaries.kube_tools()["helm"]


def helm_template(
    helm: Path, sets: Sequence[str], release: str = RELEASE
) -> subprocess.CompletedProcess[str]:
    command = [str(helm), "template", release, str(CHART), "--namespace", NAMESPACE]
    command += ["--kube-version", KUBE_VERSION]
    for item in sets:
        command += [
            "--set-json" if item.startswith("json:") else "--set",
            item.removeprefix("json:"),
        ]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


@pytest.fixture(scope="session")
def render(helm_binary: Path) -> Render:
    cache: dict[tuple[str, ...], Docs] = {}

    def _render(*sets: str) -> Docs:
        key = tuple(sets)
        if key not in cache:
            result = helm_template(helm_binary, sets)
            assert result.returncode == 0, f"helm template {sets} failed: {result.stderr}"
            cache[key] = [d for d in yaml.safe_load_all(result.stdout) if d]
        # Each test gets its own copy: a test may not change what another one sees.
        return copy.deepcopy(cache[key])

    return _render


@pytest.fixture(scope="session")
def render_fails(helm_binary: Path) -> Callable[..., str]:
    def _render_fails(*sets: str) -> str:
        result = helm_template(helm_binary, sets)
        assert result.returncode != 0, f"helm template {sets} succeeded, expected a refusal"
        return result.stderr

    return _render_fails


def find(docs: Docs, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def all_of(docs: Docs, kind: str) -> Docs:
    return [d for d in docs if d["kind"] == kind]
