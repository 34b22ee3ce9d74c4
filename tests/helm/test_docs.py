"""The install-story pages say only what exists: links resolve, commands and flags are real,
documented chart values are in values.yaml, and the numbers quoted match the chart."""

from __future__ import annotations

import argparse
import re
import shlex
from typing import Any

import pytest
import yaml

from tests.helm.conftest import CHART, REPO
from webhook.cli.main import build_parser

DOCS = REPO / "docs"
PAGES = [
    "index.md",
    "install.md",
    "migration.md",
    "troubleshooting.md",
    "gitops.md",
    "architecture.md",
    "security.md",
]
MODULES = (
    "webhook.cli.convert",
    "webhook.cli.policy",
    "webhook.cli.certs",
    "webhook.cli.serve",
    "webhook.cli.audit",
    "webhook.cli.status",
)


def anchors(text: str) -> set[str]:
    found = set()
    for line in text.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


@pytest.mark.parametrize("page", PAGES)
def test_links_and_anchors_resolve(page: str) -> None:
    text = (DOCS / page).read_text()
    for link in re.findall(r"\]\(([^)\s]+)\)", text):
        if link.startswith(("http://", "https://")):
            continue
        target, _, anchor = link.partition("#")
        path = DOCS / target if target else DOCS / page
        assert path.exists(), f"{page}: link to missing {link}"
        if anchor:
            assert anchor in anchors(path.read_text()), f"{page}: no section #{anchor} in {target}"


def subparsers_of(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            choices: dict[str, argparse.ArgumentParser] = action.choices
            return choices
    return {}


def options_of(parser: argparse.ArgumentParser) -> set[str]:
    return {o for action in parser._actions for o in action.option_strings}


def command_lines(text: str) -> list[str]:
    """`rollout-webhook ...` invocations in the page's code blocks, continuations joined."""
    blocks: list[list[str]] = []
    inside = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
            if inside:
                blocks.append([])
        elif inside:
            blocks[-1].append(line)
    lines = []
    for block in blocks:
        for line in "\n".join(block).replace("\\\n", " ").splitlines():
            for part in re.split(r"[|;]|&&", line.split("#")[0]):
                if part.strip().startswith("rollout-webhook "):
                    lines.append(part.strip())
    return lines


@pytest.mark.parametrize("page", PAGES)
def test_documented_commands_and_flags_exist(page: str) -> None:
    parser = build_parser(MODULES)
    for line in command_lines((DOCS / page).read_text()):
        words = shlex.split(re.sub(r"[<>]", "", line))[1:]
        current: Any = parser
        for word in words:
            nested = subparsers_of(current)
            if word in nested:
                current = nested[word]
            elif word.startswith("--"):
                flag = word.split("=")[0]
                assert flag in options_of(current), f"{page}: `{line}`: no flag {flag}"
        assert current is not parser, f"{page}: `{line}` names no command"


def dotted_keys(values: Any, prefix: str = "") -> set[str]:
    keys = set()
    if isinstance(values, dict):
        for key, value in values.items():
            name = f"{prefix}.{key}" if prefix else key
            keys.add(name)
            keys |= dotted_keys(value, name)
    return keys


def test_values_named_in_install_md_exist() -> None:
    known = dotted_keys(yaml.safe_load((CHART / "values.yaml").read_text()))
    text = (DOCS / "install.md").read_text()
    named = set(re.findall(r"`((?:[a-z][A-Za-z]+\.)+[a-z][A-Za-z]+)`", text))
    named = {n for n in named if n.split(".")[0] in {k.split(".")[0] for k in known}}
    assert named, "install.md names no chart value"
    assert named <= known, f"not in values.yaml: {sorted(named - known)}"
    table = re.findall(r"^\| `([A-Za-z.]+)`", text, flags=re.M)
    assert set(table) <= known


def test_numbers_quoted_match_the_chart() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    install = (DOCS / "install.md").read_text()
    assert f"| `replicaCount` | `{values['replicaCount']}` |" in install
    assert f"| `webhook.timeoutSeconds` | `{values['webhook']['timeoutSeconds']}` |" in install
    assert f"| `webhook.failurePolicy` | `{values['webhook']['failurePolicy']}` |" in install
    dockerfile = (REPO / "Dockerfile").read_text()
    # The base image is a build argument; its default is what a plain build uses.
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", dockerfile, flags=re.M)
    assert base is not None
    assert base.group(1) in install
