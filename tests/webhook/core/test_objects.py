"""The core's two hot helpers: the JSON copy and the patch that skips equal subtrees."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.fixtures import REQUEST_NAMESPACE, deployment, request_namespace_objects
from webhook.core.objects import json_copy
from webhook.core.policy import builtin_policy
from webhook.core.review import apply_patch, make_patch

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=20,
)


def _containers(value: Any) -> list[int]:
    if isinstance(value, dict):
        return [id(value), *(i for v in value.values() for i in _containers(v))]
    if isinstance(value, list):
        return [id(value), *(i for v in value for i in _containers(v))]
    if isinstance(value, tuple):
        return [i for v in value for i in _containers(v)]
    return []


@given(JSON)
def test_json_copy_equals_deepcopy_and_shares_no_mutable_container(value: Any) -> None:
    copied = json_copy(value)
    assert copied == copy.deepcopy(value)
    assert not set(_containers(copied)) & set(_containers(value))


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
