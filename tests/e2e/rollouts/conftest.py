"""Fixtures of the progressive-delivery scenarios: real controllers beside the control plane.

- `controllers`: kube-controller-manager, kube-scheduler, kwok (two fake nodes) and the Argo
  Rollouts controller, one set for this package (stopped when its last test is done, so the
  rest of the tier keeps its "nothing reconciles" control plane).
- `webhook`: `rollout-webhook serve` as a process, with tests/e2e/rollouts/policy.yaml,
  registered through the chart's own MutatingWebhookConfiguration (rendered by `helm
  template`), narrowed to namespaces labelled `rollout-webhook.io/e2e-tier: rollouts`.
- `prometheus`: a real Prometheus scraping counters the test sets (`prometheus.py`); its
  address goes into the webhook's policy (the environments with a default analysis).
- `rollouts_namespace`: the tier's `namespace`, labelled so the webhook serves it.
- `argo`: `kubectl argo rollouts ...` through the real kubectl and the built plugin.

When a test here fails, every controller's log (and the webhook's) is copied to
$TMPDIR/rollout-webhook-e2e-logs/<time>-<test>/ (or under $ROLLOUT_WEBHOOK_E2E_LOGS), and the
report gets a "controller logs" section naming that directory, with the tail of each log.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import ssl
import sys
import tempfile
import time
import urllib.request
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
import yaml

from certs.files import write_bundle_dir
from certs.pki import self_signed_for_localhost
from tests.e2e import binaries, harness
from tests.e2e.rollouts.controllers import (
    Controllers,
    ControllersError,
    controller_binaries,
)
from tests.e2e.rollouts.prometheus import Prometheus, PrometheusError, ServiceMetrics

HERE = Path(__file__).resolve().parent
POLICY_FILE = HERE / "policy.yaml"
TIER_LABEL = "rollout-webhook.io/e2e-tier"
WEBHOOK_NAMESPACE = "rollout-system"
# The account the server's settings treat as its own (system:serviceaccount:NS:rollout-webhook).
WEBHOOK_ACCOUNT = "rollout-webhook"
CHART = HERE.parents[2] / "helm" / "rollout-webhook"
LOG_TAIL = 15

# Every process this package started, for the failure report.
_PROCESSES: list[harness.ManagedProcess] = []


def _unavailable(message: str) -> NoReturn:
    if binaries.in_ci():
        pytest.fail(f"progressive-delivery tier cannot run under CI=true: {message}", pytrace=False)
    pytest.skip(f"progressive-delivery tier skipped: {message}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report = outcome.get_result()
    if not report.failed or HERE not in item.path.resolve().parents or not _PROCESSES:
        return
    kept = _keep_logs(item.name)
    parts = [f"every log copied to {kept}"]
    for process in _PROCESSES:
        state = "running" if process.alive() else "EXITED"
        tail = "\n".join(process.log_tail().splitlines()[-LOG_TAIL:])
        parts.append(f"--- {process.name} ({state}) {process.log_path.name}\n{tail}")
    report.sections.append(("controller logs", "\n".join(parts)))


def _keep_logs(test_name: str) -> Path:
    """Copy every log as it is now to a directory that outlives pytest's temporary ones.

    pytest keeps only its last three temporary directories; a failure's logs must survive
    the runs that come after it (ROLLOUT_WEBHOOK_E2E_LOGS overrides the place).
    """
    base = Path(os.environ.get("ROLLOUT_WEBHOOK_E2E_LOGS") or tempfile.gettempdir())
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe_name = re.sub(r"[^\w.-]", "_", test_name)
    target = base / "rollout-webhook-e2e-logs" / f"{stamp}-{safe_name}"
    target.mkdir(parents=True, exist_ok=True)
    for process in _PROCESSES:
        with contextlib.suppress(OSError):
            shutil.copyfile(process.log_path, target / process.log_path.name)
    return target


@pytest.fixture(scope="package")
def controllers(
    control_plane: harness.ControlPlane,
    kubectl: harness.Tool,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Controllers]:
    try:
        paths = controller_binaries()
    except binaries.Unavailable as error:
        _unavailable(str(error))
    running = Controllers(control_plane, paths, kubectl, tmp_path_factory.mktemp("controllers"))
    try:
        running.start()
    except ControllersError as error:
        pytest.fail(f"{error}\n(every controller's log: {running.workdir})", pytrace=False)
    _PROCESSES.extend(running.processes)
    yield running
    running.stop()
    _PROCESSES.clear()


@pytest.fixture(scope="package")
def prometheus(
    controllers: Controllers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    metrics = ServiceMetrics()
    metrics.start()
    server = Prometheus(controllers.paths["prometheus"], metrics, tmp_path_factory.mktemp("prom"))
    try:
        server.start()
    except PrometheusError as error:
        metrics.stop()
        pytest.fail(str(error), pytrace=False)
    assert server.process is not None
    _PROCESSES.append(server.process)
    yield server
    server.stop()
    metrics.stop()


def _policy_file(workdir: Path, prometheus_address: str) -> Path:
    """tests/e2e/rollouts/policy.yaml with the tier's Prometheus address in every
    environment's default analysis (its port is chosen at run time)."""
    doc = yaml.safe_load(POLICY_FILE.read_text())
    for env in doc["environments"].values():
        if "prometheus" in (env.get("analysis") or {}):
            env["analysis"]["prometheus"]["address"] = prometheus_address
    path = workdir / "policy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@dataclass(frozen=True)
class WebhookServer:
    url: str
    ca_pem: bytes
    process: harness.ManagedProcess
    audit_file: Path


@pytest.fixture(scope="package")
def webhook(
    control_plane: harness.ControlPlane,
    kubectl: harness.Tool,
    helm: harness.Tool,
    controllers: Controllers,
    prometheus: Prometheus,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WebhookServer]:
    workdir = tmp_path_factory.mktemp("rollout-webhook")
    policy = _policy_file(workdir, prometheus.address)
    bundle = self_signed_for_localhost(datetime.datetime.now(datetime.UTC))
    tls = write_bundle_dir(bundle, workdir / "tls")
    kubeconfig = _webhook_kubeconfig(control_plane, kubectl, helm, workdir)
    (port,) = harness.free_ports(1)
    audit_file = workdir / "audit.jsonl"
    process = harness.ManagedProcess(
        "rollout-webhook",
        [
            str(Path(sys.executable).parent / "rollout-webhook"),
            "serve",
            f"--kubeconfig={kubeconfig}",
            f"--cert-dir={tls.directory}",
            f"--port={port}",
            f"--policy={policy}",
            f"--namespace={WEBHOOK_NAMESPACE}",
            f"--audit-file={audit_file}",
        ],
        workdir / "rollout-webhook.log",
    )
    _PROCESSES.append(process)
    process.start()
    url = f"https://127.0.0.1:{port}"
    context = ssl.create_default_context(cadata=bundle.ca_pem)
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/readyz", context=context, timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        if not process.alive() or time.monotonic() > deadline:
            process.stop()
            pytest.fail(
                f"rollout-webhook serve did not become ready; log {process.log_path}:\n"
                + process.log_tail(),
                pytrace=False,
            )
        time.sleep(0.25)
    stored = harness.register_webhook(
        kubectl, f"{url}/mutate", bundle.ca_pem.encode(), _mutating_configuration(helm)
    )
    yield WebhookServer(url, bundle.ca_pem.encode(), process, audit_file)
    kubectl("delete", "mutatingwebhookconfiguration", stored["metadata"]["name"], check=False)
    process.stop()


def _webhook_kubeconfig(
    plane: harness.ControlPlane, kubectl: harness.Tool, helm: harness.Tool, workdir: Path
) -> Path:
    """Credentials of the chart's ServiceAccount, with the chart's own RBAC.

    As in a cluster, the server's writes then come from its ServiceAccount, which its own
    webhook lets through; with the admin's credentials they would be judged as a user's.
    """
    kubectl("create", "namespace", WEBHOOK_NAMESPACE, check=False)
    rendered = helm(
        "template",
        "rollout-webhook",
        str(CHART),
        f"--namespace={WEBHOOK_NAMESPACE}",
        "--show-only=templates/serviceaccount.yaml",
        "--show-only=templates/rbac.yaml",
        # The reconciler's Lease: the chart creates it and its RBAC only lets it be updated.
        "--show-only=templates/leases.yaml",
    ).stdout
    kubectl("apply", "-f", "-", input=rendered)
    accounts = [
        doc["metadata"]["name"]
        for doc in yaml.safe_load_all(rendered)
        if doc and doc["kind"] == "ServiceAccount"
    ]
    assert accounts == [WEBHOOK_ACCOUNT], f"the chart names its account {accounts}"
    token = kubectl(
        "create", "token", WEBHOOK_ACCOUNT, "-n", WEBHOOK_NAMESPACE, "--duration=12h"
    ).stdout.strip()
    path = workdir / "rollout-webhook.kubeconfig"
    path.write_text(yaml.safe_dump(harness.token_kubeconfig(plane, WEBHOOK_ACCOUNT, token)))
    path.chmod(0o600)
    return path


def _mutating_configuration(helm: harness.Tool) -> dict[str, object]:
    """The chart's MutatingWebhookConfiguration as shipped (every entry, the one for
    `deployments/scale` included), narrowed to the tier's namespaces, with failurePolicy
    Fail (a scenario must not pass on an unconverted object) and 5 s per call, the most the
    chart allows."""
    rendered = helm(
        "template",
        "rollout-webhook",
        str(CHART),
        f"--namespace={WEBHOOK_NAMESPACE}",
        "--show-only=templates/webhooks.yaml",
        "--set=webhook.failurePolicy=Fail",
        "--set=webhook.timeoutSeconds=5",
    ).stdout
    [mutating] = [
        d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "MutatingWebhookConfiguration"
    ]
    mutating["metadata"] = {"name": "rollout-webhook-e2e-rollouts"}
    for hook in mutating["webhooks"]:
        selector = hook.setdefault("namespaceSelector", {})
        selector.setdefault("matchExpressions", []).append(
            {"key": TIER_LABEL, "operator": "In", "values": ["rollouts"]}
        )
    return dict(mutating)


@pytest.fixture
def rollouts_namespace(namespace: str, kubectl: harness.Tool, webhook: WebhookServer) -> str:
    kubectl("label", "namespace", namespace, f"{TIER_LABEL}=rollouts")
    # The API server takes about a second to call a new configuration; a dry-run create of a
    # labelled Deployment shows when the webhook answers for this namespace.
    probe = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "probe",
            "namespace": namespace,
            "labels": {"rollout-webhook.io/enabled": "true"},
        },
        "spec": {
            "selector": {"matchLabels": {"app": "probe"}},
            "template": {
                "metadata": {"labels": {"app": "probe"}},
                "spec": {"containers": [{"name": "app", "image": "example.invalid/probe:1"}]},
            },
        },
    }
    deadline = time.monotonic() + 20
    while True:
        result = kubectl(
            "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(probe)
        )
        annotations = json.loads(result.stdout)["metadata"].get("annotations", {})
        if "rollout-webhook.io/rollout-name" in annotations:
            return namespace
        assert time.monotonic() < deadline, "the webhook never answered for the test namespace"
        time.sleep(0.5)


@pytest.fixture(scope="package")
def argo(
    control_plane: harness.ControlPlane,
    kube_tools: dict[str, Path],
    controllers: Controllers,
) -> harness.Tool:
    """`argo("get", "rollout", "web", "-n", ns)` runs `kubectl argo rollouts get rollout ...`."""
    env = {
        "KUBECONFIG": str(control_plane.kubeconfig),
        "KUBECACHEDIR": str(control_plane.workdir / "kube"),
        **controllers.plugin_path_env(),
    }
    # kubectl finds a plugin only when its name comes first: no flags before "argo".
    return harness.Tool(kube_tools["kubectl"], env, ("argo", "rollouts"))
