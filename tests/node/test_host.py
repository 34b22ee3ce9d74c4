"""tests/node/host.py's own logic: which mounts and cgroups the teardown undoes, in what order."""

from __future__ import annotations

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
