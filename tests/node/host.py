"""What the node tier changes on the host, recorded in a state directory and undone from it.

Everything the tier changes is named here: its network namespace (with the veth pair, the pod
bridge, kube-proxy's nftables tables and the routes, all of which go with it), the cgroups under
one root per controller, the mounts under the state directory, the kernel settings the kubelet
insists on, host directories containerd and the kubelet create when they are missing, and the
processes it starts (recorded by pid and start time, so a recycled pid is never signalled).

`teardown(state)` needs nothing but the state directory: the session runs it before starting
(leftovers of a run that was killed) and after its last test, and
`python -m tests.node.host teardown` runs it by hand. It is idempotent.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# One node tier per host: fixed names, guarded by a lock in the state directory.
NETNS = "rwnode"
HOST_VETH = "rwnode-h"
NODE_VETH = "rwnode-n"
CGROUP_ROOT = "rollout-webhook-node"
CGROUP_FS = Path("/sys/fs/cgroup")

# Addresses of the tier's own: nothing else on these machines uses 10.213.0.0/16.
HOST_ADDRESS = "10.213.0.1"  # the host's end of the veth: the API server listens here
NODE_ADDRESS = "10.213.0.2"  # the node's end: the kubelet's node IP
VETH_PREFIX = 30
POD_CIDR = "10.213.1.0/24"
SERVICE_CIDR = "10.213.16.0/20"
KUBERNETES_SERVICE_IP = "10.213.16.1"

# The kubelet sets these (protectKernelDefaults is false); the host gets its values back.
KUBELET_SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
)
# Directories the node's programs create on the host when they are missing (paths fixed in
# their code): removed again if they were not there before.
HOST_PATHS = (
    Path("/run/containerd"),  # containerd 1.6's shim sockets (/run/containerd/s)
    Path("/run/netns"),  # `ip netns add`
    Path("/var/lib/cni"),  # libcni's result cache
    Path("/var/log/containers"),  # the kubelet's links to container logs
    Path(
        "/var/lib/kubelet"
    ),  # the kubelet's device-plugin socket (/var/lib/kubelet/device-plugins)
)

STOP_TIMEOUT = 15.0


def default_state_dir() -> Path:
    return Path(os.environ.get("ROLLOUT_WEBHOOK_NODE_STATE", "/var/tmp/rollout-webhook-node"))


@dataclass(frozen=True)
class State:
    """The state directory and the files in it."""

    root: Path

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def work(self) -> Path:
        """Everything the node's programs write (containerd, kubelet, PKI, configs)."""
        return self.root / "work"

    @property
    def sysctl_baseline(self) -> Path:
        return self.root / "sysctl-baseline.json"

    @property
    def paths_baseline(self) -> Path:
        return self.root / "paths-baseline.json"


@contextlib.contextmanager
def locked(state: State) -> Iterator[None]:
    """Hold the tier's lock: a second session on the same host waits for the first."""
    state.root.mkdir(parents=True, exist_ok=True)
    with (state.root / "lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` exited {result.returncode}: {result.stderr}")
    return result


def in_netns(*command: str) -> list[str]:
    """A command run in the node's network namespace only (nsenter, not `ip netns exec`,
    which also remounts /sys and would hide the cgroup mounts from the kubelet)."""
    return ["nsenter", f"--net=/run/netns/{NETNS}", "--", *command]


# --- recording ---------------------------------------------------------------------------


def _read_sysctl(key: str) -> str:
    return (Path("/proc/sys") / key.replace(".", "/")).read_text().strip()


def _write_sysctl(key: str, value: str) -> None:
    (Path("/proc/sys") / key.replace(".", "/")).write_text(value)


def record_baseline(state: State) -> None:
    """What the host looks like before the tier; kept until a teardown has restored it, so a
    killed run's baseline (the true one) is never overwritten by its leftovers."""
    state.root.mkdir(parents=True, exist_ok=True)
    if not state.sysctl_baseline.exists():
        values = {key: _read_sysctl(key) for key in KUBELET_SYSCTLS}
        state.sysctl_baseline.write_text(json.dumps(values))
    if not state.paths_baseline.exists():
        present = {str(path): path.exists() for path in HOST_PATHS}
        state.paths_baseline.write_text(json.dumps(present))


def process_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields count from the last ")".
    return stat.rsplit(")", 1)[1].split()[19]


def record_process(state: State, name: str, pid: int) -> None:
    state.pids.mkdir(parents=True, exist_ok=True)
    started = process_start_time(pid)
    (state.pids / f"{name}.json").write_text(json.dumps({"pid": pid, "start": started}))


# --- teardown ------------------------------------------------------------------------------


def _recorded_processes(state: State) -> list[int]:
    pids = []
    for record in sorted(state.pids.glob("*.json")) if state.pids.is_dir() else []:
        data = json.loads(record.read_text())
        if data["start"] is not None and process_start_time(data["pid"]) == data["start"]:
            pids.append(int(data["pid"]))
    return pids


def _processes_naming(path: Path) -> list[int]:
    """Processes whose command line names the state directory: containerd's shims, which
    containerd starts in sessions of their own (their parent is init once it exits)."""
    needle = str(path).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def cgroup_dirs() -> list[Path]:
    """Every cgroup of the tier's root, deepest first (the order rmdir needs)."""
    found: list[Path] = []
    if not CGROUP_FS.is_dir():
        return found
    for hierarchy in CGROUP_FS.iterdir():
        root = hierarchy / CGROUP_ROOT
        if root.is_dir():
            found.extend(path for path, _, _ in _walk(root))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _walk(root: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    for directory, dirs, files in os.walk(root):
        yield Path(directory), dirs, files


def _cgroup_processes() -> list[int]:
    pids: set[int] = set()
    for directory in cgroup_dirs():
        with contextlib.suppress(OSError):
            pids.update(int(line) for line in (directory / "cgroup.procs").read_text().split())
    return sorted(pids)


def _signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
    return alive


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def stop_processes(state: State) -> None:
    """The recorded programs (gracefully), then the shims and every process in the cgroups."""
    recorded = _recorded_processes(state)
    _signal_all(recorded, signal.SIGTERM)
    _signal_all(_wait_gone(recorded, STOP_TIMEOUT), signal.SIGKILL)
    _wait_gone(recorded, STOP_TIMEOUT)
    for _ in range(5):
        rest = sorted(set(_processes_naming(state.root)) | set(_cgroup_processes()))
        if not rest:
            break
        _signal_all(rest, signal.SIGKILL)
        _wait_gone(rest, STOP_TIMEOUT)
    if state.pids.is_dir():
        shutil.rmtree(state.pids)


def _unescape(field: str) -> str:
    # /proc/self/mountinfo writes space, tab, newline and backslash as octal escapes.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounts_under(roots: Iterable[Path], mountinfo: str) -> list[str]:
    """Mount points at or under any of `roots`, deepest first, each once per mount."""
    prefixes = [str(root) for root in roots]
    found = []
    for line in mountinfo.splitlines():
        point = _unescape(line.split()[4])
        if any(point == p or point.startswith(p.rstrip("/") + "/") for p in prefixes):
            found.append(point)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def unmount_all(roots: list[Path]) -> list[str]:
    """Unmount everything under `roots` (stacked mounts too); returns what is left."""
    for _ in range(10):
        points = mounts_under(roots, Path("/proc/self/mountinfo").read_text())
        if not points:
            return []
        for point in points:
            run("umount", "--lazy", point, check=False)
    return mounts_under(roots, Path("/proc/self/mountinfo").read_text())


def remove_cgroups() -> list[Path]:
    """rmdir every cgroup of the tier's root (empty by now); returns those that stayed."""
    left = []
    for directory in cgroup_dirs():
        for _ in range(20):
            try:
                directory.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)
        else:
            left.append(directory)
    return left


def remove_network() -> None:
    if (Path("/run/netns") / NETNS).exists():
        run("ip", "netns", "delete", NETNS, check=False)
    # The host end goes with its peer; one left by a failed set-up is deleted by name.
    if Path(f"/sys/class/net/{HOST_VETH}").exists():
        run("ip", "link", "delete", HOST_VETH, check=False)


def restore_host(state: State) -> None:
    if state.sysctl_baseline.exists():
        for key, value in json.loads(state.sysctl_baseline.read_text()).items():
            if _read_sysctl(key) != value:
                _write_sysctl(key, value)
        state.sysctl_baseline.unlink()
    if state.paths_baseline.exists():
        for name, present in json.loads(state.paths_baseline.read_text()).items():
            path = Path(name)
            if present:
                _remove_links_into(path, state.root)
            elif path.exists():
                # `ip netns add` bind-mounts /run/netns onto itself when it creates it.
                unmount_all([path])
                shutil.rmtree(path, ignore_errors=True)
        state.paths_baseline.unlink()


def _remove_links_into(directory: Path, root: Path) -> None:
    """In a host directory that existed before, only the kubelet's links into the state."""
    if directory == Path("/var/log/containers") and directory.is_dir():
        for link in directory.iterdir():
            if link.is_symlink() and str(os.readlink(link)).startswith(str(root)):
                link.unlink()


def teardown(state: State) -> list[str]:
    """Undo everything the tier did; returns what could not be undone (empty when clean)."""
    stop_processes(state)
    problems = [f"mount left: {point}" for point in unmount_all([state.root])]
    problems += [f"cgroup left: {path}" for path in remove_cgroups()]
    remove_network()
    restore_host(state)
    if not problems and state.work.exists():
        shutil.rmtree(state.work, ignore_errors=True)
    problems += leftovers(state)
    return problems


def leftovers(state: State) -> list[str]:
    """Whatever of the tier is still on the host (for the teardown check)."""
    found = [f"process left: {pid}" for pid in _processes_naming(state.root)]
    found += [f"cgroup left: {path}" for path in cgroup_dirs()]
    found += [f"mount left: {point}" for point in mounts_under([state.root], _mountinfo())]
    if (Path("/run/netns") / NETNS).exists():
        found.append(f"network namespace left: {NETNS}")
    if state.paths_baseline.exists():
        found.append("host directories not restored")
    if Path(f"/sys/class/net/{HOST_VETH}").exists():
        found.append(f"link left: {HOST_VETH}")
    if state.sysctl_baseline.exists():
        found.append("kernel settings not restored")
    return found


def _mountinfo() -> str:
    return Path("/proc/self/mountinfo").read_text()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Undo what the node tier did on this host.")
    parser.add_argument("command", choices=("teardown", "leftovers"))
    parser.add_argument("--state", type=Path, default=default_state_dir())
    args = parser.parse_args(argv)
    state = State(args.state)
    with locked(state):
        problems = teardown(state) if args.command == "teardown" else leftovers(state)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
