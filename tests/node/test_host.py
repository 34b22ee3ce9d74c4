"""tests/node/host.py's own logic: which mounts and cgroups the teardown undoes, in what order."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.node import host

STATE = Path("/var/tmp/rollout-webhook-node")

MOUNTINFO = """\
22 1 0:20 / / rw - ext4 /dev/vda rw
30 22 0:25 / /var/tmp/rollout-webhook-node/work/kubelet rw shared:1 - ext4 /dev/vda rw
31 30 0:26 / /var/tmp/rollout-webhook-node/work/kubelet/pods/a/volumes/x/token rw - tmpfs tmpfs rw
32 30 0:26 / /var/tmp/rollout-webhook-node/work/kubelet/pods/a/volumes/x/token rw - tmpfs tmpfs rw
33 22 0:27 / /var/tmp/rollout-webhook-node-other rw - tmpfs tmpfs rw
34 22 0:28 / /var/tmp/rollout-webhook-node/work/with\\040space rw - tmpfs tmpfs rw
35 22 0:29 / /run/netns/rwnode rw - nsfs nsfs rw
"""


def test_mounts_under_the_state_directory_deepest_first_each_stacked_one_listed() -> None:
    found = host.mounts_under([STATE], MOUNTINFO)
    token = f"{STATE}/work/kubelet/pods/a/volumes/x/token"
    assert found[:2] == [token, token]  # two mounts stacked on one path: two unmounts
    assert set(found[2:]) == {f"{STATE}/work/kubelet", f"{STATE}/work/with space"}


def test_a_sibling_directory_sharing_the_prefix_is_not_the_tier_s() -> None:
    assert f"{STATE}-other" not in host.mounts_under([STATE], MOUNTINFO)


def test_a_recycled_pid_is_never_taken_for_a_recorded_process(tmp_path: Path) -> None:
    state = host.State(tmp_path)
    host.record_process(state, "self", 1)
    record = state.pids / "self.json"
    record.write_text('{"pid": 1, "start": "0"}')  # pid 1 did not start at tick 0
    assert host._recorded_processes(state) == []


@pytest.mark.parametrize("key", host.KUBELET_SYSCTLS)
def test_the_baseline_records_every_setting_the_kubelet_changes(key: str, tmp_path: Path) -> None:
    state = host.State(tmp_path)
    host.record_baseline(state)
    assert key in state.sysctl_baseline.read_text()


def test_a_killed_run_s_leftovers_are_all_undone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a run killed mid-way leaves (a namespace with a veth, cgroups with processes in
    them, a recorded process, stacked mounts, a changed kernel setting) is undone from the
    state directory alone. Own names, so a node running meanwhile is left alone."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    monkeypatch.setattr(host, "NETNS", "rwtest")
    monkeypatch.setattr(host, "HOST_VETH", "rwtest-h")
    monkeypatch.setattr(host, "CGROUP_ROOT", "rollout-webhook-node-test")
    monkeypatch.setattr(host, "KUBELET_SYSCTLS", ("kernel.panic",))
    netns_dir = Path("/run/netns")
    monkeypatch.setattr(host, "HOST_PATHS", () if netns_dir.exists() else (netns_dir,))
    state = host.State(tmp_path / "state")
    host.record_baseline(state)
    panic = (Path("/proc/sys/kernel/panic")).read_text().strip()

    host.run("ip", "netns", "add", "rwtest")
    host.run("ip", "link", "add", "rwtest-h", "type", "veth", "peer", "name", "rwtest-n")
    host.run("ip", "link", "set", "rwtest-n", "netns", "rwtest")
    recorded = subprocess.Popen(["sleep", "600"], start_new_session=True)
    stray = subprocess.Popen(["sleep", "600"], start_new_session=True)
    host.record_process(state, "recorded", recorded.pid)
    for controller in ("memory", "pids"):
        group = host.CGROUP_FS / controller / "rollout-webhook-node-test" / "pod"
        group.mkdir(parents=True)
        (group / "cgroup.procs").write_text(str(stray.pid))
    mount = state.work / "kubelet" / "volume"
    mount.mkdir(parents=True)
    for _ in range(2):
        host.run("mount", "-t", "tmpfs", "tmpfs", str(mount))
    Path("/proc/sys/kernel/panic").write_text(str(int(panic) + 7))

    assert host.leftovers(state)  # the check sees them
    assert host.teardown(state) == []
    assert recorded.wait(timeout=30) != 0
    assert stray.wait(timeout=30) != 0
    assert host.leftovers(state) == []
    assert not (host.CGROUP_FS / "memory" / "rollout-webhook-node-test").exists()
    assert not Path("/sys/class/net/rwtest-h").exists()
    assert not (netns_dir / "rwtest").exists()
    assert Path("/proc/sys/kernel/panic").read_text().strip() == panic
    assert not state.work.exists()
