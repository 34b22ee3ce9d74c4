"""Counting the API server's requests from its metrics, for the resync measurement."""

from __future__ import annotations

from typing import Any

from bench.resync import Counted, difference, request_totals

EXPOSITION = """\
# HELP apiserver_request_total [STABLE] Counter of apiserver requests ...
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="apps",resource="deployments",scope="cluster",subresource="",verb="LIST",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="apps",resource="deployments",scope="resource",subresource="",verb="PATCH",version="v1"} 990
apiserver_request_total{code="409",component="apiserver",dry_run="",group="apps",resource="deployments",scope="resource",subresource="",verb="PATCH",version="v1"} 10
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="",scope="",subresource="/metrics",verb="GET",version=""} 5
apiserver_request_total{code="201",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="POST",version="v1"} 1
apiserver_request_total{code="200",component="apiserver",dry_run="",group="apps",resource="deployments",scope="resource",subresource="status",verb="GET",version="v1"} 3
apiserver_request_duration_seconds_bucket{verb="PATCH",le="0.1"} 1000
"""


def test_requests_are_summed_by_verb_and_resource_over_codes() -> None:
    totals = request_totals(EXPOSITION)
    assert totals == {
        "LIST deployments": 2,
        "PATCH deployments": 1000,  # both answers count: a request made is a request made
        "POST leases": 1,
        "GET deployments/status": 3,
    }


def test_difference_keeps_only_what_grew() -> None:
    before = {"PATCH deployments": 10.0, "LIST deployments": 2.0}
    after = {"PATCH deployments": 1010.0, "LIST deployments": 2.0, "POST rollouts": 1000.0}
    assert difference(after, before) == {"PATCH deployments": 1000, "POST rollouts": 1000}


class FakeHttp:
    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return {"method": method, "path": path}

    def watch(self, path: str, **kwargs: Any) -> list[str]:
        return [path]


def test_counted_adapter_counts_by_method_and_still_answers() -> None:
    http = FakeHttp()
    counted = Counted()
    counted.wrap(http)
    assert http.request("PATCH", "/a", timeout=1) == {"method": "PATCH", "path": "/a"}
    http.request("PATCH", "/b")
    http.request("GET", "/c")
    assert http.watch("/w", query=[]) == ["/w"]
    assert counted.calls == {"PATCH": 2, "GET": 1, "WATCH": 1}
