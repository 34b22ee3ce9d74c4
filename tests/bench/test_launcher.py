"""The benchmark's server: the product's app, prefilled caches, and the baseline beside it."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import httpx

from bench.fixtures import request_bodies
from bench.launcher import BASELINE_ANSWER, AcceptingWriter, build, config
from certs.files import write_localhost_bundle

HEADERS = {"Content-Type": "application/json"}
EXPECTED = {"convert": "convert", "not-opted-in": "skip", "hpa-update": "convert"}


async def exercise(app: object) -> str:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    bodies = request_bodies()
    async with httpx.AsyncClient(transport=transport, base_url="https://bench") as client:
        assert (await client.get("/readyz")).text == "ready\n"
        for case, decision in EXPECTED.items():
            answer = await client.post("/mutate", content=bodies[case], headers=HEADERS)
            assert answer.status_code == 200, answer.text
            assert answer.json()["response"]["auditAnnotations"]["decision"] == decision, case
        # Not parsed: even a body that is no review gets the fixed answer.
        for path in ("/baseline", "/noop"):
            for body in (bodies["baseline"], b"not json"):
                answer = await client.post(path, content=body, headers=HEADERS)
                assert answer.status_code == 200
                assert answer.content == BASELINE_ANSWER
        return (await client.get("/metrics")).text


def test_cases_get_their_decisions_and_the_baseline_answers_without_parsing(
    tmp_path: Path,
) -> None:
    write_localhost_bundle(dt.datetime.now(dt.UTC), tmp_path)
    server = build(10, tmp_path, 8443)  # not bound: the client calls the app directly
    try:
        metrics = asyncio.run(exercise(config(server).app))
    finally:
        server.close()
    # The baseline is outside the admission path: counted nowhere, audited nowhere.
    assert 'endpoint="baseline"' not in metrics
    assert 'endpoint="noop"' not in metrics
    assert "rollout_webhook_admission_requests_total" in metrics
    # The converting cases went through the permission check, as in a cluster.
    assert isinstance(server.engine.writer, AcceptingWriter)
    assert server.engine.writer.reviews >= 1
