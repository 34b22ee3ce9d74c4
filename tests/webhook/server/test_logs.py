"""Log lines name the admission request they are about, as text or JSON.

The filter and the formatters on plain records (table-driven), then the server: a line
logged while a /mutate request is handled carries its uid, kind, namespace, name and user.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.builders import ALICE, admission_request
from tests.webhook.server.conftest import FakeCluster, FakeWriter, deployment, serve, service
from webhook.cli.main import build_parser
from webhook.cli.serve import settings_from_args
from webhook.core.audit import DecisionFacts
from webhook.core.cluster import AccessDecision, Permission
from webhook.core.review import AdmissionRequest, UserInfo, parse_review
from webhook.kube.view import MemoryClusterView
from webhook.server.logs import (
    RECORD_ATTRIBUTE,
    AdmissionFields,
    JsonFormatter,
    TextFormatter,
    admission_context,
    decision_of,
    extra_for,
    make_handler,
)

FIVE = {"uid": "u-1", "kind": "Deployment", "namespace": "shop", "name": "web", "user": "alice"}
REQUEST = admission_request(deployment(), uid="u-1")


def parsed(request: Mapping[str, Any]) -> AdmissionRequest:
    return parse_review(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    )


def record(
    message: str = "something happened",
    *,
    fields: Mapping[str, str] | None = None,
    exc_info: Any = None,
) -> logging.LogRecord:
    made = logging.LogRecord("webhook.test", logging.WARNING, __file__, 1, message, (), exc_info)
    made.created = 1893499200.25  # 2030-01-01T12:00:00.250Z
    if fields is not None:
        setattr(made, RECORD_ATTRIBUTE, fields)
    return made


# (case, the record's request fields, what the text line ends with, the JSON object's fields)
FORMATS = [
    ("no request", None, "webhook.test: something happened", {}),
    (
        "a request",
        FIVE,
        "webhook.test: something happened uid=u-1 kind=Deployment namespace=shop name=web "
        "user=alice",
        FIVE,
    ),
    (
        "cluster-scoped: no namespace",
        {**FIVE, "kind": "Namespace", "namespace": ""},
        "happened uid=u-1 kind=Namespace name=web user=alice",
        {"uid": "u-1", "kind": "Namespace", "name": "web", "user": "alice"},
    ),
    (
        "a user a reader could misread is quoted",
        {**FIVE, "user": 'CN=a "b" c'},
        'name=web user="CN=a \\"b\\" c"',
        {**FIVE, "user": 'CN=a "b" c'},
    ),
    (
        "empty fields are left out",
        {"uid": "u-1", "kind": "", "namespace": "", "name": "", "user": ""},
        "happened uid=u-1",
        {"uid": "u-1"},
    ),
]


@pytest.mark.parametrize(("case", "fields", "text_end", "json_fields"), FORMATS)
def test_formats(
    case: str,
    fields: Mapping[str, str] | None,
    text_end: str,
    json_fields: Mapping[str, str],
) -> None:
    text = TextFormatter().format(record(fields=fields))
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING webhook\.test: ", text), text
    assert text.endswith(text_end), text
    entry = json.loads(JsonFormatter().format(record(fields=fields)))
    assert entry == {
        "time": "2030-01-01T12:00:00.250Z",
        "level": "WARNING",
        "logger": "webhook.test",
        "message": "something happened",
        **json_fields,
    }


def raised() -> Any:
    try:
        raise KeyError("boom")
    except KeyError:
        return sys.exc_info()


def test_an_exception_follows_the_fields_in_text_and_is_one_field_in_json() -> None:
    text = TextFormatter().format(record(fields=FIVE, exc_info=raised()))
    first, *rest = text.splitlines()
    assert first.endswith("user=alice")
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "KeyError: 'boom'"
    entry = json.loads(JsonFormatter().format(record(fields=FIVE, exc_info=raised())))
    assert entry["user"] == "alice"
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].endswith("KeyError: 'boom'")
    assert "\n" not in JsonFormatter().format(record(exc_info=raised()))


@contextlib.contextmanager
def captured(level: int = logging.DEBUG) -> Iterator[io.StringIO]:
    """JSON lines of every logger, through the handler `serve` installs."""
    stream = io.StringIO()
    handler = make_handler("json", stream)
    root = logging.getLogger()
    webhook = logging.getLogger("webhook")
    before = webhook.level
    root.addHandler(handler)
    webhook.setLevel(level)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        webhook.setLevel(before)


def entries(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def facts(uid: str) -> DecisionFacts:
    return DecisionFacts(
        uid=uid,
        user="bob",
        operation="CREATE",
        kind="Deployment",
        namespace="shop",
        name="api",
        dry_run=False,
        decision="convert",
        reason="",
    )


WRITES = {"uid": "w-1", "kind": "Deployment", "namespace": "shop", "name": "api", "user": "bob"}

# (case, the request whose context is open (or none), extra=, the fields the line gets)
FILTERED: list[tuple[str, Mapping[str, Any] | None, dict[str, object] | None, dict[str, str]]] = [
    ("in a request's context", REQUEST, None, FIVE),
    ("outside any context", None, None, {}),
    ("given with extra= (another thread)", None, extra_for(facts("w-1")), WRITES),
    ("extra= wins over the context", REQUEST, extra_for(facts("w-1")), WRITES),
    (
        "a request named by generateName",
        admission_request(
            {**deployment(), "metadata": {"generateName": "web-", "namespace": "shop"}},
            uid="u-2",
            user={"username": "carol"},
        ),
        None,
        {"uid": "u-2", "kind": "Deployment", "namespace": "shop", "name": "web-", "user": "carol"},
    ),
]


@pytest.mark.parametrize(("case", "request_", "extra", "expected"), FILTERED)
def test_the_filter_puts_the_request_on_every_record(
    case: str,
    request_: Mapping[str, Any] | None,
    extra: dict[str, object] | None,
    expected: dict[str, str],
) -> None:
    logger = logging.getLogger("webhook.test.filter")
    with captured() as stream:
        context = admission_context(parsed(request_)) if request_ else contextlib.nullcontext()
        with context:
            logger.info("inside", extra=extra)
        logger.info("after")
    inside, after = entries(stream)
    assert {k: inside[k] for k in FIVE if k in inside} == expected
    assert not set(FIVE) & set(after), "the context ends with its block"


def test_a_record_is_left_as_the_filter_found_it_when_it_names_a_request() -> None:
    given = record(fields=WRITES)
    with admission_context(parsed(REQUEST)):
        assert AdmissionFields().filter(given)
    assert getattr(given, RECORD_ATTRIBUTE) == WRITES


@pytest.mark.parametrize(
    ("response", "decision"),
    [
        ({"allowed": True, "auditAnnotations": {"decision": "convert"}}, "convert"),
        ({"allowed": True, "auditAnnotations": {"decision": "refuse"}}, "refuse"),
        ({"allowed": True}, "allow"),
        ({"allowed": False, "status": {"code": 500}}, "deny"),
    ],
)
def test_decision_of(response: dict[str, object], decision: str) -> None:
    assert decision_of(response) == decision


@pytest.mark.parametrize(
    ("args", "environment", "expected"),
    [
        ([], {}, "text"),
        (["--log-format=json"], {}, "json"),
        ([], {"ROLLOUT_WEBHOOK_LOG_FORMAT": "json"}, "json"),
        (["--log-format=text"], {"ROLLOUT_WEBHOOK_LOG_FORMAT": "json"}, "text"),
    ],
)
def test_the_format_comes_from_the_flag_or_the_environment(
    monkeypatch: pytest.MonkeyPatch, args: list[str], environment: dict[str, str], expected: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    parsed_args = build_parser(("webhook.cli.serve",)).parse_args(["serve", *args])
    assert settings_from_args(parsed_args).log_format == expected


def test_an_unknown_format_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser(("webhook.cli.serve",)).parse_args(["serve", "--log-format=yaml"])
    assert "invalid choice: 'yaml'" in capsys.readouterr().err


# -- the server ----------------------------------------------------------------------------


def about(entry: Mapping[str, Any]) -> dict[str, str]:
    return {k: entry[k] for k in FIVE if k in entry}


def test_a_mutate_request_is_named_on_its_decision_line(tmp_path: Path) -> None:
    cluster = FakeCluster(view=MemoryClusterView([service()]))
    with captured() as stream, serve(tmp_path, cluster=cluster) as running:
        running.review(admission_request(deployment(), uid="u-1"))
        running.writes("u-1")
    decided = [e for e in entries(stream) if e["message"].startswith("admission decided")]
    assert decided == [
        {
            "time": decided[0]["time"],
            "level": "DEBUG",
            "logger": "webhook.server.mutate_route",
            "message": "admission decided: convert",
            **FIVE,
        }
    ]


class BrokenAccessReviews(FakeWriter):
    def may(
        self, user: UserInfo, namespace: str, permission: Permission, *, timeout: float
    ) -> AccessDecision:
        raise ConnectionError("the API server went away")


def test_a_warning_from_inside_the_engine_names_the_request(tmp_path: Path) -> None:
    cluster = FakeCluster(view=MemoryClusterView([service()]), writer=BrokenAccessReviews())
    with captured() as stream, serve(tmp_path, cluster=cluster) as running:
        response = running.review(admission_request(deployment(), uid="u-1", user=ALICE))
        assert response["auditAnnotations"]["decision"] == "refuse"
    # One check per right the writes need (the Rollout, its canary Service), each failed.
    warnings = [e for e in entries(stream) if e["level"] == "WARNING"]
    assert len(warnings) == 2
    for warning in warnings:
        assert warning["message"] == "SubjectAccessReview failed: the API server went away"
        assert warning["logger"].startswith("webhook.server.")
        assert about(warning) == FIVE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_logs_json_lines_only(tmp_path: Path) -> None:
    """The process as the chart runs it with logFormat: json: stderr is JSON throughout,
    uvicorn's lines included, and the decision line names the request."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook.cli.main", "serve", f"--port={port}", "--log-level=debug"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "ROLLOUT_WEBHOOK_LOG_FORMAT": "json"},
    )
    lines: list[str] = []
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 20
        found = None
        while found is None:
            assert time.monotonic() < deadline, "serve did not say which CA to trust"
            line = process.stderr.readline()
            assert line, "serve exited early: " + "".join(lines)
            lines.append(line)
            found = re.search(r"clients trust (\S+ca\.crt)", json.loads(line)["message"])
        ca_file = found.group(1)
        with httpx.Client(verify=ssl.create_default_context(cafile=ca_file), timeout=5) as client:
            while True:
                try:
                    if client.get(f"https://localhost:{port}/readyz").text == "ready\n":
                        break
                except httpx.ConnectError:
                    pass
                assert time.monotonic() < deadline, "serve never became ready"
                time.sleep(0.1)
            body = {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": admission_request(deployment(), uid="u-1"),
            }
            assert client.post(f"https://localhost:{port}/mutate", json=body).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=30)
    logged = [json.loads(line) for line in [*lines, *rest.splitlines()]]
    assert {"time", "level", "logger", "message"} <= set(logged[0])
    assert any(e["message"] == "Application shutdown complete." for e in logged)
    [decided] = [e for e in logged if e["message"].startswith("admission decided")]
    assert about(decided) == FIVE
