"""The one error type the command line turns into a message and an exit code."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input the user can fix: printed as one line, never a traceback."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
