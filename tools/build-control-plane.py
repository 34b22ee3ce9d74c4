#!/usr/bin/env python3
"""Build the end-to-end tier's Go programs from Go modules, cached by version.

Without arguments: the control plane (etcd, kube-apiserver). The progressive-delivery tier
names the rest, or the group `rollouts`: kube-controller-manager, kube-scheduler, kwok (fake
nodes and pods), the Argo Rollouts controller and its kubectl plugin, the Gateway API
traffic-router plugin for Argo Rollouts, and Prometheus (which the analysis scenarios query).

Only the Go module proxy is used: each component is built from a small helper module generated
in a temporary directory. Upstream main modules carry `replace` directives that point at sibling
directories of their own repository (Kubernetes' staging tree, etcd's api/client/pkg modules);
those directives are ignored when the module is a dependency, so the helper module re-creates
each one as a replace to the published release of that module. Argo Rollouts instead pins its
Kubernetes libraries with replaces to published versions, which are likewise lost in a
dependency: the helper module copies those lines as they are. Both lists are generated from the
upstream go.mod, never written by hand, so a version bump needs only the constants below.

The Gateway API traffic-router plugin is the exception: the Go module proxy refuses its module,
so it is built from an unmodified release extract kept beside the project
(../shared/upstream/<name>-<version>/, or the directory ROLLOUT_WEBHOOK_UPSTREAM names). The
extract is read-only and never copied into the project: the build runs in a temporary copy.

A built binary lands in <cache>/<component>-<version>/<binary> and is reused as long as it exists.
The cache is ~/.cache/rollout-webhook/bin unless ROLLOUT_WEBHOOK_CACHE names another directory.

Exit status: 0 built or cached; 0 with a message when Go is missing (the end-to-end tests then
skip); 1 when Go is missing under CI=true or when a build fails; 2 for bad usage.
Standard library only: it runs before any virtualenv exists.
"""

# A command-line script: printing is its output, and it runs the Go toolchain it finds.
# ruff: noqa: T201, S603

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ETCD_VERSION = "v3.6.16"
KUBERNETES_VERSION = "v1.35.4"
KWOK_VERSION = "v0.8.0"
# v1.9.3 declares `go 1.26.10`, newer than the machines' Go 1.26.8 (and GOTOOLCHAIN=local
# never downloads another); v1.9.2 declares go 1.24.9 and has the same CRDs as v1.9.1.
ARGO_ROLLOUTS_VERSION = "v1.9.2"
# The Argo Rollouts traffic-router plugin for Gateway API (argoproj-labs/gatewayAPI).
GATEWAYAPI_PLUGIN_VERSION = "v0.15.0"
# Prometheus publishes its Go module as v0.<major><minor>.<patch>: v0.316.0 is Prometheus 3.16.0.
PROMETHEUS_VERSION = "v0.316.0"
# The node tier's Gateway API data plane. The module proxy serves v3.6.12 and v3.7.11-13 of the
# v3 line; v3.7 requires a nested module of its own repository (`dynamic/ext`) that no module zip
# carries, while v3.6.12 builds from published modules alone. It implements Gateway API v1.4.0,
# the version the Argo Rollouts Gateway API plugin v0.15.0 is built against.
TRAEFIK_VERSION = "v3.6.12"
GATEWAY_API_VERSION = "v1.4.0"

# Keep the build gentle on a small shared machine: two compile jobs, two OS threads each.
GO_PARALLELISM = "2"


@dataclass(frozen=True)
class Component:
    name: str
    binary: str
    module: str  # the module whose go.mod holds the requirements and replaces
    version: str
    package: str  # the main package to build
    # Maps a module that upstream replaces with a local directory to its published version.
    replacement_version: Callable[[str], str]
    ldflags: Callable[[str], list[str]]
    # Copy upstream's module-to-module replaces (version pins) into the helper module.
    copy_replaces: bool = False
    # Directories of the module whose files upstream generates at release time (a web UI that a
    # //go:embed pattern takes in). The build then uses a copy of the downloaded module with a
    # placeholder file in each, so the pattern matches; `go build -overlay` cannot do it, as it
    # refuses to replace files in the module cache.
    embed_placeholders: tuple[str, ...] = ()
    # Go build tags (`go build -tags`), e.g. to leave out parts the tests never use.
    build_tags: tuple[str, ...] = ()


def _staging_version(kubernetes_version: str) -> str:
    # Kubernetes publishes each staging module k8s.io/<name> at v0.<minor>.<patch> for v1.<minor>.
    major, minor, patch = kubernetes_version.removeprefix("v").split(".")
    if major != "1":
        raise ValueError(f"unexpected Kubernetes version {kubernetes_version}")
    return f"v0.{minor}.{patch}"


def _kubernetes_ldflags(build_date: str) -> list[str]:
    # The same variables the upstream release build stamps (hack/lib/version.sh), so /version
    # reports the release rather than the v0.0.0-master default.
    _, minor, _ = KUBERNETES_VERSION.removeprefix("v").split(".")
    values = {
        "gitVersion": KUBERNETES_VERSION,
        "gitMajor": "1",
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": build_date,
    }
    flags = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        for key, value in values.items():
            flags.append(f"-X {package}.{key}={value}")
    return flags


def _etcd_ldflags(build_date: str) -> list[str]:
    del build_date
    return ["-X go.etcd.io/etcd/api/v3/version.GitSHA=module-" + ETCD_VERSION]


def _argo_ldflags(build_date: str) -> list[str]:
    # What upstream's Makefile stamps. A tag, a commit and a clean tree make `version` report
    # the tag alone; there is no commit here, so the module version stands in for it.
    package = "github.com/argoproj/argo-rollouts/utils/version"
    return [
        f"-X {package}.version={ARGO_ROLLOUTS_VERSION.removeprefix('v')}",
        f"-X {package}.buildDate={build_date}",
        f"-X {package}.gitCommit=module-{ARGO_ROLLOUTS_VERSION}",
        f"-X {package}.gitTag={ARGO_ROLLOUTS_VERSION}",
        f"-X {package}.gitTreeState=clean",
    ]


def _kwok_ldflags(build_date: str) -> list[str]:
    del build_date
    return [f"-X sigs.k8s.io/kwok/pkg/consts.Version={KWOK_VERSION.removeprefix('v')}"]


def _prometheus_release(module_version: str) -> str:
    # v0.316.0 -> 3.16.0 (the module's minor number is major * 100 + minor).
    _, number, patch = module_version.removeprefix("v").split(".")
    major, minor = divmod(int(number), 100)
    return f"{major}.{minor}.{patch}"


def _prometheus_ldflags(build_date: str) -> list[str]:
    # The variables upstream's release build (.promu.yml) stamps, so `--version` tells the release.
    package = "github.com/prometheus/common/version"
    return [
        f"-X {package}.Version={_prometheus_release(PROMETHEUS_VERSION)}",
        f"-X {package}.Revision=module-{PROMETHEUS_VERSION}",
        f"-X {package}.Branch=HEAD",
        f"-X {package}.BuildDate={build_date}",
    ]


def _traefik_ldflags(build_date: str) -> list[str]:
    package = "github.com/traefik/traefik/v3/pkg/version"
    return [
        f"-X {package}.Version={TRAEFIK_VERSION.removeprefix('v')}",
        f"-X {package}.BuildDate={build_date}",
    ]


def _no_local_replaces(module: str) -> str:
    raise BuildError(f"unexpected local replace of {module} upstream; a new release changed")


COMPONENTS: dict[str, Component] = {
    "etcd": Component(
        name="etcd",
        binary="etcd",
        module="go.etcd.io/etcd/server/v3",
        version=ETCD_VERSION,
        package="go.etcd.io/etcd/server/v3",
        replacement_version=lambda module: ETCD_VERSION,
        ldflags=_etcd_ldflags,
    ),
    "kube-apiserver": Component(
        name="kube-apiserver",
        binary="kube-apiserver",
        module="k8s.io/kubernetes",
        version=KUBERNETES_VERSION,
        package="k8s.io/kubernetes/cmd/kube-apiserver",
        replacement_version=lambda module: _staging_version(KUBERNETES_VERSION),
        ldflags=_kubernetes_ldflags,
    ),
    "kube-controller-manager": Component(
        name="kube-controller-manager",
        binary="kube-controller-manager",
        module="k8s.io/kubernetes",
        version=KUBERNETES_VERSION,
        package="k8s.io/kubernetes/cmd/kube-controller-manager",
        replacement_version=lambda module: _staging_version(KUBERNETES_VERSION),
        ldflags=_kubernetes_ldflags,
    ),
    # kwok fakes kubelets, not the scheduler: Pods need a real one to get a node.
    "kube-scheduler": Component(
        name="kube-scheduler",
        binary="kube-scheduler",
        module="k8s.io/kubernetes",
        version=KUBERNETES_VERSION,
        package="k8s.io/kubernetes/cmd/kube-scheduler",
        replacement_version=lambda module: _staging_version(KUBERNETES_VERSION),
        ldflags=_kubernetes_ldflags,
    ),
    # The node tier's real node: the kubelet runs pods through containerd, kube-proxy programs
    # Services into nftables.
    "kubelet": Component(
        name="kubelet",
        binary="kubelet",
        module="k8s.io/kubernetes",
        version=KUBERNETES_VERSION,
        package="k8s.io/kubernetes/cmd/kubelet",
        replacement_version=lambda module: _staging_version(KUBERNETES_VERSION),
        ldflags=_kubernetes_ldflags,
    ),
    "kube-proxy": Component(
        name="kube-proxy",
        binary="kube-proxy",
        module="k8s.io/kubernetes",
        version=KUBERNETES_VERSION,
        package="k8s.io/kubernetes/cmd/kube-proxy",
        replacement_version=lambda module: _staging_version(KUBERNETES_VERSION),
        ldflags=_kubernetes_ldflags,
    ),
    "kwok": Component(
        name="kwok",
        binary="kwok",
        module="sigs.k8s.io/kwok",
        version=KWOK_VERSION,
        package="sigs.k8s.io/kwok/cmd/kwok",
        replacement_version=_no_local_replaces,
        ldflags=_kwok_ldflags,
        copy_replaces=True,
    ),
    "rollouts-controller": Component(
        name="rollouts-controller",
        binary="rollouts-controller",
        module="github.com/argoproj/argo-rollouts",
        version=ARGO_ROLLOUTS_VERSION,
        package="github.com/argoproj/argo-rollouts/cmd/rollouts-controller",
        replacement_version=_no_local_replaces,
        ldflags=_argo_ldflags,
        copy_replaces=True,
    ),
    "kubectl-argo-rollouts": Component(
        name="kubectl-argo-rollouts",
        binary="kubectl-argo-rollouts",
        module="github.com/argoproj/argo-rollouts",
        version=ARGO_ROLLOUTS_VERSION,
        package="github.com/argoproj/argo-rollouts/cmd/kubectl-argo-rollouts",
        replacement_version=_no_local_replaces,
        ldflags=_argo_ldflags,
        copy_replaces=True,
        # The dashboard's web UI is built by upstream's release (server/static/*); the module
        # holds the empty directory. The plugin's other commands do not need it.
        embed_placeholders=("server/static",),
    ),
    # Scrapes the metrics the analysis tests serve; the Argo Rollouts Prometheus provider queries
    # it. `remove_all_sd` leaves out every service discovery but file and http (static targets
    # are all the tests need), which makes the cold build much smaller; without `builtinassets`
    # the web UI is simply absent, the query API is not.
    "prometheus": Component(
        name="prometheus",
        binary="prometheus",
        module="github.com/prometheus/prometheus",
        version=PROMETHEUS_VERSION,
        package="github.com/prometheus/prometheus/cmd/prometheus",
        replacement_version=_no_local_replaces,
        ldflags=_prometheus_ldflags,
        copy_replaces=True,
        build_tags=("remove_all_sd",),
    ),
    # The node tier's Gateway API implementation: it reads Gateways and HTTPRoutes and proxies
    # to the weighted backends, so a canary's share can be measured through an HTTPRoute.
    "traefik": Component(
        name="traefik",
        binary="traefik",
        module="github.com/traefik/traefik/v3",
        version=TRAEFIK_VERSION,
        package="github.com/traefik/traefik/v3/cmd/traefik",
        replacement_version=_no_local_replaces,
        ldflags=_traefik_ldflags,
        copy_replaces=True,
    ),
}

# Built without arguments: what the end-to-end control plane needs.
DEFAULT_COMPONENTS = ("etcd", "kube-apiserver")
# Names that stand for several components.
GROUPS: dict[str, tuple[str, ...]] = {
    # tests/node: a control plane with one real node (containerd and runc come from Debian)
    # and the Argo Rollouts controller acting on its pods.
    "node": (
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "kube-proxy",
        "rollouts-controller",
        "kubectl-argo-rollouts",
        "traefik",
    ),
    "rollouts": (
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
        "rollouts-controller",
        "kubectl-argo-rollouts",
        "prometheus",
    ),
}


@dataclass(frozen=True)
class SourceComponent:
    """A Go program built from a release extract on disk rather than from the module proxy."""

    name: str
    binary: str
    version: str
    folder: str  # the extract's folder name under the upstream directory
    package: str = "."


SOURCE_COMPONENTS: dict[str, SourceComponent] = {
    "gatewayapi-plugin": SourceComponent(
        name="gatewayapi-plugin",
        binary="gatewayapi-plugin",
        version=GATEWAYAPI_PLUGIN_VERSION,
        folder=f"rollouts-plugin-trafficrouter-gatewayapi-{GATEWAYAPI_PLUGIN_VERSION}",
    ),
}
GROUPS["rollouts"] = (*GROUPS["rollouts"], "gatewayapi-plugin")


@dataclass(frozen=True)
class ModuleFiles:
    """Files a published Go module carries beside its code, copied into the cache as they are."""

    name: str
    module: str
    version: str
    directory: str  # the folder inside the module
    binary: str = "files"  # the cache folder that receives them (named like a binary's file)


MODULE_FILES: dict[str, ModuleFiles] = {
    # The standard channel's CRDs of the Gateway API version Traefik implements: it watches
    # GatewayClasses, Gateways, HTTPRoutes, GRPCRoutes, ReferenceGrants and BackendTLSPolicies,
    # and waits for every one of them to sync before it serves.
    "gateway-api-crds": ModuleFiles(
        name="gateway-api-crds",
        module="sigs.k8s.io/gateway-api",
        version=GATEWAY_API_VERSION,
        directory="config/crd/standard",
    ),
}
# The node tier: the Argo Rollouts controller moves an HTTPRoute's weights through the plugin,
# and Traefik carries the requests.
GROUPS["node"] = (*GROUPS["node"], "gatewayapi-plugin", "gateway-api-crds")

Buildable = Component | SourceComponent | ModuleFiles


class BuildError(Exception):
    """A one-line reason the build cannot go on."""


def cache_dir() -> Path:
    override = os.environ.get("ROLLOUT_WEBHOOK_CACHE")
    base = Path(override) if override else Path.home() / ".cache" / "rollout-webhook"
    return base / "bin"


def binary_path(component: Buildable) -> Path:
    return cache_dir() / f"{component.name}-{component.version}" / component.binary


def find_go() -> str | None:
    explicit = os.environ.get("GO")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    found = shutil.which("go")
    if found:
        return found
    default = Path("/usr/local/go/bin/go")
    return str(default) if default.is_file() else None


# --- go.mod reading ------------------------------------------------------------------------


def _directive_lines(gomod: str, verb: str) -> list[str]:
    """Lines of every `verb (...)` block and single-line `verb x` directive, comments removed."""
    lines: list[str] = []
    inside = False
    for raw in gomod.splitlines():
        line = raw.split("//", 1)[0].strip()
        if not line:
            continue
        if inside:
            if line == ")":
                inside = False
            else:
                lines.append(line)
        elif line == f"{verb} (":
            inside = True
        elif line.startswith(f"{verb} "):
            lines.append(line[len(verb) + 1 :].strip())
    return lines


def required_modules(gomod: str) -> dict[str, str]:
    required: dict[str, str] = {}
    for line in _directive_lines(gomod, "require"):
        parts = line.split()
        if len(parts) == 2:
            required[parts[0]] = parts[1]
    return required


def locally_replaced_modules(gomod: str) -> list[str]:
    """Modules that go.mod replaces with a directory of the same repository and also requires.

    A local replace of a module that is not required (Kubernetes' sample modules, etcd's
    FORBIDDEN_DEPENDENCY guards) has no effect on the build, so it is left out.
    """
    required = required_modules(gomod)
    modules = []
    for line in _directive_lines(gomod, "replace"):
        left, _, right = line.partition("=>")
        target = right.split()
        source = left.split()
        if len(target) == 1 and target[0].startswith(("./", "../")) and source[0] in required:
            modules.append(source[0])
    return sorted(modules)


def version_replaces(gomod: str) -> list[str]:
    """Upstream's `old => new version` replaces (pins to published modules), as written."""
    lines = []
    for line in _directive_lines(gomod, "replace"):
        left, _, right = line.partition("=>")
        if len(right.split()) == 2:
            lines.append(f"{' '.join(left.split())} => {' '.join(right.split())}")
    return lines


def excludes(gomod: str) -> list[str]:
    """Upstream's `exclude` lines; like replaces, they only apply from the main module."""
    return [" ".join(line.split()) for line in _directive_lines(gomod, "exclude")]


def go_directive(gomod: str) -> str:
    match = re.search(r"^go\s+(\S+)\s*$", gomod, re.MULTILINE)
    if not match:
        raise BuildError("upstream go.mod has no go directive")
    return match.group(1)


def godebug_lines(gomod: str) -> list[str]:
    # godebug settings only apply from the main module, so the helper module carries them over.
    return [f"godebug {line}" for line in _directive_lines(gomod, "godebug")]


def helper_gomod(component: Component, upstream_gomod: str) -> str:
    lines = [
        f"module rollout-webhook.build/{component.name}",
        "",
        f"go {go_directive(upstream_gomod)}",
        "",
        *godebug_lines(upstream_gomod),
        "",
        f"require {component.module} {component.version}",
        "",
        "replace (",
    ]
    for module in locally_replaced_modules(upstream_gomod):
        lines.append(f"\t{module} => {module} {component.replacement_version(module)}")
    if component.copy_replaces:
        lines.extend(f"\t{line}" for line in version_replaces(upstream_gomod))
    lines.append(")")
    if component.copy_replaces:
        lines.extend(f"exclude {line}" for line in excludes(upstream_gomod))
    return "\n".join(lines) + "\n"


# --- building ------------------------------------------------------------------------------


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GOFLAGS"] = "-mod=mod -buildvcs=false"
    env["GOMAXPROCS"] = GO_PARALLELISM
    # Never switch toolchains: that would download one, and the machine's Go is the contract.
    env["GOTOOLCHAIN"] = "local"
    env["CGO_ENABLED"] = "0"
    env["GOWORK"] = "off"  # a go.work above the temp dir must not join the build
    return env


def _run(command: list[str], cwd: Path, log: Path) -> str:
    with log.open("a") as sink:
        sink.write("$ " + " ".join(command) + "\n")
        sink.flush()
        result = subprocess.run(
            command, cwd=cwd, env=_go_env(), stdout=subprocess.PIPE, stderr=sink, text=True
        )
    if result.returncode != 0:
        tail = log.read_text().strip().splitlines()[-15:]
        raise BuildError(
            f"`{' '.join(command[:3])} ...` failed (exit {result.returncode}):\n" + "\n".join(tail)
        )
    return result.stdout


def _module_info(go: str, component: Component, workdir: Path, log: Path) -> dict[str, str]:
    out = _run(
        [go, "mod", "download", "-json", f"{component.module}@{component.version}"], workdir, log
    )
    info: dict[str, str] = json.loads(out)
    if "Error" in info:
        raise BuildError(f"{component.module}@{component.version}: {info['Error']}")
    return info


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    # Two runs at once (make and a pytest fixture, say) must not build the same thing twice.
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(go: str, component: Buildable) -> Path:
    target = binary_path(component)
    if target.exists():
        return target
    with _lock(cache_dir() / f".{component.name}-{component.version}.lock"):
        if target.exists():
            return target
        if isinstance(component, ModuleFiles):
            return _copy_module_files(go, component, target)
        started = time.monotonic()
        print(f"building {component.name} {component.version} (cold: minutes)...", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"build-{component.name}-") as tmp:
            workdir = Path(tmp)
            log = workdir / "build.log"
            try:
                if isinstance(component, SourceComponent):
                    staged = _build_from_source(go, component, workdir, log)
                else:
                    staged = _build_in(go, component, workdir, log)
            except BuildError as error:
                # Keep the log where a person can read it after the temp dir is gone.
                kept = cache_dir() / f"{component.name}-{component.version}.build.log"
                shutil.copyfile(log, kept)
                raise BuildError(f"{error}\nfull log: {kept}") from None
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            shutil.copyfile(staged, partial)
            partial.chmod(0o755)
            partial.replace(target)  # atomic: a reader never sees half a binary
        minutes = (time.monotonic() - started) / 60
        print(f"built {target} in {minutes:.1f} min", flush=True)
    return target


def _build_in(go: str, component: Component, workdir: Path, log: Path) -> Path:
    log.touch()
    # go mod download needs a module to run in; an empty one is enough.
    (workdir / "go.mod").write_text("module rollout-webhook.build/probe\n")
    info = _module_info(go, component, workdir, log)
    upstream = Path(info["GoMod"]).read_text()
    gomod = helper_gomod(component, upstream)
    if component.embed_placeholders:
        copy = _copy_with_placeholders(component, Path(info["Dir"]), workdir / "upstream")
        gomod += f"\nreplace {component.module} => ./{copy.name}\n"
    (workdir / "go.mod").write_text(gomod)
    build_date = _release_time(go, component, workdir, log)
    ldflags = " ".join(["-s", "-w", *component.ldflags(build_date)])
    staged = workdir / component.binary
    command = [go, "build", "-p", GO_PARALLELISM, "-trimpath", "-ldflags", ldflags]
    if component.build_tags:
        command += ["-tags", ",".join(component.build_tags)]
    _run([*command, "-o", str(staged), component.package], workdir, log)
    return staged


def _copy_module_files(go: str, files: ModuleFiles, target: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix=f"build-{files.name}-") as tmp:
        workdir = Path(tmp)
        log = workdir / "build.log"
        (workdir / "go.mod").write_text("module rollout-webhook.build/probe\n")
        out = _run(
            [go, "mod", "download", "-json", f"{files.module}@{files.version}"], workdir, log
        )
        info = json.loads(out)
        if "Error" in info:
            raise BuildError(f"{files.module}@{files.version}: {info['Error']}")
        source = Path(info["Dir"]) / files.directory
        if not source.is_dir():
            raise BuildError(f"{files.module}@{files.version} has no {files.directory}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(source, partial, copy_function=shutil.copyfile)
        partial.chmod(0o755)
        partial.replace(target)  # atomic: a reader never sees half of them
    print(f"copied {files.module}@{files.version}/{files.directory} to {target}", flush=True)
    return target


def upstream_dir() -> Path:
    override = os.environ.get("ROLLOUT_WEBHOOK_UPSTREAM")
    if override:
        return Path(override)
    # A clone has the shared folder beside it: <parent>/<clone>/tools/this file.
    return Path(__file__).resolve().parents[2] / "shared" / "upstream"


def source_path(component: SourceComponent) -> Path:
    return upstream_dir() / component.folder


def _build_from_source(go: str, component: SourceComponent, workdir: Path, log: Path) -> Path:
    log.touch()
    source = source_path(component)
    if not (source / "go.mod").is_file():
        raise BuildError(f"{component.name}: no release extract at {source} (go.mod missing)")
    # The extract is read-only and `-mod=mod` may rewrite go.mod/go.sum: build in a copy.
    copy = workdir / "src"
    shutil.copytree(source, copy, copy_function=shutil.copyfile)
    for directory, _, _ in os.walk(copy):
        Path(directory).chmod(0o755)
    for name in ("go.mod", "go.sum"):
        if (copy / name).exists():
            (copy / name).chmod(0o644)
    staged = workdir / component.binary
    command = [go, "build", "-p", GO_PARALLELISM, "-trimpath", "-ldflags", "-s -w"]
    _run([*command, "-o", str(staged), component.package], copy, log)
    return staged


def _copy_with_placeholders(component: Component, module_dir: Path, target: Path) -> Path:
    shutil.copytree(module_dir, target, copy_function=shutil.copyfile)
    # The module cache is read-only and copytree keeps directory modes.
    for directory, _, _ in os.walk(target):
        Path(directory).chmod(0o755)
    for directory in component.embed_placeholders:
        placeholder = target / directory / "placeholder.txt"
        placeholder.parent.mkdir(parents=True, exist_ok=True)
        placeholder.write_text("generated at release time upstream; not part of this build\n")
    return target


def _release_time(go: str, component: Component, workdir: Path, log: Path) -> str:
    out = _run([go, "list", "-m", "-json", f"{component.module}@{component.version}"], workdir, log)
    # The module's publication time, so two builds of one version are byte-identical.
    return str(json.loads(out).get("Time", "1970-01-01T00:00:00Z"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "components",
        nargs="*",
        metavar="COMPONENT",
        help=(
            f"one of {', '.join([*COMPONENTS, *SOURCE_COMPONENTS, *MODULE_FILES, *GROUPS])}; "
            f"default: {' '.join(DEFAULT_COMPONENTS)}"
        ),
    )
    parser.add_argument(
        "--print-paths",
        action="store_true",
        help="print {component: binary path} as JSON and build nothing",
    )
    args = parser.parse_args(argv)
    known_names = {*COMPONENTS, *SOURCE_COMPONENTS, *MODULE_FILES, *GROUPS}
    unknown = [name for name in args.components if name not in known_names]
    if unknown:
        known = ", ".join([*COMPONENTS, *SOURCE_COMPONENTS, *MODULE_FILES, *GROUPS])
        parser.error(f"unknown component {unknown[0]!r}; known: {known}")
    names: list[str] = []
    for name in args.components or DEFAULT_COMPONENTS:
        for member in GROUPS.get(name, (name,)):
            if member not in names:
                names.append(member)
    everything: dict[str, Buildable] = {**COMPONENTS, **SOURCE_COMPONENTS, **MODULE_FILES}
    selected = [everything[name] for name in names]

    if args.print_paths:
        print(json.dumps({c.name: str(binary_path(c)) for c in selected}))
        return 0
    if all(binary_path(c).exists() for c in selected):
        return 0

    go = find_go()
    if go is None:
        message = (
            "Go is not installed, so the control plane for the end-to-end tests cannot be built; "
            "install Go 1.26 or newer (or set GO=/path/to/go) to enable them"
        )
        if os.environ.get("CI") == "true":
            print(f"error: {message}", file=sys.stderr)
            return 1
        print(f"note: {message}; they will skip", file=sys.stderr)
        return 0
    try:
        for component in selected:
            build(go, component)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
