"""The AdmissionReview v1 wire format and the pure response constructors.

The HTTP server is a thin adapter around these: it parses the body, calls
``parse_review``, asks the decision functions for a result, and sends back the review
that ``review_response`` builds. Nothing here touches HTTP, the clock or the cluster.

The patch is always the difference between the request object and a mutated deep copy
(``jsonpatch.make_patch`` below the members that differ), never a list of hand-written
paths.

The wire codec is orjson, a compiled one: the review comes in and goes out as bytes, several
times faster than the standard library's codec (docs/benchmarks.md, instruction counts). What
it refuses beyond the standard one (NaN, Infinity, invalid UTF-8) the API server never sends;
an integer past 64 bits it reads as a float.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NotRequired, TypedDict

import jsonpatch
import orjson

from webhook.core.objects import json_copy

API_VERSION = "admission.k8s.io/v1"
REVIEW_KIND = "AdmissionReview"
MAX_WARNING_LENGTH = 120
"""Kubernetes asks webhooks to keep each warning within 120 characters."""

AdmissionOperation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
OPERATIONS: tuple[AdmissionOperation, ...] = ("CREATE", "UPDATE", "DELETE", "CONNECT")


class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


class GroupVersionResource(TypedDict):
    group: str
    version: str
    resource: str


class UserInfo(TypedDict, total=False):
    username: str
    uid: str
    groups: list[str]
    extra: dict[str, list[str]]


class AdmissionRequest(TypedDict):
    """The fields of a request this webhook reads.

    ``kind``, ``resource`` and ``subResource`` describe the object sent, after the API
    server converted it to the version the rule names (``matchPolicy: Equivalent``);
    the ``request*`` fields describe the call as the client made it. A subresource call
    (``deployments/scale``) sends the subresource's object (an ``autoscaling/v1 Scale``),
    never its parent, and runs only the subresource's admission (kubernetes/kubernetes#84530).
    """

    uid: str
    kind: GroupVersionKind
    operation: AdmissionOperation
    resource: NotRequired[GroupVersionResource]
    subResource: NotRequired[str]
    requestKind: NotRequired[GroupVersionKind]
    requestResource: NotRequired[GroupVersionResource]
    requestSubResource: NotRequired[str]
    namespace: NotRequired[str]
    name: NotRequired[str]
    userInfo: NotRequired[UserInfo]
    object: NotRequired[dict[str, Any] | None]
    oldObject: NotRequired[dict[str, Any] | None]
    dryRun: NotRequired[bool]
    options: NotRequired[dict[str, Any] | None]


class Status(TypedDict, total=False):
    code: int
    message: str
    reason: str


class AdmissionResponse(TypedDict):
    uid: str
    allowed: bool
    status: NotRequired[Status]
    patch: NotRequired[str]
    patchType: NotRequired[Literal["JSONPatch"]]
    warnings: NotRequired[list[str]]
    auditAnnotations: NotRequired[dict[str, str]]


class AdmissionReviewResponse(TypedDict):
    apiVersion: str
    kind: str
    response: AdmissionResponse


AdmissionDecision = Literal["convert", "skip", "refuse", "error", "allow", "deny"]
"""What was decided on one request (its audit record says the same): a mutation's outcome
(convert, skip, refuse), the policy check's (allow, deny), or error when deciding failed."""


@dataclass(frozen=True)
class AdmissionPlan:
    """The decision on one request, as data: what to answer and what to write.

    ``mutated`` is the deep copy the patch is computed against (None: no patch);
    ``changes`` are the manifests to server-side apply after admission (the Rollout,
    generated Services, re-targeted HPAs, routes), never applied on a dry run.
    """

    decision: AdmissionDecision
    reason: str
    environment: str | None = None
    strategy: str | None = None
    mutated: dict[str, Any] | None = None
    changes: tuple[dict[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()
    extra: Mapping[str, str] = field(default_factory=dict)

    def unconverted(self, decision: AdmissionDecision, reason: str, warning: str) -> AdmissionPlan:
        """The same request admitted with no patch and no writes, saying why."""
        return replace(
            self,
            decision=decision,
            reason=reason,
            mutated=None,
            changes=(),
            warnings=(*self.warnings, warning),
        )


def patch_for(request: AdmissionRequest, plan: AdmissionPlan) -> list[dict[str, Any]]:
    """The JSON Patch of a plan: request object -> mutated copy (empty when unchanged)."""
    original = request.get("object")
    if plan.mutated is None or original is None:
        return []
    return make_patch(original, plan.mutated)


class ReviewInvalid(ValueError):
    """A body that is not an AdmissionReview v1 request: the call is broken (HTTP 400)."""


def parse_review(body: object) -> AdmissionRequest:
    """The request of an AdmissionReview v1, checked field by field.

    Raises ReviewInvalid naming the first field that is wrong.
    """
    request = _envelope(body)
    _check_identity(request)
    _check_resource(request)
    _check_objects(request)
    _check_user(request.get("userInfo", {}))
    return request  # type: ignore[return-value]  # checked above, field by field


def _envelope(body: object) -> dict[str, Any]:
    """The request inside an AdmissionReview v1 body."""
    if not isinstance(body, dict):
        raise ReviewInvalid("body: must be a JSON object (an AdmissionReview)")
    if body.get("apiVersion") != API_VERSION:
        raise ReviewInvalid(f"apiVersion: must be {API_VERSION!r}, got {body.get('apiVersion')!r}")
    if body.get("kind") != REVIEW_KIND:
        raise ReviewInvalid(f"kind: must be {REVIEW_KIND!r}, got {body.get('kind')!r}")
    request = body.get("request")
    if not isinstance(request, dict):
        raise ReviewInvalid("request: must be an object")
    return request


def _check_identity(request: dict[str, Any]) -> None:
    """The uid the response must carry back, the kind, and the operation."""
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ReviewInvalid("request.uid: must be a non-empty string")
    kind = request.get("kind")
    if not isinstance(kind, dict) or not isinstance(kind.get("kind"), str):
        raise ReviewInvalid("request.kind: must be an object with a string 'kind'")
    for part in ("group", "version"):
        if not isinstance(kind.get(part, ""), str):
            raise ReviewInvalid(f"request.kind.{part}: must be a string")
    if request.get("operation") not in OPERATIONS:
        raise ReviewInvalid(
            f"request.operation: must be one of {', '.join(OPERATIONS)}, "
            f"got {request.get('operation')!r}"
        )


def _check_group_version(value: object, field_name: str, last: str) -> None:
    """An object with string members group, version and ``last`` (group may be "")."""
    if not isinstance(value, dict) or not isinstance(value.get(last), str):
        raise ReviewInvalid(f"request.{field_name}: must be an object with a string {last!r}")
    for part in ("group", "version"):
        if not isinstance(value.get(part, ""), str):
            raise ReviewInvalid(f"request.{field_name}.{part}: must be a string")


def _check_resource(request: dict[str, Any]) -> None:
    """What was called: the resource, the subresource, and the call as the client made it
    (all optional: the decision falls back to ``kind`` without them)."""
    for field_name, last in (
        ("resource", "resource"),
        ("requestResource", "resource"),
        ("requestKind", "kind"),
    ):
        if field_name in request:
            _check_group_version(request[field_name], field_name, last)
    for field_name in ("subResource", "requestSubResource"):
        if not isinstance(request.get(field_name, ""), str):
            raise ReviewInvalid(f"request.{field_name}: must be a string")


def _check_objects(request: dict[str, Any]) -> None:
    """The objects, where they are, and whether this is a dry run."""
    for key in ("object", "oldObject"):
        if request.get(key) is not None and not isinstance(request[key], dict):
            raise ReviewInvalid(f"request.{key}: must be an object or null")
    for key in ("namespace", "name"):
        if not isinstance(request.get(key, ""), str):
            raise ReviewInvalid(f"request.{key}: must be a string")
    if not isinstance(request.get("dryRun", False), bool):
        raise ReviewInvalid("request.dryRun: must be true or false")


def _check_user(user: object) -> None:
    if not isinstance(user, dict) or not isinstance(user.get("username", ""), str):
        raise ReviewInvalid("request.userInfo: must be an object with a string 'username'")
    if not isinstance(user.get("groups", []), list):
        raise ReviewInvalid("request.userInfo.groups: must be a list")
    if not isinstance(user.get("extra", {}), dict):
        raise ReviewInvalid("request.userInfo.extra: must be an object")


def request_username(request: AdmissionRequest) -> str:
    return request.get("userInfo", {}).get("username", "")


def request_kind(request: AdmissionRequest) -> str:
    return request["kind"]["kind"]


def request_resource(request: AdmissionRequest) -> tuple[str, str]:
    """(resource, subresource) as called, e.g. ("deployments", "scale"); ("", "") when the
    request does not say (the resource is then known from ``kind`` alone)."""
    resource = request.get("resource")
    return (resource["resource"] if resource else ""), request.get("subResource", "")


def is_deployment_scale(request: AdmissionRequest) -> bool:
    """A call of a Deployment's scale subresource (``kubectl scale deployment``, an HPA)."""
    resource = request.get("resource")
    return (
        resource is not None
        and resource.get("group") == "apps"
        and request_resource(request) == ("deployments", "scale")
    )


def subject_kind(request: AdmissionRequest) -> str:
    """The kind of the object a request changes, as the audit trail and the write order name
    it: the parent's for a scale subresource (a Scale of a Deployment changes the
    Deployment), otherwise the kind sent."""
    return "Deployment" if is_deployment_scale(request) else request_kind(request)


def request_name(request: AdmissionRequest) -> str:
    """The object's name; on CREATE with generateName the API server may not have one yet."""
    name = request.get("name") or ""
    if name:
        return name
    obj = request.get("object") or request.get("oldObject") or {}
    meta = obj.get("metadata") or {}
    return str(meta.get("name") or meta.get("generateName") or "")


def clip_warning(text: str) -> str:
    """One line of at most MAX_WARNING_LENGTH characters (kubectl shows warnings as-is)."""
    line = " ".join(text.split())
    if len(line) <= MAX_WARNING_LENGTH:
        return line
    return line[: MAX_WARNING_LENGTH - 3].rstrip() + "..."


def make_patch(original: Mapping[str, Any], mutated: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The JSON Patch that turns the request object into the mutated copy.

    Objects are compared member by member: equal subtrees (the pod template, nearly all of
    a Deployment) cost one ``==`` in C, a member only one side has is one ``add`` or
    ``remove``, a changed scalar one ``replace``; only two lists that differ are handed to
    jsonpatch, element by element. jsonpatch for the whole object was the costliest step
    of a conversion, and for the few members that differ still copied and wrapped every
    value it looked at (docs/benchmarks.md).
    """
    return _patch_below("", original, mutated)


def _patch_below(
    prefix: str, old: Mapping[str, Any], new: Mapping[str, Any]
) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    for key, old_value in old.items():
        path = f"{prefix}/{_escape(key)}"
        if key not in new:
            ops.append({"op": "remove", "path": path})
            continue
        new_value = new[key]
        if old_value == new_value:
            continue
        if isinstance(old_value, dict) and isinstance(new_value, dict):
            ops.extend(_patch_below(path, old_value, new_value))
        elif isinstance(old_value, list) and isinstance(new_value, list):
            ops.extend(_list_patch(path, old_value, new_value))
        else:
            ops.append({"op": "replace", "path": path, "value": json_copy(new_value)})
    for key, new_value in new.items():
        if key not in old:
            ops.append(
                {"op": "add", "path": f"{prefix}/{_escape(key)}", "value": json_copy(new_value)}
            )
    return ops


def _list_patch(prefix: str, old: list[Any], new: list[Any]) -> list[dict[str, Any]]:
    """Two different lists, element by element (jsonpatch: an added route backend is one
    ``add``, not the whole list replaced)."""
    ops: list[dict[str, Any]] = []
    for op in jsonpatch.make_patch(old, new).patch:
        op["path"] = prefix + op["path"]
        if "from" in op:
            op["from"] = prefix + op["from"]
        ops.append(op)
    return ops


def _escape(key: str) -> str:
    """A JSON Pointer reference token (RFC 6901)."""
    return str(key).replace("~", "~0").replace("/", "~1")


def apply_patch(obj: Mapping[str, Any], ops: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The object after the patch, as the API server computes it (tests and the audit CLI)."""
    result: dict[str, Any] = jsonpatch.JsonPatch([dict(op) for op in ops]).apply(dict(obj))
    return result


def allowed(
    uid: str,
    *,
    patch: Sequence[Mapping[str, Any]] = (),
    warnings: Sequence[str] = (),
    audit_annotations: Mapping[str, str] | None = None,
) -> AdmissionResponse:
    """Admit the object, with the patch when there is one (an empty patch is left out)."""
    response: AdmissionResponse = {"uid": uid, "allowed": True}
    if patch:
        try:
            encoded = orjson.dumps(list(patch))
        except TypeError:  # an integer past 64 bits: only the standard codec writes one
            encoded = json.dumps(list(patch), separators=(",", ":")).encode("utf-8")
        response["patch"] = base64.b64encode(encoded).decode("ascii")
        response["patchType"] = "JSONPatch"
    if warnings:
        response["warnings"] = _unique([clip_warning(w) for w in warnings])
    if audit_annotations:
        response["auditAnnotations"] = dict(audit_annotations)
    return response


def denied(
    uid: str,
    message: str,
    *,
    code: int = 403,
    reason: str = "Forbidden",
    warnings: Sequence[str] = (),
    audit_annotations: Mapping[str, str] | None = None,
) -> AdmissionResponse:
    """Refuse the object: the message is what the user sees in kubectl."""
    response: AdmissionResponse = {
        "uid": uid,
        "allowed": False,
        "status": {"code": code, "message": message, "reason": reason},
    }
    if warnings:
        response["warnings"] = _unique([clip_warning(w) for w in warnings])
    if audit_annotations:
        response["auditAnnotations"] = dict(audit_annotations)
    return response


def review_response(response: AdmissionResponse) -> AdmissionReviewResponse:
    """The envelope the API server expects back."""
    return {"apiVersion": API_VERSION, "kind": REVIEW_KIND, "response": response}


def load_json(body: bytes) -> Any:
    """A JSON document from the wire; raises ``json.JSONDecodeError`` (orjson's error is
    one), with the line and column, for anything that is not JSON in UTF-8, and for a
    document nested past orjson's own limit (1,024 levels)."""
    return orjson.loads(body)


def encode_review(response: AdmissionResponse) -> bytes:
    """The AdmissionReview answer as the bytes sent back (compact JSON, UTF-8)."""
    return orjson.dumps(review_response(response))


def decode_patch(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The JSON Patch carried by a response (empty when there is none)."""
    encoded = response.get("patch")
    if not encoded:
        return []
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(encoded))
    return ops


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))
