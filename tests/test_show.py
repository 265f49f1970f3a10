"""``mtrun show``: selecting records and rendering them for the terminal, safely."""

from __future__ import annotations

import asyncio
import re
import textwrap
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import helpers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.checks.kinds import parse_expect
from runner.review.show import Selection, render_records, select, summary_line, wrap
from runner.review.view import visible
from runner.run.engine import RunConfig, run_batch
from runner.spec.model import Conversation, Turn
from runner.transcripts.reader import read_transcript

USAGE = {"prompt_tokens": 14, "completion_tokens": 120, "total_tokens": 134}
SGR = re.compile(r"\x1b\[[0-9;]*m")


def turn(index: int, message_index: int, **more: Any) -> dict[str, Any]:
    """A turn as the engine writes it: answered in one attempt unless ``more`` says otherwise."""
    return {
        "index": index,
        "message_index": message_index,
        "latency_ms": 812.4,
        "usage": dict(USAGE),
        "finish_reason": "stop",
        "response_id": "chatcmpl-1",
        "attempts": [{"attempt": 1, "outcome": "ok", "status": 200, "latency_ms": 812.4}],
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


def record(
    cid: str, status: str, messages: list[dict[str, Any]], turns: list[Any], **more: Any
) -> dict[str, Any]:
    return {
        "schema": "mtrun.transcript/1",
        "id": cid,
        "source": "convs/geo.yaml",
        "model": "model-a",
        "base_url": "https://api.example.com/v1",
        "status": status,
        "messages": messages,
        "turns": turns,
        "started_at": "2026-11-24T10:15:00.123Z",
        **more,
    }


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


RETRIED = [
    {"attempt": 1, "outcome": "http_429", "status": 429, "retry_after_s": 2.0, "wait_s": 2.13},
    {"attempt": 2, "outcome": "read_timeout", "message": "read timed out", "wait_s": 0.5},
    {"attempt": 3, "outcome": "ok", "status": 200, "latency_ms": 640.0},
]
COMPLETED = record(
    "capital",
    "completed",
    [
        {"role": "system", "content": "Be brief."},
        user("Capital of France?"),
        assistant("Paris.\nIt is on the Seine."),
        user("Population?"),
        assistant("About 2.1 million."),
    ],
    [turn(0, 1, attempts=RETRIED, latency_ms=640.0), turn(1, 3, finish_reason="length")],
    totals={"turns": 2, "total_tokens": 268, "retries": 2},
)
CHECKS_FAILED = record(
    "quiz",
    "checks_failed",
    [user("Capital of France?"), assistant("The capital is Lyon.")],
    [
        turn(
            0,
            0,
            checks=[check(True, kind="max_chars", expected="at most 800 characters"), check(False)],
        )
    ],
)
HTTP_500 = {"kind": "http_500", "status": 500, "message": "HTTP 500: upstream error"}
FAILED = record(
    "broken",
    "failed",
    [user("One?"), assistant("One."), user("Two?")],
    [
        turn(0, 0),
        turn(
            1,
            2,
            latency_ms=None,
            usage=None,
            finish_reason=None,
            error=HTTP_500,
            attempts=[{"attempt": 1, "outcome": "http_500", "status": 500}],
        ),
    ],
    error={"turn": 1, **HTTP_500},
)
INTERRUPTED = record(
    "long#2",
    "interrupted",
    [user("One?"), assistant("One.")],
    [turn(0, 0)],
    error={"kind": "interrupted", "message": "stopped by Ctrl-C"},
    group="long",
    repeat=2,
)
COMPLETED_HEADER = "━━ capital · completed · model model-a · source convs/geo.yaml"
ALL = [COMPLETED, CHECKS_FAILED, FAILED, INTERRUPTED]


def ids(records: list[Any]) -> list[str]:
    return [r["id"] for r in records]


def lines_of(*records: dict[str, Any], **kw: Any) -> list[str]:
    kw.setdefault("color", False)
    return list(render_records(records, **kw))


def test_select_by_id_glob_matches_the_id_or_the_repeat_group() -> None:
    assert ids(select(ALL, Selection(ids=("cap*",)))) == ["capital"]
    assert ids(select(ALL, Selection(ids=("long",)))) == ["long#2"]
    assert ids(select(ALL, Selection(ids=("quiz", "b?oken")))) == ["quiz", "broken"]
    assert ids(select(ALL, Selection(ids=("CAP*",)))) == []
    assert ids(select(ALL, Selection())) == ids(ALL)


def test_select_by_status_and_failed_only() -> None:
    assert ids(select(ALL, Selection(statuses=("failed", "completed")))) == ["capital", "broken"]
    assert ids(select(ALL, Selection(failed_only=True))) == ["quiz", "broken", "long#2"]
    odd = record(
        "odd", "completed", [user("a"), assistant("b")], [turn(0, 0, checks=[check(False)])]
    )
    assert ids(select([COMPLETED, odd], Selection(failed_only=True))) == ["odd"]


def test_select_by_turn_keeps_records_that_have_it() -> None:
    assert ids(select(ALL, Selection(turn=2))) == ["capital", "broken"]
    assert ids(select(ALL, Selection(turn=2, statuses=("failed",)))) == ["broken"]
    with pytest.raises(ValueError, match="turn numbers start at 1"):
        select(ALL, Selection(turn=0))
    with pytest.raises(ValueError, match="turn numbers start at 1"):
        render_records(ALL, color=False, turn=0)  # raised at once, not when iterated


def test_completed_record() -> None:
    assert lines_of(COMPLETED) == [
        COMPLETED_HEADER,
        "   2 turns answered · 268 tokens · 2 retries · https://api.example.com/v1 · "
        "2026-11-24T10:15:00.123Z",
        "",
        "▌ system",
        "    Be brief.",
        "",
        "▌ user · turn 1",
        "    Capital of France?",
        "",
        "▌ assistant",
        "    Paris.",
        "    It is on the Seine.",
        "  » latency 640 ms · tokens 14 prompt / 120 completion",
        "    2 retries: http_429 (waited 2.1s), read_timeout (waited 0.5s) · finish stop",
        "",
        "▌ user · turn 2",
        "    Population?",
        "",
        "▌ assistant",
        "    About 2.1 million.",
        "  » latency 812 ms · tokens 14 prompt / 120 completion · no retries · finish length",
    ]


def test_checks_failed_record_shows_each_check_and_what_was_seen() -> None:
    lines = lines_of(CHECKS_FAILED)
    assert lines[0] == "━━ quiz · checks_failed · model model-a · source convs/geo.yaml"
    assert lines[-4:] == [
        "  ✓ PASS max_chars: at most 800 characters",
        "  ✗ FAIL contains: 'Paris' not found",
        "      expected: contains 'Paris'",
        "      seen:     The capital is Lyon.",
    ]


def test_failed_record_shows_the_error_and_no_answer() -> None:
    lines = lines_of(FAILED)
    at = lines.index("▌ user · turn 2")
    assert lines[at:] == [
        "▌ user · turn 2",
        "    Two?",
        "  » no retries",
        "  ✗ turn 2 failed: http_500 (status 500): HTTP 500: upstream error",
        "",
        "✗ failed at turn 2: http_500 (status 500): HTTP 500: upstream error",
    ]
    assert lines.count("▌ assistant") == 1
    assert lines[1].startswith("   1 turn answered · 134 tokens · 0 retries · ")


def test_interrupted_record_shows_why_and_its_repetition() -> None:
    lines = lines_of(INTERRUPTED)
    assert lines[0] == (
        "━━ long#2 · interrupted · model model-a · source convs/geo.yaml · repeat 2 of long"
    )
    assert lines[-1] == "✗ interrupted: stopped by Ctrl-C"


def test_one_turn_only() -> None:
    lines = lines_of(COMPLETED, FAILED, turn=2)
    assert "▌ system" not in lines and "▌ user · turn 1" not in lines
    assert "    Population?" in lines and "    Two?" in lines
    assert not any(line.startswith("✗ failed") for line in lines)
    assert lines_of(CHECKS_FAILED, turn=2)[-1] == "    (no turn 2 in this conversation)"


def test_colour_only_when_asked() -> None:
    hostile = record("x", "failed", [user("hi"), assistant("\x1b[2Jboom")], [turn(0, 0)])
    plain = "\n".join(lines_of(*ALL, hostile))
    assert "\x1b" not in plain
    coloured = list(render_records([COMPLETED, FAILED], color=True))
    assert coloured[0] == (
        "━━ \x1b[1mcapital\x1b[0m · \x1b[1;32mcompleted\x1b[0m · "
        "model model-a · source convs/geo.yaml"
    )
    assert "\x1b[1;31m✗ failed at turn 2: http_500" in coloured[-1]
    assert SGR.sub("", "\n".join(coloured)) == "\n".join(lines_of(COMPLETED, FAILED))


def test_escapes_and_bidi_controls_are_shown_not_obeyed() -> None:
    reply = (
        "line one\n\x1b]0;pwned\x07\x1b[31mred\x1b[0m\r\n"
        "evil \u202egnp.exe\u2066x\u2069\n\tindented\rback"
    )
    hostile = record(
        "id\x1b[2J", "completed", [user("q\u200f"), assistant(reply)], [turn(0, 0)], model="m\nx"
    )
    for color in (False, True):
        lines = lines_of(hostile, color=color)
        assert all("\x1b" not in SGR.sub("", line) for line in lines)
        assert not any(ch in "".join(lines) for ch in "\u202e\u2066\u2069\u200f\r\x07")
    lines = lines_of(hostile)
    assert lines[0] == "━━ id\\x1b[2J · completed · model m\\nx · source convs/geo.yaml"
    at = lines.index("▌ assistant")
    assert lines[at + 1 : at + 5] == [
        "    line one",
        "    \\x1b]0;pwned\\x07\\x1b[31mred\\x1b[0m",
        "    evil \\u202egnp.exe\\u2066x\\u2069",
        "    \tindented\\rback",
    ]
    assert "    q\\u200f" in lines


def test_visible_keeps_text_and_escapes_the_rest() -> None:
    assert (
        visible("naïve café 日本 👨\u200d👩\u200d👧 a\u00a0b")
        == "naïve café 日本 👨\u200d👩\u200d👧 a\u00a0b"
    )
    assert visible("a\nb\tc") == "a\\nb\\tc"
    assert visible("a\r\nb\tc\x00", multiline=True) == "a\nb\tc\\x00"
    assert visible("\ud800\x9b\u2028\U000e0041") == "\\ud800\\x9b\\u2028\\U000e0041"


def test_records_missing_optional_fields_render() -> None:
    bare = {"id": "bare", "status": "interrupted", "messages": [{"role": "system", "content": "S"}]}
    odd = {
        "id": "odd",
        "status": "strange",
        "messages": [
            user("q"),
            {"content": [{"type": "text", "text": "part one"}, {"type": "input_audio"}]},
            None,
        ],
        "turns": [{"message_index": 0}, {"index": 1, "message_index": 99}, "junk"],
        "totals": None,
        "error": "gave up",
    }
    assert lines_of(bare) == [
        "━━ bare · interrupted",
        "   0 turns answered · 0 tokens · 0 retries",
        "",
        "▌ system",
        "    S",
    ]
    lines = lines_of(odd)
    assert lines[0] == "━━ odd · strange"
    assert "▌ user · turn 2" in lines and "    (message not in the transcript)" in lines
    assert lines[-1] == "✗ strange: gave up"
    empty = record(
        "e",
        "completed",
        [user("q"), assistant(None)],
        [turn(0, 0, extra={"reasoning_content": "think"})],
    )
    lines = lines_of(empty)
    assert lines[-6:-1] == [
        "▌ assistant · reasoning_content",
        "    think",
        "",
        "▌ assistant",
        "    (no content)",
    ]


def test_wrapping_keeps_line_breaks_and_code() -> None:
    prose = " ".join(["word"] * 40)
    reply = f"{prose}\n- {prose}\n\n```\n{'x' * 70}\n```"
    lines = lines_of(
        record("w", "completed", [user("q"), assistant(reply)], [turn(0, 0)]), width=40
    )
    body = lines[lines.index("▌ assistant") + 1 : -1]
    assert all(len(line) <= 40 for line in body)
    assert body[0] == "    " + " ".join(["word"] * 7)
    assert body[6].startswith("    - word") and body[7].startswith("      word")
    code = body.index("    ```")
    assert body[code + 1 : code + 4] == ["    " + "x" * 36, "  ↪ " + "x" * 34, "    ```"]


def test_rendering_is_lazy() -> None:
    def records() -> Iterator[dict[str, Any]]:
        yield COMPLETED
        raise AssertionError("read too far")

    first = list(islice(render_records(records(), color=False), 3))
    assert first == [COMPLETED_HEADER, lines_of(COMPLETED)[1], ""]


def test_summary_line() -> None:
    assert summary_line(ALL) == (
        "4 conversations: 1 completed, 1 checks_failed, 1 failed, 1 interrupted; "
        "5 turns; 670 tokens"
    )
    assert summary_line([]) == "0 conversations; 0 turns; 0 tokens"


def test_a_real_run(tmp_path: Path) -> None:
    expect = parse_expect({"contains": "Paris"}, field="expect", scope="turn")
    conversation = Conversation(
        id="geo",
        source="geo.yaml",
        system="Be brief.",
        turns=(Turn("Hi"), Turn("Paris?", expect=expect)),
    )
    output = tmp_path / "o.jsonl"
    asyncio.run(run_batch([conversation], RunConfig(output=output, base_url="mock://")))
    records = read_transcript(output)
    lines = lines_of(*records)
    assert lines[0] == "━━ geo · completed · model arcee-ai/AFM-4.5B · source geo.yaml"
    assert lines[3:5] == ["▌ system", "    Be brief."]
    assert lines.count("▌ assistant") == 2
    metadata = [line for line in lines if line.startswith("  » ")]
    assert len(metadata) == 2
    assert all(
        re.fullmatch(
            r"  » latency [\d.]+ ms · tokens \d+ prompt / \d+ completion · "
            r"no retries · finish stop",
            m,
        )
        for m in metadata
    )
    assert lines[-1] == "  ✓ PASS contains: contains 'Paris'"
    assert summary_line(records).startswith("1 conversation: 1 completed; 2 turns; ")


@settings(max_examples=500, database=None, derandomize=True, deadline=None)
@given(
    text=st.text(st.sampled_from(["a", "b", " ", "é", "-", "\u200d", "🙂"]), max_size=40)
    | st.lists(st.sampled_from(["word", " ", "  ", "x" * 30, " " * 30]), max_size=8).map("".join),
    width=st.integers(1, 14),
    initial=st.sampled_from(["", "> ", "label: "]),
    subsequent=st.sampled_from(["", "  ", "     "]),
)
def test_wrap_fills_lines_as_textwrap_does(
    text: str, width: int, initial: str, subsequent: str
) -> None:
    room = width + max(len(initial), len(subsequent))
    expected = textwrap.wrap(
        text, room, initial_indent=initial, subsequent_indent=subsequent, break_on_hyphens=False
    )
    assert wrap(text, room, initial=initial, subsequent=subsequent) == expected


@pytest.mark.parametrize(
    "line",
    [
        pytest.param("x" * 5_000_000, id="one word"),
        pytest.param(" " * 5_000_000, id="spaces"),
        pytest.param("\x01" * 1_250_000, id="control characters"),  # each shown as 4
        pytest.param("word " * 1_000_000, id="prose"),
    ],
)
def test_a_five_megabyte_line_is_shown_in_linear_time(line: str) -> None:
    """Before: textwrap copied the rest of an over-long chunk for every line cut from it
    (1 MB of spaces took 4 s, 2 MB 16 s: 30 MB would take an hour). Linear now: no
    timing asserted here, the size is what a quadratic wrap cannot get through."""
    record = {"id": "big", "status": "completed", "messages": [{"role": "user", "content": line}]}
    lines = list(render_records([record], color=False, width=100))
    body = [ln for ln in lines[4:] if ln.strip()]
    shown = visible(line, multiline=True)
    if not shown.strip():
        assert body == ["    (empty)"] or body == []
        return
    assert all(len(ln) <= 100 for ln in body)
    assert "".join(ln[4:] for ln in body).replace(" ", "") == shown.replace(" ", "")


def used(tokens: int) -> dict[str, int]:
    return {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens}


def tried(count: int) -> list[dict[str, Any]]:
    return [{"attempt": n + 1, "outcome": "ok"} for n in range(count)]


def answered_turns(count: int, first_attempts: int) -> dict[str, Any]:
    """A completed record of ``count`` turns of 1 token each; the first took ``first_attempts``."""
    turns = [turn(i, 2 * i, usage=used(1)) for i in range(count)]
    turns[0]["attempts"] = tried(first_attempts)
    messages = [m for i in range(count) for m in (user(f"q{i}"), assistant(f"a{i}"))]
    return record("c", "completed", messages, turns)


@pytest.mark.parametrize(
    ("turns", "attempts", "stats", "retried"),
    [
        (1, 2, "1 turn answered · 1 token · 1 retry", "1 retry: ok"),
        (2, 3, "2 turns answered · 2 tokens · 2 retries", "2 retries: ok, ok"),
        (1_000, 1_001, "1,000 turns answered · 1,000 tokens · 1,000 retries", "1,000 retries: ok"),
    ],
)
def test_a_conversations_counts_are_singular_for_one_and_grouped_when_big(
    turns: int, attempts: int, stats: str, retried: str
) -> None:
    lines = lines_of(answered_turns(turns, attempts))
    assert lines[1].startswith(f"   {stats} · ")
    at = next(i for i, line in enumerate(lines) if line.startswith("  » "))
    facts = " · ".join(line.strip() for line in lines[at : at + 2])  # long ones are wrapped
    assert facts.startswith(f"» latency 812 ms · tokens 1 prompt / 0 completion · {retried}")


def test_the_summary_line_is_singular_for_one_and_grouped_when_big() -> None:
    assert summary_line([answered_turns(1, 1)]) == "1 conversation: 1 completed; 1 turn; 1 token"
    two = [answered_turns(1, 1), answered_turns(1, 1)]
    assert summary_line(two) == "2 conversations: 2 completed; 2 turns; 2 tokens"
    many = [helpers.record(i) for i in range(1_000)]
    assert summary_line(many) == "1,000 conversations: 1,000 completed; 1,000 turns; 0 tokens"
