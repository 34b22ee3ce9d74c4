"""The webhook hook, end to end: the API server really calls a loopback HTTPS webhook.

A tiny mutating webhook served by the test (not the product) proves that register_webhook's
clientConfig.url + caBundle reach the API server and that its patch lands in storage; scenario
tests put `rollout-webhook serve` where this stand-in is.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client

from tests.e2e import harness

pytestmark = pytest.mark.e2e

PROBE_ANNOTATION = "e2e.rollout-webhook.io/probed"


class _Handler(BaseHTTPRequestHandler):
    server: _ProbeServer

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.reviews.append(review)
        patch = [{"op": "add", "path": "/metadata/annotations", "value": {PROBE_ANNOTATION: "yes"}}]
        body = json.dumps(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {
                    "uid": review["request"]["uid"],
                    "allowed": True,
                    "patchType": "JSONPatch",
                    "patch": base64.b64encode(json.dumps(patch).encode()).decode(),
                },
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        del format, args  # keep the test output quiet


class _ProbeServer(ThreadingHTTPServer):
    reviews: list[dict[str, Any]]


@pytest.fixture
def probe_webhook(control_plane: harness.ControlPlane) -> Iterator[_ProbeServer]:
    # The API server's own serving pair: valid for 127.0.0.1 and signed by the session CA.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(control_plane.files["serving.crt"], control_plane.files["serving.key"])
    server = _ProbeServer(("127.0.0.1", 0), _Handler)
    server.reviews = []
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_registered_webhook_is_called_and_its_patch_is_stored(
    control_plane: harness.ControlPlane,
    kube: client.ApiClient,
    namespace: str,
    probe_webhook: _ProbeServer,
    register_webhook: Any,
) -> None:
    port = probe_webhook.server_address[1]
    register_webhook(
        f"https://127.0.0.1:{port}/mutate",
        control_plane.ca_pem,
        {
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": f"e2e-probe-{namespace}"},
            "webhooks": [
                {
                    "name": "probe.e2e.rollout-webhook.io",
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "failurePolicy": "Fail",
                    "timeoutSeconds": 5,
                    "rules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["configmaps"],
                        }
                    ],
                    # Only this test's namespace, so no other test is ever sent here.
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": namespace}
                    },
                }
            ],
        },
    )
    core = client.CoreV1Api(kube)
    # The API server starts calling a new registration within about a second.
    deadline = time.monotonic() + 15
    attempt = 0
    while True:
        attempt += 1
        name = f"probe-{attempt}"
        core.create_namespaced_config_map(
            namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name))
        )
        stored = core.read_namespaced_config_map(name, namespace)
        assert stored.metadata is not None
        if (stored.metadata.annotations or {}).get(PROBE_ANNOTATION) == "yes":
            break
        assert time.monotonic() < deadline, "the registered webhook was never called"
        time.sleep(0.5)

    request = probe_webhook.reviews[-1]["request"]
    assert request["kind"] == {"group": "", "version": "v1", "kind": "ConfigMap"}
    assert request["namespace"] == namespace
    assert request["object"]["metadata"]["name"] == name
    assert request["userInfo"]["username"] == "e2e-admin"
