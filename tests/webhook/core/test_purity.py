"""The pure core does no I/O: beyond the import contract (lint-imports), no built-in that reads,
writes or prints is called from it."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[3] / "webhook" / "core"
FORBIDDEN_CALLS = {"open", "print", "input", "exec", "eval", "__import__"}


def test_core_calls_no_io_builtins() -> None:
    offenders = []
    for path in sorted(CORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in FORBIDDEN_CALLS
            ):
                offenders.append(f"{path.name}:{node.lineno} {node.func.id}()")
    assert offenders == []
