"""`rollout-webhook audit`: the table, its filters, `--show`, `--verify`, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.builders import audit_lines, decision_facts, recovered_audit_lines
from webhook.cli.main import main
from webhook.core.audit import WRITES_KIND, ChangeOutcome, DecisionFacts, last_hash, verify_chain


@pytest.fixture
def audit_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    pending = (ChangeOutcome("Rollout", "shop", "web", result="pending"),)
    items: list[DecisionFacts | tuple[DecisionFacts, str]] = [
        decision_facts("u-a", changes_made=pending),
        decision_facts("u-b", namespace="pay", name="api", decision="skip", environment=None),
        (decision_facts("u-a"), WRITES_KIND),  # what became of u-a's writes
        decision_facts("u-c", decision="refuse", dry_run=True, patch=()),
    ]
    path.write_text("\n".join(audit_lines(*items)) + "\n")
    return path


def test_cli_table_and_filters(audit_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(audit_file)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "TIME",
        "OPERATION",
        "KIND",
        "OBJECT",
        "DECISION",
        "ENVIRONMENT",
        "STRATEGY",
        "USER",
    ]
    assert len(out) == 4
    assert "refuse (dry run)" in out[3]
    assert main(["audit", str(audit_file), "--namespace", "pay"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert "pay/api" in out[1]
    assert main(["audit", str(audit_file), "--decision", "convert", "--name", "web"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["audit", str(audit_file), "--since", "2030-01-01T12:01:00Z"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_cli_show_prints_the_patch_as_a_diff(
    audit_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", str(audit_file), "--show", "u-a"]) == 0
    out = capsys.readouterr().out
    assert "decision:     convert: opted in" in out
    assert "+ /metadata/annotations:" in out
    assert "+     rollout-webhook.io/rollout-name: web" in out
    assert "~ /spec/replicas: 0" in out
    assert "apply Rollout shop/web: applied" in out
    assert main(["audit", str(audit_file), "--show", "nope"]) == 1
    assert "no record with uid nope" in capsys.readouterr().err


def test_cli_verify(audit_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(audit_file), "--verify"]) == 0
    assert "4 record(s), chain intact" in capsys.readouterr().out
    lines = audit_file.read_text().splitlines()
    lines[1] = lines[1].replace('"pay"', '"prod"')
    audit_file.write_text("\n".join(lines) + "\n")
    assert main(["audit", str(audit_file), "--verify"]) == 1
    out = capsys.readouterr().out
    assert "chain broken at line 3 (uid u-a)" in out


def test_cli_verify_reports_torn_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text("\n".join(recovered_audit_lines(tmp_path)) + "\n")
    assert main(["audit", str(path), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "line 4 is torn (a crash); the chain continues from the recovery record at line 5" in out
    assert "4 record(s), chain intact" in out  # three decisions and the recovery record
    lines = audit_lines(decision_facts("a"), decision_facts("b"))
    path.write_text(lines[0] + "\n" + lines[1][:50])
    assert main(["audit", str(path), "--verify"]) == 0
    assert "line 2 is torn (the writer stopped in mid-record" in capsys.readouterr().out


@pytest.mark.parametrize(
    "name",
    [
        "web\n2030-01-01 12:00:00  CREATE     Deployment  shop/forged  convert",
        "web\x1b[2J\x1b[31m",
        "web\u202eevil",
    ],
)
def test_cli_output_escapes_control_characters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text(
        "\n".join(audit_lines(decision_facts("a", name=name, reason=f"opted in {name}"))) + "\n"
    )
    assert main(["audit", str(path)]) == 0
    table = capsys.readouterr().out
    assert len(table.splitlines()) == 2
    assert "\x1b" not in table
    assert "\u202e" not in table
    assert main(["audit", str(path), "--show", "a"]) == 0
    shown = capsys.readouterr().out
    assert "\x1b" not in shown
    assert "\u202e" not in shown
    assert (
        "forged"
        not in "".join(line for line in shown.splitlines() if line.startswith("request"))[:0]
    )
    assert sum(line.startswith("2030-01-01 12:00:00") for line in shown.splitlines()) == 0


def test_cli_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(tmp_path / "missing.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "cannot read" in err
    path = tmp_path / "a.jsonl"
    path.write_text("")
    assert main(["audit", str(path), "--since", "yesterday"]) == 2
    assert "--since 'yesterday'" in capsys.readouterr().err


def test_log_lines_mixed_into_the_stream_are_not_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = audit_lines(decision_facts("a"), decision_facts("b"))
    mixed = [
        "2030-01-01 12:00:00,000 INFO webhook.server.runner: serving",
        lines[0],
        "INFO:     Application startup complete.",
        lines[1],
    ]
    assert verify_chain(mixed).broken is None
    assert last_hash(mixed) == last_hash(lines)
    path = tmp_path / "logs.txt"
    path.write_text("\n".join(mixed) + "\n")
    assert main(["audit", str(path)]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 3
    assert captured.err == ""
