"""Every answer's reasoning has one stable field: ``turns[].reasoning`` (and each step's).

A reasoning model answers plain turns too. Whatever reasoning the answer
carried (DeepSeek's and Qwen's ``reasoning_content``, vLLM's and
OpenRouter's ``reasoning``, OpenRouter's ``reasoning_details``) is recorded
under the field it arrived in, apart from the content, and the views show it
as reasoning before the answer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import ChatServer, read_jsonl
from jsonschema import Draft202012Validator
from test_report_browser import browser, css, open_page, page_errors, wait_for
from virtualtime import clock, run_virtual

from runner.review.markdown import render_markdown
from runner.review.report import build_report, write_report
from runner.review.show import render_records
from runner.run.engine import RunConfig, run_batch
from runner.spec.model import Conversation, Turn
from runner.spec.tools import ToolRule, ToolScript, ToolSettings

__all__ = ["browser"]  # the module's Chromium, a fixture of the report's browser tests

SCHEMA = Path(__file__).resolve().parent.parent / "runner/schemas/transcript.schema.json"
DETAILS = [{"type": "reasoning.text", "text": "Paris, surely.", "signature": "s1", "index": 0}]
REASONING = [
    {"reasoning_content": "DeepSeek thinks."},
    {"reasoning": "vLLM thinks."},
    {"reasoning": "OpenRouter thinks.", "reasoning_details": DETAILS},
    {},
]
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
TOOLS = ToolSettings(
    tools=(WEATHER,), results={"get_weather": ToolScript(rules=(ToolRule("18 C"),))}
)


def reply(message: dict[str, Any], n: int) -> httpx.Response:
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    choice = {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
    return httpx.Response(200, json={"id": f"r{n}", "choices": [choice]})


def plain_run(tmp_path: Path) -> dict[str, Any]:
    def respond(body: dict[str, Any], n: int) -> httpx.Response:
        return reply({"content": f"Answer {n}.", **REASONING[n]}, n)

    server = ChatServer(respond)
    conversation = Conversation(
        id="r", source="r.yaml", turns=tuple(Turn(f"Question {k}?") for k in range(4))
    )
    config = RunConfig(
        output=tmp_path / "out.jsonl", base_url="http://127.0.0.1:9/v1", transport=server.transport
    )
    run_virtual(run_batch([conversation], config, clock=clock))
    (record,) = read_jsonl(tmp_path / "out.jsonl")
    return record


def test_each_plain_answer_records_its_reasoning_under_reasoning(tmp_path: Path) -> None:
    record = plain_run(tmp_path)
    turns = record["turns"]
    assert [t.get("reasoning") for t in turns] == [*REASONING[:3], None]
    assert "reasoning" not in turns[3]  # an answer without reasoning: the record as before
    assert turns[0]["extra"] == {"reasoning_content": "DeepSeek thinks."}  # kept, as before
    # Never in the history: the policy (tool_chain) sends none of it back on plain turns.
    assert "thinks" not in json.dumps(record["messages"])
    validator = Draft202012Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    assert [e.message for e in validator.iter_errors(record)] == []


def test_a_turn_with_steps_has_its_final_answers_reasoning(tmp_path: Path) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    answers = [
        {"content": None, "tool_calls": [call], "reasoning_content": "Look it up."},
        {"content": "18 C.", "reasoning_content": "Now answer."},
    ]
    server = ChatServer(lambda body, n: reply(answers[n], n))
    conversation = Conversation(id="w", source="w.yaml", turns=(Turn("Weather?", tools=TOOLS),))
    config = RunConfig(
        output=tmp_path / "out.jsonl", base_url="http://127.0.0.1:9/v1", transport=server.transport
    )
    run_virtual(run_batch([conversation], config, clock=clock))
    ((turn,),) = (r["turns"] for r in read_jsonl(tmp_path / "out.jsonl"))
    assert turn["reasoning"] == {"reasoning_content": "Now answer."}
    assert [s.get("reasoning") for s in turn["steps"]] == [
        {"reasoning_content": "Look it up."},
        {"reasoning_content": "Now answer."},
    ]


def test_show_and_markdown_show_a_plain_answers_reasoning_as_reasoning(tmp_path: Path) -> None:
    record = plain_run(tmp_path)
    lines = list(render_records([record], color=False))
    blocks = [line for line in lines if line.startswith("▌")]
    assert blocks[:4] == [
        "▌ user · turn 1",
        "▌ reasoning · reasoning_content",
        "▌ assistant",
        "▌ user · turn 2",
    ]
    assert "▌ reasoning · reasoning_details" in blocks
    assert not any(b.startswith("▌ assistant ·") for b in blocks)  # not shown twice
    text = "\n".join(lines)
    assert text.count("DeepSeek thinks.") == 1 and text.count("vLLM thinks.") == 1

    markdown = render_markdown([record])
    assert markdown.count("DeepSeek thinks.") == 1
    assert "*Reasoning* (`reasoning_content`)" in markdown
    assert "**Assistant** (`reasoning_content`)" not in markdown


def test_the_report_shows_a_plain_answers_reasoning_collapsed(browser: Any, tmp_path: Path) -> None:
    record = plain_run(tmp_path)
    write_report(tmp_path / "r.html", build_report([record], title="r", source="out.jsonl"))
    open_page(browser, tmp_path / "r.html", "#conv=r")
    wait_for(browser, lambda d: css(d, "#chat .msg"))
    reasoning = css(browser, "#chat details.reasoning")
    fields = [r.get_attribute("data-field") for r in reasoning]
    assert fields == ["reasoning_content", "reasoning", "reasoning", "reasoning_details"]
    assert all(r.get_attribute("open") is None for r in reasoning)
    reasoning[0].find_element("css selector", "summary").click()
    assert reasoning[0].find_element("css selector", "pre").text == "DeepSeek thinks."
    asides = " ".join(a.text for a in css(browser, "#chat .aside"))
    assert "DeepSeek thinks." not in asides  # not repeated under 'extra'
    assert page_errors(browser) == []


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_old_records_with_reasoning_only_in_extra_still_show_it(field: str) -> None:
    record = {
        "id": "old",
        "status": "completed",
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],
        "turns": [{"index": 0, "message_index": 0, "extra": {field: "Old thinking."}}],
    }
    text = "\n".join(render_records([record], color=False))
    assert text.count("Old thinking.") == 1
