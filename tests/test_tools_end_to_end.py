"""Tool calls end to end: the CLI against a loopback server as strict as the providers.

The server refuses a history that breaks OpenAI's pairing rule or, in DeepSeek's
mode, one whose tool chain comes back without its reasoning; every conversation
must complete without a single refusal, streamed or not, and the transcripts of
the two must be the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from toolserver import ToolServer, calls, text, tool_call

from runner.cli import main

CONVERSATION = """\
id: trip
tools:
  - type: function
    function:
      name: get_weather
      parameters: {type: object, properties: {city: {type: string}}, required: [city]}
  - type: function
    function:
      name: get_time
      parameters: {type: object, properties: {city: {type: string}}}
tool_results:
  get_weather:
    - when: {city: Paris}
      result: {temp_c: 18}
    - result: no data
  get_time: "10:00"
turns:
  - content: Weather and time in Paris and Rome?
    expect:
      tool_sequence: {calls: [get_weather, get_time, get_weather], order: exact}
      tool_args_valid: true
  - Thanks. Anything else?
"""

SCRIPT = [
    # Turn 1: two parallel calls, then one more, then the answer: three steps.
    calls(
        tool_call("get_weather", {"city": "Paris"}, "call_a"),
        tool_call("get_time", {"city": "Paris"}, "call_b"),
    ),
    calls(tool_call("get_weather", {"city": "Rome"}, "call_c")),
    text("Paris is 18 C at 10:00; no data for Rome."),
    # Turn 2: a plain answer.
    text("Have a good trip."),
]


def run(tmp_path: Path, server: ToolServer, *extra: str) -> dict[str, Any]:
    (tmp_path / "trip.yaml").write_text(CONVERSATION, encoding="utf-8")
    output = tmp_path / f"out{len(list(tmp_path.glob('out*')))}.jsonl"
    result = CliRunner().invoke(
        main,
        [
            "--base-url",
            server.base_url,
            "-q",
            "-o",
            str(output),
            *extra,
            str(tmp_path / "trip.yaml"),
        ],
    )
    assert result.exit_code == 0, result.stderr
    (record,) = (json.loads(line) for line in output.read_text(encoding="utf-8").splitlines())
    return record


@pytest.mark.parametrize("mode", ["openai", "deepseek"])
def test_a_chain_of_three_steps_completes_against_a_strict_server(
    tmp_path: Path, mode: str
) -> None:
    with ToolServer(list(SCRIPT), mode=mode) as server:
        record = run(tmp_path, server)
    assert server.refusals == []
    assert record["status"] == "completed"
    roles = [m["role"] for m in record["messages"]]
    turn_one = ["user", "assistant", "tool", "tool", "assistant", "tool", "assistant"]
    assert roles == [*turn_one, "user", "assistant"]
    tools = [m for m in record["messages"] if m["role"] == "tool"]
    assert [(m["tool_call_id"], m["content"]) for m in tools] == [
        ("call_a", '{"temp_c":18}'),
        ("call_b", "10:00"),
        ("call_c", "no data"),
    ]
    # Four requests for turn 1's three steps and turn 2, each the history so far.
    assert len(server.requests) == 4
    first, second, third = (server.requests[i]["messages"] for i in range(3))
    # Each step resends the history with the calls and their results appended, exactly.
    assert [m["role"] for m in second[len(first) :]] == ["assistant", "tool", "tool"]
    assert [m["role"] for m in third[len(second) :]] == ["assistant", "tool"]
    assert third[: len(second)] == second
    if mode == "deepseek":
        chain = [m for m in third if m["role"] == "assistant"]
        assert all("reasoning_content" in m for m in chain)  # echoed inside the chain
        last_turn = server.requests[3]["messages"]
        assert not any("reasoning_content" in m for m in last_turn)  # not on earlier turns


def test_streamed_and_plain_transcripts_are_the_same(tmp_path: Path) -> None:
    with ToolServer(list(SCRIPT), mode="deepseek") as server:
        plain = run(tmp_path, server)
    with ToolServer(list(SCRIPT), mode="deepseek", split=lambda s: list(s)) as server:
        streamed = run(tmp_path, server, "--stream")
    assert server.refusals == []
    assert streamed["messages"] == plain["messages"]
    steps = lambda r: [  # noqa: E731 - a view of the fields that must agree
        {
            k: s.get(k)
            for k in ("step", "message_index", "finish_reason", "tool_results", "reasoning")
        }
        for s in r["turns"][0]["steps"]
    ]
    assert steps(streamed) == steps(plain)


UNSCRIPTED = """\
id: hotel
tools:
  - type: function
    function: {name: book_hotel, parameters: {type: object}}
turns:
  - Book me a hotel in Rome.
"""


def test_an_unscripted_call_fails_the_conversation_naming_tool_and_arguments(
    tmp_path: Path,
) -> None:
    (tmp_path / "hotel.yaml").write_text(UNSCRIPTED, encoding="utf-8")
    output = tmp_path / "o.jsonl"
    script = [calls(tool_call("book_hotel", {"city": "Rome"}, "call_x"))]
    with ToolServer(script) as server:
        args = [
            "--base-url",
            server.base_url,
            "-q",
            "-o",
            str(output),
            str(tmp_path / "hotel.yaml"),
        ]
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 3, result.stderr
    (record,) = (json.loads(line) for line in output.read_text(encoding="utf-8").splitlines())
    assert record["status"] == "failed"
    assert record["error"]["kind"] == "tool_unscripted"
    assert "book_hotel" in record["error"]["message"] and "Rome" in record["error"]["message"]
    assert len(server.requests) == 1  # nothing was sent with a made-up result
