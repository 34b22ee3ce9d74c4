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


def test_the_node_group_names_the_control_plane_the_node_argo_and_the_gateway(
    tmp_path: Path,
) -> None:
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
        "traefik",
        "gatewayapi-plugin",
        "gateway-api-crds",
    ]
    assert paths["kubelet"] == str(tmp_path / "bin" / "kubelet-v1.35.4" / "kubelet")
    assert paths["traefik"] == str(tmp_path / "bin" / "traefik-v3.6.12" / "traefik")
    assert paths["gateway-api-crds"] == str(tmp_path / "bin" / "gateway-api-crds-v1.4.0" / "files")


# Lines as Traefik's go.mod writes them: two forks replaced, one broken release excluded.
TRAEFIK_GOMOD = """module github.com/traefik/traefik/v3

go 1.25.0

require (
	github.com/abbot/go-http-auth v0.0.0-00010101000000-000000000000
	github.com/gorilla/mux v1.8.1
)

replace (
	github.com/abbot/go-http-auth => github.com/containous/go-http-auth v0.4.1-0.2020
	github.com/gorilla/mux => github.com/containous/mux v0.0.0-20250523120546-41b6ec3aed59
)

// Excluded because of a broken release.
exclude github.com/tencentcloud/tencentcloud-sdk-go v3.0.83+incompatible
"""


def test_traefik_s_forks_and_exclusion_carry_over_to_the_helper_module(
    build_script: ModuleType,
) -> None:
    # Both only apply in the main module: without them `go build` picks the originals.
    gomod = build_script.helper_gomod(build_script.COMPONENTS["traefik"], TRAEFIK_GOMOD)
    assert "require github.com/traefik/traefik/v3 v3.6.12" in gomod
    assert "\tgithub.com/gorilla/mux => github.com/containous/mux v0.0.0-2025052312" in gomod
    assert (
        "exclude github.com/tencentcloud/tencentcloud-sdk-go v3.0.83+incompatible"
        in gomod.splitlines()
    )
    assert build_script.excludes("exclude (\n\ta v1\n\tb  v2 // why\n)\n") == ["a v1", "b v2"]


def test_module_files_are_copied_whole_into_the_cache_once(
    build_script: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "module"
    (module / "config" / "crd" / "standard").mkdir(parents=True)
    (module / "config" / "crd" / "standard" / "a.yaml").write_text(
        "kind: CustomResourceDefinition\n"
    )
    calls: list[list[str]] = []

    def download(command: list[str], cwd: Path, log: Path) -> str:
        calls.append(command)
        return json.dumps({"Dir": str(module)})

    monkeypatch.setenv("ROLLOUT_WEBHOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build_script, "_run", download)
    files = build_script.MODULE_FILES["gateway-api-crds"]
    target = build_script.build("go", files)
    assert target == tmp_path / "cache" / "bin" / "gateway-api-crds-v1.4.0" / "files"
    assert (target / "a.yaml").read_text() == "kind: CustomResourceDefinition\n"
    assert calls == [["go", "mod", "download", "-json", "sigs.k8s.io/gateway-api@v1.4.0"]]
    assert build_script.build("go", files) == target  # cached: no second download
    assert len(calls) == 1


def test_a_module_without_the_folder_is_a_build_error_naming_it(
    build_script: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROLLOUT_WEBHOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build_script, "_run", lambda *a: json.dumps({"Dir": str(tmp_path)}))
    with pytest.raises(build_script.BuildError, match="has no config/crd/standard"):
        build_script.build("go", build_script.MODULE_FILES["gateway-api-crds"])


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
