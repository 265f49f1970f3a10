"""Markdown export: structure, and model output that cannot break out of its block."""

from __future__ import annotations

import re
from typing import Any

from runner.review.markdown import code, escape_text, fenced, render_markdown

OPENING = re.compile(r"^ {0,3}(`{3,})")
CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`).+?(?<!`)\1(?!`)")


def turn(index: int, message_index: int, **more: Any) -> dict[str, Any]:
    return {
        "index": index,
        "message_index": message_index,
        "latency_ms": 812.4,
        "usage": {"prompt_tokens": 14, "completion_tokens": 120, "total_tokens": 134},
        "finish_reason": "stop",
        "attempts": [{"attempt": 1, "outcome": "ok", "status": 200}],
        **more,
    }


def record(cid: str, status: str, messages: list[Any], turns: list[Any], **more: Any) -> Any:
    return {
        "id": cid,
        "source": "geo.yaml",
        "model": "model-a",
        "status": status,
        "messages": messages,
        "turns": turns,
        **more,
    }


def check(passed: bool, **more: Any) -> dict[str, Any]:
    return {
        "kind": "contains",
        "scope": "turn",
        "passed": passed,
        "expected": "contains 'Paris'",
        "seen": "The capital is Lyon.",
        "message": "" if passed else "'Paris' not found",
        **more,
    }


HOSTILE = (
    "Here you go:\n```python\nprint('hi')\n```\n"
    "# heading\n<script>alert(1)</script>\n"
    "`````\n~~~\n   ````\n@octocat see #1 [x](javascript:alert(1))"
)
HTTP_500 = {"kind": "http_500", "status": 500, "message": "HTTP 500: upstream `error`"}
RECORDS = [
    record(
        "capital",
        "checks_failed",
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": HOSTILE},
        ],
        [turn(0, 1, checks=[check(True, kind="max_chars", expected="at most 800"), check(False)])],
        totals={"turns": 1, "total_tokens": 134, "retries": 0},
    ),
    record(
        "broken",
        "failed",
        [
            {"role": "user", "content": "One?"},
            {"role": "assistant", "content": "One."},
            {"role": "user", "content": "Two?"},
        ],
        [
            turn(0, 0),
            turn(1, 2, latency_ms=None, usage=None, finish_reason=None, error=HTTP_500),
        ],
        error={"turn": 1, **HTTP_500},
    ),
]


def blocks(markdown: str) -> tuple[list[str], list[str]]:
    """The lines outside fenced code blocks and the contents of each block (CommonMark rules)."""
    outside: list[str] = []
    contents: list[str] = []
    fence: str | None = None
    body: list[str] = []
    for line in markdown.split("\n"):
        if fence is None:
            opening = OPENING.match(line)
            if opening:
                fence, body = opening.group(1), []
            else:
                outside.append(line)
        elif re.fullmatch(rf" {{0,3}}`{{{len(fence)},}}\s*", line):
            contents.append("\n".join(body))
            fence = None
        else:
            body.append(line)
    assert fence is None, "a fenced block was left open"
    return outside, contents


def test_structure() -> None:
    markdown = render_markdown(RECORDS, title="Run 42")
    outside, contents = blocks(markdown)
    assert outside[:4] == [
        "# Run 42",
        "",
        "2 conversations: 1 checks\\_failed, 1 failed; 2 turns; 268 tokens",
        "",
    ]
    assert [line for line in outside if line.startswith("#")] == [
        "# Run 42",
        "## `capital`",
        "## `broken`",
    ]
    assert (
        "⚠️ **checks_failed** · model `model-a` · source `geo.yaml` · 1 turn answered · 134 tokens"
    ) in outside
    labels = [line for line in outside if line.startswith("**")]
    assert labels == [
        "**System**",
        "**User** · turn 1",
        "**Assistant**",
        "**User** · turn 1",
        "**Assistant**",
        "**User** · turn 2",
    ]
    assert contents == ["Be brief.", "Capital of France?", HOSTILE, "One?", "One.", "Two?"]
    assert markdown.endswith("\n") and not markdown.endswith("\n\n")
    assert (
        "*Turn 1:* `latency 812 ms · tokens 14 prompt / 120 completion · no retries · finish stop`"
        in outside
    )


def test_hostile_reply_stays_inside_its_block() -> None:
    markdown = render_markdown(RECORDS)
    outside, contents = blocks(markdown)
    assert HOSTILE in contents
    assert "``````text" in markdown.split("\n")  # one more than the longest run, `````
    for line in outside:
        text = CODE_SPAN.sub("", line)
        assert "<" not in text and "@" not in text and "](" not in text, line


def test_check_results() -> None:
    outside, _ = blocks(render_markdown(RECORDS))
    assert "- ✅ `max_chars` expected `at most 800`" in outside
    assert (
        "- ❌ `contains` `'Paris' not found`; expected `contains 'Paris'`, "
        "seen `The capital is Lyon.`"
    ) in outside


def test_failed_turn_shows_its_error() -> None:
    outside, contents = blocks(render_markdown(RECORDS))
    assert (
        "> ❌ **Turn 2 failed:** `` http_500 (status 500): HTTP 500: upstream `error` ``" in outside
    )
    assert outside[-2:] == [
        "> ❌ **Failed at turn 2:** `` http_500 (status 500): HTTP 500: upstream `error` ``",
        "",
    ]
    assert contents[-1] == "Two?"
    assert "*Turn 2:* `no retries`" in outside


def test_untrusted_strings_outside_blocks_are_code_spans() -> None:
    evil = record(
        "<img src=x onerror=alert(1)>`",
        "interrupted",
        [
            {"role": "<b>", "content": "\x1b[31mred\u202e\r\nnext"},
            {"role": "user", "content": None},
        ],
        [],
        model="**bold** @octocat",
        error={"kind": "interrupted", "message": "stopped"},
    )
    outside, contents = blocks(render_markdown([evil], title="<h1>x</h1> #1 *y*"))
    assert outside[0] == "# &lt;h1&gt;x&lt;/h1&gt; \\#1 \\*y\\*"
    assert "## `` <img src=x onerror=alert(1)>` ``" in outside
    assert (
        "⏸️ **interrupted** · model `**bold** @octocat` · source `geo.yaml` · "
        "0 turns answered · 0 tokens" in outside
    )
    assert "`<b>` (history)" in outside and "**User** (history)" in outside
    assert "*(no content)*" in outside
    assert contents == ["\\x1b[31mred\\u202e\nnext"]
    assert outside[-2] == "> ⏸️ **Interrupted:** `stopped`"
    for line in outside:
        assert "<" not in CODE_SPAN.sub("", line).replace("&lt;", ""), line


def test_fences_and_spans() -> None:
    assert fenced("plain") == "```text\nplain\n```"
    assert fenced("a ```` b") == "`````text\na ```` b\n`````"
    assert code("a`b") == "``a`b``"
    assert code("`start") == "`` `start ``"
    assert code("a\nb") == "`a\\nb`"
    assert code("  ") == "*(empty)*"
    assert escape_text("[x](y) <a> _b_ & c") == "\\[x\\](y) &lt;a&gt; \\_b\\_ &amp; c"


def test_records_missing_optional_fields() -> None:
    bare = {"id": "bare", "status": "failed", "messages": [{"role": "user", "content": ["x", 1]}]}
    odd = {"id": "odd", "status": "completed", "messages": [], "turns": [{"extra": {"r": [1]}}]}
    outside, contents = blocks(render_markdown([bare, odd]))
    assert "❌ **failed** · 0 turns answered · 0 tokens" in outside
    assert "**User** · turn 1: *(message not in the transcript)*" in outside
    assert contents == ['"x"\n1', "[\n  1\n]"]


def facts_line(turns: list[Any]) -> str:
    """The line under a conversation's heading: status, turns answered, tokens, retries."""
    markdown = render_markdown([record("c", "completed", [], turns)], title="t")
    (line,) = [line for line in markdown.splitlines() if " answered" in line]
    return line


def used(tokens: int) -> dict[str, int]:
    return {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens}


def tried(count: int) -> list[dict[str, Any]]:
    return [{"attempt": n + 1, "outcome": "ok"} for n in range(count)]


def test_counts_under_a_heading_are_singular_for_one_and_grouped_when_big() -> None:
    one = facts_line([turn(0, 1, usage=used(1), attempts=tried(2))])
    assert one.endswith(" · 1 turn answered · 1 token · 1 retry")
    two = facts_line([turn(i, 2 * i + 1, usage=used(1), attempts=tried(2)) for i in range(2)])
    assert two.endswith(" · 2 turns answered · 2 tokens · 2 retries")
    many = [turn(i, 2 * i + 1, usage=used(1)) for i in range(1_000)]
    many[0]["attempts"] = tried(1_001)
    assert facts_line(many).endswith(" · 1,000 turns answered · 1,000 tokens · 1,000 retries")
