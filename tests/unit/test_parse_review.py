"""parse_review, one malformed AdmissionReview per row: the first wrong field, named."""

from __future__ import annotations

from typing import Any

import pytest

from webhook.core.review import ReviewInvalid, parse_review


def review(**request: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "uid": "u1",
        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "operation": "UPDATE",
        "object": {"metadata": {"name": "web"}},
        "oldObject": None,
        "namespace": "prod",
        "name": "web",
        "dryRun": False,
        "userInfo": {"username": "alice", "groups": ["dev"], "extra": {}},
    }
    base.update(request)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": base}


def envelope(**fields: Any) -> dict[str, Any]:
    return {**review(), **fields}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "body: must be a JSON object (an AdmissionReview)"),
        (
            envelope(apiVersion="admission.k8s.io/v1beta1"),
            "apiVersion: must be 'admission.k8s.io/v1', got 'admission.k8s.io/v1beta1'",
        ),
        (envelope(kind="Review"), "kind: must be 'AdmissionReview', got 'Review'"),
        (envelope(request=None), "request: must be an object"),
        (review(uid=7), "request.uid: must be a non-empty string"),
        (review(kind="Deployment"), "request.kind: must be an object with a string 'kind'"),
        (review(kind={"group": 1, "kind": "Deployment"}), "request.kind.group: must be a string"),
        (review(kind={"version": [], "kind": "X"}), "request.kind.version: must be a string"),
        (
            review(operation=None),
            "request.operation: must be one of CREATE, UPDATE, DELETE, CONNECT, got None",
        ),
        (review(oldObject="web"), "request.oldObject: must be an object or null"),
        (review(name=1), "request.name: must be a string"),
        (review(dryRun=1), "request.dryRun: must be true or false"),
        (review(userInfo=[]), "request.userInfo: must be an object with a string 'username'"),
        (review(userInfo={"extra": []}), "request.userInfo.extra: must be an object"),
        # The first wrong field is the one named.
        (review(uid="", operation="APPLY"), "request.uid: must be a non-empty string"),
    ],
)
def test_the_first_wrong_field_is_named(body: object, message: str) -> None:
    with pytest.raises(ReviewInvalid) as caught:
        parse_review(body)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "request_fields",
    [
        {},
        {"operation": "DELETE", "object": None, "oldObject": {"metadata": {"name": "web"}}},
        {"operation": "CONNECT", "userInfo": {}},
        {"kind": {"kind": "Deployment"}},  # group and version may be left out
    ],
)
def test_well_formed_requests_are_returned_as_they_are(request_fields: dict[str, Any]) -> None:
    body = review(**request_fields)
    assert parse_review(body) == body["request"]
