"""A real Kubernetes control plane for the end-to-end tier: etcd plus kube-apiserver.

Started the way controller-runtime's envtest does it, on free loopback ports with data in a
temporary directory, but with production-like security so that what passes here passes in a
cluster: client-certificate authentication against a generated CA, RBAC authorization (the
admin certificate is in system:masters), and real service-account signing keys. Nothing else
runs: there is no controller-manager, scheduler or kubelet, so Deployments are stored but no
Pods appear.

Every process runs in its own process group and is stopped with its group on teardown and on a
failed start; through the kernel's parent-death signal it is also killed if the test run dies.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from tests.e2e import pki

START_ATTEMPTS = 3
START_TIMEOUT = 90.0  # seconds; a cold kube-apiserver on 2 busy cores needs ~10-20
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.25
LOG_TAIL_LINES = 25

# The CRDs the product's objects must validate against; shared data, never copied here.
CRD_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "crds"


class ControlPlaneError(Exception):
    """The control plane could not be started; the message holds the process's log tail."""


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports.

    Bind-and-release, as envtest does. All probes stay bound until every port is chosen, so the
    ports differ from each other; another program may still take one before our server binds
    it, which start() survives by retrying on "address already in use".
    """
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            probe = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            probe.bind(("127.0.0.1", 0))
            ports.append(int(probe.getsockname()[1]))
        return ports


def _parent_death_prefix() -> list[str]:
    """A command prefix that has the kernel SIGKILL the child when the test run dies.

    So a crashed or killed pytest leaves no etcd or apiserver behind. setpriv (util-linux, on
    every Debian) sets PR_SET_PDEATHSIG and execs the server, which keeps it; a preexec_fn
    would do the same but is unsafe once the test run has threads. Without setpriv the
    teardown alone stops the processes.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


@dataclass
class ManagedProcess:
    """A child process in its own process group, with its output in a log file."""

    name: str
    argv: Sequence[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*_parent_death_prefix(), *self.argv],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def stop(self) -> None:
        """Terminate the whole process group, then kill it if it lingers."""
        if self.process is not None:
            pgid = self.process.pid  # start_new_session makes the child its group's leader
            # Signalled as a group while the leader is not yet reaped, so the group id cannot
            # have been reused by an unrelated process.
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if self.process.poll() is not None:
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=STOP_TIMEOUT)
        if self._log is not None:
            self._log.close()
            self._log = None


def _wait_until(
    process: ManagedProcess, ready: Any, what: str, timeout: float = START_TIMEOUT
) -> None:
    deadline = time.monotonic() + timeout
    last_error = "not tried"
    while time.monotonic() < deadline:
        if not process.alive():
            raise ControlPlaneError(
                f"{process.name} exited while waiting for {what}; log {process.log_path}:\n"
                + process.log_tail()
            )
        try:
            if ready():
                return
            last_error = "not ready"
        except (OSError, urllib.error.URLError) as error:
            last_error = str(error)
        time.sleep(POLL_INTERVAL)
    raise ControlPlaneError(
        f"{process.name}: {what} not reached in {timeout:.0f}s ({last_error}); "
        f"log {process.log_path}:\n{process.log_tail()}"
    )


@dataclass
class ControlPlane:
    """etcd and kube-apiserver in `workdir`; use as a context manager or start()/stop()."""

    etcd_binary: Path
    apiserver_binary: Path
    workdir: Path
    host: str = "127.0.0.1"
    processes: list[ManagedProcess] = field(default_factory=list)
    apiserver_port: int = 0
    credentials: pki.ControlPlanePki | None = None
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.apiserver_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def ca_pem(self) -> bytes:
        assert self.credentials is not None, "control plane not started"
        return self.credentials.ca.cert_pem

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._start()
                return
            except ControlPlaneError as error:
                self.stop()  # a half-started plane leaves nothing running
                if "address already in use" not in str(error) or attempt == START_ATTEMPTS:
                    raise
                # A port we picked was taken meanwhile: start afresh on new ports.
                shutil.rmtree(self.workdir / "etcd", ignore_errors=True)
            except BaseException:
                self.stop()
                raise

    def stop(self) -> None:
        # The API server first, so it does not log a storm of etcd connection errors.
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.credentials = pki.generate(datetime.datetime.now(datetime.UTC))
        self.files = self.credentials.write(self.workdir / "pki")
        self.files.update(_write_webhook_client(self.workdir / "pki"))

        etcd_client_url = self._start_etcd()
        # Chosen once etcd holds its ports, so it cannot pick one of theirs.
        (self.apiserver_port,) = free_ports(1)
        apiserver = ManagedProcess(
            "kube-apiserver",
            self._apiserver_argv(etcd_client_url),
            self.workdir / "kube-apiserver.log",
        )
        self.processes.append(apiserver)
        apiserver.start()
        context = self.ssl_context()
        _wait_until(apiserver, lambda: self._get("/readyz", context) == b"ok", "/readyz")
        self._write_kubeconfig()

    def _start_etcd(self) -> str:
        client_port, peer_port = free_ports(2)
        client_url = f"http://{self.host}:{client_port}"
        peer_url = f"http://{self.host}:{peer_port}"
        etcd = ManagedProcess(
            "etcd",
            [
                str(self.etcd_binary),
                "--name=e2e",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=e2e={peer_url}",
                # Test data is thrown away; skipping fsync keeps a shared disk out of the way.
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            self.workdir / "etcd.log",
        )
        self.processes.append(etcd)
        etcd.start()

        def healthy() -> bool:
            with urllib.request.urlopen(f"{client_url}/health", timeout=2) as response:
                body: dict[str, str] = json.loads(response.read())
                return body.get("health") == "true"

        _wait_until(etcd, healthy, "/health")
        return client_url

    def _apiserver_argv(self, etcd_url: str) -> list[str]:
        f = self.files
        return [
            str(self.apiserver_binary),
            f"--etcd-servers={etcd_url}",
            f"--bind-address={self.host}",
            f"--advertise-address={self.host}",
            f"--secure-port={self.apiserver_port}",
            f"--tls-cert-file={f['serving.crt']}",
            f"--tls-private-key-file={f['serving.key']}",
            f"--client-ca-file={f['ca.crt']}",
            "--authorization-mode=RBAC",
            # Webhooks that ask for a client certificate get one (serve --client-ca).
            f"--admission-control-config-file={f['admission.yaml']}",
            f"--service-account-issuer={self.url}",
            f"--service-account-key-file={f['sa.pub']}",
            f"--service-account-signing-key-file={f['sa.key']}",
            "--service-cluster-ip-range=10.0.0.0/24",
            # No kubelet or endpoints controller: the kubernetes Service's endpoints would
            # otherwise be reconciled against a port nothing else can reach.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            "--v=1",
        ]

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.files["ca.crt"]))
        context.load_cert_chain(str(self.files["admin.crt"]), str(self.files["admin.key"]))
        return context

    def _get(self, path: str, context: ssl.SSLContext) -> bytes:
        with urllib.request.urlopen(f"{self.url}{path}", context=context, timeout=5) as response:
            body: bytes = response.read()
            return body

    def get_json(self, path: str) -> Any:
        """GET a path of the API as the admin; for checks that need no client library."""
        return json.loads(self._get(path, self.ssl_context()))

    def _write_kubeconfig(self) -> None:
        assert self.credentials is not None

        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "e2e",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": b64(self.credentials.ca.cert_pem),
                    },
                }
            ],
            "users": [
                {
                    "name": "e2e-admin",
                    "user": {
                        "client-certificate-data": b64(self.credentials.admin.cert_pem),
                        "client-key-data": b64(self.credentials.admin.key_pem),
                    },
                }
            ],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e-admin"}}],
            "current-context": "e2e",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)


def token_kubeconfig(plane: ControlPlane, user: str, token: str) -> dict[str, Any]:
    """A kubeconfig for the plane that authenticates as ``user`` with a bearer token (a
    ServiceAccount's, from `kubectl create token`)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "e2e",
                "cluster": {
                    "server": plane.url,
                    "certificate-authority-data": base64.b64encode(plane.ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": user}}],
        "current-context": "e2e",
    }


class CommandFailed(AssertionError):
    """A kubectl or helm command failed; the message has its command line and stderr."""


@dataclass(frozen=True)
class Tool:
    """A command-line tool bound to the test cluster: call it like `kubectl("get", "ns")`."""

    binary: Path
    env: Mapping[str, str]
    base_args: Sequence[str] = ()

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        command = [str(self.binary), *self.base_args, *args]
        result = subprocess.run(
            command,
            input=input,
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            shown = " ".join([self.binary.name, *args])
            raise CommandFailed(f"`{shown}` exited {result.returncode}: {result.stderr.strip()}")
        return result


def kubectl_tool(binary: Path, kubeconfig: Path, cache_dir: Path) -> Tool:
    # A private discovery cache: nothing in ~/.kube is read or written.
    return Tool(binary, {"KUBECONFIG": str(kubeconfig)}, ("--cache-dir", str(cache_dir)))


def helm_tool(binary: Path, kubeconfig: Path, home: Path) -> Tool:
    env = {
        "KUBECONFIG": str(kubeconfig),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    return Tool(binary, env)


def install_crds(kubectl: Tool, crd_dir: Path = CRD_DIR) -> list[str]:
    """Create every CRD of `crd_dir` server-side and wait until each is Established.

    Server-side apply, because several of these CRDs are larger than the 256 KiB annotation
    that client-side apply would write. Returns the CRD names.
    """
    files = sorted(crd_dir.glob("*.yaml"))
    if not files:
        raise ControlPlaneError(f"no CRD files in {crd_dir.resolve()} (the shared/crds folder)")
    names = []
    for file in files:
        document = yaml.safe_load(file.read_text())
        names.append(document["metadata"]["name"])
    kubectl("apply", "--server-side", "--field-manager=e2e-harness", "-f", str(crd_dir))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in names))
    return names


def register_webhook(
    kubectl: Tool, url: str, ca_pem: bytes, manifest: Mapping[str, Any]
) -> dict[str, Any]:
    """Register a (Mutating|Validating)WebhookConfiguration that calls `url`.

    `manifest` is the configuration as a dict, written as for a cluster; every webhook in it gets
    `clientConfig: {url, caBundle}` (any `service` reference is replaced), so the API server
    calls a server the test runs on loopback. Applied server-side; returns the object as
    stored. The API server picks a new configuration up within about a second; a test that
    needs it in force should retry its first request until the webhook answers.
    """
    kind = manifest.get("kind")
    if kind not in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        raise ValueError(f"register_webhook: kind {kind!r} is not a webhook configuration")
    configured = json.loads(json.dumps(manifest))  # deep copy; the caller's dict stays as it was
    configured.setdefault("apiVersion", "admissionregistration.k8s.io/v1")
    ca_bundle = base64.b64encode(ca_pem).decode()
    webhooks = configured.get("webhooks") or []
    if not webhooks:
        raise ValueError("register_webhook: the manifest has no webhooks")
    for webhook in webhooks:
        webhook["clientConfig"] = {"url": url, "caBundle": ca_bundle}
    result = kubectl(
        "apply",
        "--server-side",
        "--field-manager=e2e-harness",
        "-o",
        "json",
        "-f",
        "-",
        input=json.dumps(configured),
    )
    stored: dict[str, Any] = json.loads(result.stdout)
    return stored


@contextlib.contextmanager
def running_control_plane(
    etcd_binary: Path, apiserver_binary: Path, workdir: Path
) -> Iterator[ControlPlane]:
    plane = ControlPlane(etcd_binary, apiserver_binary, workdir)
    with plane:
        yield plane


def _write_webhook_client(directory: Path) -> dict[str, Path]:
    """The API server's webhook client certificate, as docs/security.md#mutual-tls has an
    admin configure it: an AdmissionConfiguration whose WebhookAdmissionConfiguration kubeconfig gives
    the certificate to every webhook host ("*": the tests' webhooks listen on loopback
    ports chosen at run time). A webhook that asks for no client certificate gets none."""
    credentials = pki.webhook_client(datetime.datetime.now(datetime.UTC))
    paths = {
        name: directory / name
        for name in (
            "webhook-client-ca.crt",
            "webhook-client.crt",
            "webhook-client.key",
            "webhook-clients.yaml",
            "admission.yaml",
        )
    }
    paths["webhook-client-ca.crt"].write_bytes(credentials.ca.cert_pem)
    paths["webhook-client.crt"].write_bytes(credentials.client.cert_pem)
    paths["webhook-client.key"].write_bytes(credentials.client.key_pem)
    paths["webhook-client.key"].chmod(0o600)
    user = {
        "client-certificate": str(paths["webhook-client.crt"]),
        "client-key": str(paths["webhook-client.key"]),
    }
    clients = {"apiVersion": "v1", "kind": "Config", "users": [{"name": "*", "user": user}]}
    paths["webhook-clients.yaml"].write_text(json.dumps(clients))
    plugin = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "WebhookAdmissionConfiguration",
        "kubeConfigFile": str(paths["webhook-clients.yaml"]),
    }
    admission = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [
            {"name": name, "configuration": plugin}
            for name in ("MutatingAdmissionWebhook", "ValidatingAdmissionWebhook")
        ],
    }
    paths["admission.yaml"].write_text(json.dumps(admission))
    return paths
