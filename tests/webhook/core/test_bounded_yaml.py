"""Hostile YAML is refused before anything walks it: aliases, anchors, depth, size."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from webhook.core.bounded_yaml import MAX_DEPTH, YAMLRefused, load_bounded
from webhook.core.errors import PolicyInvalid
from webhook.core.keys import DEFAULT_KEYS
from webhook.core.policy import builtin_policy, parse_policy_text
from webhook.core.selection import resolve_strategy

# Nine levels of ten aliases each: 479 bytes that stand for 10**9 strings once expanded.
ALIAS_BOMB = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 10)}]"
            for i in range(8)
        ),
    ]
)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (ALIAS_BOMB, "anchors (&name) are not accepted"),
        ("a: &x 1\nb: *x\n", "anchors (&name) are not accepted"),
        ("base: &b {canary: {}}\nprod:\n  <<: *b\n", "anchors (&name) are not accepted"),
        ("a: *undefined\n", "aliases (*name) are not accepted"),
        ("[" * 10_000 + "]" * 10_000, f"nested deeper than {MAX_DEPTH} levels"),
        ("a:\n" + "".join(f"{'  ' * i}b:\n" for i in range(1, 80)), "nested deeper than"),
        ("x: " + "y" * 2048, "over the limit of 1024"),
    ],
)
def test_refused(text: str, problem: str) -> None:
    with pytest.raises(YAMLRefused) as err:
        load_bounded(text, max_bytes=1024 if "y" * 2048 in text else 10**6)
    assert problem in str(err.value.problem)


def test_refusal_names_the_line() -> None:
    with pytest.raises(YAMLRefused) as err:
        load_bounded("a: 1\nb: 2\nc: &anchor 3\n", max_bytes=1000)
    assert err.value.problem_mark is not None
    assert err.value.problem_mark.line + 1 == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("canary:\n  steps:\n  - setWeight: 20\n  - pause: {duration: 1m}\n", None),
        ('{"a": [1, 2, {"b": null}]}', {"a": [1, 2, {"b": None}]}),
        ("text: 'an & and a * inside quotes'", {"text": "an & and a * inside quotes"}),
        ("", None),
    ],
)
def test_plain_yaml_and_json_load_as_safe_load_does(text: str, expected: Any) -> None:
    assert load_bounded(text, max_bytes=10_000) == yaml.safe_load(text)
    if expected is not None:
        assert load_bounded(text, max_bytes=10_000) == expected


def test_exactly_max_depth_is_accepted() -> None:
    text = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert load_bounded(text, max_bytes=10_000) == yaml.safe_load(text)


def test_a_policy_with_aliases_is_refused_with_its_line() -> None:
    with pytest.raises(PolicyInvalid) as err:
        parse_policy_text(ALIAS_BOMB)
    assert "line 1, column 4: refused: anchors (&name) are not accepted" in str(err.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (ALIAS_BOMB, "refused at line 1: anchors (&name) are not accepted: write the value out"),
        ("[" * 5000, "refused: nested deeper than 64 levels"),
        ("canary: {steps: []}\n#" + "x" * 20_000, "refused: 20021 bytes, over the limit of 16384"),
    ],
)
def test_a_hostile_override_annotation_is_an_error_finding(override: str, message: str) -> None:
    policy = builtin_policy()
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "prod",
            "annotations": {DEFAULT_KEYS.rollout: override},
        },
        "spec": {"template": {"metadata": {"labels": {"app": "web"}}}},
    }
    choice = resolve_strategy(deployment, policy.environments["prod"], DEFAULT_KEYS)
    assert [f.message for f in choice.findings if f.code == "annotation-yaml"] == [
        f"annotation {DEFAULT_KEYS.rollout}: {message}"
    ]
