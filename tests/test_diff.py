"""Comparing two runs: pairing, outcomes, deltas, the text report and the JSON document."""

from __future__ import annotations

import difflib
import json
import time
from typing import Any

import pytest

from runner.review.diff import (
    FAIL_ON,
    SCHEMA,
    diff_runs,
    render_json,
    should_fail,
)
from runner.review.diff_text import render_text
from runner.review.similarity import similarity_of
from runner.transcripts.records import ConversationRecord, TurnRecord

USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def check(kind: str, passed: bool, expected: Any = "Paris", **kw: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "scope": "answer",
        "passed": passed,
        "expected": expected,
        "seen": kw.pop("seen", "an answer"),
        "message": kw.pop("message", "ok" if passed else f"{kind} failed"),
    }


def record(
    cid: str,
    answers: list[str | None],
    *,
    status: str = "completed",
    usage: list[dict[str, Any] | None] | None = None,
    latency: list[float | None] | None = None,
    checks: dict[int, list[dict[str, Any]]] | None = None,
    model: str = "model-a",
) -> dict[str, Any]:
    """A transcript record as the engine writes it; a None answer is a turn that failed."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": "Be brief."}]
    turns = []
    error = None
    for i, answer in enumerate(answers):
        turn = TurnRecord(
            index=i,
            message_index=len(messages),
            attempts=[{"attempt": 1, "outcome": "ok", "status": 200}],
            latency_ms=latency[i] if latency else 100.0,
            usage=usage[i] if usage else dict(USAGE),
            checks=(checks or {}).get(i),
        )
        messages.append({"role": "user", "content": f"{cid} question {i + 1}"})
        if answer is None:
            turn.error = {"kind": "http_500", "status": 500, "message": "HTTP 500: upstream error"}
            turn.usage = turn.latency_ms = None
            error = {"turn": i, **turn.error}
        else:
            messages.append({"role": "assistant", "content": answer})
        turns.append(turn)
    return ConversationRecord(
        run_id="20261124T101500Z-3f2a1c",
        id=cid,
        source="convs.yaml",
        model=model,
        base_url="http://127.0.0.1:9/v1",
        params={},
        fingerprint="sha256:0",
        started_at="2026-11-24T10:15:00.123Z",
        status=status,
        messages=messages,
        turns=turns,
        error=error,
    ).as_dict()


ANSWERS = ["Hello.", "Paris is the capital.\nIt is large.\nIt has museums.", "Goodbye."]


def test_identical_runs_have_no_differences() -> None:
    base = [record("a", ANSWERS), record("b", ["Yes."])]
    new = json.loads(json.dumps(base))

    diff = diff_runs(base, new)

    assert [c.outcome for c in diff.conversations] == ["same", "same"]
    assert all(c.first_divergence is None for c in diff.conversations)
    assert all(t.answer is None for c in diff.conversations for t in c.turns)
    assert not any(should_fail(diff, mode) for mode in FAIL_ON)
    assert render_text(diff) == (
        "No differences.\nsummary: 2 same, 0 changed, 0 regressed, 0 fixed, 0 added, 0 removed"
    )


def test_added_and_removed_conversations() -> None:
    base = [record("a", ANSWERS), record("gone", ["Bye."], status="failed")]
    new = [record("a", ANSWERS), record("fresh", ["Hi."])]

    diff = diff_runs(base, new)

    assert [r.id for r in diff.added] == ["fresh"]
    assert [r.id for r in diff.removed] == ["gone"]
    assert diff.summary.added == diff.summary.removed == diff.summary.same == 1
    assert should_fail(diff, "changed")
    assert should_fail(diff, "regressed")  # a vanished conversation is a regression
    assert render_text(diff).splitlines() == [
        "Removed (1, missing from new: regressions)",
        "  - gone (convs.yaml): failed",
        "",
        "Added (1)",
        "  + fresh (convs.yaml): completed",
        "",
        "summary: 1 same, 0 changed, 0 regressed, 0 fixed, 1 added, 1 removed",
    ]


def test_only_added_conversations_do_not_fail_the_default_gate() -> None:
    diff = diff_runs([record("a", ANSWERS)], [record("a", ANSWERS), record("fresh", ["Hi."])])
    assert not should_fail(diff, "regressed") and should_fail(diff, "changed")


def test_every_conversation_vanishing_fails_the_gate() -> None:
    base = [record(f"c{n}", ["Hi."]) for n in range(10)]
    diff = diff_runs(base, [])
    assert diff.summary.removed == 10
    assert should_fail(diff, "regressed") and should_fail(diff, "changed")
    assert not should_fail(diff, "never")


def test_changed_answer_at_turn_two() -> None:
    changed = ["Hello.", "Paris is the capital.\nIt is small.\nIt has museums.", "Goodbye."]
    diff = diff_runs([record("a", ANSWERS)], [record("a", changed)])

    (conversation,) = diff.conversations
    assert conversation.outcome == "changed"
    assert conversation.first_divergence == 1
    turn = conversation.turns[1]
    assert turn.answer is not None
    assert (turn.answer.base, turn.answer.new) == (ANSWERS[1], changed[1])
    expected = difflib.SequenceMatcher(None, ANSWERS[1], changed[1], autojunk=False).ratio()
    assert turn.answer.similarity == round(expected, 3) == 0.92
    assert 0 < turn.answer.similarity < 1
    assert turn.answer.similarity_method == "chars"
    assert [t.answer for t in conversation.turns if t.index != 1] == [None, None]
    assert should_fail(diff, "changed")
    assert not should_fail(diff, "regressed")
    assert render_text(diff).splitlines() == [
        "Changed (1)",
        "",
        "a (convs.yaml)",
        "  answers diverge at turn 2",
        "  turn 2: answer changed, similarity 0.920; tokens +0, latency +0.0 ms",
        "    --- base",
        "    +++ new",
        "    @@ -1,3 +1,3 @@",
        "     Paris is the capital.",
        "    -It is large.",
        "    +It is small.",
        "     It has museums.",
        "  tokens +0 (prompt +0, completion +0), latency +0.0 ms",
        "",
        "summary: 0 same, 1 changed, 0 regressed, 0 fixed, 0 added, 0 removed",
    ]


def test_context_option_sets_unchanged_lines_around_a_change() -> None:
    base = "\n".join(f"line {i}" for i in range(10))
    new = base.replace("line 5", "line five")
    text = render_text(diff_runs([record("a", [base])], [record("a", [new])]), context=1)
    assert "    @@ -5,3 +5,3 @@\n     line 4\n    -line 5\n    +line five\n     line 6\n" in text


def test_status_regression_completed_to_failed() -> None:
    base = [record("a", ANSWERS)]
    new = [record("a", [*ANSWERS[:1], None], status="failed")]

    diff = diff_runs(base, new)

    (conversation,) = diff.conversations
    assert conversation.outcome == "regressed"
    assert (conversation.base_status, conversation.new_status) == ("completed", "failed")
    assert conversation.new_error == {
        "turn": 1,
        "kind": "http_500",
        "status": 500,
        "message": "HTTP 500: upstream error",
    }
    assert conversation.first_divergence == 1
    missing = conversation.turns[1].answer
    assert missing is not None and missing.new is None and missing.similarity is None
    assert conversation.turns[2].answer is not None
    assert conversation.turns[2].answer.new is None
    assert should_fail(diff, "regressed") and should_fail(diff, "changed")
    lines = render_text(diff).splitlines()
    assert lines[:5] == [
        "Regressed (1)",
        "",
        "a (convs.yaml)",
        "  status: completed -> failed (turn 2: http_500: HTTP 500: upstream error)",
        "  answers diverge at turn 2",
    ]
    assert "  turn 2: no answer in new; tokens n/a, latency n/a" in lines
    assert "  turn 3: no answer in new; tokens n/a, latency n/a" in lines
    assert "    -Goodbye." in lines
    assert lines[-1] == "summary: 0 same, 0 changed, 1 regressed, 0 fixed, 0 added, 0 removed"


def test_failed_to_completed_is_a_fix() -> None:
    diff = diff_runs([record("a", ["Hi.", None], status="failed")], [record("a", ["Hi.", "Ok."])])
    assert diff.conversations[0].outcome == "fixed"
    assert diff.summary.fixed == 1
    assert not should_fail(diff, "regressed")
    assert should_fail(diff, "changed")
    assert render_text(diff).splitlines()[:4] == [
        "Fixed (1)",
        "",
        "a (convs.yaml)",
        "  status: failed -> completed",
    ]


def test_check_flips_are_paired_by_turn_kind_scope_and_expected() -> None:
    base_checks = {
        0: [check("contains", True), check("contains", True, expected="Rome")],
        1: [check("regex", False, expected="^P"), check("max_words", True, expected=50)],
    }
    new_checks = {
        0: [
            check("contains", False, seen="London is the capital.", message="no 'Paris' in it"),
            check("contains", True, expected="Rome"),
        ],
        1: [check("regex", True, expected="^P"), check("judge", False, expected="polite")],
    }
    base = [record("a", ANSWERS[:2], checks=base_checks, status="checks_failed")]
    new = [record("a", ANSWERS[:2], checks=new_checks, status="checks_failed")]

    diff = diff_runs(base, new)

    (conversation,) = diff.conversations
    assert conversation.outcome == "regressed"
    changes = [(c.turn, c.kind, c.expected, c.change) for c in conversation.checks]
    assert sorted(changes) == [
        (0, "contains", "Paris", "regressed"),
        (1, "judge", "polite", "added"),
        (1, "max_words", 50, "removed"),
        (1, "regex", "^P", "fixed"),
    ]
    regressed = next(c for c in conversation.checks if c.change == "regressed")
    assert (regressed.base_passed, regressed.new_passed) == (True, False)
    assert regressed.message == "no 'Paris' in it"
    assert should_fail(diff, "regressed")
    assert render_text(diff).splitlines()[2:9] == [
        "a (convs.yaml)",
        "  check pass -> fail: turn 1 contains (answer), expected \"Paris\": no 'Paris' in it",
        '    seen: "London is the capital."',
        '  check fail -> pass: turn 2 regex (answer), expected "^P": ok',
        '  check added: turn 2 judge (answer), expected "polite", failed: judge failed',
        "  check removed: turn 2 max_words (answer), expected 50, passed: ok",
        "  tokens +0 (prompt +0, completion +0), latency +0.0 ms",
    ]


def test_a_check_that_starts_passing_is_a_fix() -> None:
    base = [record("a", ["Hi."], checks={0: [check("contains", False)]}, status="checks_failed")]
    new = [record("a", ["Hi."], checks={0: [check("contains", True)]})]
    diff = diff_runs(base, new)
    assert diff.conversations[0].outcome == "fixed"
    assert [c.change for c in diff.conversations[0].checks] == ["fixed"]
    assert not should_fail(diff, "regressed")


def test_token_and_latency_deltas_are_exact() -> None:
    base = record(
        "a",
        ["One.", "Two."],
        usage=[USAGE, {"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37}],
        latency=[812.4, 300.0],
    )
    new = record(
        "a",
        ["One.", "Two."],
        usage=[
            {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
            {"prompt_tokens": 30, "completion_tokens": 2},  # total derived: 32
        ],
        latency=[700.1, 300.25],
    )
    (conversation,) = diff_runs([base], [new]).conversations

    first, second = conversation.turns
    assert (first.tokens.prompt_tokens, first.tokens.completion_tokens) == (2, 4)
    assert first.tokens.total_tokens == 6
    assert first.latency_ms == -112.3
    assert (second.tokens.completion_tokens, second.tokens.total_tokens) == (-5, -5)
    assert second.latency_ms == 0.25
    assert conversation.tokens.prompt_tokens == 2
    assert conversation.tokens.completion_tokens == -1
    assert conversation.tokens.total_tokens == 1
    assert conversation.latency_ms == -112.05
    assert conversation.outcome == "same"


def test_control_characters_in_model_output_are_escaped() -> None:
    evil = "ok\x1b[2J\x1b]0;pwned\x07 \u202eevil\r\n\tindented \ud800 \x9b"
    diff = diff_runs([record("id\x1b[31m", ["fine"])], [record("id\x1b[31m", [evil])])

    for color in (False, True):
        text = render_text(diff, color=color)
        text.encode("utf-8")  # no lone surrogate left to crash the terminal's encoder
        assert "\x1b[2J" not in text and "\x07" not in text and "\u202e" not in text
        assert "\x9b" not in text and "\r" not in text
    lines = render_text(diff).splitlines()
    assert "id\\x1b[31m (convs.yaml)" in lines
    assert "    +ok\\x1b[2J\\x1b]0;pwned\\x07 \\u202eevil\\r" in lines
    assert "    +\tindented \\ud800 \\x9b" in lines


def test_color_marks_removed_and_added_lines() -> None:
    diff = diff_runs([record("a", ["old"])], [record("a", ["new"])])
    lines = render_text(diff, color=True).splitlines()
    assert "\x1b[31m    -old\x1b[0m" in lines
    assert "\x1b[32m    +new\x1b[0m" in lines
    assert "\x1b" not in render_text(diff)


def test_long_diffs_are_cut_with_a_note() -> None:
    base = "\n".join(f"base line {i}" for i in range(500))
    new = "\n".join(f"new line {i}" for i in range(500))
    lines = render_text(diff_runs([record("a", [base])], [record("a", [new])])).splitlines()
    # 2 file headers + 1 hunk header + 1000 changed lines, 200 shown.
    assert "    … 803 more lines" in lines
    start = lines.index(
        "  turn 1: answer changed, similarity 0.667 (words); tokens +0, latency +0.0 ms"
    )
    assert lines[start + 1 : start + 4] == [
        "    --- base",
        "    +++ new",
        "    @@ -1,500 +1,500 @@",
    ]
    assert lines[start + 201] == "    … 803 more lines"


def test_similarity_of_large_texts_uses_a_cheaper_measure() -> None:
    assert similarity_of("abc", "abd") == (0.667, "chars")
    words = "one two three " * 200  # 600 words, too long for difflib
    assert similarity_of(words, words[:-6] + "four") == (0.998, "words")  # 599 of 600 in order
    assert similarity_of(words, "three two one " * 200) == (0.665, "words")  # 399 in order
    huge = "the " * 50_000
    started = time.perf_counter()
    assert similarity_of(huge, "a " * 25_000 + "the " * 25_000) == (0.5, "word_counts")
    assert time.perf_counter() - started < 2


def test_last_record_of_an_id_wins() -> None:
    base = [record("a", ["Old."], status="failed"), record("a", ANSWERS)]
    diff = diff_runs(base, [record("a", ANSWERS)])
    assert diff.conversations[0].outcome == "same"


def test_json_document_round_trips() -> None:
    base = [record("a", ANSWERS, checks={0: [check("contains", True)]}), record("gone", ["x"])]
    new = [
        record("a", [ANSWERS[0], "Changed\x1b."], checks={0: [check("contains", False)]}),
        record("fresh", ["y"]),
    ]
    document = render_json(diff_runs(base, new))

    assert json.loads(json.dumps(document)) == document
    assert list(document) == ["schema", "summary", "conversations", "added", "removed"]
    assert document["schema"] == SCHEMA == "mtrun.diff/1"
    assert document["summary"] == {
        "same": 0,
        "changed": 0,
        "regressed": 1,
        "fixed": 0,
        "added": 1,
        "removed": 1,
    }
    (conversation,) = document["conversations"]
    assert conversation["first_divergence"] == 1
    assert conversation["turns"][1]["answer"]["new"] == "Changed\x1b."
    assert conversation["turns"][2]["answer"] == {
        "base": "Goodbye.",
        "new": None,
        "similarity": None,
        "similarity_method": None,
    }
    assert conversation["checks"][0]["change"] == "regressed"
    assert document["added"] == [{"id": "fresh", "source": "convs.yaml", "status": "completed"}]


def test_unknown_fail_on_is_refused() -> None:
    diff = diff_runs([], [])
    with pytest.raises(ValueError, match="unknown fail_on value 'sometimes'; use one of"):
        should_fail(diff, "sometimes")


def test_long_lines_are_cut_with_a_note() -> None:
    diff = diff_runs([record("a", ["short"])], [record("a", ["y" * 5_000])])
    assert f"    +{'y' * 999} … (4,001 more characters)" in render_text(diff).splitlines()
    with pytest.raises(ValueError, match="context must be 0 or more, not -1"):
        render_text(diff, context=-1)


def test_a_changed_prompt_is_named_and_diffed() -> None:
    base = record("a", ANSWERS)
    new = record("a", ["Hello.", "Rome is the capital.\nIt is large.\nIt has museums.", "Goodbye."])
    new["messages"][3]["content"] = "a question 2, about Italy"

    diff = diff_runs([base], [new])

    (conversation,) = diff.conversations
    assert conversation.outcome == "changed"
    prompts = [t.prompt for t in conversation.turns]
    assert prompts[0] is None and prompts[2] is None
    assert prompts[1] is not None
    assert (prompts[1].base, prompts[1].new) == ("a question 2", "a question 2, about Italy")
    lines = render_text(diff).splitlines()
    assert "  answers diverge at turn 2, where the prompt changed" in lines
    start = lines.index("  turn 2: the prompt changed")
    assert lines[start + 1 : start + 6] == [
        "    --- base",
        "    +++ new",
        "    @@ -1 +1 @@",
        "    -a question 2",
        "    +a question 2, about Italy",
    ]
    assert lines[start + 6].startswith("  turn 2: answer changed, similarity ")
    turn = render_json(diff)["conversations"][0]["turns"][1]
    assert turn["prompt"] == {"base": "a question 2", "new": "a question 2, about Italy"}
    assert render_json(diff)["conversations"][0]["turns"][0]["prompt"] is None


def test_a_changed_prompt_alone_is_a_change() -> None:
    base = record("a", ANSWERS)
    new = json.loads(json.dumps(base))
    new["messages"][1]["content"] = [{"type": "text", "text": "a question 1"}]
    diff = diff_runs([base], [new])
    (conversation,) = diff.conversations
    assert conversation.outcome == "changed" and conversation.first_divergence is None
    assert should_fail(diff, "changed") and not should_fail(diff, "regressed")
    assert "  turn 1: the prompt changed" in render_text(diff).splitlines()


@pytest.mark.parametrize(("new_lines", "said"), [(99, "1 more line"), (100, "2 more lines")])
def test_the_lines_a_diff_leaves_out_are_counted_in_the_singular_for_one(
    new_lines: int, said: str
) -> None:
    base = "\n".join(f"base line {i}" for i in range(99))
    new = "\n".join(f"new line {i}" for i in range(new_lines))
    lines = render_text(diff_runs([record("a", [base])], [record("a", [new])])).splitlines()
    # 2 file headers + 1 hunk header + every line changed: 201 or 202, 200 shown.
    assert f"    … {said}" in lines
