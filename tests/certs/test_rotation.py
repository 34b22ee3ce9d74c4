"""The in-process rotation loop: leader election, rotation over time, callbacks, resilience."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from certs import pki
from certs.bootstrap import BootstrapSettings, default_webhook_configs
from certs.files import read_bundle_dir
from certs.inject import MUTATING, VALIDATING, encode_ca_bundle
from certs.leader import LeaseRef
from certs.rotation import CertificateRotator, RotationSettings
from certs.store import SecretRef, StoredSecret, StoreError, Target
from tests.certs.conftest import NAMESPACE, SERVICE, T0
from tests.certs.fakes import FakeLeaseAPI, FakeSecretAPI, FakeWebhookConfigAPI

DAY = timedelta(days=1)
SEC = timedelta(seconds=1)
REF = SecretRef(NAMESPACE, "rollout-webhook-tls")
LEASE = LeaseRef(NAMESPACE, "rollout-webhook-certs")
BOOT = BootstrapSettings(REF, Target(SERVICE, NAMESPACE), default_webhook_configs())


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Replica:
    """A rotator plus everything its callbacks reported."""

    def __init__(
        self, name: str, secrets: object, hooks: object, leases: object, clock: Clock, **kw: object
    ) -> None:
        self.bundles: list[pki.Bundle] = []
        self.expiries: list[datetime | None] = []
        settings = RotationSettings(BOOT, lease=LEASE, identity=name, **kw)  # type: ignore[arg-type]
        self.rotator = CertificateRotator(
            settings,
            secrets,  # type: ignore[arg-type]
            hooks,  # type: ignore[arg-type]
            leases,  # type: ignore[arg-type]
            clock=clock,
            on_bundle=self.bundles.append,
            on_expiry=self.expiries.append,
        )


def cluster() -> tuple[FakeSecretAPI, FakeWebhookConfigAPI, FakeLeaseAPI]:
    hooks = FakeWebhookConfigAPI()
    hooks.add(MUTATING, "rollout-webhook", ["mutate.rollout-webhook.io"])
    hooks.add(VALIDATING, "rollout-webhook", ["policy.rollout-webhook.io"])
    return FakeSecretAPI(), hooks, FakeLeaseAPI()


def test_only_the_leader_writes_and_every_replica_gets_the_bundle() -> None:
    secrets, hooks, leases = cluster()
    clock = Clock(T0)
    a, b = Replica("a", secrets, hooks, leases, clock), Replica("b", secrets, hooks, leases, clock)
    a.rotator.run_once()
    b.rotator.run_once()
    assert (a.rotator.is_leader, b.rotator.is_leader) == (True, False)
    assert secrets.writes == [("create", REF)]
    assert a.bundles and b.bundles
    assert a.bundles[-1].cert_pem == b.bundles[-1].cert_pem
    assert b.expiries == [T0 + 90 * DAY]
    assert b.rotator.seconds_to_expiry() == (90 * DAY).total_seconds()

    # Quiet ticks change nothing and call nobody.
    clock.now += 20 * SEC
    a.rotator.run_once()
    b.rotator.run_once()
    assert len(secrets.writes) == 1
    assert (len(a.bundles), len(b.bundles)) == (1, 1)

    # Renewal time: the leader renews, the follower picks the new leaf up.
    clock.now = T0 + 61 * DAY
    a.rotator.run_once()
    b.rotator.run_once()
    assert secrets.writes[-1] == ("replace", REF)
    assert b.bundles[-1].cert_pem != b.bundles[0].cert_pem
    assert b.rotator.leaf_not_after == T0 + 151 * DAY


def test_a_full_ca_rotation_driven_by_the_loop() -> None:
    secrets, hooks, leases = cluster()
    clock = Clock(T0)
    a = Replica("a", secrets, hooks, leases, clock)
    a.rotator.run_once()
    old_ca = a.bundles[-1].ca_pem
    clock.now = T0 + 500 * DAY
    trusts = []
    # Tick every 20 s for a little over the propagation delay plus the grace period.
    for _ in range(int((timedelta(minutes=10) + timedelta(hours=1)) / (20 * SEC)) + 3):
        a.rotator.run_once()
        assert a.rotator.last_error is None
        trusts.append(len(pki.split_pem_certificates(a.rotator.bundle.trust_pem)))  # type: ignore[union-attr]
        clock.now += 20 * SEC
    final = a.bundles[-1]
    assert final.ca_pem != old_ca
    assert trusts[0] == 2 and trusts[-1] == 1
    assert max(trusts) == 2
    stored = {h["clientConfig"]["caBundle"] for o in hooks.objects.values() for h in o["webhooks"]}
    assert stored == {encode_ca_bundle(final.trust_pem)}


def test_leadership_moves_when_the_leader_stops() -> None:
    secrets, hooks, leases = cluster()
    clock = Clock(T0)
    a, b = Replica("a", secrets, hooks, leases, clock), Replica("b", secrets, hooks, leases, clock)
    a.rotator.run_once()
    b.rotator.run_once()
    a.rotator.stop()  # never started: stop only sets the flag
    assert a.rotator.elector is not None
    a.rotator.elector.release(clock.now)
    clock.now += SEC
    b.rotator.run_once()
    assert b.rotator.is_leader


class FlakySecrets(FakeSecretAPI):
    def __init__(self) -> None:
        super().__init__()
        self.down = True

    def get(self, ref: SecretRef) -> StoredSecret | None:
        if self.down:
            raise StoreError(
                "cannot read Secret rollout-system/rollout-webhook-tls: 503 Service Unavailable"
            )
        return super().get(ref)


def test_api_errors_are_kept_and_retried_not_raised() -> None:
    secrets = FlakySecrets()
    _, hooks, leases = cluster()
    a = Replica("a", secrets, hooks, leases, Clock(T0))
    a.rotator.run_once()
    assert a.rotator.last_error is not None
    assert "503 Service Unavailable" in a.rotator.last_error
    secrets.down = False
    a.rotator.run_once()
    assert a.rotator.last_error is None
    assert a.bundles


def test_bundle_is_written_to_the_certificate_directory(tmp_path: Path) -> None:
    secrets, hooks, leases = cluster()
    a = Replica("a", secrets, hooks, leases, Clock(T0), cert_dir=tmp_path / "tls")
    a.rotator.run_once()
    on_disk = read_bundle_dir(tmp_path / "tls")
    assert on_disk.cert_pem == a.bundles[-1].cert_pem
    assert on_disk.ca_pem == a.bundles[-1].ca_pem


def test_thread_starts_ticks_and_stops_promptly_releasing_the_lease() -> None:
    secrets, hooks, leases = cluster()
    settings = RotationSettings(BOOT, lease=LEASE, identity="a", interval=timedelta(seconds=30))
    rotator = CertificateRotator(settings, secrets, hooks, leases)
    thread = rotator.start()
    for _ in range(100):  # the first tick runs at once; wait for it without spinning hard
        if rotator.bundle is not None:
            break
        thread.join(0.05)
    assert rotator.bundle is not None
    rotator.stop(timeout=5)
    assert not thread.is_alive()
    assert leases.items[LEASE].holder == ""
