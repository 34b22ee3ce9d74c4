"""Problems found in input, reported with the path of the offending value."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One problem at one place: ``environments.prod.rollout.canary.steps[2].setWeight``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class PolicyInvalid(ValueError):
    """A policy document that does not validate; carries every error, not just the first."""

    def __init__(self, errors: tuple[FieldError, ...], source: str = "policy") -> None:
        self.errors = errors
        self.source = source
        lines = "\n".join(f"  {e}" for e in errors)
        super().__init__(f"{source} is invalid ({len(errors)} error(s)):\n{lines}")


@dataclass(frozen=True)
class Finding:
    """A pre-flight result. Errors stop a conversion; warnings go back to the user."""

    level: str  # "error" | "warning"
    code: str
    message: str

    @property
    def is_error(self) -> bool:
        return self.level == "error"

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"


def error(code: str, message: str) -> Finding:
    return Finding("error", code, message)


def warning(code: str, message: str) -> Finding:
    return Finding("warning", code, message)
