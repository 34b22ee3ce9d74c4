"""tools/build-control-plane.py's node group and tools/build-node-images.py's pure parts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.tools.conftest import TOOLS, load_script


@pytest.fixture(scope="module")
def images_script() -> ModuleType:
    return load_script("build-node-images.py")


def _run(script: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "ROLLOUT_WEBHOOK_CACHE": str(tmp_path)}
    return subprocess.run(
        [sys.executable, str(TOOLS / script), *args],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )


def test_the_node_group_names_the_control_plane_the_node_and_argo(tmp_path: Path) -> None:
    result = _run("build-control-plane.py", tmp_path, "--print-paths", "node")
    assert result.returncode == 0, result.stderr
    paths = json.loads(result.stdout)
    assert list(paths) == [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "kube-proxy",
        "rollouts-controller",
        "kubectl-argo-rollouts",
    ]
    assert paths["kubelet"] == str(tmp_path / "bin" / "kubelet-v1.35.4" / "kubelet")


def test_kubelet_and_kube_proxy_are_built_like_kube_apiserver(build_script: ModuleType) -> None:
    apiserver = build_script.COMPONENTS["kube-apiserver"]
    for name in ("kubelet", "kube-proxy"):
        component = build_script.COMPONENTS[name]
        assert component.module == apiserver.module == "k8s.io/kubernetes"
        assert component.version == apiserver.version
        assert component.package == f"k8s.io/kubernetes/cmd/{name}"
        assert component.ldflags is apiserver.ldflags


def test_the_base_image_key_changes_with_its_package_list(
    images_script: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = images_script.base_key()
    assert before == images_script.base_key()  # stable between runs
    monkeypatch.setattr(images_script, "BASE_PACKAGES", (*images_script.BASE_PACKAGES, "curl"))
    assert images_script.base_key() != before
    monkeypatch.setattr(images_script, "DEBIAN_RELEASE", "trixie")
    assert images_script.base_tarball().name.startswith("debian-python-trixie-")


def test_the_product_image_key_follows_the_sources(
    images_script: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images_script, "REPO", tmp_path)
    (tmp_path / "webhook").mkdir()
    (tmp_path / "webhook" / "a.py").write_text("x = 1\n")
    (tmp_path / "webhook" / "__pycache__").mkdir()
    (tmp_path / "webhook" / "__pycache__" / "a.pyc").write_bytes(b"\0")
    first = images_script.tree_key([tmp_path / "webhook"], "base")
    (tmp_path / "webhook" / "__pycache__" / "a.pyc").write_bytes(b"\1")
    assert images_script.tree_key([tmp_path / "webhook"], "base") == first  # bytecode ignored
    assert images_script.tree_key([tmp_path / "webhook"], "other base") != first
    (tmp_path / "webhook" / "a.py").write_text("x = 2\n")
    assert images_script.tree_key([tmp_path / "webhook"], "base") != first


def test_only_missing_packages_are_installed(images_script: ModuleType) -> None:
    everything = set(images_script.NODE_PACKAGES)
    assert images_script.missing_packages(everything) == []
    assert images_script.missing_packages(everything - {"runc"}) == ["runc"]


def test_a_new_build_replaces_the_stale_archive_of_its_image(
    images_script: ModuleType, tmp_path: Path
) -> None:
    new = tmp_path / "rollout-webhook-node-aaaaaaaaaaaa.oci.tar"
    old = tmp_path / "rollout-webhook-node-bbbbbbbbbbbb.oci.tar"
    other_tag = tmp_path / "rollout-webhook-node-next-cccccccccccc.oci.tar"
    for path in (new, old, other_tag):
        path.touch()
    assert images_script.stale_archives(new) == [old]


def test_print_paths_names_every_image_and_builds_nothing(tmp_path: Path) -> None:
    result = _run("build-node-images.py", tmp_path, "images", "--print-paths")
    assert result.returncode == 0, result.stderr
    paths = json.loads(result.stdout)
    assert set(paths) == {"pause", "product-node", "sample-1.0.0", "sample-2.0.0"}
    assert all(path.startswith(str(tmp_path / "images")) for path in paths.values())
    assert not (tmp_path / "images").exists()
