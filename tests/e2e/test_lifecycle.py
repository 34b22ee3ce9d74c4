"""The harness's own life cycle: ports, failed starts and teardown leave nothing running.

These start private control planes beside the session one, so they are kept to two.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e import binaries, harness

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def plane_binaries(control_plane: harness.ControlPlane) -> dict[str, Path]:
    # Depends on the session plane so that a machine without Go skips here the same way.
    del control_plane
    return binaries.control_plane_binaries()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers signal 0; its state in /proc tells it apart from a live process.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_a_taken_port_is_retried_and_stop_leaves_no_process(
    plane_binaries: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        real_free_ports = harness.free_ports
        handed_out: list[list[int]] = []

        def first_one_taken(count: int) -> list[int]:
            ports = real_free_ports(count)
            if not handed_out:
                ports[0] = taken  # etcd's client port, on the first attempt only
            handed_out.append(ports)
            return ports

        monkeypatch.setattr(harness, "free_ports", first_one_taken)
        plane = harness.ControlPlane(
            plane_binaries["etcd"], plane_binaries["kube-apiserver"], tmp_path
        )
        with plane:
            pids = [p.process.pid for p in plane.processes if p.process is not None]
            assert len(pids) == 2
            assert plane.get_json("/version")["major"] == "1"
            assert handed_out[0][0] == taken
            assert taken not in handed_out[1]
    assert all(_gone(pid) for pid in pids)
    assert plane.processes == []


class _BrokenApiServer(harness.ControlPlane):
    def _apiserver_argv(self, etcd_url: str) -> list[str]:
        return [*super()._apiserver_argv(etcd_url), "--no-such-flag"]


def test_a_failed_start_says_why_and_stops_etcd(
    plane_binaries: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[harness.ManagedProcess] = []
    real_start = harness.ManagedProcess.start

    def recording_start(self: harness.ManagedProcess) -> None:
        real_start(self)
        started.append(self)

    monkeypatch.setattr(harness.ManagedProcess, "start", recording_start)
    plane = _BrokenApiServer(plane_binaries["etcd"], plane_binaries["kube-apiserver"], tmp_path)
    with pytest.raises(harness.ControlPlaneError, match=r"kube-apiserver exited") as caught:
        plane.start()
    assert "unknown flag: --no-such-flag" in str(caught.value)
    assert [p.name for p in started] == ["etcd", "kube-apiserver"]
    assert all(p.process is not None and _gone(p.process.pid) for p in started)


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    # A shell that forks a grandchild: stopping the shell's group must end both.
    pid_file = tmp_path / "grandchild.pid"
    process = harness.ManagedProcess(
        "sh", ["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], tmp_path / "sh.log"
    )
    process.start()
    deadline = time.monotonic() + 10
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline, "the shell never started its child"
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    assert process.process is not None
    leader = process.process.pid
    process.stop()
    assert _gone(leader)
    deadline = time.monotonic() + 5
    while not _gone(grandchild):  # reaped by init, which may take a moment
        assert time.monotonic() < deadline, f"grandchild {grandchild} outlived stop()"
        time.sleep(0.05)


PARENT_THAT_DIES = """
import os, signal, sys, time
from pathlib import Path
from tests.e2e import harness
process = harness.ManagedProcess("sleep", ["sleep", "60"], Path(sys.argv[1]))
process.start()
pid = process.process.pid
# setpriv arms the parent-death signal before it execs sleep: wait for the exec, as a test run
# is never killed within microseconds of starting a server.
while Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\\0")[0] != b"sleep":
    time.sleep(0.01)
print(pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_a_killed_test_run_leaves_no_process(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PARENT_THAT_DIES, str(tmp_path / "sleep.log")],
        capture_output=True,
        text=True,
        cwd=binaries.REPO,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    orphan = int(result.stdout)
    deadline = time.monotonic() + 5
    while not _gone(orphan):
        assert time.monotonic() < deadline, f"process {orphan} outlived its killed parent"
        time.sleep(0.05)
