"""mtrun show and mtrun export from the command line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from runner.cli import main
from runner.transcripts import atomic


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def transcript(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(
        "conversations:\n"
        "  - id: alpha\n    turns: [Hello, Again]\n"
        "  - id: beta\n    turns:\n      - content: Hi\n        expect: {contains: NEVER}\n"
    )
    assert invoke("--mock", "-q", "-o", "t.jsonl", "c.yaml").exit_code == 1
    # A torn last line, as a crash leaves it, must not stop a review.
    with open(tmp_path / "t.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"id": "gamma", "sta')
    return tmp_path / "t.jsonl"


def test_show_renders_every_conversation_without_colour_in_a_pipe(transcript: Path) -> None:
    result = invoke("show", str(transcript))
    assert result.exit_code == 0
    assert "\x1b" not in result.stdout
    lines = result.stdout.splitlines()
    assert any(line.startswith("━━ alpha · completed") for line in lines)
    assert any(line.startswith("━━ beta · checks_failed") for line in lines)
    assert (
        lines[-1]
        == "2 conversations: 1 completed, 1 checks_failed; 3 turns; " + lines[-1].split("; ")[-1]
    )


def test_show_filters(transcript: Path) -> None:
    failed = invoke("show", "--failed", str(transcript)).stdout
    assert "━━ beta" in failed and "━━ alpha" not in failed
    by_id = invoke("show", "--id", "al*", "--turn", "2", str(transcript)).stdout
    assert "━━ alpha" in by_id and "▌ user · turn 2" in by_id and "▌ user · turn 1" not in by_id
    colored = invoke("show", "--color", "--status", "completed", str(transcript)).stdout
    assert "\x1b[" in colored and "━━ beta" not in colored


def test_show_of_a_missing_file_is_exit_2(tmp_path: Path) -> None:
    result = invoke("show", str(tmp_path / "none.jsonl"))
    assert result.exit_code == 2 and result.stderr.startswith("mtrun: error: cannot read")


def test_export_markdown(transcript: Path) -> None:
    result = invoke("export", str(transcript), "--id", "beta")
    assert result.exit_code == 0
    assert result.stdout.startswith("# mtrun transcript: t.jsonl\n")
    assert "## `beta`" in result.stdout and "## `alpha`" not in result.stdout
    assert "❌" in result.stdout


def test_export_never_overwrites(transcript: Path) -> None:
    out = transcript.parent / "t.md"
    assert invoke("export", str(transcript), "-o", str(out)).exit_code == 0
    before = out.read_text()
    again = invoke("export", str(transcript), "-o", str(out))
    assert again.exit_code == 2 and "already exists" in again.stderr
    assert out.read_text() == before
    assert json.loads(transcript.read_text().splitlines()[0])["id"] in ("alpha", "beta")


def test_export_never_overwrites_a_file_created_while_it_writes(
    transcript: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process creating the file after every check was made still wins."""
    out = transcript.parent / "t.md"
    fsync = os.fsync

    def fsync_while_another_process_creates_the_output(fd: int) -> None:
        fsync(fd)
        out.write_text("someone else's\n")

    monkeypatch.setattr(atomic.os, "fsync", fsync_while_another_process_creates_the_output)
    result = invoke("export", str(transcript), "-o", str(out))
    assert result.exit_code == 2
    assert result.stderr.endswith(f"mtrun: error: {out} already exists; choose another -o\n")
    assert out.read_text() == "someone else's\n"
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_show_and_export_warn_about_a_torn_last_line(transcript: Path) -> None:
    for command in ("show", "export"):
        result = invoke(command, str(transcript))
        assert result.exit_code == 0
        assert result.stderr == (
            f"mtrun: warning: {transcript}:3: not a whole transcript line "
            "(torn by a crash?); skipped\n"
        )


def test_report_warns_about_a_file_whose_only_line_is_corrupt(tmp_path: Path) -> None:
    corrupt = write_lines(tmp_path / "c.jsonl", '{"id": "a", "status"')
    result = invoke("report", str(corrupt))
    assert result.exit_code == 0
    assert f"mtrun: warning: {corrupt}:1: not a whole transcript line" in result.stderr


def test_a_whole_file_gives_no_warning(transcript: Path) -> None:
    lines = transcript.read_text(encoding="utf-8").splitlines()[:-1]
    whole = write_lines(transcript.parent / "whole.jsonl", *lines)
    assert invoke("show", str(whole)).stderr == ""


@pytest.mark.parametrize("content", ["", '{"id": "x", "sta', "not json at all"])
def test_diff_against_an_empty_or_unreadable_new_is_an_error(
    transcript: Path, content: str
) -> None:
    new = transcript.parent / "new.jsonl"
    new.write_text(content, encoding="utf-8")
    for extra in ((), ("--json",), ("--fail-on", "never")):
        result = invoke("diff", *extra, str(transcript), str(new))
        assert result.exit_code == 2
        assert result.stdout == ""
        assert result.stderr.splitlines()[-1] == (
            f"mtrun: error: {new}: no conversation in the transcript; nothing to compare"
        )
        if content:
            assert f"mtrun: warning: {new}:1: not a whole transcript line" in result.stderr


def test_diff_fails_when_conversations_vanish(transcript: Path) -> None:
    first = transcript.read_text(encoding="utf-8").splitlines()[0]
    new = write_lines(transcript.parent / "new.jsonl", first)
    result = invoke("diff", str(transcript), str(new))
    assert result.exit_code == 1
    assert "Removed (1, missing from new: regressions)" in result.stdout
    assert invoke("diff", "--fail-on", "never", str(transcript), str(new)).exit_code == 0


def test_the_diff_report_ends_with_a_newline(transcript: Path) -> None:
    """A shell prompt or the next command's output must not run on after the summary."""
    result = invoke("diff", str(transcript), str(transcript))
    assert result.stdout.endswith("removed\n") and not result.stdout.endswith("\n\n")
