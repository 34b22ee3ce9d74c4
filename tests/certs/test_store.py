"""The Secret store and the converge pass, against in-memory fakes with 409 semantics."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from certs import pki
from certs.bootstrap import BootstrapReport, BootstrapSettings, converge, default_webhook_configs
from certs.inject import MUTATING, VALIDATING, encode_ca_bundle
from certs.store import (
    ROTATION_STEP_ANNOTATION,
    SecretRef,
    StoredSecret,
    Target,
    apply_step,
    bundle_from_secret,
    bundle_to_secret,
)
from tests.certs.conftest import NAMESPACE, SERVICE, T0
from tests.certs.fakes import FakeSecretAPI, FakeWebhookConfigAPI

REF = SecretRef(NAMESPACE, "rollout-webhook-tls")
TARGET = Target(SERVICE, NAMESPACE)
SETTINGS = BootstrapSettings(REF, TARGET, default_webhook_configs())
DAY = timedelta(days=1)


def webhook_api() -> FakeWebhookConfigAPI:
    api = FakeWebhookConfigAPI()
    api.add(MUTATING, "rollout-webhook", ["mutate.rollout-webhook.io", "routes.rollout-webhook.io"])
    api.add(VALIDATING, "rollout-webhook", ["policy.rollout-webhook.io"])
    return api


def ca_bundles(api: FakeWebhookConfigAPI) -> set[str]:
    return {
        h["clientConfig"].get("caBundle", "") for o in api.objects.values() for h in o["webhooks"]
    }


def stored_bundle(api: FakeSecretAPI) -> pki.Bundle:
    stored = api.get(REF)
    assert stored is not None
    return bundle_from_secret(stored)


def test_secret_roundtrip_keeps_every_part_of_a_rotation(bundle: pki.Bundle) -> None:
    staged = pki.apply_action(bundle, pki.Action.STAGE_CA, SERVICE, NAMESPACE, T0)
    secret = bundle_to_secret(REF, staged)
    assert set(secret.data) == {
        "tls.crt",
        "tls.key",
        "ca.crt",
        "ca.key",
        "ca-next.crt",
        "ca-next.key",
    }
    assert secret.annotations == {ROTATION_STEP_ANNOTATION: T0.isoformat()}
    back = bundle_from_secret(secret)
    assert back.trust_pem == staged.trust_pem
    assert back.next_ca_pem == staged.next_ca_pem
    assert back.previous_ca_pems == ()
    assert back.rotation_step_at == T0
    promoted = pki.apply_action(staged, pki.Action.PROMOTE_CA, SERVICE, NAMESPACE, T0 + DAY)
    back = bundle_from_secret(bundle_to_secret(REF, promoted))
    assert back == promoted


def test_first_bootstrap_creates_the_secret_and_injects_every_webhook() -> None:
    secrets, hooks = FakeSecretAPI(), webhook_api()
    report = converge(secrets, hooks, SETTINGS, T0)
    assert [s.written for s in report.steps] == [pki.Action.REISSUE, pki.Action.NONE]
    assert report.steps[0].created
    b = stored_bundle(secrets)
    assert pki.check_bundle(b, SERVICE, NAMESPACE, T0).action is pki.Action.NONE
    assert ca_bundles(hooks) == {encode_ca_bundle(b.trust_pem)}
    assert secrets.writes == [("create", REF)]


def test_bootstrap_is_idempotent() -> None:
    secrets, hooks = FakeSecretAPI(), webhook_api()
    converge(secrets, hooks, SETTINGS, T0)
    before = secrets.get(REF)
    report = converge(secrets, hooks, SETTINGS, T0 + DAY)
    assert not report.changed
    assert secrets.get(REF) == before
    assert len(hooks.patches) == 2  # one per configuration, from the first run only


def test_renewal_keeps_the_ca_and_caBundle() -> None:
    secrets, hooks = FakeSecretAPI(), webhook_api()
    converge(secrets, hooks, SETTINGS, T0)
    first = stored_bundle(secrets)
    report = converge(secrets, hooks, SETTINGS, T0 + 61 * DAY)
    assert report.steps[0].written is pki.Action.RENEW_LEAF
    second = stored_bundle(secrets)
    assert second.cert_pem != first.cert_pem
    assert second.trust_pem == first.trust_pem
    assert len(hooks.patches) == 2  # trust unchanged: no patch


def test_a_secret_edited_by_hand_is_repaired(bundle: pki.Bundle, other_bundle: pki.Bundle) -> None:
    secrets = FakeSecretAPI()
    secrets.put(bundle_to_secret(REF, bundle))
    broken = bundle_to_secret(REF, bundle)
    data = dict(broken.data, **{"tls.key": other_bundle.key_pem})
    secrets.put(StoredSecret(REF, data))
    step = apply_step(secrets, REF, TARGET, T0)
    assert step.written is pki.Action.RENEW_LEAF
    assert step.decision.reasons == ("the serving key does not match the serving certificate",)
    assert (
        pki.check_bundle(stored_bundle(secrets), SERVICE, NAMESPACE, T0).action is pki.Action.NONE
    )


def test_a_foreign_tls_secret_without_ca_key_is_reissued_keeping_old_trust(
    bundle: pki.Bundle,
) -> None:
    secrets = FakeSecretAPI()
    secrets.put(
        StoredSecret(
            REF, {"tls.crt": bundle.cert_pem, "tls.key": bundle.key_pem, "ca.crt": bundle.ca_pem}
        )
    )
    step = apply_step(secrets, REF, TARGET, T0)
    assert step.written is pki.Action.REISSUE
    assert step.decision.reasons == ("the CA key is missing",)
    b = stored_bundle(secrets)
    # Replicas still serving the old leaf stay trusted through the grace period.
    assert b.previous_ca_pems == (bundle.ca_pem,)


def race(
    n: int, secrets: FakeSecretAPI, hooks: FakeWebhookConfigAPI, at: object
) -> list[BootstrapReport]:
    reports: list[BootstrapReport] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            reports.append(converge(secrets, hooks, SETTINGS, at))  # type: ignore[arg-type]
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert len(reports) == n
    return reports


def test_two_bootstrappers_racing_on_create_end_with_one_bundle() -> None:
    secrets, hooks = FakeSecretAPI(racers=2), webhook_api()
    reports = race(2, secrets, hooks, T0)
    assert secrets.conflicts == 1
    assert secrets.writes == [("create", REF)]
    winner = stored_bundle(secrets)
    # Both end holding the stored bundle, and the webhooks trust exactly it.
    assert {r.bundle.cert_pem for r in reports if r.bundle} == {winner.cert_pem}
    assert sum(r.steps[0].lost_race or r.steps[-1].lost_race for r in reports) == 1
    assert ca_bundles(hooks) == {encode_ca_bundle(winner.trust_pem)}


def test_two_rotators_racing_on_replace_end_with_one_bundle() -> None:
    secrets, hooks = FakeSecretAPI(), webhook_api()
    converge(secrets, hooks, SETTINGS, T0)
    racing = FakeSecretAPI(racers=2)
    stored = secrets.get(REF)
    assert stored is not None
    racing.put(stored)
    reports = race(2, racing, hooks, T0 + 61 * DAY)
    assert racing.conflicts == 1
    assert racing.writes == [("put", REF), ("replace", REF)]
    winner = stored_bundle(racing)
    assert {r.bundle.cert_pem for r in reports if r.bundle} == {winner.cert_pem}
    assert pki.check_bundle(winner, SERVICE, NAMESPACE, T0 + 61 * DAY).action is pki.Action.NONE


def test_ca_rotation_over_several_runs_keeps_old_and_new_ca_in_every_caBundle() -> None:
    secrets, hooks = FakeSecretAPI(), webhook_api()
    converge(secrets, hooks, SETTINGS, T0)
    old = stored_bundle(secrets)
    lt = pki.DEFAULT_LIFETIMES

    # Day 500: the leaf is renewed and the CA is inside its window: a new CA is staged.
    t1 = T0 + 500 * DAY
    report = converge(secrets, hooks, SETTINGS, t1)
    assert [s.written for s in report.steps[:2]] == [pki.Action.RENEW_LEAF, pki.Action.STAGE_CA]
    staged = stored_bundle(secrets)
    assert staged.ca_pem == old.ca_pem
    assert ca_bundles(hooks) == {encode_ca_bundle(staged.trust_pem)}
    assert len(pki.split_pem_certificates(staged.trust_pem)) == 2

    # Too early to promote: nothing happens.
    assert not converge(secrets, hooks, SETTINGS, t1 + lt.propagation_delay / 2).changed

    # Promote: the leaf switches CA, caBundle still holds both.
    t2 = t1 + lt.propagation_delay
    report = converge(secrets, hooks, SETTINGS, t2)
    assert report.steps[0].written is pki.Action.PROMOTE_CA
    promoted = stored_bundle(secrets)
    assert promoted.ca_pem == staged.next_ca_pem
    assert set(pki.split_pem_certificates(promoted.trust_pem)) == set(
        pki.split_pem_certificates(staged.trust_pem)
    )

    # Retire after the grace period: only the new CA is left anywhere.
    t3 = t2 + lt.retire_grace
    report = converge(secrets, hooks, SETTINGS, t3)
    assert report.steps[0].written is pki.Action.RETIRE_CA
    final = stored_bundle(secrets)
    assert pki.split_pem_certificates(final.trust_pem) == (promoted.ca_pem,)
    assert ca_bundles(hooks) == {encode_ca_bundle(final.trust_pem)}


def test_promotion_waits_when_the_caBundle_had_to_be_repaired_first() -> None:
    secrets, hooks = FakeSecretAPI(), webhook_api()
    converge(secrets, hooks, SETTINGS, T0)
    t1 = T0 + 500 * DAY
    # Stage without injecting (a run that died between the Secret write and the patch).
    converge(secrets, None, SETTINGS, t1)
    staged = stored_bundle(secrets)
    assert staged.next_ca_pem
    report = converge(secrets, hooks, SETTINGS, t1 + timedelta(hours=2))
    assert report.deferred == [pki.Action.PROMOTE_CA]
    assert stored_bundle(secrets).ca_pem == staged.ca_pem
    assert ca_bundles(hooks) == {encode_ca_bundle(staged.trust_pem)}
    # The next run promotes.
    report = converge(secrets, hooks, SETTINGS, t1 + timedelta(hours=2, seconds=20))
    assert report.steps[0].written is pki.Action.PROMOTE_CA


def test_forced_rotation_stages_a_ca_now() -> None:
    secrets, hooks = FakeSecretAPI(), webhook_api()
    converge(secrets, hooks, SETTINGS, T0)
    report = converge(secrets, hooks, SETTINGS, T0 + DAY, force=pki.Action.STAGE_CA)
    assert report.steps[0].written is pki.Action.STAGE_CA
    assert len(pki.split_pem_certificates(stored_bundle(secrets).trust_pem)) == 2


@pytest.mark.parametrize("missing", [MUTATING, VALIDATING])
def test_a_missing_webhook_configuration_is_reported_not_fatal(missing: str) -> None:
    secrets, hooks = FakeSecretAPI(), webhook_api()
    del hooks.objects[(missing, "rollout-webhook")]
    report = converge(secrets, hooks, SETTINGS, T0)
    assert [str(r) for r in report.missing_configs] == [f"{missing} rollout-webhook"]
    assert secrets.get(REF) is not None


def test_each_rotation_step_waits_for_a_later_pass_even_with_no_delays() -> None:
    no_wait = pki.Lifetimes(propagation_delay=timedelta(0), retire_grace=timedelta(0))
    settings = BootstrapSettings(REF, TARGET, default_webhook_configs(), no_wait)
    secrets, hooks = FakeSecretAPI(), webhook_api()
    converge(secrets, hooks, settings, T0)
    written = [
        [
            s.written
            for s in converge(secrets, hooks, settings, T0 + DAY, force=pki.Action.STAGE_CA).steps
        ],
        [s.written for s in converge(secrets, hooks, settings, T0 + DAY).steps],
        [s.written for s in converge(secrets, hooks, settings, T0 + DAY).steps],
        [s.written for s in converge(secrets, hooks, settings, T0 + DAY).steps],
    ]
    assert written == [
        [pki.Action.STAGE_CA, pki.Action.NONE],
        [pki.Action.PROMOTE_CA, pki.Action.NONE],
        [pki.Action.RETIRE_CA, pki.Action.NONE],
        [pki.Action.NONE],
    ]
