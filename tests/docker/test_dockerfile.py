"""The Dockerfile: hadolint-clean, multi-stage, pinned, non-root, `rollout-webhook serve`.

There is no container engine on the test machines: these tests read and lint the file; the
image is not built here.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HADOLINT), "--no-color", str(path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=60,
    )


def instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_hadolint_passes() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_really_lints(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install fastapi\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest
    assert "DL3013" in result.stdout  # unpinned pip install


def test_multi_stage_on_one_pinned_slim_python() -> None:
    bases = [rest.split()[0] for keyword, rest in instructions() if keyword == "FROM"]
    assert len(bases) == 2
    # The runtime stage runs the build stage's virtual environment: same interpreter. Both take
    # the BASE_IMAGE argument, declared before the first stage.
    assert bases == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    keywords = [keyword for keyword, _ in instructions()]
    arguments = dict(
        rest.split("=", 1) for keyword, rest in instructions() if keyword == "ARG" and "=" in rest
    )
    assert keywords.index("ARG") < keywords.index("FROM")
    # Its default, what a plain `docker build` uses, is the public pinned slim Python image.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", arguments["BASE_IMAGE"])


def test_runs_as_the_chart_s_non_root_user() -> None:
    users = [rest for keyword, rest in instructions() if keyword == "USER"]
    assert users, "no USER: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    values = yaml.safe_load(
        (REPO / "helm/rollout-webhook/templates/_helpers.tpl")
        .read_text()
        .split('define "rollout-webhook.podSecurityContext" -}}')[1]
        .split("{{- end }}")[0]
    )
    assert values["runAsUser"] == int(uid)
    assert values["runAsGroup"] == int(gid)


def test_entrypoint_is_the_console_script_and_serve_is_the_default() -> None:
    found = dict(instructions())
    assert json.loads(found["ENTRYPOINT"]) == ["rollout-webhook"]
    assert json.loads(found["CMD"]) == ["serve"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "rollout-webhook" in project["scripts"]


def test_only_runtime_code_enters_the_image() -> None:
    copies = [rest for keyword, rest in instructions() if keyword == "COPY"]
    sources = {s for rest in copies if "--from" not in rest for s in rest.split()[:-1]}
    assert sources == {"pyproject.toml", "README.md", "webhook", "certs"}
    installs = [
        rest for keyword, rest in instructions() if keyword == "RUN" and "pip install" in rest
    ]
    assert installs
    for rest in installs:
        # The project itself, without the [dev] extra (test tools stay out of the image).
        assert "[dev]" not in rest
        assert "--no-cache-dir" in rest


@pytest.mark.parametrize("path", ["tests", ".venv", "docs", "helm", ".git"])
def test_dockerignore_keeps_the_context_small(path: str) -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    assert "*" in (REPO / ".dockerignore").read_text().splitlines()
    assert path not in allowed


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_third_party_import_of_the_image_s_code_is_a_runtime_dependency() -> None:
    """The image installs `pip install .`, without the dev extra: a module the product imports
    from a dev-only package (jsonschema once) breaks the image's build, not the test suite."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = {_requirement_name(r) for r in project["dependencies"]}
    # What the runtime dependencies bring with them, one level down (h11 comes with uvicorn).
    brought = set(runtime)
    for name in runtime:
        for requirement in importlib.metadata.requires(name) or []:
            if "extra ==" not in requirement:
                brought.add(_requirement_name(requirement))
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for path in [*REPO.glob("webhook/**/*.py"), *REPO.glob("certs/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("webhook", "certs", "__future__"):
                    continue
                owners = {d.lower().replace("_", "-") for d in distributions.get(top, [top])}
                if not owners & brought:
                    missing[top] = str(path.relative_to(REPO))
    assert missing == {}
