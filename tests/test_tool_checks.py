"""The tool check kinds: tool_called, no_tool_called, tool_sequence, tool_args_valid."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runner.checks.kinds import CheckResult, CheckSpecError, Observation, evaluate, parse_expect

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}


def call(name: str, arguments: Any, call_id: str = "c") -> dict[str, Any]:
    """A tool call as the API gives it; ``arguments`` is JSON-encoded unless a string."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


def run(
    value: Any, *calls: dict[str, Any], tools: tuple[Any, ...] = (WEATHER, TIME)
) -> CheckResult:
    """Parse one check and evaluate it on a turn that made ``calls``."""
    (check,) = parse_expect(value, field="expect", scope="turn")
    observation = Observation("It is sunny.", "stop", 10.0, 5, tool_calls=calls, tools=tools)
    return evaluate(check, observation)


def spec_error(value: Any) -> str:
    """``field: message`` of the error an ``expect`` value raises."""
    with pytest.raises(CheckSpecError) as caught:
        parse_expect(value, field="turns[0].expect", scope="turn")
    return str(caught.value)


PARIS = call("get_weather", {"city": "Paris", "unit": "c"})
ROME = call("get_weather", {"city": "Rome"})
NOW = call("get_time", {})


def test_tool_called_by_name() -> None:
    result = run({"tool_called": "get_weather"}, NOW, PARIS)
    assert result.passed
    assert result.expected == "calls tool 'get_weather'"
    assert result.seen == 'get_time({}), get_weather({"city": "Paris", "unit": "c"})'


def test_tool_called_fails_showing_the_calls_made() -> None:
    result = run({"tool_called": "get_weather"}, NOW)
    assert not result.passed
    assert result.message == "'get_weather' was not called"
    assert result.seen == "get_time({})"
    assert run({"tool_called": "get_weather"}).seen == "no tool calls"


def test_tool_called_with_args_subset_and_schema() -> None:
    assert run({"tool_called": {"name": "get_weather", "args": {"city": "Paris"}}}, PARIS).passed
    result = run({"tool_called": {"name": "get_weather", "args": {"city": "Paris"}}}, ROME)
    assert result.message == "'get_weather' was called, but never with matching arguments"
    schema = {"type": "object", "required": ["unit"]}
    assert run({"tool_called": {"name": "get_weather", "args_schema": schema}}, PARIS).passed
    assert not run({"tool_called": {"name": "get_weather", "args_schema": schema}}, ROME).passed
    bad_json = call("get_weather", "{city")
    assert not run({"tool_called": {"name": "get_weather", "args": {}}}, bad_json).passed


def test_tool_called_count() -> None:
    spec = {"tool_called": {"name": "get_weather", "count": 2}}
    assert run(spec, PARIS, NOW, ROME).passed
    result = run(spec, PARIS)
    assert result.message == "expected 2 matching calls to 'get_weather', got 1"
    assert run({"tool_called": {"name": "get_weather", "count": 0}}, NOW).passed
    assert run(spec, PARIS).expected == "calls tool 'get_weather' exactly 2 times"


def test_no_tool_called() -> None:
    assert run({"no_tool_called": True}).passed
    result = run({"no_tool_called": True}, NOW, PARIS)
    assert result.message == "the model made 2 tool calls"


@pytest.mark.parametrize(
    ("order", "calls", "passed"),
    [
        ("exact", (NOW, PARIS), True),
        ("exact", (PARIS, NOW), False),
        ("exact", (NOW, PARIS, ROME), False),
        ("in_order", (NOW, ROME, PARIS), True),
        ("in_order", (PARIS, NOW), False),
        ("any", (PARIS, NOW), True),
        ("any", (PARIS,), False),
    ],
)
def test_tool_sequence_orders(order: str, calls: tuple[dict[str, Any], ...], passed: bool) -> None:
    spec = {"tool_sequence": {"calls": ["get_time", "get_weather"], "order": order}}
    assert run(spec, *calls).passed is passed


def test_tool_sequence_list_is_exact_and_says_what_was_called() -> None:
    result = run({"tool_sequence": ["get_time", "get_weather"]}, PARIS)
    assert result.expected == "calls exactly these tools, in order: get_time, get_weather"
    assert result.message == "the tools called were: get_weather"
    assert run({"tool_sequence": ["get_time"]}).message == "the tools called were: no tool calls"


def test_tool_args_valid() -> None:
    assert run({"tool_args_valid": True}, PARIS, NOW).passed
    assert run({"tool_args_valid": True}).passed
    missing = run({"tool_args_valid": True}, call("get_weather", {"town": "Paris"}))
    assert missing.message == (
        "the arguments of 'get_weather' do not match its parameters at $: "
        "'city' is a required property"
    )
    assert run({"tool_args_valid": True}, call("get_weather", "{")).message == (
        "the arguments of 'get_weather' are not JSON"
    )
    assert run({"tool_args_valid": True}, call("search", {})).message == (
        "'search' is not a declared tool"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"tool_called": 3},
            "turns[0].expect.tool_called: expected a tool name or a mapping with 'name', got 3",
        ),
        ({"tool_called": {"args": {}}}, "turns[0].expect.tool_called: missing required key 'name'"),
        (
            {"tool_called": {"name": "f", "cout": 1}},
            "turns[0].expect.tool_called.cout: unknown key; did you mean 'count'?",
        ),
        (
            {"tool_called": {"name": "f", "count": -1}},
            "turns[0].expect.tool_called.count: must be 0 or more, got -1",
        ),
        (
            {"tool_called": {"name": "f", "args": [1]}},
            "turns[0].expect.tool_called.args: expected a mapping of argument names to values, "
            "got a list",
        ),
        (
            {"tool_called": {"name": "f", "args_schema": {"type": 5}}},
            "turns[0].expect.tool_called.args_schema.type: invalid JSON Schema: "
            "5 is not valid under any of the given schemas",
        ),
        (
            {"no_tool_called": False},
            "turns[0].expect.no_tool_called: false checks nothing; remove it instead",
        ),
        (
            {"tool_sequence": []},
            "turns[0].expect.tool_sequence: must not be an empty list; use 'no_tool_called: true'",
        ),
        (
            {"tool_sequence": {"calls": ["f"], "order": "sorted"}},
            "turns[0].expect.tool_sequence.order: unknown order 'sorted'; "
            "expected one of: exact, in_order, any",
        ),
        (
            {"tool_sequence": {"order": "any"}},
            "turns[0].expect.tool_sequence: missing required key 'calls'",
        ),
        (
            {"tool_args_valid": "yes"},
            "turns[0].expect.tool_args_valid: expected true, got a string",
        ),
    ],
)
def test_spec_errors(value: Any, message: str) -> None:
    assert spec_error(value) == message
