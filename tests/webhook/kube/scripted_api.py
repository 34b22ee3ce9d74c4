"""A scripted Kubernetes API for the adapters: list and watch answers given in order.

The same adapters run against a real kube-apiserver in tests/e2e/test_serve_cluster.py;
here each branch of the protocol (pagination, bookmarks, 410 Gone, a CRD that is not
installed) is driven on purpose.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from webhook.kube.cache import Reflector
from webhook.kube.http import KubeError


def dep(name: str, rv: str, namespace: str = "shop") -> dict[str, Any]:
    """A Deployment as a list or watch answer carries it: no kind (the reflector adds it),
    with the resourceVersion and managedFields the reflector reads and drops."""
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": rv,
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {"replicas": 1},
    }


class ScriptedApi:
    """Answers list calls from ``lists`` and watch calls from ``watches``, in order."""

    def __init__(
        self,
        lists: list[dict[str, Any] | KubeError],
        watches: list[list[dict[str, Any]] | KubeError],
    ) -> None:
        self.lists = lists
        self.watches = watches
        self.calls: list[tuple[str, str, list[tuple[str, str]]]] = []
        self.exhausted = threading.Event()

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
        self.calls.append((method, path, list(query)))
        if not self.lists:
            self.exhausted.set()
            raise KubeError(0, "script exhausted")
        answer = self.lists.pop(0)
        if isinstance(answer, KubeError):
            raise answer
        return answer

    def watch(
        self, path: str, *, query: Sequence[tuple[str, str]], timeout: tuple[float, float]
    ) -> Iterator[Mapping[str, Any]]:
        self.calls.append(("WATCH", path, list(query)))
        if not self.watches:
            self.exhausted.set()
            raise KubeError(0, "script exhausted")
        events = self.watches.pop(0)
        if isinstance(events, KubeError):
            raise events
        yield from events


def run_reflector(api: ScriptedApi, reflector: Reflector) -> None:
    reflector.start()
    assert api.exhausted.wait(5), "the reflector stopped following the script"
    reflector.stop()
