"""The GitHub job summary: appended to $GITHUB_STEP_SUMMARY, safe Markdown, under 1 MiB.

Summaries are rendered here with ``cmarkgfm``, bindings to GitHub's own
Markdown renderer, with raw HTML allowed so that any HTML that got through
would show; the tests then look at the HTML a reader of the page would get.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import cmarkgfm  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner
from cmarkgfm.cmark import Options  # type: ignore[import-untyped]
from helpers import LoopbackServer, record

from runner.cli import main
from runner.review.github_summary import ROWS_SHOWN, SUMMARY_LIMIT, code, fit, run_summary

HOSTILE = (
    "<script>alert(1)</script> | a | b\n"
    "`tick` ``two`` ![img](https://e.example/x.png) [link](https://e.example) "
    "https://e.example/bare www.e.example &amp; &lt;b&gt; <img src=x onerror=alert(2)> **bold**"
)


def render(markdown: str) -> str:
    """HTML as GitHub renders ``markdown`` (its extensions; raw HTML kept, to see any)."""
    extensions = ["table", "autolink", "strikethrough", "tagfilter"]
    html: str = cmarkgfm.markdown_to_html_with_extensions(
        markdown, options=Options.CMARK_OPT_UNSAFE, extensions=extensions
    )
    return html


def assert_inert(html: str) -> None:
    """No element a hostile answer could have made: script, link, image, raw HTML."""
    for tag in ("<script", "<a ", "<img", "<strong", "<em", "<b>"):
        assert tag not in html, (tag, html)


def test_a_code_cell_shows_hostile_text_as_text() -> None:
    cell = code(HOSTILE, limit=500)
    html = render(f"| h | x |\n|---|---|\n| {cell} | end |\n")
    assert_inert(html)
    (row,) = re.findall(r"<tbody>\s*<tr>(.*?)</tr>", html, re.S)
    cells = re.findall(r"<td>(.*?)</td>", row, re.S)
    assert len(cells) == 2 and cells[1] == "end"  # the pipes did not split the row
    assert cells[0].startswith("<code>&lt;script&gt;alert(1)&lt;/script&gt; | a | b\\n`tick`")
    assert "&amp;amp;" in cells[0]  # an entity in the answer is shown as written


def test_code_spans_survive_backticks_at_the_edges() -> None:
    for text in ("`", "``x``", " lead", "a`b"):
        html = render(code(text))
        assert html.count("<code>") == 1, (text, html)


HOSTILE_CONVERSATION = """\
id: hostile-summary
turns:
  - content: tell me
    expect:
      contains: never said
"""


def hostile(body: dict[str, Any]) -> tuple[int, Any]:
    return 200, {
        "id": "chatcmpl-h",
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
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conversations").mkdir()
    (tmp_path / "conversations" / "h.yaml").write_text(HOSTILE_CONVERSATION)
    return tmp_path


def invoke(*args: str, **env: str) -> Any:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_the_run_appends_its_summary_and_keeps_what_was_there(workspace: Path) -> None:
    summary = workspace / "step_summary.md"
    summary.write_text("# Earlier step output\n")
    with LoopbackServer(hostile) as server:
        result = invoke(
            "--base-url", server.base_url, "-o", "out.jsonl", "conversations/",
            GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(summary),
        )  # fmt: skip
    assert result.exit_code == 1, result.stderr
    text = summary.read_text()
    assert text.startswith("# Earlier step output\n\n## ❌ mtrun: `out.jsonl`\n\n")
    assert "**1 conversation**: 1 with failed checks · 1 turn answered" in text
    html = render(text)
    assert_inert(html[html.index("<table>") :])  # the totals above are ours, bold
    rows = re.findall(r"<tr>(.*?)</tr>", html, re.S)
    cells = re.findall(r"<td>(.*?)</td>", rows[1], re.S)
    assert cells[:3] == ["<code>hostile-summary</code>", "<code>conversations/h.yaml:3</code>", "1"]
    assert cells[3] == "<code>contains</code>: <code>missing 'never said'</code>"
    assert cells[4].startswith("<code>&lt;script&gt;alert(1)&lt;/script&gt; | a | b")


def test_a_summary_too_big_for_github_is_cut_at_a_line_saying_so(workspace: Path) -> None:
    summary = workspace / "step_summary.md"
    summary.write_text("x" * (SUMMARY_LIMIT - 3_000) + "\n")
    batch = "\n".join(
        f"- id: c{i}\n  turns:\n    - content: q{i}\n      expect: {{contains: zzz}}"
        for i in range(100)
    )
    (workspace / "conversations" / "h.yaml").write_text(f"conversations:\n{batch}\n")
    result = invoke("--mock", "-o", "out.jsonl", "conversations/", GITHUB_ACTIONS="true",
                    GITHUB_STEP_SUMMARY=str(summary))  # fmt: skip
    assert result.exit_code == 1
    data = summary.read_bytes()
    assert SUMMARY_LIMIT - 1_000 < len(data) <= SUMMARY_LIMIT
    assert data.startswith(b"x" * (SUMMARY_LIMIT - 3_000) + b"\n\n## ")
    assert data.endswith(
        b"\n\n_The summary was cut here to stay under GitHub's 1024 KiB per step; "
        b"the transcript and the JUnit report have everything._\n"
    )
    assert b"| `c0` |" in data and b"| `c99` |" not in data


def test_fit_cuts_whole_lines_and_gives_up_when_nothing_fits() -> None:
    text = "line one\nline two\nline three\n"
    assert fit(text, 100) == text
    cut = fit(text * 10, 200)
    assert len(cut.encode()) <= 200 and cut.startswith("line one\n")
    assert fit(text * 10, 20) == ""
    wide = fit("é" * 300 + "\n" + "é" * 300, 400)
    assert wide == "\n\n" + wide.split("\n\n", 1)[1]  # no half character, no half line


def test_diff_appends_its_regressions(workspace: Path) -> None:
    summary = workspace / "step_summary.md"
    (workspace / "conversations" / "h.yaml").write_text(
        HOSTILE_CONVERSATION.replace("contains: never said", "not_contains: '<script>'")
    )
    assert invoke("--mock", "-o", "base.jsonl", "conversations/").exit_code == 0
    with LoopbackServer(hostile) as server:
        invoke("--base-url", server.base_url, "-o", "new.jsonl", "conversations/")
    result = invoke("diff", "base.jsonl", "new.jsonl", GITHUB_ACTIONS="true",
                    GITHUB_STEP_SUMMARY=str(summary))  # fmt: skip
    assert result.exit_code == 1
    text = summary.read_text()
    assert text.startswith("## ❌ mtrun diff: `base.jsonl vs new.jsonl`\n\n")
    assert "**1 regressed**, 0 removed, 0 fixed, 0 changed, 0 added, 0 same" in text
    html = render(text)
    assert_inert(html[html.index("<table>") :])  # the totals above are ours, bold
    cells = re.findall(r"<td>(.*?)</td>", re.findall(r"<tr>(.*?)</tr>", html, re.S)[1], re.S)
    assert cells[:3] == ["<code>hostile-summary</code>", "<code>conversations/h.yaml:3</code>", "1"]
    assert cells[3].startswith("<code>not_contains</code> regressed: ")


def totals_line(records: list[dict[str, Any]], not_started: int = 0) -> str:
    """The summary's line of totals, under its heading."""
    return run_summary(records, {}, title="t", not_started=not_started).splitlines()[2]


def test_the_totals_are_singular_for_one_and_grouped_when_big() -> None:
    assert totals_line([record(0)]) == "**1 conversation**: 1 completed · 1 turn answered"
    two = totals_line([record(0), record(1, "checks_failed")])
    assert two == "**2 conversations**: 1 completed, 1 with failed checks · 2 turns answered"
    many = totals_line([record(i) for i in range(1_000)], not_started=1_000)
    assert many == (
        "**2,000 conversations**: 1,000 completed, 1,000 not started · 1,000 turns answered"
    )
    assert totals_line([], not_started=1) == "**1 conversation**: 1 not started · 0 turns answered"


def test_the_rows_left_out_of_the_table_are_counted_in_the_singular_for_one() -> None:
    for more, said in ((1, "1 more row"), (2, "2 more rows")):
        failed = [record(i, "failed") for i in range(ROWS_SHOWN + more)]
        text = run_summary(failed, {}, title="t")
        assert text.endswith(f"\n\n… and {said} (see the transcript).\n")
