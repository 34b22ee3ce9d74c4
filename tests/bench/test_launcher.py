"""The benchmark's server: the product's app, prefilled caches, and the baseline beside it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from fastapi.testclient import TestClient

from bench.fixtures import request_bodies
from bench.launcher import BASELINE_ANSWER, build
from certs.files import write_localhost_bundle

HEADERS = {"Content-Type": "application/json"}


def test_cases_get_their_decisions_and_the_baseline_answers_without_parsing(
    tmp_path: Path,
) -> None:
    write_localhost_bundle(dt.datetime.now(dt.UTC), tmp_path)
    server = build(10, tmp_path, 8443)  # not bound: the client calls the app directly
    bodies = request_bodies()
    try:
        with TestClient(server.app) as client:
            assert client.get("/readyz").text == "ready\n"
            expected = {"convert": "convert", "not-opted-in": "skip", "hpa-update": "convert"}
            for case, decision in expected.items():
                answer = client.post("/mutate", content=bodies[case], headers=HEADERS)
                assert answer.status_code == 200, answer.text
                response = answer.json()["response"]
                assert response["auditAnnotations"]["decision"] == decision, case
            # Not parsed: even a body that is no review gets the fixed answer.
            for body in (bodies["baseline"], b"not json"):
                answer = client.post("/baseline", content=body, headers=HEADERS)
                assert answer.status_code == 200
                assert answer.content == BASELINE_ANSWER
            # The baseline is outside the admission path: nothing counted, nothing audited.
            metrics = client.get("/metrics").text
            assert 'endpoint="baseline"' not in metrics
    finally:
        server.close()
    writer = server.engine.writer
    assert writer is not None
    # The converting cases were allowed and their writes accepted (Rollout + canary Service,
    # and the HPA's Rollout), so the write path ran as in a cluster.
    assert getattr(writer, "reviews", 0) >= 1
