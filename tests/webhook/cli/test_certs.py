"""`certs generate` and `certs check` through the real entry point, on a temp directory."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from certs import pki
from certs.files import read_bundle_dir, write_bundle_dir
from tests.certs.conftest import T0
from webhook.cli import main as cli_main

NAMES = ["--service", "rollout-webhook", "--namespace", "rollout-system"]


@pytest.fixture(autouse=True)
def only_certs_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    # Other command modules are built in parallel; these tests need only this one.
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ("webhook.cli.certs",))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_main.main(["certs", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_then_check_is_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "tls"
    code, out, err = run(capsys, "generate", *NAMES, "--out", str(out_dir), "--ip", "10.0.0.7")
    assert (code, err) == (0, "")
    assert "rollout-webhook.rollout-system.svc.cluster.local" in out
    assert sorted(p.name for p in out_dir.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
    assert stat.S_IMODE((out_dir / "tls.key").stat().st_mode) == 0o600

    code, out, _ = run(capsys, "check", "--dir", str(out_dir), *NAMES, "--ip", "10.0.0.7")
    assert code == 0
    assert "action: none" in out
    assert "serving certificate expires" in out


def test_check_reports_what_would_be_done(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "generate", *NAMES, "--out", str(tmp_path))
    code, out, _ = run(
        capsys, "check", "--dir", str(tmp_path), *NAMES, "--at", "2100-01-01T00:00:00Z"
    )
    assert code == 1
    assert "action: reissue" in out
    assert "  - the CA expired at" in out

    code, out, _ = run(
        capsys, "check", "--dir", str(tmp_path), "--service", "other", "--namespace", "x"
    )
    assert code == 1
    assert "action: renew-leaf" in out
    assert "lacks SANs: other, other.x, other.x.svc, other.x.svc.cluster.local" in out


def test_check_reads_a_rotation_bundle_with_two_cas(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    b = pki.make_serving_cert(pki.make_ca(T0), "rollout-webhook", "rollout-system", T0)
    staged = pki.apply_action(b, pki.Action.STAGE_CA, "rollout-webhook", "rollout-system", T0)
    write_bundle_dir(staged, tmp_path)
    read = read_bundle_dir(tmp_path)
    assert read.ca_pem == b.ca_pem
    assert read.previous_ca_pems == (staged.next_ca_pem,)
    code, out, _ = run(
        capsys, "check", "--dir", str(tmp_path), *NAMES, "--at", "2030-01-02T00:00:00Z"
    )
    assert code == 0
    assert out.count("also trusted: CN=rollout-webhook CA") == 1


def test_check_of_an_empty_directory_names_every_missing_part(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "check", "--dir", str(tmp_path), *NAMES)
    assert code == 1
    assert "the CA certificate is missing" in out
    assert "the serving certificate is missing" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["generate", "--service", "Bad_Name", "--namespace", "ns", "--out", "{tmp}/o"],
            "service 'Bad_Name' is not a valid DNS label",
        ),
        (["generate", *NAMES, "--ip", "1.2.3", "--out", "{tmp}/o"], "IP address '1.2.3'"),
        (["generate", *NAMES, "--out", "{tmp}/file"], "exists and is not a directory"),
        (["generate", *NAMES, "--out", "{tmp}/full"], "already holds tls.crt"),
        (
            ["check", "--dir", "{tmp}/nowhere", *NAMES],
            "--dir {tmp}/nowhere: directory {tmp}/nowhere does not exist",
        ),
        (
            ["check", "--dir", "{tmp}/full", *NAMES, "--at", "tomorrow"],
            "--at 'tomorrow': not an ISO 8601 time",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "tls.crt").write_text("x")
    code, out, err = run(capsys, *(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert code == 2
    assert err.startswith("rollout-webhook: error: ")
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert err.count("\n") == 1
    assert "Traceback" not in out + err


def test_generate_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "generate", *NAMES, "--out", str(tmp_path))
    before = (tmp_path / "tls.crt").read_text()
    code, _, _ = run(capsys, "generate", *NAMES, "--out", str(tmp_path), "--overwrite")
    assert code == 0
    assert (tmp_path / "tls.crt").read_text() != before
