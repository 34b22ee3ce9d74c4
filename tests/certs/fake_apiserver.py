"""A few Kubernetes REST endpoints over plain HTTP, to test the adapters on the wire.

Only what the certs package calls: Secrets, Leases (get/create/replace with
resourceVersion preconditions) and webhook configurations (get, JSON Patch). Answers
use the API server's Status objects for 404/409/403 so the client raises the same
ApiException it would against a real server. Not a substitute for the end-to-end tier.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jsonpatch

ROUTES = [
    (re.compile(r"^/api/v1/namespaces/([^/]+)/secrets(?:/([^/?]+))?"), "secrets"),
    (
        re.compile(r"^/apis/coordination.k8s.io/v1/namespaces/([^/]+)/leases(?:/([^/?]+))?"),
        "leases",
    ),
    (
        re.compile(
            r"^/apis/admissionregistration.k8s.io/v1/()(mutatingwebhookconfigurations|validatingwebhookconfigurations)/([^/?]+)"
        ),
        "webhooks",
    ),
]


class FakeAPIServer:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.version = 100
        self.requests: list[tuple[str, str, str | None, Any]] = []
        self.forbidden: set[str] = set()  # resource kinds answering 403

    def put(self, resource: str, namespace: str, name: str, obj: dict[str, Any]) -> None:
        with self.lock:
            self.version += 1
            obj = copy.deepcopy(obj)
            obj.setdefault("metadata", {})["resourceVersion"] = str(self.version)
            self.objects[(resource, namespace, name)] = obj

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A copy of the stored object (tests may edit it freely)."""
        with self.lock:
            return copy.deepcopy(self.objects.get((resource, namespace, name)))

    def handle(
        self, method: str, path: str, ctype: str | None, body: Any
    ) -> tuple[int, dict[str, Any]]:
        self.requests.append((method, path, ctype, body))
        for pattern, resource in ROUTES:
            m = pattern.match(path)
            if not m:
                continue
            if resource == "webhooks":
                key = (m.group(2), "", m.group(3))
            else:
                key = (
                    resource,
                    m.group(1),
                    m.group(2) or (body or {}).get("metadata", {}).get("name", ""),
                )
            if resource in self.forbidden:
                return status(403, "Forbidden", f'{resource} "{key[2]}" is forbidden: no RBAC rule')
            with self.lock:
                return self._serve(method, key, ctype, body)
        return status(404, "NotFound", f"no route {path}")

    def _serve(
        self, method: str, key: tuple[str, str, str], ctype: str | None, body: Any
    ) -> tuple[int, dict[str, Any]]:
        current = self.objects.get(key)
        if method == "GET":
            return (200, current) if current else status(404, "NotFound", f'"{key[2]}" not found')
        if method == "POST":
            if current:
                return status(409, "AlreadyExists", f'"{key[2]}" already exists')
            return self._store(key, body, 201)
        if method == "PUT":
            if not current:
                return status(404, "NotFound", f'"{key[2]}" not found')
            sent = body.get("metadata", {}).get("resourceVersion")
            if sent and sent != current["metadata"]["resourceVersion"]:
                return status(
                    409,
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest version and try again",
                )
            return self._store(key, body, 200)
        if method == "PATCH":
            if not current:
                return status(404, "NotFound", f'"{key[2]}" not found')
            if ctype != "application/json-patch+json":
                return status(415, "UnsupportedMediaType", f"unexpected {ctype}")
            try:
                patched = jsonpatch.apply_patch(copy.deepcopy(current), body)
            except jsonpatch.JsonPatchException as err:
                return status(422, "Invalid", str(err))
            return self._store(key, patched, 200)
        return status(405, "MethodNotAllowed", method)

    def _store(
        self, key: tuple[str, str, str], obj: dict[str, Any], code: int
    ) -> tuple[int, dict[str, Any]]:
        self.version += 1
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.version)
        self.objects[key] = obj
        return code, obj


def status(code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
    return code, {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }


@contextlib.contextmanager
def serve(api: FakeAPIServer) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            path = self.path.split("?", 1)[0]
            code, obj = api.handle(self.command, path, self.headers.get("Content-Type"), body)
            out = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = do_PUT = do_PATCH = _any  # noqa: N815 (http.server names)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
