"""A small JSON-over-HTTP layer on the official client's connection handling.

The official client brings the kubeconfig / in-cluster configuration, TLS and auth;
the product needs only raw dicts for a handful of paths (lists, watches, server-side
apply, SubjectAccessReviews), so it asks the client for requests by path rather than
going through the generated typed models.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from kubernetes.client import ApiClient


class KubeError(Exception):
    """A failed API call: the HTTP status and the API server's own message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message


def _message(status: int, data: bytes) -> str:
    try:
        body = json.loads(data)
    except ValueError:
        return data[:200].decode("utf-8", "replace") or f"HTTP {status}"
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return f"HTTP {status}"


class KubeHttp:
    def __init__(self, api_client: ApiClient) -> None:
        self.api_client = api_client

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | tuple[float, float] | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
            if isinstance(body, str | bytes) and "json" in content_type:
                # The client serialises bodies of JSON types itself: text given here
                # would be sent as one JSON string ("cannot unmarshal string").
                body = json.loads(body)
        request = self.api_client.param_serialize(
            method,
            path,
            query_params=list(query),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        return self.api_client.call_api(*request, _request_timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """One call, its JSON answer; KubeError for any status but 2xx."""
        try:
            response = self._send(
                method, path, query=query, body=body, content_type=content_type, timeout=timeout
            )
            data = response.read()
        except KubeError:
            raise
        except Exception as err:  # urllib3 errors: unreachable, timed out, TLS
            raise KubeError(0, f"{method} {path}: {type(err).__name__}: {err}") from None
        if not 200 <= response.status <= 299:
            raise KubeError(response.status, _message(response.status, data))
        result = json.loads(data) if data else {}
        return result if isinstance(result, dict) else {}

    def watch(
        self, path: str, *, query: Sequence[tuple[str, str]], timeout: tuple[float, float]
    ) -> Iterator[Mapping[str, Any]]:
        """The events of one watch call, one dict each, until the server ends it."""
        response = self._send("GET", path, query=query, timeout=timeout)
        raw = response.response
        try:
            if not 200 <= response.status <= 299:
                data = response.read()
                raise KubeError(response.status, _message(response.status, data))
            buffer = b""
            for chunk in raw.stream(65536, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        event = json.loads(line)
                        if isinstance(event, dict):
                            yield event
        finally:
            raw.release_conn()
