"""Lease-based leader election against a fake with resourceVersion semantics."""

from __future__ import annotations

import threading
from datetime import timedelta

from certs.leader import LeaseElector, LeaseRef
from tests.certs.conftest import T0
from tests.certs.fakes import FakeLeaseAPI

REF = LeaseRef("rollout-system", "rollout-webhook-certs")
SEC = timedelta(seconds=1)
DURATION = 60 * SEC


def electors(api: FakeLeaseAPI, *names: str) -> list[LeaseElector]:
    return [LeaseElector(api, REF, n, DURATION) for n in names]


def test_first_candidate_takes_a_missing_lease_and_renews_it() -> None:
    api = FakeLeaseAPI()
    a, b = electors(api, "a", "b")
    assert a.try_acquire_or_renew(T0)
    assert not b.try_acquire_or_renew(T0)
    assert a.try_acquire_or_renew(T0 + 20 * SEC)
    lease = api.items[REF]
    assert (lease.holder, lease.renew_time, lease.acquire_time, lease.transitions) == (
        "a",
        T0 + 20 * SEC,
        T0,
        0,
    )


def test_a_renewed_lease_is_never_taken_over() -> None:
    api = FakeLeaseAPI()
    a, b = electors(api, "a", "b")
    for tick in range(0, 600, 20):
        now = T0 + tick * SEC
        assert a.try_acquire_or_renew(now)
        assert not b.try_acquire_or_renew(now + 10 * SEC)


def test_a_lapsed_lease_is_taken_after_one_full_duration_as_observed() -> None:
    api = FakeLeaseAPI()
    a, b = electors(api, "a", "b")
    assert a.try_acquire_or_renew(T0)
    # b first sees the record at T0+5s; the holder then dies.
    assert not b.try_acquire_or_renew(T0 + 5 * SEC)
    assert not b.try_acquire_or_renew(T0 + 64 * SEC)
    assert b.try_acquire_or_renew(T0 + 65 * SEC)
    assert api.items[REF].holder == "b"
    assert api.items[REF].transitions == 1
    # The old holder comes back and finds it has lost.
    assert not a.try_acquire_or_renew(T0 + 66 * SEC)
    assert not a.is_leader


def test_judged_by_observation_not_by_renew_time_so_skewed_clocks_do_not_steal() -> None:
    api = FakeLeaseAPI()
    a, b = electors(api, "a", "b")
    assert a.try_acquire_or_renew(T0)
    # b's clock runs an hour ahead: renewTime looks ancient to it, yet a keeps renewing.
    skew = timedelta(hours=1)
    for tick in range(0, 300, 20):
        assert a.try_acquire_or_renew(T0 + tick * SEC)
        assert not b.try_acquire_or_renew(T0 + skew + tick * SEC)


def test_release_lets_another_take_over_at_once() -> None:
    api = FakeLeaseAPI()
    a, b = electors(api, "a", "b")
    assert a.try_acquire_or_renew(T0)
    assert not b.try_acquire_or_renew(T0)
    a.release(T0 + SEC)
    assert api.items[REF].holder == ""
    assert b.try_acquire_or_renew(T0 + 2 * SEC)


def test_candidates_racing_for_a_missing_lease_elect_exactly_one() -> None:
    api = FakeLeaseAPI()
    candidates = electors(api, *(f"c{i}" for i in range(8)))
    start = threading.Barrier(len(candidates))
    won: list[str] = []

    def run(e: LeaseElector) -> None:
        start.wait(timeout=10)
        if e.try_acquire_or_renew(T0):
            won.append(e.identity)

    threads = [threading.Thread(target=run, args=(e,)) for e in candidates]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(won) == 1
    assert api.items[REF].holder == won[0]
