"""How deep text nests its brackets, counted before any parser sees it.

Parsers of JSON and YAML recurse (or, PyYAML's scanner, slow down with the square of the
depth) as they descend, so hostile text is measured first. Counting brackets over-counts
when quoted strings hold unbalanced opening ones (a caller that must be exact confirms on
the parsed document), and a closing bracket never takes the count below 0, so closers
placed before the nesting cannot hide it.
"""

from __future__ import annotations

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENING = frozenset(b"[{")


def exceeds_bracket_depth(data: bytes, limit: int) -> bool:
    """True when the brackets of ``data`` nest deeper than ``limit``."""
    depth = 0
    for bracket in data.translate(None, _NOT_BRACKETS):
        if bracket in _OPENING:
            depth += 1
            if depth > limit:
                return True
        elif depth:
            depth -= 1
    return False
