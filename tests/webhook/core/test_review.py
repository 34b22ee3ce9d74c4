"""The pure AdmissionReview layer: parsing, response constructors, the patch round trip."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.fixtures import REQUEST_NAMESPACE, deployment, request_namespace_objects
from tests import builders
from webhook.core.policy import builtin_policy
from webhook.core.review import (
    MAX_WARNING_LENGTH,
    ReviewInvalid,
    allowed,
    apply_patch,
    clip_warning,
    decode_patch,
    denied,
    is_deployment_scale,
    make_patch,
    parse_review,
    request_name,
    request_resource,
    review_response,
    subject_kind,
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
OBJECTS = st.dictionaries(st.text(max_size=6), JSON, max_size=5)


@settings(max_examples=200, deadline=None)
@given(OBJECTS, OBJECTS)
def test_the_patch_turns_the_request_object_into_the_mutated_copy(
    original: dict[str, Any], mutated: dict[str, Any]
) -> None:
    before = copy.deepcopy(original)
    ops = make_patch(original, mutated)
    assert apply_patch(original, ops) == mutated
    assert original == before  # the request object is never changed
    response = allowed("u", patch=ops)
    assert decode_patch(response) == json.loads(json.dumps(ops))
    if original == mutated:
        assert "patch" not in response


def review(**request: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "uid": "u1",
        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "operation": "CREATE",
        "object": {"metadata": {"generateName": "web-"}},
    }
    base.update(request)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": base}


def test_parse_accepts_a_review_and_names_the_first_bad_field() -> None:
    parsed = parse_review(review())
    assert parsed["uid"] == "u1"
    assert request_name(parsed) == "web-"  # generateName on CREATE: no name yet
    for bad, field in [
        (review(uid=""), "request.uid"),
        (review(kind={"group": "apps"}), "request.kind"),
        (review(operation="APPLY"), "request.operation"),
        (review(object=[1]), "request.object"),
        (review(dryRun="yes"), "request.dryRun"),
        (review(userInfo={"username": 7}), "request.userInfo"),
        (review(userInfo={"username": "a", "groups": "g"}), "request.userInfo.groups"),
        (review(namespace=3), "request.namespace"),
    ]:
        with pytest.raises(ReviewInvalid, match=field.replace(".", r"\.")):
            parse_review(bad)


def test_responses() -> None:
    ok = allowed(
        "u",
        patch=[{"op": "add", "path": "/a", "value": 1}],
        warnings=["x" * 300, "same", "same"],
        audit_annotations={"decision": "convert"},
    )
    assert ok["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(ok["patch"])) == [{"op": "add", "path": "/a", "value": 1}]
    assert ok["warnings"][1:] == ["same"]
    assert all(len(w) <= MAX_WARNING_LENGTH for w in ok["warnings"])
    no = denied("u", "bad policy", code=422, reason="Invalid")
    assert no == {
        "uid": "u",
        "allowed": False,
        "status": {"code": 422, "message": "bad policy", "reason": "Invalid"},
    }
    assert review_response(no)["kind"] == "AdmissionReview"


def test_clip_warning_keeps_one_line() -> None:
    assert clip_warning("a\n  b") == "a b"
    clipped = clip_warning("word " * 50)
    assert len(clipped) == MAX_WARNING_LENGTH
    assert clipped.endswith("...")


def test_a_conversion_patch_is_jsonpatch_s_own() -> None:
    stored = next(
        o for o in request_namespace_objects(builtin_policy()) if o["kind"] == "Deployment"
    )
    sent = deployment("web", REQUEST_NAMESPACE)
    ours = make_patch(sent, stored)
    theirs = jsonpatch.make_patch(sent, stored).patch
    assert ours, "the fixture's conversion changes the Deployment"
    assert sorted(ours, key=str) == sorted(theirs, key=str)
    assert apply_patch(sent, ours) == stored


def test_equal_objects_give_no_patch() -> None:
    sent = deployment("web", REQUEST_NAMESPACE)
    assert make_patch(sent, copy.deepcopy(sent)) == []


@pytest.mark.parametrize("key", ["a/b", "a~b", "~1", "/"])
def test_keys_are_escaped_as_json_pointer_tokens(key: str) -> None:
    original: dict[str, Any] = {"metadata": {key: {"x": 1}, "annotations": {}}}
    mutated = {"metadata": {key: {"x": 2}, "annotations": {key: "y"}}}
    ops = make_patch(original, mutated)
    assert apply_patch(original, ops) == mutated


def test_a_value_moved_between_keys_is_patched_below_their_parent() -> None:
    original = {"spec": {"a": {"deep": [1, 2]}, "keep": {"same": True}}}
    mutated = {"spec": {"b": {"deep": [1, 2]}, "keep": {"same": True}}}
    ops = make_patch(original, mutated)
    assert all(op["path"].startswith("/spec/") for op in ops)
    assert apply_patch(original, ops) == mutated


def update_review(**request: Any) -> dict[str, Any]:
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
    return {**update_review(), **fields}


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
        (update_review(uid=7), "request.uid: must be a non-empty string"),
        (update_review(kind="Deployment"), "request.kind: must be an object with a string 'kind'"),
        (
            update_review(kind={"group": 1, "kind": "Deployment"}),
            "request.kind.group: must be a string",
        ),
        (
            update_review(kind={"version": [], "kind": "X"}),
            "request.kind.version: must be a string",
        ),
        (
            update_review(operation=None),
            "request.operation: must be one of CREATE, UPDATE, DELETE, CONNECT, got None",
        ),
        (update_review(oldObject="web"), "request.oldObject: must be an object or null"),
        (update_review(name=1), "request.name: must be a string"),
        (update_review(dryRun=1), "request.dryRun: must be true or false"),
        (
            update_review(userInfo=[]),
            "request.userInfo: must be an object with a string 'username'",
        ),
        (update_review(userInfo={"extra": []}), "request.userInfo.extra: must be an object"),
        (
            update_review(resource="deployments"),
            "request.resource: must be an object with a string 'resource'",
        ),
        (
            update_review(resource={"group": None, "resource": "deployments"}),
            "request.resource.group: must be a string",
        ),
        (update_review(subResource=["scale"]), "request.subResource: must be a string"),
        (
            update_review(requestKind={"group": "autoscaling"}),
            "request.requestKind: must be an object with a string 'kind'",
        ),
        (
            update_review(requestResource={"resource": "deployments", "version": 1}),
            "request.requestResource.version: must be a string",
        ),
        (update_review(requestSubResource=0), "request.requestSubResource: must be a string"),
        # The first wrong field is the one named.
        (update_review(uid="", operation="APPLY"), "request.uid: must be a non-empty string"),
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
        {"resource": {"group": "apps", "version": "v1", "resource": "deployments"}},
    ],
)
def test_well_formed_requests_are_returned_as_they_are(request_fields: dict[str, Any]) -> None:
    body = update_review(**request_fields)
    assert parse_review(body) == body["request"]


SCALE = builders.scale_request(replicas=6, current=0)


@pytest.mark.parametrize(
    ("fields", "resource", "scale", "kind"),
    [
        pytest.param({}, ("deployments", "scale"), True, "Deployment", id="kubectl-scale"),
        pytest.param(
            {"resource": {"group": "argoproj.io", "version": "v1alpha1", "resource": "rollouts"}},
            ("rollouts", "scale"),
            False,
            "Scale",
            id="a-rollout-s-scale",
        ),
        pytest.param(
            {"resource": {"group": "extensions", "version": "v1beta1", "resource": "deployments"}},
            ("deployments", "scale"),
            False,
            "Scale",
            id="another-group",
        ),
        pytest.param({"subResource": ""}, ("deployments", ""), False, "Scale", id="no-subresource"),
        pytest.param(
            {"resource": None}, ("", "scale"), False, "Scale", id="a-review-without-its-resource"
        ),
    ],
)
def test_the_subresource_of_a_review_is_parsed_and_named(
    fields: dict[str, Any], resource: tuple[str, str], scale: bool, kind: str
) -> None:
    request = {k: v for k, v in {**SCALE, **fields}.items() if v is not None}
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    parsed = parse_review(body)
    assert parsed == request
    assert request_resource(parsed) == resource
    assert is_deployment_scale(parsed) is scale
    assert subject_kind(parsed) == kind
    assert request_name(parsed) == "web"
