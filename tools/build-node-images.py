#!/usr/bin/env python3
"""Install the node tier's Debian packages and build its container images, with no registry.

Subcommands (each idempotent, cached, locked):

  deps     apt-get install the packages the real node needs (containerd, runc, the CNI plugins,
           buildah, mmdebstrap, nftables, ...) when one is missing; a no-op otherwise.
  base     a Debian root filesystem with Python 3 made by mmdebstrap (minutes), cached as a
           tarball keyed by the Debian release and the package list.
  images   the OCI archives the node loads: the base (imported with buildah), the pod sandbox
           ("pause", compiled from Kubernetes' own pause.c with gcc -static), the product image
           built from the project's Dockerfile with BASE_IMAGE set to the base, and the sample
           application in two versions. Each archive is keyed by what it is built from.

The cache is ~/.cache/rollout-webhook unless ROLLOUT_WEBHOOK_CACHE names another directory;
images go to <cache>/images, buildah's storage to <cache>/containers.

Exit status: 0 done or cached; 0 with a message when the machine cannot do it (not root, no
apt-get), so the node tests skip; 1 for that under CI=true, or when a step fails; 2 for usage.
`images --print-paths` prints {name: archive} as JSON and builds nothing.
Standard library only: it runs before any virtualenv exists.
"""

# A command-line script: printing is its output, and it runs apt-get, mmdebstrap and buildah.
# ruff: noqa: T201, S603, S607

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# What the node runs on: Debian's containerd 1.6 (accepted by kubelet v1.35), runc (crun refuses
# this machine's hybrid cgroup v1 layout), the CNI reference plugins, nftables for kube-proxy.
# buildah builds the images, mmdebstrap the base, gcc the pause binary.
NODE_PACKAGES = (
    "buildah",
    "conntrack",
    "containerd",
    "containernetworking-plugins",
    "gcc",
    "iproute2",
    "iptables",
    "libc6-dev",
    "mmdebstrap",
    "nftables",
    "runc",
    "util-linux",
)

DEBIAN_RELEASE = "bookworm"
DEBIAN_MIRRORS = (
    f"deb http://deb.debian.org/debian {DEBIAN_RELEASE} main",
    f"deb http://deb.debian.org/debian-security {DEBIAN_RELEASE}-security main",
)
# The base image: Debian's Python 3.11 with venv (the Dockerfile runs `python -m venv`, so
# python-is-python3), passwd for the Dockerfile's groupadd/useradd.
BASE_PACKAGES = ("ca-certificates", "passwd", "python-is-python3", "python3", "python3-venv")
BASE_IMAGE = "localhost/rollout-webhook-node/python-base"
PAUSE_IMAGE = "localhost/rollout-webhook-node/pause:3.10.1"
PRODUCT_IMAGE = "localhost/rollout-webhook"
SAMPLE_IMAGE = "localhost/rollout-webhook-node/sample"
SAMPLE_VERSIONS = ("1.0.0", "2.0.0")
SAMPLE_DIR = REPO / "tests" / "node" / "sample"
# What the product image is built from: a change to any of these rebuilds it.
PRODUCT_SOURCES = ("Dockerfile", "pyproject.toml", "README.md", "webhook", "certs")


class SetupError(Exception):
    """A one-line reason a step cannot go on."""


def cache_root() -> Path:
    override = os.environ.get("ROLLOUT_WEBHOOK_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "rollout-webhook"


def images_dir() -> Path:
    return cache_root() / "images"


def missing_packages(installed: set[str]) -> list[str]:
    return [name for name in NODE_PACKAGES if name not in installed]


def installed_packages(names: tuple[str, ...]) -> set[str]:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *names],
        capture_output=True,
        text=True,
        check=False,
    )
    found = set()
    for line in result.stdout.splitlines():
        name, _, status = line.partition(" ")
        if status == "installed":
            found.add(name)
    return found


def base_key() -> str:
    """The base tarball's cache key: the release, mirrors and packages it is made from."""
    recipe = {"release": DEBIAN_RELEASE, "mirrors": DEBIAN_MIRRORS, "packages": BASE_PACKAGES}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def tree_key(paths: list[Path], extra: str = "") -> str:
    """A content hash of files and directories (names and bytes), for an image's cache key."""
    digest = hashlib.sha256(extra.encode())
    for top in sorted(paths):
        files = sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else [top]
        for path in files:
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            digest.update(str(path.relative_to(REPO)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    path = cache_root() / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(command: list[str], log: Path, env: dict[str, str] | None = None) -> str:
    with log.open("a") as sink:
        sink.write("$ " + " ".join(command) + "\n")
        sink.flush()
        result = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=sink, text=True, env=env, check=False
        )
    if result.returncode != 0:
        tail = log.read_text().strip().splitlines()[-15:]
        raise SetupError(
            f"`{' '.join(command[:2])} ...` failed (exit {result.returncode}):\n"
            + "\n".join(tail)
            + f"\nfull log: {log}"
        )
    return result.stdout


# --- deps ----------------------------------------------------------------------------------


def install_deps() -> None:
    missing = missing_packages(installed_packages(NODE_PACKAGES))
    if not missing:
        return
    print(f"installing {' '.join(missing)} with apt-get...", flush=True)
    log = cache_root() / "logs" / "node-deps.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with _lock("apt"):
        _run(["apt-get", "update", "-q"], log, env)
        _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], log, env)


# --- base ----------------------------------------------------------------------------------


def base_tarball() -> Path:
    return images_dir() / f"debian-python-{DEBIAN_RELEASE}-{base_key()}.tar"


def build_base() -> Path:
    target = base_tarball()
    if target.is_file():
        return target
    with _lock("base"):
        if target.is_file():
            return target
        started = time.monotonic()
        print(f"building the Debian {DEBIAN_RELEASE} Python base with mmdebstrap (cold: ~5 min)...")
        target.parent.mkdir(parents=True, exist_ok=True)
        # mmdebstrap picks its output format by the name's extension: keep ".tar" last.
        partial = target.with_name(target.stem + ".partial.tar")
        excludes = ("man", "doc", "locale", "info")
        command = [
            "mmdebstrap",
            "--variant=essential",
            "--include=" + ",".join(BASE_PACKAGES),
            *(f"--dpkgopt=path-exclude=/usr/share/{name}/*" for name in excludes),
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin',
            DEBIAN_RELEASE,
            str(partial),
            *DEBIAN_MIRRORS,
        ]
        _run(command, images_dir() / "base.build.log")
        partial.replace(target)
        print(f"built {target} in {(time.monotonic() - started) / 60:.1f} min", flush=True)
    return target


# --- images --------------------------------------------------------------------------------


def _buildah_env() -> dict[str, str]:
    # buildah's storage and configuration under the cache, never the host's /var/lib/containers.
    root = cache_root() / "containers"
    conf = root / "storage.conf"
    if not conf.is_file():
        root.mkdir(parents=True, exist_ok=True)
        conf.write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{root / "storage"}"\n'
            f'runroot = "{root / "run"}"\n'
        )
    return dict(os.environ, CONTAINERS_STORAGE_CONF=str(conf), BUILDAH_ISOLATION="chroot")


def _buildah(args: list[str], log: Path) -> str:
    return _run(["buildah", *args], log, _buildah_env())


def _export(image: str, archive: Path, log: Path) -> None:
    partial = archive.with_name(archive.name + ".partial")
    partial.unlink(missing_ok=True)
    _buildah(["push", "--quiet", image, f"oci-archive:{partial}:{image}"], log)
    partial.replace(archive)


def _image_exists(image: str) -> bool:
    result = subprocess.run(
        ["buildah", "inspect", "--type", "image", image],
        capture_output=True,
        env=_buildah_env(),
        check=False,
    )
    return result.returncode == 0


def base_image_tag() -> str:
    return f"{BASE_IMAGE}:{base_key()}"


def _import_base(log: Path) -> str:
    tag = base_image_tag()
    if _image_exists(tag):
        return tag
    tarball = build_base()
    container = _buildah(["from", "scratch"], log).strip()
    try:
        _buildah(["add", container, str(tarball), "/"], log)
        _buildah(["config", "--env", "LANG=C.UTF-8", "--cmd", "/usr/bin/python3", container], log)
        _buildah(["commit", "--quiet", container, tag], log)
    finally:
        _buildah(["rm", container], log)
    return tag


def pause_source() -> Path:
    """pause.c from the k8s.io/kubernetes module the Go builds downloaded."""
    go = shutil.which("go") or "/usr/local/go/bin/go"
    result = subprocess.run(
        [go, "env", "GOMODCACHE"], capture_output=True, text=True, check=False, env=os.environ
    )
    modcache = Path(result.stdout.strip() or Path.home() / "go" / "pkg" / "mod")
    source = modcache / "k8s.io" / "kubernetes@v1.35.4" / "build" / "pause" / "linux" / "pause.c"
    if not source.is_file():
        raise SetupError(f"{source} is missing: build kubelet first (build-control-plane.py node)")
    return source


def _build_pause(archive: Path, log: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="pause-") as tmp:
        context = Path(tmp)
        shutil.copyfile(pause_source(), context / "pause.c")
        source, binary = context / "pause.c", context / "pause"
        _run(
            [
                "gcc",
                "-Os",
                "-static",
                "-DVERSION=v3.10.1-node-tier",
                "-o",
                str(binary),
                str(source),
            ],
            log,
        )
        _run(["strip", str(binary)], log)
        (context / "Containerfile").write_text(
            'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n'
        )
        _buildah(["bud", "--quiet", "--pull-never", "-t", PAUSE_IMAGE, str(context)], log)
    _export(PAUSE_IMAGE, archive, log)


def _build_product(base: str, tag: str, archive: Path, log: Path) -> None:
    # The build downloads the wheel's dependencies from PyPI: the host's pip configuration and
    # trust store are lent to the RUN steps (mounted, never part of the image).
    volumes = []
    for path in ("/etc/pip.conf", "/etc/ssl/certs/ca-certificates.crt"):
        if Path(path).is_file():
            volumes += ["--volume", f"{path}:{path}:ro"]
    _buildah(
        [
            "bud",
            "--quiet",
            "--pull-never",
            "--network=host",
            "--layers=false",
            *volumes,
            "--build-arg",
            f"BASE_IMAGE={base}",
            "-t",
            tag,
            "-f",
            str(REPO / "Dockerfile"),
            str(REPO),
        ],
        log,
    )
    _export(tag, archive, log)


def _build_sample(base: str, version: str, archive: Path, log: Path) -> None:
    image = f"{SAMPLE_IMAGE}:{version}"
    _buildah(
        [
            "bud",
            "--quiet",
            "--pull-never",
            "--layers=false",
            "--build-arg",
            f"BASE_IMAGE={base}",
            "--build-arg",
            f"APP_VERSION={version}",
            "-t",
            image,
            str(SAMPLE_DIR),
        ],
        log,
    )
    _export(image, archive, log)


def image_plan(product_tag: str) -> dict[str, tuple[str, Path]]:
    """{name: (image reference, archive path)} for every image the node loads."""
    base = base_key()
    product_key = tree_key([REPO / name for name in PRODUCT_SOURCES], base)
    sample_key = tree_key([SAMPLE_DIR], base)
    out = images_dir()
    plan = {
        "pause": (PAUSE_IMAGE, out / "pause-3.10.1.oci.tar"),
        "product": (
            f"{PRODUCT_IMAGE}:{product_tag}",
            out / f"rollout-webhook-{product_tag}-{product_key}.oci.tar",
        ),
    }
    for version in SAMPLE_VERSIONS:
        plan[f"sample-{version}"] = (
            f"{SAMPLE_IMAGE}:{version}",
            out / f"sample-{version}-{sample_key}.oci.tar",
        )
    return plan


def stale_archives(archive: Path) -> list[Path]:
    """Earlier builds of the same image (same name and tag, another content key)."""
    stem = archive.name.removesuffix(".oci.tar").rsplit("-", 1)[0]
    return [
        other
        for other in archive.parent.glob(f"{stem}-*.oci.tar")
        if other != archive and other.name.removesuffix(".oci.tar").rsplit("-", 1)[0] == stem
    ]


def build_images(product_tags: list[str]) -> dict[str, str]:
    paths: dict[str, str] = {}
    log = images_dir() / "images.build.log"
    for tag in product_tags:
        plan = image_plan(tag)
        for name, (image, archive) in plan.items():
            key = name if name != "product" else f"product-{tag}"
            paths[key] = str(archive)
            if archive.is_file():
                continue
            with _lock(f"image-{archive.name}"):
                if archive.is_file():
                    continue
                started = time.monotonic()
                print(f"building image {image}...", flush=True)
                images_dir().mkdir(parents=True, exist_ok=True)
                if name == "pause":
                    _build_pause(archive, log)
                elif name == "product":
                    _build_product(_import_base(log), image, archive, log)
                else:
                    _build_sample(_import_base(log), name.removeprefix("sample-"), archive, log)
                print(f"built {archive.name} in {time.monotonic() - started:.0f} s", flush=True)
                for stale in stale_archives(archive):
                    stale.unlink(missing_ok=True)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("step", choices=("deps", "base", "images"))
    parser.add_argument(
        "--product-tag",
        action="append",
        default=[],
        help="tag of the product image (repeatable; default: node)",
    )
    parser.add_argument("--print-paths", action="store_true", help="images: print, build nothing")
    args = parser.parse_args(argv)
    tags = args.product_tag or ["node"]
    if args.print_paths:
        paths = {}
        for tag in tags:
            for name, (_, archive) in image_plan(tag).items():
                paths[name if name != "product" else f"product-{tag}"] = str(archive)
        print(json.dumps(paths))
        return 0
    reason = unsupported_reason()
    if reason:
        if os.environ.get("CI") == "true":
            print(f"error: {reason}", file=sys.stderr)
            return 1
        print(f"note: {reason}; the node tests will skip", file=sys.stderr)
        return 0
    try:
        install_deps()
        if args.step == "base":
            build_base()
        elif args.step == "images":
            print(json.dumps(build_images(tags)))
    except (SetupError, subprocess.CalledProcessError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def unsupported_reason() -> str | None:
    if sys.platform != "linux":
        return "the node tier needs Linux"
    if os.geteuid() != 0:
        return "the node tier needs root (it runs containerd, the kubelet and kube-proxy)"
    if shutil.which("apt-get") is None:
        return "the node tier installs its packages with apt-get, which is missing"
    return None


if __name__ == "__main__":
    sys.exit(main())
