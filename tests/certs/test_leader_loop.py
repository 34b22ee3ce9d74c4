"""The loop that keeps a Lease, shared by the certificate rotation and the reconciler."""

from __future__ import annotations

from datetime import datetime, timedelta

from certs.leader import LeaderLoop, LeaseElector, LeaseRecord, LeaseRef
from tests.certs.conftest import T0
from tests.certs.fakes import FakeLeaseAPI

REF = LeaseRef("rollout-system", "rollout-webhook-reconciler")
DURATION = timedelta(seconds=60)


class BrokenLeaseAPI(FakeLeaseAPI):
    """The API server is unreachable while ``down`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def get(self, ref: LeaseRef) -> LeaseRecord | None:
        if self.down:
            raise ConnectionError("connection refused")
        return super().get(ref)


def loop_of(
    api: FakeLeaseAPI, identity: str = "a"
) -> tuple[LeaderLoop, list[tuple[bool, datetime]], list[Exception]]:
    worked: list[tuple[bool, datetime]] = []
    errors: list[Exception] = []
    loop = LeaderLoop(
        LeaseElector(api, REF, identity, DURATION),
        name="reconciler",
        work=lambda leader, now: worked.append((leader, now)),
        on_error=errors.append,
        clock=lambda: T0,
    )
    return loop, worked, errors


def test_each_tick_elects_then_works_with_the_outcome() -> None:
    api = FakeLeaseAPI()
    (a, a_worked, _), (b, b_worked, _) = loop_of(api, "a"), loop_of(api, "b")
    a.tick()
    b.tick()
    assert (a.is_leader(), b.is_leader()) == (True, False)
    assert (a_worked, b_worked) == ([(True, T0)], [(False, T0)])


def test_without_an_elector_the_process_always_leads() -> None:
    worked: list[bool] = []
    loop = LeaderLoop(None, name="rotation", work=lambda leader, now: worked.append(leader))
    loop.tick()
    assert loop.is_leader() and worked == [True]
    assert loop.interval == DURATION / 3


def test_a_failed_election_is_not_leader_and_skips_the_work() -> None:
    api = BrokenLeaseAPI()
    loop, worked, errors = loop_of(api)
    loop.tick()
    assert loop.is_leader()
    api.down = True
    loop.tick()
    assert not loop.is_leader()
    assert len(worked) == 1
    assert [str(e) for e in errors] == ["connection refused"]
    api.down = False
    loop.tick()
    assert loop.is_leader()


def test_a_failing_work_is_reported_and_the_loop_goes_on() -> None:
    errors: list[Exception] = []

    def work(leader: bool, now: datetime) -> None:
        raise RuntimeError("disk full")

    loop = LeaderLoop(None, name="rotation", work=work, on_error=errors.append)
    loop.tick()
    loop.tick()
    assert [str(e) for e in errors] == ["disk full", "disk full"]


def test_stop_ends_the_thread_and_releases_the_lease() -> None:
    api = FakeLeaseAPI()
    loop = LeaderLoop(LeaseElector(api, REF, "a", DURATION), name="reconciler")
    thread = loop.start()
    for _ in range(100):  # the first tick runs at once; wait for it without spinning hard
        if loop.is_leader():
            break
        thread.join(0.05)
    assert loop.is_leader()
    loop.stop(timeout=5)
    assert not thread.is_alive()
    assert api.items[REF].holder == ""


def test_a_replica_that_does_not_lead_looks_again_within_the_retry_period() -> None:
    """The leader renews every third of the duration; the others look every 2 s, so a Lease
    given up at shutdown goes to a replica already running rather than to the pod that
    replaces the leaving one."""
    api = FakeLeaseAPI()
    (a, _, _), (b, _, _) = loop_of(api, "a"), loop_of(api, "b")
    waits: list[tuple[str, float]] = []
    for name, loop in (("a", a), ("b", b)):

        def wait(seconds: float, name: str = name, loop: LeaderLoop = loop) -> bool:
            waits.append((name, seconds))
            loop._stop.set()
            return True

        loop._stop.wait = wait  # type: ignore[method-assign,assignment]
    a.tick()
    b.run()  # a holds the Lease: b waits the retry period
    a.run()  # a renews, waits the renew interval, then stops and gives the Lease up
    assert waits == [("b", 2.0), ("a", 20.0)]
    assert api.items[REF].holder == ""
