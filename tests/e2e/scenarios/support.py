"""What the scenarios share: `rollout-webhook serve` as a process, the chart's webhook
configurations pointed at it, manifests, and polls that fail with the server's log.

The server runs as the real command (`rollout-webhook serve --kubeconfig ... --cert-dir ...`)
against the session control plane, as the admin; the API server calls it through the
chart's own MutatingWebhookConfiguration and ValidatingWebhookConfiguration (rendered by
`helm template`), narrowed to namespaces labelled for this package so that nothing else in
the shared control plane reaches it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import ssl
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from certs.files import write_bundle_dir
from certs.pki import self_signed_for_localhost
from tests import builders
from tests.e2e import harness

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "helm" / "rollout-webhook"
BINARY = Path(sys.executable).parent / "rollout-webhook"
PREFIX = "rollout-webhook.io/"
ENABLED = f"{PREFIX}enabled"
TIER_LABEL = f"{PREFIX}e2e-tier"
TIER = "scenarios"
WEBHOOK_NAMESPACE = "scenarios-system"
RELEASE = "scenarios"  # the chart's objects are named scenarios-rollout-webhook...
POLICY_CONFIGMAP = f"{RELEASE}-rollout-webhook-policy"
ROLLOUT_API = "argoproj.io/v1alpha1"
POLL = 0.25
T = TypeVar("T")

BOUND_1 = 10.0
"""docs/reconciler.md: one service converges within 10 s of the watch event that concerns
it (one pass, on an idle reconciler)."""


def bound_n(services: int) -> float:
    """docs/reconciler.md: N services queued at once (a policy change queues every one)."""
    return BOUND_1 + services / 50


Manifest = dict[str, Any]


# --- the server ---------------------------------------------------------------------------


@dataclass
class Webhook:
    """`rollout-webhook serve` in a process of its own; start() again after stop() reuses
    the port, so a registered configuration keeps calling it."""

    workdir: Path
    kubeconfig: Path
    audit_file: Path
    reconcile: bool = True
    env: Mapping[str, str] = field(default_factory=dict)
    ca_pem: str = ""
    port: int = 0
    process: harness.ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def cert_dir(self) -> Path:
        return self.workdir / "tls"

    @property
    def log_path(self) -> Path:
        return self.workdir / "serve.log"

    def log_tail(self, lines: int = 20) -> str:
        """The log's last lines, without the audit records serve prints to stdout."""
        if not self.log_path.exists():
            return "(never started)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join([line for line in text if not line.startswith("{")][-lines:])

    def prepare(self) -> None:
        """Choose the port and, unless the test put one there, a certificate for 127.0.0.1."""
        if not self.port:
            (self.port,) = harness.free_ports(1)
        if not (self.cert_dir / "tls.crt").exists():
            bundle = self_signed_for_localhost(datetime.datetime.now(datetime.UTC))
            write_bundle_dir(bundle, self.cert_dir)
            self.ca_pem = bundle.ca_pem
        elif not self.ca_pem:
            self.ca_pem = (self.cert_dir / "ca.crt").read_text()

    def start(self) -> None:
        self.prepare()
        argv = [
            "env",
            *(f"{k}={v}" for k, v in self.env.items()),
            str(BINARY),
            "serve",
            f"--kubeconfig={self.kubeconfig}",
            f"--cert-dir={self.cert_dir}",
            f"--namespace={WEBHOOK_NAMESPACE}",
            f"--audit-file={self.audit_file}",
            "--host=127.0.0.1",
            f"--port={self.port}",
            *([] if self.reconcile else ["--no-reconcile"]),
        ]
        self.process = harness.ManagedProcess("rollout-webhook", argv, self.log_path)
        self.process.start()
        context = ssl.create_default_context(cadata=self.ca_pem)

        def ready() -> bool:
            assert self.process is not None
            if not self.process.alive():
                pytest.fail(f"serve exited at start-up:\n{self.log_tail()}", pytrace=False)
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", context=context, timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        # Ready: the certificate is loaded, the policy known and every watch has listed.
        eventually(ready, "serve to become ready", self, timeout=30)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def eventually(
    check: Callable[[], T | None], what: str, webhook: Webhook | None = None, timeout: float = 30
) -> T:
    """Poll `check` until it returns something truthy; fail naming `what`, with the log."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except harness.CommandFailed:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            log = f"; serve log:\n{webhook.log_tail()}" if webhook is not None else ""
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}{log}", pytrace=False)
        time.sleep(POLL)


def holds(check: Callable[[], bool], what: str, seconds: float) -> None:
    """`check` stays true for `seconds` (polled): for what must NOT happen yet."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check(), f"{what} no longer held"
        time.sleep(POLL)


# --- the chart ----------------------------------------------------------------------------


def render_chart(helm: harness.Tool, *templates_and_flags: str) -> str:
    """`helm template` of the chart's named templates (and any --set flags) for RELEASE."""
    shown = [f"--show-only=templates/{t}" for t in templates_and_flags if not t.startswith("-")]
    flags = [f for f in templates_and_flags if f.startswith("-")]
    return helm(
        "template", RELEASE, str(CHART), f"--namespace={WEBHOOK_NAMESPACE}", *shown, *flags
    ).stdout


def chart_env(helm: harness.Tool) -> dict[str, str]:
    """The ROLLOUT_WEBHOOK_* settings the chart gives the server's container."""
    [chart_deployment] = [d for d in yaml.safe_load_all(render_chart(helm, "deployment.yaml")) if d]
    [container] = chart_deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def chart_webhooks(helm: harness.Tool, failure_policy: str) -> tuple[Manifest, Manifest]:
    """The chart's (mutating, validating) configurations for a release in WEBHOOK_NAMESPACE.

    Each mutating webhook also requires the package's namespace label, so only the
    scenarios' namespaces reach the server (the control plane is shared by the session).
    """
    rendered = render_chart(helm, "webhooks.yaml", f"--set=webhook.failurePolicy={failure_policy}")
    documents = {d["kind"]: d for d in yaml.safe_load_all(rendered) if d}
    mutating = documents["MutatingWebhookConfiguration"]
    validating = documents["ValidatingWebhookConfiguration"]
    for webhook in mutating["webhooks"]:
        selector = webhook.setdefault("namespaceSelector", {})
        selector.setdefault("matchExpressions", []).append(
            {"key": TIER_LABEL, "operator": "In", "values": [TIER]}
        )
    return mutating, validating


@contextlib.contextmanager
def registered(
    kubectl: harness.Tool, helm: harness.Tool, webhook: Webhook, name: str, failure_policy: str
) -> Iterator[tuple[Manifest, Manifest]]:
    """The chart's configurations, named `name`, calling `webhook`; removed afterwards, so
    no configuration outlives its server (with Fail it would block every later request)."""
    mutating, validating = chart_webhooks(helm, failure_policy)
    mutating["metadata"]["name"] = validating["metadata"]["name"] = name
    try:
        harness.register_webhook(
            kubectl, f"{webhook.url}/mutate", webhook.ca_pem.encode(), mutating
        )
        harness.register_webhook(
            kubectl, f"{webhook.url}/validate", webhook.ca_pem.encode(), validating
        )
        yield mutating, validating
    finally:
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            kubectl("delete", kind, name, "--ignore-not-found", check=False)


def wait_in_force(kubectl: harness.Tool, namespace: str, webhook: Webhook) -> None:
    """Until the API server calls the webhook (a configuration takes about a second): a
    server-side dry run of a labelled Deployment comes back converted. Writes nothing."""

    def converted() -> bool:
        probe = deployment(f"probe-{uuid.uuid4().hex[:6]}", namespace)
        result = kubectl(
            "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(probe)
        )
        return f"{PREFIX}rollout-name" in annotations_of(json.loads(result.stdout))

    eventually(converted, "the API server to call the webhook", webhook)


# --- objects --------------------------------------------------------------------------------


def deployment(
    name: str,
    namespace: str,
    *,
    enabled: str | None = "true",
    replicas: int = 3,
    labels: Mapping[str, str] | None = None,
) -> Manifest:
    meta_labels = {"app": name, **(labels or {})}
    if enabled is not None:
        meta_labels[ENABLED] = enabled
    return builders.deployment(
        name,
        namespace,
        labels=meta_labels,
        replicas=replicas,
        strategy=None,
        image="registry.example/app:1",
    )


def service(name: str, namespace: str, app: str | None = None) -> Manifest:
    return builders.service(
        name, namespace, {"app": app or name}, ports=[{"name": "http", "port": 80}]
    )


def hpa(name: str, namespace: str, target: str, *, low: int = 2, high: int = 5) -> Manifest:
    return builders.hpa(target, namespace, lo=low, hi=high, name=name)


def annotations_of(obj: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("annotations") or {})


def scale_target(obj: Mapping[str, Any] | None) -> tuple[str, str]:
    ref = ((obj or {}).get("spec") or {}).get("scaleTargetRef") or {}
    return str(ref.get("kind")), str(ref.get("name"))


# --- kubectl ----------------------------------------------------------------------------------


def apply(kubectl: harness.Tool, *manifests: Manifest, as_user: str | None = None) -> str:
    """`kubectl apply` of the manifests (one List); returns stderr (the warnings)."""
    body = {"apiVersion": "v1", "kind": "List", "items": list(manifests)}
    user = [f"--as={as_user}"] if as_user else []
    return kubectl("apply", *user, "-f", "-", input=json.dumps(body)).stderr


def get(kubectl: harness.Tool, kind: str, name: str, namespace: str) -> Manifest | None:
    result = kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        if "NotFound" not in result.stderr:
            raise harness.CommandFailed(f"kubectl get {kind} {name}: {result.stderr.strip()}")
        return None
    found: Manifest = json.loads(result.stdout)
    return found


def converted(kubectl: harness.Tool, name: str, namespace: str) -> Manifest | None:
    """The Deployment, once it carries the conversion's annotation and its Rollout exists."""
    stored = get(kubectl, "deployment", name, namespace)
    if annotations_of(stored).get(f"{PREFIX}rollout-name") != name:
        return None
    return stored if get(kubectl, "rollout", name, namespace) is not None else None


def audit_records(path: Path) -> list[dict[str, Any]]:
    """The records on disk so far. The trail is written while it is read: a last line with
    no newline yet is one still being written, and is left for the next read."""
    if not path.exists():
        return []
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


# --- the policy -------------------------------------------------------------------------------


def policy_configmap(document: Mapping[str, Any]) -> Manifest:
    """The chart's policy ConfigMap (the one serve watches) holding `document`."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": POLICY_CONFIGMAP, "namespace": WEBHOOK_NAMESPACE},
        "data": {"policy.yaml": yaml.safe_dump(dict(document))},
    }


def policy_doc(
    steps: list[Manifest], *, updates: str = "nextChange", enabled: bool = True
) -> Manifest:
    """A policy of one environment, staging, the default: canary `steps`, the kill switch
    `enabled`, and `rolloutUpdates: updates`."""
    return {
        "defaultEnvironment": "staging",
        "rolloutUpdates": updates,
        "environments": {
            "staging": {"rollout": {"enabled": enabled, "canary": {"steps": steps}}},
        },
    }


# --- what the controllers that do not run here would write -----------------------------------


def pods_available(kubectl: harness.Tool, name: str, namespace: str) -> None:
    """The Deployment's status as the Deployment controller writes it once every pod of its
    current generation is available (no controller-manager runs in this tier)."""
    stored = get(kubectl, "deployment", name, namespace)
    assert stored is not None
    replicas = stored["spec"]["replicas"]
    status = {
        "observedGeneration": stored["metadata"]["generation"],
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
    }
    kubectl(
        "patch", "deployment", name, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip


def rollout_phase(kubectl: harness.Tool, name: str, namespace: str, phase: str) -> None:
    """The Rollout's phase, as the Argo Rollouts controller would write it."""
    kubectl(
        "patch", "rollout", name, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"phase": phase}}),
    )  # fmt: skip


def finish_orphaning_delete(kubectl: harness.Tool, name: str, namespace: str) -> None:
    """A Rollout deleted with its dependents orphaned waits for the garbage collector (not
    running here) to take the `orphan` finalizer off: do its part."""
    found = get(kubectl, "rollout", name, namespace)
    if found is not None and found["metadata"].get("deletionTimestamp"):
        kubectl(
            "patch", "rollout", name, "-n", namespace, "--type=merge",
            "-p", json.dumps({"metadata": {"finalizers": None}}),
        )  # fmt: skip


def plain(kubectl: harness.Tool, name: str, namespace: str) -> Manifest | None:
    """The Deployment, once it is a plain one again: no Rollout, no conversion annotation."""
    stored = get(kubectl, "deployment", name, namespace)
    if stored is None or f"{PREFIX}rollout-name" in annotations_of(stored):
        return None
    return stored if get(kubectl, "rollout", name, namespace) is None else None


def opting_out(kubectl: harness.Tool, name: str, namespace: str, replicas: int) -> bool:
    """Step 1 of the opt-out done: the Rollout leaves the Deployment alone and the
    Deployment has its replicas back."""
    rollout = get(kubectl, "rollout", name, namespace)
    stored = get(kubectl, "deployment", name, namespace)
    return (
        rollout is not None
        and stored is not None
        and rollout["spec"]["workloadRef"].get("scaleDown") == "never"
        and stored["spec"]["replicas"] == replicas
    )


def steps_of(kubectl: harness.Tool, name: str, namespace: str) -> list[Any] | None:
    rollout = get(kubectl, "rollout", name, namespace)
    if rollout is None:
        return None
    steps: list[Any] = ((rollout["spec"].get("strategy") or {}).get("canary") or {}).get(
        "steps"
    ) or []
    return steps


def reconcile_failures(webhook: Webhook) -> list[str]:
    """The log lines of failed reconcile passes."""
    if not webhook.log_path.exists():
        return []
    return [
        line
        for line in webhook.log_path.read_text(errors="replace").splitlines()
        if "reconcile " in line and " failed" in line and not line.startswith("{")
    ]
