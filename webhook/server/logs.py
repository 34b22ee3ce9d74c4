"""Log lines that say which admission request they are about, as text or as JSON.

While a request is handled, its uid, kind, namespace, name and user sit in a context
variable (``admission_context``); ``AdmissionFields``, a filter on the handler, copies them
onto every record logged meanwhile, so no log call has to pass them and a line logged deep
in the engine still names its request. Threads do not inherit the context: code that logs
for a request on a thread of its own passes the fields itself,
``log.warning(..., extra=extra_for(facts))``, and the filter keeps what it was given.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import IO, Literal, Protocol, get_args

from webhook.core.review import AdmissionRequest, request_kind, request_name, request_username

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)

FIELDS = ("uid", "kind", "namespace", "name", "user")
"""The request's fields, in the order a line shows them."""

# One record attribute holding the five fields, not five attributes: ``name`` is already the
# logger's name on a LogRecord, and logging refuses an ``extra`` that would overwrite it.
RECORD_ATTRIBUTE = "admission"

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_current: ContextVar[Mapping[str, str] | None] = ContextVar("admission_request", default=None)


class AboutARequest(Protocol):
    """Anything that names an admission request the way the audit record does."""

    @property
    def uid(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def user(self) -> str: ...


def request_fields(request: AdmissionRequest) -> dict[str, str]:
    return {
        "uid": request["uid"],
        "kind": request_kind(request),
        "namespace": request.get("namespace", ""),
        "name": request_name(request),
        "user": request_username(request),
    }


@contextlib.contextmanager
def admission_context(request: AdmissionRequest) -> Iterator[None]:
    """Every line logged in this block (and in tasks started from it) names the request."""
    token = _current.set(request_fields(request))
    try:
        yield
    finally:
        _current.reset(token)


def extra_for(about: AboutARequest) -> dict[str, object]:
    """The ``extra=`` of a log call made for a request outside its context."""
    return {RECORD_ATTRIBUTE: {field: str(getattr(about, field)) for field in FIELDS}}


def decision_of(response: Mapping[str, object]) -> str:
    """What an admission response decided, as its audit annotation names it."""
    annotations = response.get("auditAnnotations")
    if isinstance(annotations, Mapping) and annotations.get("decision"):
        return str(annotations["decision"])
    return "allow" if response.get("allowed") else "deny"


class AdmissionFields(logging.Filter):
    """Puts the current request's fields on each record that was not given its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, RECORD_ATTRIBUTE, None) is None:
            setattr(record, RECORD_ATTRIBUTE, _current.get())
        return True


def fields_of(record: logging.LogRecord) -> list[tuple[str, str]]:
    """The record's request fields that have a value, in the order of ``FIELDS``."""
    given = getattr(record, RECORD_ATTRIBUTE, None)
    if not isinstance(given, Mapping):
        return []
    return [(field, str(given[field])) for field in FIELDS if given.get(field)]


def _logfmt_value(value: str) -> str:
    # Quoted only when a reader splitting on spaces and '=' would misread it.
    if value and not any(c.isspace() or c in '"=\\' for c in value):
        return value
    return json.dumps(value)


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message> uid=... kind=... namespace=... name=... user=...``"""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802  (logging's name)
        # Here rather than in format(): the fields stay on the message's line, before any
        # traceback.
        line = super().formatMessage(record)
        pairs = " ".join(f"{key}={_logfmt_value(value)}" for key, value in fields_of(record))
        return f"{line} {pairs}" if pairs else line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the request's fields, and the
    exception's traceback as one string."""

    def format(self, record: logging.LogRecord) -> str:
        at = dt.datetime.fromtimestamp(record.created, dt.UTC)
        entry: dict[str, str] = {
            "time": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(fields_of(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry)


def make_handler(log_format: LogFormat, stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing to ``stream`` (standard error by default) in ``log_format``."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    # On the handler, not a logger: a logger's filters see only its own calls, a
    # handler's see every record that reaches it, uvicorn's included.
    handler.addFilter(AdmissionFields())
    return handler


def configure_logging(level: str, log_format: LogFormat, stream: IO[str] | None = None) -> None:
    """The process's logging: every logger, at ``level``, through one handler.

    Like ``logging.basicConfig``, a no-op when the root logger already has a handler (a
    test runner's, say).
    """
    logging.basicConfig(level=level.upper(), handlers=[make_handler(log_format, stream)])
    # Python's warnings too: in JSON, standard error holds nothing but JSON lines.
    logging.captureWarnings(True)
