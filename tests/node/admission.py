"""Admission load: a loop that keeps creating labelled Deployments and counts every answer.

Straight to the API server over HTTPS as the admin (no kubectl per request: a process start
would cost more than the admission). A Deployment counts as admitted when the API server
answers 201 and the stored object carries the webhook's conversion annotation; anything else
(an error answer, a timeout, an unconverted object) is a failed admission, kept with its reason.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests import builders

CONVERTED = "rollout-webhook.io/rollout-name"


@dataclass
class AdmissionLoad:
    url: str  # the API server
    context: ssl.SSLContext
    namespace: str
    workers: int = 2
    admitted: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> AdmissionLoad:
        for index in range(self.workers):
            thread = threading.Thread(target=self._loop, name=f"admission-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    @property
    def total(self) -> int:
        with self._lock:
            return self.admitted + len(self.failures)

    def summary(self) -> str:
        with self._lock:
            return f"{self.admitted + len(self.failures)} admissions, {len(self.failures)} failed"

    def _loop(self) -> None:
        while not self._stop.is_set():
            outcome = self._create_one()
            with self._lock:
                if outcome is None:
                    self.admitted += 1
                else:
                    self.failures.append(outcome)

    def _create_one(self) -> str | None:
        name = f"load-{uuid.uuid4().hex[:10]}"
        body = builders.opted_in(name, self.namespace, replicas=0, image="example/app:1")
        path = f"/apis/apps/v1/namespaces/{self.namespace}/deployments"
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=30) as response:
                stored: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:300]
            return f"{name}: HTTP {error.code} after {time.monotonic() - started:.1f} s: {detail}"
        except OSError as error:
            return f"{name}: {error} after {time.monotonic() - started:.1f} s"
        if CONVERTED not in (stored["metadata"].get("annotations") or {}):
            return f"{name}: admitted unconverted"
        return None
