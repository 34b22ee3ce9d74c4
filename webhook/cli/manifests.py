"""Reading Kubernetes manifests from files, directories and standard input.

The shell side of `convert` and `policy validate`: it does the I/O and turns every
problem into a ManifestError naming the file (and document) at fault.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(Exception):
    """Input that cannot be read as Kubernetes objects; the message names file and problem."""


@dataclass(frozen=True)
class Manifest:
    obj: dict[str, Any]
    source: str  # "file.yaml#2": the file and the document's position in it (1-based)


def _files(path: Path) -> Iterator[Path]:
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
        if not found:
            raise ManifestError(f"{path}: directory holds no .yaml, .yml or .json file")
        yield from found
    elif path.exists():
        yield path
    else:
        raise ManifestError(f"{path}: no such file or directory")


def read_text(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    path = Path(name)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ManifestError(f"{name}: is a directory, expected a file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"{name}: cannot be read: {err}") from None


def parse_documents(text: str, source: str) -> list[Any]:
    """Every YAML document of a text, empty ones dropped; a syntax error names the line."""
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "syntax error"
        raise ManifestError(f"{source}:{where}: not valid YAML: {problem}") from None


def _objects(doc: Any, source: str) -> Iterator[dict[str, Any]]:
    if not isinstance(doc, Mapping):
        raise ManifestError(
            f"{source}: expected a Kubernetes object (a mapping), got {type(doc).__name__}"
        )
    if doc.get("kind") == "List" or (str(doc.get("kind", "")).endswith("List") and "items" in doc):
        items = doc.get("items")
        if not isinstance(items, list):
            raise ManifestError(f"{source}: a List needs an items list")
        for i, item in enumerate(items):
            yield from _objects(item, f"{source} items[{i}]")
        return
    for field in ("apiVersion", "kind"):
        if not isinstance(doc.get(field), str) or not doc.get(field):
            raise ManifestError(f"{source}: missing {field}")
    metadata = doc.get("metadata")
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str):
        raise ManifestError(f"{source}: {doc['kind']} has no metadata.name")
    yield dict(doc)


def load_manifests(names: Sequence[str]) -> list[Manifest]:
    """Every object in the named files, directories (recursively) or `-` (stdin)."""
    out: list[Manifest] = []
    for name in names:
        paths = [name] if name == "-" else [str(p) for p in _files(Path(name))]
        for path in paths:
            label = "<stdin>" if path == "-" else path
            for index, doc in enumerate(parse_documents(read_text(path), label), start=1):
                out.extend(
                    Manifest(obj, f"{label}#{index}") for obj in _objects(doc, f"{label}#{index}")
                )
    return out


def load_single_document(name: str) -> Any:
    """The one YAML document of a file (a policy, or a ConfigMap holding one)."""
    label = "<stdin>" if name == "-" else name
    docs = parse_documents(read_text(name), label)
    if len(docs) != 1:
        raise ManifestError(f"{label}: expected one YAML document, found {len(docs)}")
    return docs[0]
