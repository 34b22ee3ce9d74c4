"""tools/build-control-plane.py: the progressive-delivery components (group `rollouts`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.tools.conftest import TOOLS

# The shape of Argo Rollouts' go.mod: version pins as replaces, in a block and on single lines.
ARGO_GOMOD = """\
module github.com/argoproj/argo-rollouts

go 1.24.9

require (
\tgithub.com/go-check/check v1.0.0 // indirect
\tk8s.io/api v0.34.1
)

replace (
\tgithub.com/go-check/check => github.com/go-check/check v0.0.0-20180628173108-788fd7840127
\tk8s.io/api => k8s.io/api v0.34.1 // pinned
)

replace k8s.io/kms => k8s.io/kms v0.34.1

replace example.com/local => ./local
"""


def test_version_pins_are_copied_as_written_and_local_replaces_left_out(
    build_script: ModuleType,
) -> None:
    assert build_script.version_replaces(ARGO_GOMOD) == [
        "github.com/go-check/check => github.com/go-check/check v0.0.0-20180628173108-788fd7840127",
        "k8s.io/api => k8s.io/api v0.34.1",
        "k8s.io/kms => k8s.io/kms v0.34.1",
    ]


def test_argo_helper_gomod_requires_the_release_and_carries_its_pins(
    build_script: ModuleType,
) -> None:
    component = build_script.COMPONENTS["rollouts-controller"]
    gomod = build_script.helper_gomod(component, ARGO_GOMOD)
    version = build_script.ARGO_ROLLOUTS_VERSION
    assert f"require github.com/argoproj/argo-rollouts {version}\n" in gomod
    assert "go 1.24.9\n" in gomod
    assert "\tk8s.io/api => k8s.io/api v0.34.1\n" in gomod
    assert "\tk8s.io/kms => k8s.io/kms v0.34.1\n" in gomod
    assert "./local" not in gomod


def test_kubernetes_components_do_not_copy_version_pins(build_script: ModuleType) -> None:
    gomod = build_script.helper_gomod(
        build_script.COMPONENTS["kube-controller-manager"], ARGO_GOMOD
    )
    assert "k8s.io/kms" not in gomod


def test_argo_version_ldflags_make_version_report_the_tag(build_script: ModuleType) -> None:
    flags = build_script._argo_ldflags("2026-01-01T00:00:00Z")
    version = build_script.ARGO_ROLLOUTS_VERSION
    package = "github.com/argoproj/argo-rollouts/utils/version"
    # upstream reports the tag only when tag, commit and a clean tree are all stamped
    assert f"-X {package}.gitTag={version}" in flags
    assert f"-X {package}.version={version.removeprefix('v')}" in flags
    assert f"-X {package}.gitTreeState=clean" in flags
    assert any(flag.startswith(f"-X {package}.gitCommit=") for flag in flags)


def test_the_plugin_copy_gets_a_placeholder_for_the_dashboard_assets(
    build_script: ModuleType, tmp_path: Path
) -> None:
    module = tmp_path / "module"
    (module / "server" / "static").mkdir(parents=True)
    (module / "server" / "server.go").write_text("package server\n")
    (module / "server" / "server.go").chmod(0o444)
    (module / "server").chmod(0o555)  # as read-only as the module cache
    copy = build_script._copy_with_placeholders(
        build_script.COMPONENTS["kubectl-argo-rollouts"], module, tmp_path / "copy"
    )
    (module / "server").chmod(0o755)
    assert (copy / "server" / "server.go").read_text() == "package server\n"
    assert list((copy / "server" / "static").iterdir()) == [
        copy / "server" / "static" / "placeholder.txt"
    ]


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "CI"}
    environment["ROLLOUT_WEBHOOK_CACHE"] = str(tmp_path)
    environment.update(env)
    return subprocess.run(
        [sys.executable, str(TOOLS / "build-control-plane.py"), *args],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )


def test_the_rollouts_group_names_seven_versioned_binaries(
    build_script: ModuleType, tmp_path: Path
) -> None:
    result = _run(tmp_path, "--print-paths", "rollouts", "kwok")
    assert result.returncode == 0, result.stderr
    paths = json.loads(result.stdout)
    assert list(paths) == [
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
        "rollouts-controller",
        "kubectl-argo-rollouts",
        "prometheus",
        "gatewayapi-plugin",
    ]
    argo = build_script.ARGO_ROLLOUTS_VERSION
    assert paths["kubectl-argo-rollouts"] == str(
        tmp_path / "bin" / f"kubectl-argo-rollouts-{argo}" / "kubectl-argo-rollouts"
    )
    plugin = build_script.GATEWAYAPI_PLUGIN_VERSION
    assert paths["gatewayapi-plugin"] == str(
        tmp_path / "bin" / f"gatewayapi-plugin-{plugin}" / "gatewayapi-plugin"
    )


def test_the_plugin_is_built_from_the_release_extract_beside_the_clone(
    build_script: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROLLOUT_WEBHOOK_UPSTREAM", raising=False)
    plugin = build_script.SOURCE_COMPONENTS["gatewayapi-plugin"]
    clone = TOOLS.parent
    assert build_script.source_path(plugin) == (
        clone.parent
        / "shared"
        / "upstream"
        / f"rollouts-plugin-trafficrouter-gatewayapi-{plugin.version}"
    )
    monkeypatch.setenv("ROLLOUT_WEBHOOK_UPSTREAM", str(tmp_path))
    assert build_script.source_path(plugin).parent == tmp_path


@pytest.mark.parametrize("ci", ["true", ""])
def test_without_the_release_extract_the_plugin_build_fails_naming_the_path(
    build_script: ModuleType, tmp_path: Path, ci: str
) -> None:
    # A failed build, in CI or not: the tier's fixture turns it into a skip outside CI.
    missing = tmp_path / "upstream"
    result = _run(tmp_path, "gatewayapi-plugin", ROLLOUT_WEBHOOK_UPSTREAM=str(missing), CI=ci)
    assert result.returncode == 1
    folder = (
        missing
        / f"rollouts-plugin-trafficrouter-gatewayapi-{build_script.GATEWAYAPI_PLUGIN_VERSION}"
    )
    assert f"no release extract at {folder}" in result.stderr
    assert not (
        tmp_path / "bin" / f"gatewayapi-plugin-{build_script.GATEWAYAPI_PLUGIN_VERSION}"
    ).exists()


def test_the_read_only_extract_is_built_in_a_writable_copy(tmp_path: Path) -> None:
    # A stand-in extract, read-only like the shared one; a fake go records where it ran and
    # what it could write there.
    extract = tmp_path / "upstream" / "rollouts-plugin-trafficrouter-gatewayapi-v0.15.0"
    extract.mkdir(parents=True)
    (extract / "go.mod").write_text("module example.com/plugin\n")
    (extract / "main.go").write_text("package main\n")
    for path in (extract / "go.mod", extract / "main.go", extract):
        path.chmod(0o555 if path.is_dir() else 0o444)
    fake_go = tmp_path / "go"
    fake_go.write_text(
        "#!/bin/sh\n"
        'echo "$PWD" > "$RECORD"\n'
        'echo "require x v1" >> go.mod || exit 3\n'
        'while [ "$1" != "-o" ]; do shift; done\n'
        'printf plugin > "$2"\n'
    )
    fake_go.chmod(0o755)
    record = tmp_path / "ran-in"
    result = _run(
        tmp_path,
        "gatewayapi-plugin",
        ROLLOUT_WEBHOOK_UPSTREAM=str(tmp_path / "upstream"),
        GO=str(fake_go),
        RECORD=str(record),
    )
    extract.chmod(0o755)
    assert result.returncode == 0, result.stderr
    assert record.read_text().strip() != str(extract)
    assert (extract / "go.mod").read_text() == "module example.com/plugin\n"
    built = tmp_path / "bin" / "gatewayapi-plugin-v0.15.0" / "gatewayapi-plugin"
    assert built.read_text() == "plugin"


def test_an_unknown_name_lists_the_group_among_the_known(tmp_path: Path) -> None:
    result = _run(tmp_path, "argo")
    assert result.returncode == 2
    assert "unknown component 'argo'" in result.stderr
    assert "rollouts" in result.stderr


def test_prometheus_is_built_without_service_discovery_and_stamped_with_its_release(
    build_script: ModuleType,
) -> None:
    component = build_script.COMPONENTS["prometheus"]
    assert component.build_tags == ("remove_all_sd",)
    assert build_script._prometheus_release("v0.316.0") == "3.16.0"
    assert build_script._prometheus_release("v0.300.2") == "3.0.2"
    flags = component.ldflags("2026-11-05T15:06:51Z")
    release = build_script._prometheus_release(build_script.PROMETHEUS_VERSION)
    assert f"-X github.com/prometheus/common/version.Version={release}" in flags
