"""tools/build-control-plane.py: the generated helper go.mod, and the no-Go behaviour."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.tools.conftest import TOOLS

# The shape of an upstream main module: staging replaces, a local replace of a module nothing
# requires, a guard replace, and a replace to another published module.
UPSTREAM_GOMOD = """\
// generated
module k8s.io/kubernetes

go 1.25.0

godebug default=go1.25

require (
\tgithub.com/spf13/cobra v1.10.0
\tk8s.io/api v0.0.0
\tk8s.io/apiserver v0.0.0 // indirect
)

require k8s.io/kubectl v0.0.0

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/apiserver => ./staging/src/k8s.io/apiserver // comment
\tk8s.io/sample-controller => ./staging/src/k8s.io/sample-controller
\tgithub.com/spf13/cobra => github.com/spf13/cobra v1.9.0
)

replace k8s.io/kubectl => ./staging/src/k8s.io/kubectl

replace example.com/forbidden => ./FORBIDDEN_DEPENDENCY
"""


def test_only_required_modules_with_local_replaces_are_carried_over(
    build_script: ModuleType,
) -> None:
    assert build_script.locally_replaced_modules(UPSTREAM_GOMOD) == [
        "k8s.io/api",
        "k8s.io/apiserver",
        "k8s.io/kubectl",
    ]


def test_kubernetes_helper_gomod_pins_staging_modules_to_the_matching_release(
    build_script: ModuleType,
) -> None:
    component = build_script.COMPONENTS["kube-apiserver"]
    gomod = build_script.helper_gomod(component, UPSTREAM_GOMOD)
    version = build_script.KUBERNETES_VERSION
    staging = "v0." + version.removeprefix("v1.")
    assert f"require k8s.io/kubernetes {version}\n" in gomod
    assert "go 1.25.0\n" in gomod
    assert "godebug default=go1.25\n" in gomod
    assert f"\tk8s.io/api => k8s.io/api {staging}\n" in gomod
    assert f"\tk8s.io/kubectl => k8s.io/kubectl {staging}\n" in gomod
    assert "sample-controller" not in gomod
    assert "cobra" not in gomod


def test_staging_version_refuses_a_major_version_it_does_not_know(
    build_script: ModuleType,
) -> None:
    assert build_script._staging_version("v1.35.4") == "v0.35.4"
    with pytest.raises(ValueError, match=r"unexpected Kubernetes version v2\.0\.0"):
        build_script._staging_version("v2.0.0")


def test_kubernetes_version_ldflags_stamp_what_slash_version_reports(
    build_script: ModuleType,
) -> None:
    flags = build_script._kubernetes_ldflags("2026-01-01T00:00:00Z")
    version = build_script.KUBERNETES_VERSION
    assert f"-X k8s.io/component-base/version.gitVersion={version}" in flags
    assert "-X k8s.io/component-base/version.gitMajor=1" in flags
    assert f"-X k8s.io/component-base/version.gitMinor={version.split('.')[1]}" in flags


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "CI"}
    environment.update(ROLLOUT_WEBHOOK_CACHE=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, str(TOOLS / "build-control-plane.py"), *args],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )


def test_print_paths_names_versioned_cache_directories(
    build_script: ModuleType, tmp_path: Path
) -> None:
    result = _run(tmp_path, "--print-paths")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "etcd": str(tmp_path / "bin" / f"etcd-{build_script.ETCD_VERSION}" / "etcd"),
        "kube-apiserver": str(
            tmp_path
            / "bin"
            / f"kube-apiserver-{build_script.KUBERNETES_VERSION}"
            / "kube-apiserver"
        ),
    }


def test_without_go_it_explains_and_succeeds_outside_ci(tmp_path: Path) -> None:
    result = _run(tmp_path, GO=str(tmp_path / "no-go"))
    assert result.returncode == 0
    assert "Go is not installed" in result.stderr
    assert "they will skip" in result.stderr
    assert not (tmp_path / "bin").exists()


def test_without_go_it_fails_under_ci(tmp_path: Path) -> None:
    result = _run(tmp_path, GO=str(tmp_path / "no-go"), CI="true")
    assert result.returncode == 1
    assert result.stderr.startswith("error: Go is not installed")


def test_an_unknown_component_is_a_usage_error(tmp_path: Path) -> None:
    result = _run(tmp_path, "kubeadm")
    assert result.returncode == 2
    assert "unknown component 'kubeadm'" in result.stderr


def test_a_failed_build_fails_and_keeps_its_log(build_script: ModuleType, tmp_path: Path) -> None:
    fake_go = tmp_path / "go"
    fake_go.write_text("#!/bin/sh\necho 'go: module lookup disabled' >&2\nexit 1\n")
    fake_go.chmod(0o755)
    result = _run(tmp_path, "etcd", GO=str(fake_go))
    assert result.returncode == 1
    assert result.stderr.startswith("error: `")
    assert "go: module lookup disabled" in result.stderr
    log = tmp_path / "bin" / f"etcd-{build_script.ETCD_VERSION}.build.log"
    assert f"full log: {log}" in result.stderr
    assert "go: module lookup disabled" in log.read_text()
    assert not (tmp_path / "bin" / f"etcd-{build_script.ETCD_VERSION}" / "etcd").exists()
