"""Streamed ``reasoning_details``: fragments merged by index into what a plain answer gives.

OpenRouter streams each reasoning detail a fragment at a time under its
``index`` and the signature last; sent back with the tool results, the list
must be exactly the details the model produced (Anthropic, behind
OpenRouter, refuses a changed signed block). The loopback server in
``mode="openrouter"`` enforces that, so a streamed tool chain completes only
when the merge gives the non-streamed list.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from toolserver import ToolServer, calls, detail_fragments, text, tool_call

from runner.cli import main
from runner.http.reasoning_parts import ReasoningDetailParts

DETAILS = [
    {
        "type": "reasoning.summary",
        "summary": "Analyzed the problem by breaking it into components",
        "id": "reasoning-summary-1",
        "format": "anthropic-claude-v1",
        "index": 0,
    },
    {
        "type": "reasoning.text",
        "text": "Let me work through this:\n1. First...",
        "signature": "sig-abc",
        "id": "reasoning-text-1",
        "format": "anthropic-claude-v1",
        "index": 1,
    },
    {"type": "reasoning.encrypted", "data": "eyJyZWRhY3RlZCI6dHJ1ZX0=", "index": 2},
]


def merged(*deltas: list[Any]) -> list[Any]:
    parts = ReasoningDetailParts()
    for delta in deltas:
        parts.add(delta)
    return parts.merged()


def test_fragments_of_each_index_merge_into_the_non_streamed_details() -> None:
    fragments = [f for d in DETAILS for f in detail_fragments(d, lambda s: list(s))]
    assert len(fragments) > 60  # one a character, as a slow stream sends them
    assert merged(*([f] for f in fragments)) == DETAILS


def test_a_signature_sent_empty_first_is_the_one_that_comes_last() -> None:
    first = {"type": "reasoning.text", "text": "Hm", "signature": "", "index": 0}
    last = {"type": "reasoning.text", "text": "m.", "signature": "sig", "index": 0}
    assert merged([first], [last]) == [
        {"type": "reasoning.text", "text": "Hmm.", "signature": "sig", "index": 0}
    ]


def test_interleaved_indexes_and_unindexed_fragments_keep_their_order() -> None:
    a0 = {"type": "reasoning.text", "text": "a", "index": 0}
    b1 = {"type": "reasoning.summary", "summary": "b", "index": 1}
    loose = {"type": "reasoning.text", "text": "x"}
    assert merged(
        [a0, b1],
        [{"type": "reasoning.text", "text": "A", "index": 0}],
        [{"type": "reasoning.summary", "summary": "B", "index": 1}],
        [loose, {"type": "reasoning.text", "text": "y"}, "odd"],
        [{"type": "reasoning.encrypted", "data": "z"}],
    ) == [
        {"type": "reasoning.text", "text": "aA", "index": 0},
        {"type": "reasoning.summary", "summary": "bB", "index": 1},
        {"type": "reasoning.text", "text": "xy"},
        "odd",
        {"type": "reasoning.encrypted", "data": "z"},
    ]


CONVERSATION = """\
id: trip
tools:
  - type: function
    function:
      name: get_weather
      parameters: {type: object, properties: {city: {type: string}}, required: [city]}
tool_results:
  get_weather: {result: {temp_c: 18}}
turns:
  - Weather in Paris and Rome?
  - Thanks.
"""

SCRIPT = [
    {**calls(tool_call("get_weather", {"city": "Paris"}, "call_a")), "reasoning_details": DETAILS},
    calls(tool_call("get_weather", {"city": "Rome"}, "call_b")),  # the server signs this one
    text("18 C in both."),
    text("You're welcome."),
]


def run(tmp_path: Path, server: ToolServer, *extra: str) -> dict[str, Any]:
    (tmp_path / "trip.yaml").write_text(CONVERSATION, encoding="utf-8")
    output = tmp_path / f"out{len(list(tmp_path.glob('out*')))}.jsonl"
    args = ["--base-url", server.base_url, "-q", "-o", str(output), *extra]
    result = CliRunner().invoke(main, [*args, str(tmp_path / "trip.yaml")])
    assert result.exit_code == 0, result.stderr
    (record,) = (json.loads(line) for line in output.read_text(encoding="utf-8").splitlines())
    return record


def test_a_streamed_chain_sends_back_the_details_unchanged(tmp_path: Path) -> None:
    with ToolServer(list(SCRIPT), mode="openrouter") as server:
        plain = run(tmp_path, server)
    with ToolServer(list(SCRIPT), mode="openrouter", split=lambda s: list(s)) as streaming:
        streamed = run(tmp_path, streaming, "--stream")
    assert server.refusals == [] and streaming.refusals == []
    assert streamed["status"] == plain["status"] == "completed"
    # The second step's request carries the first step's details exactly as sent.
    second = streaming.requests[1]["messages"]
    assert second[1]["reasoning_details"] == DETAILS
    assert streamed["messages"] == plain["messages"]
    reasoning = [s["reasoning"] for s in streamed["turns"][0]["steps"]]
    assert reasoning == [s["reasoning"] for s in plain["turns"][0]["steps"]]
    assert reasoning[0] == {"reasoning_details": DETAILS}
