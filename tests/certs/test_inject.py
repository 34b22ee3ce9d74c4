"""caBundle injection patches exactly the caBundle fields and nothing else."""

from __future__ import annotations

import copy

import jsonpatch
import pytest

from certs import pki
from certs.inject import (
    MUTATING,
    VALIDATING,
    Outcome,
    WebhookConfigRef,
    WebhookEntry,
    ca_bundle_patch,
    encode_ca_bundle,
    inject_ca_bundle,
)
from tests.certs.fakes import FakeWebhookConfigAPI

CONFIGS = (WebhookConfigRef(MUTATING, "rw"), WebhookConfigRef(VALIDATING, "rw"))


def strip_ca(obj: dict[str, object]) -> dict[str, object]:
    clean = copy.deepcopy(obj)
    for hook in clean["webhooks"]:  # type: ignore[attr-defined]
        hook["clientConfig"].pop("caBundle", None)
    return clean


def test_only_ca_bundle_fields_change(bundle: pki.Bundle) -> None:
    api = FakeWebhookConfigAPI()
    before = {
        MUTATING: copy.deepcopy(api.add(MUTATING, "rw", ["a.io", "b.io"])),
        VALIDATING: copy.deepcopy(api.add(VALIDATING, "rw", ["c.io"])),
    }
    results = inject_ca_bundle(api, CONFIGS, bundle.trust_pem)
    assert [(r.outcome, r.webhooks) for r in results] == [
        (Outcome.PATCHED, 2),
        (Outcome.PATCHED, 1),
    ]
    for kind, old in before.items():
        new = api.objects[(kind, "rw")]
        assert strip_ca(new) == strip_ca(old)
        assert {h["clientConfig"]["caBundle"] for h in new["webhooks"]} == {
            encode_ca_bundle(bundle.trust_pem)
        }
    # Every write is a caBundle write guarded by a test of that webhook's name.
    for _, _, patch in api.patches:
        assert {op["op"] for op in patch} == {"test", "add"}
        assert all(op["path"].endswith(("/name", "/clientConfig/caBundle")) for op in patch)


def test_second_injection_patches_nothing(bundle: pki.Bundle) -> None:
    api = FakeWebhookConfigAPI()
    api.add(MUTATING, "rw", ["a.io"])
    api.add(VALIDATING, "rw", ["c.io"])
    inject_ca_bundle(api, CONFIGS, bundle.trust_pem)
    results = inject_ca_bundle(api, CONFIGS, bundle.trust_pem)
    assert {r.outcome for r in results} == {Outcome.UNCHANGED}
    assert len(api.patches) == 2


def test_only_stale_webhooks_are_patched(bundle: pki.Bundle) -> None:
    current = encode_ca_bundle(bundle.trust_pem)
    patch = ca_bundle_patch(
        [WebhookEntry("a", current), WebhookEntry("b", "b2xk")], bundle.trust_pem
    )
    assert patch == [
        {"op": "test", "path": "/webhooks/1/name", "value": "b"},
        {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": current},
    ]


def test_a_reordered_configuration_makes_the_patch_fail_instead_of_misplacing(
    bundle: pki.Bundle,
) -> None:
    obj = FakeWebhookConfigAPI().add(MUTATING, "rw", ["a.io", "b.io"])
    patch = ca_bundle_patch([WebhookEntry("a.io", ""), WebhookEntry("b.io", "")], bundle.trust_pem)
    obj["webhooks"].reverse()
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(obj, patch)


def test_missing_configuration() -> None:
    results = inject_ca_bundle(FakeWebhookConfigAPI(), CONFIGS[:1], "x")
    assert [r.outcome for r in results] == [Outcome.MISSING]
