"""The launcher's what-ifs give the product's answers: same copies, same patched objects."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.fixtures import REQUEST_NAMESPACE, deployment, request_namespace_objects
from bench.launcher import changed_subtrees_patch, json_copy
from webhook.core.admission import apply_patch, make_patch
from webhook.core.policy import builtin_policy

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=20,
)


@given(JSON)
def test_json_copy_equals_deepcopy_and_shares_no_container(value: Any) -> None:
    copied = json_copy(value)
    assert copied == copy.deepcopy(value)

    def containers(v: Any) -> list[int]:
        if isinstance(v, dict):
            return [id(v), *(i for x in v.values() for i in containers(x))]
        if isinstance(v, list):
            return [id(v), *(i for x in v for i in containers(x))]
        return []

    assert not set(containers(copied)) & set(containers(value))


@given(st.dictionaries(st.text(max_size=4), JSON, max_size=5), st.data())
def test_subtree_patch_turns_the_original_into_the_mutated_object(
    original: dict[str, Any], data: st.DataObject
) -> None:
    mutated = data.draw(st.dictionaries(st.text(max_size=4), JSON, max_size=5))
    if data.draw(st.booleans()):  # mostly equal objects, as a mutation makes them
        mutated = {**original, **mutated}
    assert apply_patch(original, changed_subtrees_patch(original, mutated)) == mutated


def test_subtree_patch_of_a_conversion_is_jsonpatch_s() -> None:
    stored = next(
        o for o in request_namespace_objects(builtin_policy()) if o["kind"] == "Deployment"
    )
    sent = deployment("web", REQUEST_NAMESPACE)
    assert changed_subtrees_patch(sent, stored) == make_patch(sent, stored)


def test_subtree_patch_of_equal_objects_is_empty() -> None:
    sent = deployment("web", REQUEST_NAMESPACE)
    assert changed_subtrees_patch(sent, copy.deepcopy(sent)) == []


@pytest.mark.parametrize("key", ["a/b", "a~b"])
def test_subtree_patch_escapes_keys_as_json_pointer(key: str) -> None:
    original: dict[str, Any] = {"metadata": {"annotations": {}}}
    mutated = {"metadata": {"annotations": {key: "x"}}}
    assert apply_patch(original, changed_subtrees_patch(original, mutated)) == mutated
