"""The HTML report: one self-contained file, safe data embedding, CSP, size."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from runner.errors import OutputError
from runner.review.report import (
    asset,
    build_comparison,
    build_report,
    embed_json,
    run_summary,
    write_report,
)
from runner.run.engine import RunConfig, run_batch
from runner.spec.loader import load_conversations
from runner.transcripts.reader import read_transcript

SVG_NAMESPACE = "http://www.w3.org/2000/svg"
"""The only URL the page's own parts may contain: a namespace name, never fetched."""

HOSTILE = '</script><script>alert(1)</script><!-- \u2028\u2029 & <img src=x onerror="alert(2)">'


def turn(
    index: int,
    message_index: int,
    *,
    latency: float | None = 100.0,
    prompt: int = 10,
    completion: int = 20,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "index": index,
        "message_index": message_index,
        "latency_ms": latency,
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
        "finish_reason": "stop",
        "response_id": f"r-{index}",
        "attempts": [{"attempt": 1, "outcome": "ok", "status": 200, "latency_ms": latency or 1.0}],
        **extra,
    }


def record(cid: str, *answers: str, status: str = "completed", **extra: Any) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "Be brief."}]
    turns = []
    for k, answer in enumerate(answers):
        turns.append(turn(k, len(messages), latency=100.0 * (k + 1), prompt=10 * (k + 1)))
        messages += [
            {"role": "user", "content": f"question {k + 1}"},
            {"role": "assistant", "content": answer},
        ]
    return {
        "schema": "mtrun.transcript/1",
        "run_id": "20261124T101500Z-3f2a1c",
        "id": cid,
        "source": "conversations/a.yaml",
        "model": "m",
        "base_url": "mock://offline",
        "params": {},
        "status": status,
        "messages": messages,
        "turns": turns,
        "totals": {
            "turns": len(turns),
            "prompt_tokens": sum(t["usage"]["prompt_tokens"] for t in turns),
            "completion_tokens": sum(t["usage"]["completion_tokens"] for t in turns),
            "total_tokens": sum(t["usage"]["total_tokens"] for t in turns),
            "attempts": len(turns),
            "retries": 0,
        },
        "started_at": "2026-11-24T10:15:00.000Z",
        "finished_at": "2026-11-24T10:15:02.500Z",
        "fingerprint": "sha256:" + "0" * 64,
        **extra,
    }


def data_of(page: str) -> Any:
    match = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    assert match is not None
    return json.loads(match.group(1))


def without_data(page: str) -> str:
    return re.sub(r'(<script type="application/json" id="data">).*?(</script>)', r"\1\2", page)


def test_the_page_is_one_file_that_fetches_nothing() -> None:
    page = build_report([record("a", "hi https://example.com/x.png")], title="t", source="a.jsonl")

    rest = without_data(page)
    assert re.findall(r"https?://[^\s'\"<>]*", rest) == [SVG_NAMESPACE]
    for part in ("report.html", "report.css", "report.js"):
        assert re.findall(r"https?://[^\s'\"<>]*", asset(part)) in ([], [SVG_NAMESPACE])
    assert "<link" not in rest
    assert " src=" not in rest
    assert "@import" not in rest
    assert "url(" not in rest
    # The stylesheet and the script are inlined whole, each exactly once.
    assert rest.count(asset("report.css")) == 1
    assert rest.count(asset("report.js")) == 1
    assert rest.count("<script") == 2


def test_the_data_block_round_trips_and_no_reply_can_end_it() -> None:
    rec = record("x</script>", HOSTILE, "plain", status="checks_failed")
    page = build_report([rec], title="</title><script>alert(3)</script>", source="a.jsonl")

    data = data_of(page)
    shown = data["runs"][0]["conversations"][0]
    assert shown["id"] == "x</script>"
    assert shown["messages"][2]["content"] == HOSTILE
    assert shown["messages"] == rec["messages"]
    assert shown["turns"] == rec["turns"]
    # Only the page's own elements are closed; nothing from the data is raw HTML.
    assert page.count("</script>") == 2
    assert "<script>alert" not in page
    assert "\u2028" not in page and "\u2029" not in page
    assert "<title>&lt;/title&gt;&lt;script&gt;alert(3)&lt;/script&gt;</title>" in page


def test_embedded_json_escapes_what_html_parsers_act_on() -> None:
    text = embed_json({"a": "<>&\u2028\u2029\ud800é"})
    assert text == '{"a":"\\u003c\\u003e\\u0026\\u2028\\u2029\\ud800é"}'
    assert json.loads(text) == {"a": "<>&\u2028\u2029\ud800é"}


def test_the_content_security_policy_allows_exactly_the_inlined_script_and_style() -> None:
    page = build_report([record("a", "hi")], title="t", source="a.jsonl")

    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', page)
    style = re.search(r"<style>(.*?)</style>", page, re.S)
    script = re.search(r"<script>(.*?)</script>", page, re.S)
    assert csp and style and script

    def sha(text: str) -> str:
        return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()

    policy = csp.group(1).replace("&#x27;", "'")
    assert policy == (
        f"default-src 'none'; script-src 'sha256-{sha(script.group(1))}'; "
        f"style-src 'sha256-{sha(style.group(1))}'; img-src data:; base-uri 'none'; "
        "form-action 'none'"
    )
    assert "unsafe" not in policy


def test_what_the_page_never_shows_is_left_out() -> None:
    judge = {
        "kind": "judge",
        "scope": "turn",
        "passed": False,
        "expected": "mentions Paris",
        "seen": "Lyon",
        "message": "judge said no",
        "details": {
            "model": "judge-model",
            "request": {"messages": [{"role": "user", "content": "x" * 10_000}]},
            "reply": "{...}",
            "verdict": {"pass": False, "reason": "no Paris"},
        },
    }
    rec = record("a", "Lyon")
    rec["turns"][0]["checks"] = [judge]

    page = build_report([rec], title="t", source="a.jsonl")

    shown = data_of(page)["runs"][0]["conversations"][0]
    assert "fingerprint" not in shown and "schema" not in shown and "run_id" not in shown
    assert shown["turns"][0]["checks"][0]["details"] == {
        "model": "judge-model",
        "verdict": {"pass": False, "reason": "no Paris"},
    }
    assert "x" * 1000 not in page


def test_run_summary_counts_statuses_tokens_and_turns() -> None:
    failed = record("f", "one", status="failed")
    failed["turns"].append(
        {
            "index": 1,
            "message_index": 3,
            "latency_ms": None,
            "usage": None,
            "finish_reason": None,
            "response_id": None,
            "attempts": [
                {"attempt": 1, "outcome": "http_429", "status": 429, "wait_s": 1.5},
                {"attempt": 2, "outcome": "http_400", "status": 400},
            ],
            "error": {"kind": "http_400", "status": 400, "message": "bad"},
        }
    )
    failed["messages"].append({"role": "user", "content": "question 2"})
    failed["error"] = {"turn": 1, "kind": "http_400", "status": 400, "message": "bad"}
    del failed["totals"]
    interrupted = {
        "id": "i",
        "status": "interrupted",
        "started_at": "2026-11-24T10:14:00.000Z",
        "finished_at": None,
        "error": {"kind": "interrupted", "message": "stopped"},
    }
    records = [record("a", "x", "y", "z"), record("b", "x", status="checks_failed")]
    records += [failed, interrupted]

    summary = run_summary(records)

    totals = summary["totals"]
    assert totals["statuses"] == {
        "completed": 1,
        "checks_failed": 1,
        "failed": 1,
        "interrupted": 1,
    }
    assert totals["conversations"] == 4
    assert totals["turns"] == 3 + 1 + 1
    assert totals["turns_sent"] == 3 + 1 + 2
    assert totals["attempts"] == 3 + 1 + 3
    assert totals["retries"] == 1
    assert totals["prompt_tokens"] == (10 + 20 + 30) + 10 + 10
    assert totals["wall_s"] == 62.5
    assert summary["meta"]["started_at"] == "2026-11-24T10:14:00.000Z"
    assert summary["meta"]["finished_at"] == "2026-11-24T10:15:02.500Z"
    assert summary["meta"]["run_ids"] == ["20261124T101500Z-3f2a1c"]
    by_turn = summary["charts"]["turns"]
    assert [t["index"] for t in by_turn] == [0, 1, 2]
    assert by_turn[0]["latency"] == [100.0, 100.0, 100.0, 100.0, 100.0]
    assert by_turn[0]["n"] == 3
    assert by_turn[1] == {
        "index": 1,
        "n": 1,
        "latency": [200.0] * 5,
        "prompt": 20,
        "completion": 20,
    }


def test_quartiles_are_interpolated() -> None:
    records = [record(f"c{k}", "x") for k in range(5)]
    for k, rec in enumerate(records):
        rec["turns"][0]["latency_ms"] = [10.0, 20.0, 30.0, 40.0, 100.0][k]

    latency = run_summary(records)["charts"]["turns"][0]["latency"]

    assert latency == [10.0, 20.0, 30.0, 40.0, 100.0]


def test_records_with_missing_fields_still_make_a_page() -> None:
    records: list[dict[str, Any]] = [
        {"id": "bare"},
        {"id": "odd", "status": "weird", "turns": [{"index": 0}], "messages": [None]},
        {"id": "parts", "status": "completed", "messages": [{"role": "user", "content": []}]},
    ]
    page = build_report(records, title="t", source="a.jsonl")

    data = data_of(page)
    assert data["runs"][0]["totals"]["statuses"]["unknown"] == 1
    assert data["runs"][0]["totals"]["statuses"]["weird"] == 1
    assert len(data["runs"][0]["conversations"]) == 3


def test_the_comparison_marks_a_regression_and_keeps_both_runs() -> None:
    base = [record("a", "same"), record("b", "old answer"), record("c", "x")]
    new = [
        record("a", "same"),
        record("b", "new answer"),
        record("c", "x", status="failed", error={"turn": 0, "kind": "http_500", "message": "boom"}),
        record("d", "added"),
    ]

    page = build_comparison(base, new, title="t", base_source="base.jsonl", new_source="new.jsonl")

    data = data_of(page)
    assert data["mode"] == "compare"
    assert [r["label"] for r in data["runs"]] == ["base", "new"]
    assert [r["source"] for r in data["runs"]] == ["base.jsonl", "new.jsonl"]
    outcomes = {c["id"]: c["outcome"] for c in data["diff"]["conversations"]}
    assert outcomes == {"a": "same", "b": "changed", "c": "regressed"}
    assert data["diff"]["summary"]["regressed"] == 1
    assert [r["id"] for r in data["diff"]["added"]] == ["d"]
    changed = next(c for c in data["diff"]["conversations"] if c["id"] == "b")
    assert changed["turns"] == [
        {
            "index": 0,
            "prompt_changed": False,
            "answer_changed": True,
            "similarity": 0.7,
            "similarity_method": "chars",
        }
    ]


def test_write_report_replaces_the_file_atomically(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("old")

    write_report(target, "<!doctype html>\u00e9")

    assert target.read_bytes() == "<!doctype html>\u00e9".encode()
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_write_report_fails_with_one_line_when_the_folder_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")

    with pytest.raises(OutputError) as caught:
        write_report(blocker / "report.html", "x")

    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"cannot write report {blocker / 'report.html'}: Not a directory")
    assert list(tmp_path.iterdir()) == [blocker]


def short_conversation(k: int) -> dict[str, Any]:
    """A two-turn conversation of about 1.9 KB of JSON, like a small smoke-test batch."""
    rec = record(
        f"conversation-{k:05d}",
        f"Answer {k}: a small language model has fewer parameters, so it is cheaper to run.",
        "They know less, trade breadth for speed and cost, and are easier to fine-tune.",
    )
    rec["turns"][0]["checks"] = [
        {
            "kind": "contains",
            "scope": "turn",
            "passed": True,
            "expected": "contains 'model'",
            "seen": "Answer",
            "message": "",
        }
    ]
    return rec


def test_ten_thousand_conversations_stay_smaller_than_their_transcripts() -> None:
    """The page embeds each record once, minus dropped fields, plus fixed assets.

    So a report is never larger than its transcript plus the assets: 10,000
    short conversations (about 19 MB of JSONL) give about 18 MB, well under a
    40 MB bound. A comparison embeds both runs plus the diff's per-conversation
    outcome and flipped checks (a few hundred bytes each).
    """
    records = [short_conversation(k) for k in range(10_000)]
    transcript = sum(len(json.dumps(r, separators=(",", ":"))) + 1 for r in records)
    assets = sum(len(asset(name).encode()) for name in ("report.html", "report.css", "report.js"))

    page = build_report(records, title="big", source="big.jsonl").encode()

    assert len(page) <= transcript + assets
    assert len(page) < 40_000_000
    data = data_of(page.decode())
    assert len(data["runs"][0]["conversations"]) == 10_000

    new = [dict(r) for r in records]
    for k in range(0, 10_000, 10):
        new[k] = dict(new[k], status="checks_failed")
    comparison = build_comparison(
        records, new, title="big", base_source="a", new_source="b"
    ).encode()
    assert len(comparison) <= 2 * transcript + 10_000 * 300 + assets
    assert len(comparison) < 80_000_000


def test_token_totals_count_judge_requests_as_the_run_summary_does(tmp_path: Path) -> None:
    """The summary counts judge tokens (they are sent and billed); the page must agree."""
    (tmp_path / "judged.yaml").write_text(
        "conversations:\n"
        "  - id: judged\n"
        "    turns:\n"
        "      - content: Say hello\n"
        "        expect: {judge: 'The answer mentions \"hello\"'}\n"
        "      - Again\n"
        "  - id: plain\n"
        "    turns: [Hi]\n",
        encoding="utf-8",
    )
    conversations = load_conversations([str(tmp_path / "judged.yaml")])
    output = tmp_path / "run.jsonl"
    result = asyncio.run(run_batch(conversations, RunConfig(output=output, base_url="mock://")))
    records = read_transcript(output)
    answers = sum(r["totals"]["total_tokens"] for r in records)
    assert result.total_tokens > answers  # the judge's request is counted by the run

    totals = run_summary(records)["totals"]
    assert totals["total_tokens"] == result.total_tokens
    assert totals["prompt_tokens"] == result.prompt_tokens
    assert totals["completion_tokens"] == result.completion_tokens
    assert totals["judge_tokens"] == result.total_tokens - answers
    page = build_report(records, title="t", source="s")
    data = data_of(page)
    (judged,) = [c for c in data["runs"][0]["conversations"] if c["id"] == "judged"]
    (check,) = judged["turns"][0]["checks"]
    assert set(check["details"]) == {"model", "verdict", "usage"}


def test_the_comparison_keeps_turns_whose_prompt_changed() -> None:
    def run(prompt: str) -> dict[str, Any]:
        return {
            "id": "a",
            "status": "completed",
            "messages": [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": "Same answer."},
            ],
            "turns": [{"index": 0, "message_index": 0}],
        }

    page = build_comparison([run("Hi")], [run("Hello")], title="t", base_source="b", new_source="n")
    (conversation,) = data_of(page)["diff"]["conversations"]
    assert conversation["outcome"] == "changed"
    assert conversation["turns"] == [
        {
            "index": 0,
            "prompt_changed": True,
            "answer_changed": False,
            "similarity": None,
            "similarity_method": None,
        }
    ]
