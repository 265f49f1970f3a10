"""The one reader of transcripts and journals: never a traceback, a hang or an endless line.

Every command that reads a transcript (show, export, report, diff, merge,
--resume, --junit) goes through :func:`runner.transcripts.jsonio.json_lines`; these tests
give each of them the files a stranger could: FIFOs, devices, endless lines,
deep nesting, bad UTF-8.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import record

from runner.cli import main
from runner.errors import OutputError
from runner.transcripts.jsonio import MAX_DEPTH, MAX_LINE_BYTES, json_lines, parse_line
from runner.transcripts.reader import read_transcript
from runner.transcripts.store import TranscriptStore


def line(value: Any) -> bytes:
    return json.dumps(value).encode() + b"\n"


def review_commands(path: Path, tmp_path: Path) -> dict[str, list[str]]:
    """Every review command, reading ``path``."""
    return {
        "show": ["show", "--no-pager", str(path)],
        "export": ["export", str(path)],
        "report": ["report", str(path), "-o", str(tmp_path / "r.html")],
        "diff": ["diff", str(path), str(path)],
        "merge": ["merge", str(tmp_path / "merged.jsonl"), str(path)],
    }


def assert_one_line_exit_2(result: Any, starts: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"mtrun: error: {starts}"), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


# -- the reader ---------------------------------------------------------------------------


def test_lines_are_parsed_numbered_and_the_last_one_marked(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"a": 1}\n\xff\n{"b": ' + b"[" * (MAX_DEPTH + 1) + b"\n[1]")
    lines = list(json_lines(path))
    assert [(x.number, x.offset, x.last, x.whole) for x in lines] == [
        (1, 0, False, True),
        (2, 9, False, True),
        (3, 11, False, True),
        (4, 19 + MAX_DEPTH, True, False),
    ]
    assert lines[0].value == {"a": 1} and lines[3].value == [1]
    assert lines[1].problem == "not UTF-8 at byte 1"
    assert lines[2].problem is not None and lines[2].problem.startswith("not JSON")


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 900, 100_000])
def test_deep_nesting_is_a_problem_of_the_line_not_a_recursion_error(depth: int) -> None:
    text = ("[" * depth + "]" * depth).encode()
    assert parse_line(text) == (None, f"nested deeper than {MAX_DEPTH} levels")
    nested = ('{"a":' * depth + "1" + "}" * depth).encode()
    assert parse_line(nested) == (None, f"nested deeper than {MAX_DEPTH} levels")


def test_nesting_up_to_the_limit_and_brackets_in_strings_are_fine() -> None:
    assert parse_line(("[" * MAX_DEPTH + "]" * MAX_DEPTH).encode())[1] is None
    text = json.dumps({"content": "[" * 5000 + "{" * 5000}).encode()
    assert parse_line(text)[1] is None


def test_odd_text_is_a_problem_or_kept_as_json_says() -> None:
    assert parse_line(b'{"a": "\x00"}')[1] is not None  # a raw control character
    assert parse_line(b'{"a": "\\u0000"}') == ({"a": "\x00"}, None)
    assert parse_line(b'"\xed\xa0\x80"') == (None, "not UTF-8 at byte 2")  # an encoded surrogate
    # Lone surrogates as escapes are kept: mtrun writes them so (see jsonio.dumps_bytes).
    assert parse_line(b'{"a": "\\ud800"}') == ({"a": "\ud800"}, None)
    assert parse_line(b"1" * 5000)[1] == "not JSON: a number too long"
    assert parse_line('{"a": 1}'.encode("utf-16"))[1] == "not UTF-8 at byte 1"


def test_an_endless_line_is_not_held_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "endless.jsonl"
    with open(path, "wb") as fh:
        fh.write(line(record(0)))
        fh.truncate(8 * MAX_LINE_BYTES)  # a sparse file: 512 MiB of NUL bytes, no newline
    tracemalloc.start()
    try:
        lines = list(json_lines(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [x.too_long for x in lines] == [False, True]
    assert lines[1].problem == "longer than 64 MiB" and lines[1].number == 2
    assert peak < 3 * MAX_LINE_BYTES
    with pytest.raises(OutputError, match=r"endless\.jsonl:2: not a valid transcript line "):
        read_transcript(path)
    with pytest.raises(OutputError, match=r"endless\.jsonl:2: not a valid transcript line "):
        TranscriptStore(path, resume=True)


# -- files that are not files -------------------------------------------------------------


def not_files(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    return {"a FIFO": fifo, "a device": Path("/dev/full")}


def test_every_review_command_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    for kind, path in not_files(tmp_path).items():
        for name, args in review_commands(path, tmp_path).items():
            result = CliRunner().invoke(main, args)
            assert_one_line_exit_2(result, f"cannot read {path}: it is {kind}, not a regular file")
            assert not (tmp_path / "merged.jsonl").exists(), name
        with pytest.raises(OutputError, match=f"it is {kind}, not a regular file"):
            read_transcript(path)


def test_resume_refuses_an_output_or_journal_that_is_not_a_regular_file(tmp_path: Path) -> None:
    conversation = tmp_path / "c.yaml"
    conversation.write_text("turns: [Hi]\n")
    for kind, path in not_files(tmp_path).items():
        result = run_cli(tmp_path, "--mock", "--resume", "-o", str(path), str(conversation))
        assert result.returncode == 2, result.stderr
        assert result.stderr == (
            f"mtrun: error: cannot use {path} as the output: it is {kind}, not a regular file\n"
        )
    out = tmp_path / "out.jsonl"
    out.write_bytes(line(record(0, "interrupted")))
    os.mkfifo(tmp_path / "out.jsonl.journal")
    result = run_cli(tmp_path, "--mock", "--resume", "-o", str(out), str(conversation))
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"mtrun: error: cannot read {out}.journal: it is a FIFO, not a regular file\n"
    )


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """mtrun in a process of its own: a reader that blocked would hang only this."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("API_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- corrupt lines through every reader ---------------------------------------------------

CORRUPT = {
    "deep": (b"[" * 100_000, f"nested deeper than {MAX_DEPTH} levels"),
    "deep-but-parsable": (b"[" * 500 + b"]" * 500, f"nested deeper than {MAX_DEPTH} levels"),
    "bad-utf8": (b'{"id": "c9", "status": "\xc3\x28"}', "not UTF-8 at byte 25"),
    "nul": (b'{"id": "c9",\x00 "status": "completed"}', "not JSON"),
}


@pytest.mark.parametrize("name", list(CORRUPT))
def test_a_corrupt_middle_line_is_one_error_naming_it_in_every_reader(
    tmp_path: Path, name: str
) -> None:
    bad, problem = CORRUPT[name]
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(line(record(0)) + bad + b"\n" + line(record(1)))
    expected = f"{path}:2: not a valid transcript line ({problem}"
    for args in review_commands(path, tmp_path).values():
        assert_one_line_exit_2(CliRunner().invoke(main, args), expected)
    conversation = tmp_path / "c.yaml"
    conversation.write_text("conversations: [{id: c0, turns: [q0]}, {id: c1, turns: [q1]}]\n")
    result = run_cli(tmp_path, "--mock", "--resume", "-o", str(path), str(conversation))
    assert result.returncode == 2
    assert result.stderr.startswith(f"mtrun: error: {expected}"), result.stderr
    assert result.stderr.count("\n") == 1


def test_a_deep_torn_last_line_is_cut_like_any_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(line(record(0)) + b"[" * 100_000)
    assert [r["id"] for r in read_transcript(path)] == ["c0"]
    result = CliRunner().invoke(main, ["show", "--no-pager", str(path)])
    assert result.exit_code == 0 and "Traceback" not in result.output
