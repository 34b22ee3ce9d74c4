"""Helpers of the command tests: run `rollout-webhook` in-process, write an input file."""

from __future__ import annotations

from pathlib import Path

import pytest

from webhook.cli import main as cli

REPO = Path(__file__).resolve().parents[3]
COMMANDS = ("webhook.cli.convert", "webhook.cli.policy")


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(args, modules=COMMANDS)
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)
