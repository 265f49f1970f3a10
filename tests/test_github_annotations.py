"""GitHub annotations: ``::error file=...,line=...`` for failures, and model output as data.

The lines mtrun prints are read back here the way GitHub's runner reads a
step's output (``actions/runner``, ``ActionCommand.TryParseV2`` and the
legacy ``TryParse``), so the tests see exactly which commands a step would
run: ours, and never one smuggled in by an answer.
"""

from __future__ import annotations

import io
import json
import re
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import LoopbackServer, record

from runner.cli import main
from runner.review.github import (
    Annotation,
    command_lines,
    escape_data,
    escape_property,
    neutralise,
    neutralise_text,
)

REGISTERED = {
    "set-env",
    "set-output",
    "save-state",
    "add-mask",
    "add-path",
    "add-matcher",
    "remove-matcher",
    "debug",
    "warning",
    "error",
    "notice",
    "group",
    "endgroup",
    "echo",
    "stop-commands",
}
"""The commands the runner registers (its command extensions and ``stop-commands``)."""

HOSTILE = (
    "Sure.\n"
    "::set-env name=NODE_OPTIONS::--require /tmp/x.js\n"
    "  ::add-mask::hunter2\n"
    "\u200b::stop-commands::tok\n"
    "::error file=README.md,line=1::fake\n"
    "text ##[error]legacy and #\u200b#[set-output name=a]b\n"
    "\r::warning::after a CR"
)
"""An answer that tries every way into a step's commands."""

CONVERSATION = """\
id: hostile-answers
turns:
  - content: first
  - content: tell me
    expect:
      not_contains: "::"
---
"""


def runner_commands(text: str) -> list[tuple[str, dict[str, str], str]]:
    """The workflow commands GitHub's runner finds in ``text``: (name, properties, data).

    Lines end at CR or LF. Invisible characters are dropped before matching,
    as a culture-sensitive comparison may skip them.
    """
    found = []
    for line in re.split(r"\r\n|\r|\n", text):
        plain = "".join(ch for ch in line if unicodedata.category(ch) not in ("Cf", "Cc"))
        stripped = plain.lstrip()
        end = stripped.find("::", 2)
        if stripped.startswith("::") and end > 0:
            info = stripped[2:end]
            name, _, props = info.partition(" ")
            if name in REGISTERED:
                pairs = (p.split("=", 1) for p in props.split(",") if "=" in p)
                properties = {k: _unescape(v, property=True) for k, v in pairs}
                found.append((name, properties, _unescape(stripped[end + 2 :])))
                continue
        start = plain.find("##[")
        close = plain.find("]", start)
        if start >= 0 and close > start:
            name = plain[start + 3 : close].split(" ")[0]
            if name in REGISTERED:
                found.append((name, {}, plain[close + 1 :]))
    return found


def _unescape(text: str, *, property: bool = False) -> str:
    pairs = [("%0D", "\r"), ("%0A", "\n")]
    if property:
        pairs += [("%3A", ":"), ("%2C", ",")]
    for escaped, plain in [*pairs, ("%25", "%")]:
        text = text.replace(escaped, plain)
    return text


def test_escaping_follows_githubs_rules() -> None:
    assert escape_data("50% done\r\nnext: a, b") == "50%25 done%0D%0Anext: a, b"
    assert escape_property("x.yaml: a, b\n%") == "x.yaml%3A a%2C b%0A%25"


def test_an_annotation_reads_back_as_written() -> None:
    title = "id: turn 2, contains %0A failed"
    message = "missing 'x'\nseen: 100% ::set-env name=a::b"
    (line,) = command_lines([Annotation("error", title, message, "conv/a,b.yaml", 12)])
    assert line.startswith("::error file=conv/a%2Cb.yaml,line=12,title=id%3A turn 2%2C")
    assert runner_commands(line) == [
        ("error", {"file": "conv/a,b.yaml", "line": "12", "title": title}, message)
    ]


@pytest.mark.parametrize(
    "line",
    [
        "::set-env name=A::1",
        "  ::add-mask::secret",
        "\t\u00a0::stop-commands::tok",
        "\u200b\u2060::error::x",
        "+::warning::diff line",
        " ::error::context line of a diff",
        "text ##[error]x",
        "##[set-output name=a;]b",
        "#\u200b#[add-mask]c",
    ],
)
def test_neutralised_lines_are_no_command(line: str) -> None:
    assert runner_commands(line) or line.startswith("+")  # the cases are real commands...
    assert runner_commands(neutralise(line)) == []  # ...until neutralised


def test_neutralise_leaves_ordinary_lines_alone() -> None:
    for line in ("a: b", "see #12 [link]", "  - item", "", "C# [x]", "x :: y"):
        assert neutralise(line) == line
    assert neutralise("::x") == "\\::x"
    assert neutralise("a ##[b") == "a ##\\[b"
    assert neutralise_text("a\n::b\r\n##[c\n") == "a\n\\::b\r\n##\\[c\n"


def test_ten_annotations_of_a_kind_then_one_line_counting_the_rest() -> None:
    errors = [Annotation("error", f"e{i}", "m") for i in range(13)]
    warnings = [Annotation("warning", f"w{i}", "m") for i in range(2)]
    lines = command_lines([*errors, *warnings])
    parsed = [runner_commands(line)[0] for line in lines]
    assert [name for name, _, _ in parsed] == ["error"] * 10 + ["warning"] * 2 + ["notice"]
    assert [props["title"] for _, props, _ in parsed[:10]] == [f"e{i}" for i in range(10)]
    assert parsed[-1][2].startswith("3 more not annotated (GitHub shows 10 of each kind per step)")


def hostile_rules(body: dict[str, Any]) -> tuple[int, Any] | None:
    """Answer the second turn with HOSTILE; fail a turn that says 'break' with a hostile 400."""
    last = body["messages"][-1]["content"]
    if last == "break":
        return 400, {"error": {"message": "bad request\n::add-mask::x\n##[error]y"}}
    if last != "tell me":
        return None
    return 200, {
        "id": "chatcmpl-hostile",
        "object": "chat.completion",
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": HOSTILE},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 40, "total_tokens": 45},
    }


@pytest.fixture
def batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace with conversations/hostile.yaml (turn 2 at line 4) and a failing one."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "conversations"
    folder.mkdir()
    (folder / "hostile.yaml").write_text(CONVERSATION.removesuffix("---\n"))
    (folder / "breaks.yaml").write_text("id: breaks\nturns:\n  - hello\n  - break\n")
    return tmp_path


def invoke(*args: str, **env: str) -> Any:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_a_run_annotates_failed_checks_and_conversations_at_their_turn(batch: Path) -> None:
    with LoopbackServer(hostile_rules) as server:
        result = invoke(
            "--base-url", server.base_url, "-o", "out.jsonl", "-j", "1", "conversations/",
            GITHUB_ACTIONS="true", GITHUB_WORKSPACE=str(batch),
        )  # fmt: skip
    assert result.exit_code == 3, result.stderr
    commands = runner_commands(result.stdout) + runner_commands(result.stderr)
    assert [(name, props) for name, props, _ in commands] == [
        ("error", {"file": "conversations/breaks.yaml", "line": "4",
                   "title": "breaks: failed at turn 2"}),
        ("error", {"file": "conversations/hostile.yaml", "line": "4",
                   "title": "hostile-answers: turn 2: not_contains failed"}),
    ]  # fmt: skip
    failed, check = commands[0][2], commands[1][2]
    assert failed == "HTTP 400: bad request ::add-mask::x ##[error]y"  # data of our command
    assert check == (
        "matched forbidden '::'\nexpected: does not contain '::'\nseen: Sure. "
        "::set-env name=NODE_OPTIONS::--require /tmp/x.js ::add-mask::hunter2 "
        "\\u200b::stop-commands::tok ::error file=README.md,line=1::fake text ##[error]legacy "
        "and #\\u200b#[set-output name=a]b ::warning::after…"
    )


def test_annotations_follow_github_actions_and_the_option(batch: Path) -> None:
    args = ("--mock", "conversations/hostile.yaml")
    summary = batch / "summary.md"
    quiet = invoke(*args, "-o", "a.jsonl", GITHUB_STEP_SUMMARY=str(summary))
    assert runner_commands(quiet.stderr) == [] and not summary.exists()
    off = invoke(*args, "-o", "b.jsonl", "--annotations", "off", GITHUB_ACTIONS="true",
                 GITHUB_STEP_SUMMARY=str(summary))  # fmt: skip
    assert runner_commands(off.stderr) == [] and not summary.exists()
    forced = invoke(*args, "-o", "c.jsonl", "--annotations", "github")
    assert quiet.exit_code == off.exit_code == forced.exit_code == 0
    assert runner_commands(forced.stderr) == []  # nothing failed: nothing to annotate
    assert forced.stderr.splitlines()[-1] == "transcripts: c.jsonl"


def test_files_are_named_relative_to_the_workspace(batch: Path) -> None:
    (batch / "conversations" / "breaks.yaml").unlink()
    with LoopbackServer(hostile_rules) as server:
        result = invoke(
            "--base-url", server.base_url, "-o", "out.jsonl",
            str(batch / "conversations" / "hostile.yaml"),
            "--annotations", "github", GITHUB_WORKSPACE=str(batch),
        )  # fmt: skip
    (command,) = runner_commands(result.stderr)
    assert command[1]["file"] == "conversations/hostile.yaml"


def test_diff_annotates_regressions_and_its_output_injects_nothing(batch: Path) -> None:
    (batch / "conversations" / "breaks.yaml").unlink()
    assert invoke("--mock", "-o", "base.jsonl", "conversations/").exit_code == 0
    with LoopbackServer(hostile_rules) as server:
        invoke("--base-url", server.base_url, "-o", "new.jsonl", "conversations/")
    plain = invoke("diff", "base.jsonl", "new.jsonl", "--no-color")
    assert "::set-env" in plain.stdout and runner_commands(plain.stdout)  # the raw diff would
    result = invoke("diff", "base.jsonl", "new.jsonl", "--no-color", GITHUB_ACTIONS="true")
    assert result.exit_code == 1
    commands = runner_commands(result.stdout) + runner_commands(result.stderr)
    assert [(name, props) for name, props, _ in commands] == [
        ("error", {"file": "conversations/hostile.yaml", "line": "4",
                   "title": "hostile-answers: turn 2: not_contains regressed"}),
    ]  # fmt: skip
    assert len(result.stdout.splitlines()) == len(plain.stdout.splitlines())
    as_json = invoke("diff", "base.jsonl", "new.jsonl", "--json", GITHUB_ACTIONS="true")
    assert runner_commands(as_json.stdout) == []
    unguarded = invoke("diff", "base.jsonl", "new.jsonl", "--json")
    assert json.loads(as_json.stdout) == json.loads(unguarded.stdout)


def test_a_line_written_in_pieces_is_neutralised_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    from runner.cli.github import github_output

    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    with github_output(True, environ={}) as github:
        assert github is not None
        sys.stdout.write("  ")
        sys.stdout.flush()
        sys.stdout.write("::add-mask::x\nok\n##")
        sys.stderr.write("[error]y\n")
        github.annotate(["::notice::ours"])
        sys.stdout.write("[set-output]z")
    assert sys.stdout is out and sys.stderr is err
    assert out.getvalue() == "\\  ::add-mask::x\nok\n##\\[set-output]z"
    assert err.getvalue() == "[error]y\n::notice::ours\n"
    assert runner_commands(out.getvalue() + err.getvalue()) == [("notice", {}, "ours")]


def test_an_invalid_file_is_annotated_at_its_line_and_column(batch: Path) -> None:
    (batch / "conversations" / "typo.yaml").write_text(
        "id: typo\nturns:\n  - content: hi\n    expcet: {}\n"
    )
    result = invoke("validate", "conversations/", GITHUB_ACTIONS="true")
    assert result.exit_code == 2
    (command,) = runner_commands(result.stderr)
    assert command[0] == "error"
    assert command[1] == {"file": "conversations/typo.yaml", "line": "4", "col": "5",
                          "title": "mtrun: invalid conversation file"}  # fmt: skip
    assert command[2].startswith("conversations/typo.yaml:4:5: turns[0].expcet: unknown key")
    run = invoke("--mock", "-o", "x.jsonl", "conversations/", GITHUB_ACTIONS="true")
    assert run.exit_code == 2
    assert [c[1] for c in runner_commands(run.stderr)] == [command[1]]
    assert run.stderr.splitlines()[-1] == "mtrun: error: " + command[2]


def test_conversations_never_started_get_one_warning(batch: Path) -> None:
    (batch / "conversations" / "breaks.yaml").unlink()
    many = "".join(f"  - id: m{i}\n    turns: [hello {i}]\n" for i in range(6))
    (batch / "conversations" / "many.yaml").write_text("conversations:\n" + many)
    result = invoke("--mock", "-j", "1", "--budget-tokens", "50", "-o", "out.jsonl",
                    "conversations/many.yaml", GITHUB_ACTIONS="true")  # fmt: skip
    assert result.exit_code == 3
    warnings = [c for c in runner_commands(result.stderr) if c[0] == "warning"]
    assert warnings[-1][1]["title"].startswith("mtrun: ")
    assert warnings[-1][1]["title"].endswith(" conversations not started")
    assert "budget" in warnings[-1][2]


def test_a_file_outside_the_workspace_gets_no_file_property(batch: Path) -> None:
    (batch / "conversations" / "breaks.yaml").unlink()
    workspace = batch / "workspace"
    workspace.mkdir()
    with LoopbackServer(hostile_rules) as server:
        result = invoke("--base-url", server.base_url, "-o", "out.jsonl", "conversations/",
                        GITHUB_ACTIONS="true", GITHUB_WORKSPACE=str(workspace))  # fmt: skip
    (command,) = runner_commands(result.stderr)
    assert command[1] == {"title": "hostile-answers: turn 2: not_contains failed"}


def test_lines_end_where_the_runner_ends_them() -> None:
    text = "##\u2028[x]\r\n::a\u0085::b\rc"
    assert neutralise_text(text) == "##\u2028\\[x]\r\n\\::a\u0085::b\rc"
    assert runner_commands(neutralise_text(text)) == []


@pytest.mark.parametrize(("recorded", "said"), [(2, "1 conversation"), (1, "2 conversations")])
def test_conversations_no_shard_output_holds_are_counted_in_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: int, said: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conversations").mkdir()
    ids = "".join(f"  - id: c{i}\n    turns: [q{i}]\n" for i in range(3))
    (tmp_path / "conversations" / "a.yaml").write_text("conversations:\n" + ids)
    lines = "".join(json.dumps(record(i)) + "\n" for i in range(recorded))
    (tmp_path / "shard.jsonl").write_text(lines)
    result = invoke("merge", "all.jsonl", "shard.jsonl", "--conversations", "conversations/",
                    GITHUB_ACTIONS="true")  # fmt: skip
    assert result.exit_code == 3
    warning = [c for c in runner_commands(result.stderr) if c[0] == "warning"]
    assert warning == [("warning", {"title": f"mtrun: {said} not started"},
                        "missing from every shard output")]  # fmt: skip
