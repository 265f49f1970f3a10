"""The offline backend calls the first declared tool and answers tool results in text."""

from __future__ import annotations

import json
from typing import Any

from test_mock import complete, complete_all
from toolserver import check_pairing

from runner.http.mock import answer, stream_events
from runner.http.streaming import StreamAnswer

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "scale": {"type": "number"},
                "alerts": {"type": "boolean"},
                "units": {"type": "string", "enum": ["metric", "imperial"]},
                "hours": {"type": "array", "items": {"type": "integer"}},
                "where": {"type": "object"},
                "note": {"type": ["null", "string"]},
                "optional": {"type": "string"},
            },
            "required": ["city", "days", "scale", "alerts", "units", "hours", "where", "note"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
USER = {"role": "user", "content": "What's the weather in Paris?"}


def body(*messages: dict[str, Any], **params: Any) -> dict[str, Any]:
    return {"model": "offline-1", "messages": list(messages), "tools": [WEATHER, TIME], **params}


def test_a_user_message_with_tools_gets_one_call_of_the_first_tool() -> None:
    completion = complete(body(USER))
    [call] = completion.message["tool_calls"]
    assert completion.finish_reason == "tool_calls"
    assert completion.message == {"role": "assistant", "content": None, "tool_calls": [call]}
    assert call["id"].startswith("call_") and len(call["id"]) == 29
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert call["function"]["arguments"] == (
        '{"city":"Paris","days":1,"scale":1.0,"alerts":true,"units":"metric",'
        '"hours":[],"where":{},"note":"Paris"}'
    )
    assert completion.raw["usage"]["completion_tokens"] >= 1


def test_the_call_is_deterministic_and_depends_on_the_request() -> None:
    [a, b, c], _ = complete_all(body(USER), body(USER), body(USER, temperature=0.5))
    assert a.message == b.message and a.raw == b.raw
    assert a.message["tool_calls"][0]["id"] != c.message["tool_calls"][0]["id"]


def test_a_message_without_words_uses_the_property_names_and_tool_choice_is_obeyed() -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    chosen = complete(body({"role": "user", "content": "?? 42"}, tool_choice=named))
    assert chosen.message["tool_calls"][0]["function"] == {"name": "get_time", "arguments": "{}"}
    plain = complete(body({"role": "user", "content": "?? 42"}))
    arguments = json.loads(plain.message["tool_calls"][0]["function"]["arguments"])
    assert arguments["city"] == "city" and arguments["note"] == "note"
    none = complete(body(USER, tool_choice="none"))
    assert "tool_calls" not in none.message and none.finish_reason == "stop"


def test_a_tool_result_gets_a_text_answer_mentioning_it() -> None:
    call = complete(body(USER)).message
    result = {
        "role": "tool",
        "tool_call_id": call["tool_calls"][0]["id"],
        "content": '{"temp_c":18}',
    }
    history = [USER, call, result]
    assert check_pairing(history) is None
    completion = complete(body(*history))
    assert completion.finish_reason == "stop" and "tool_calls" not in completion.message
    assert completion.content.startswith("[offline reply ")
    assert 'The tool said: "{"temp_c":18}".' in completion.content
    assert completion.content == answer(body(*history))["choices"][0]["message"]["content"]


def test_the_stream_sends_the_call_in_fragments_that_assemble_to_the_plain_answer() -> None:
    plain = answer(body(USER))
    events = [e.removeprefix("data: ") for e in stream_events(plain).decode().split("\n\n") if e]
    deltas = [json.loads(e)["choices"] for e in events[:-1]]
    fragments = [
        c[0]["delta"]["tool_calls"][0] for c in deltas if c and "tool_calls" in c[0]["delta"]
    ]
    call = plain["choices"][0]["message"]["tool_calls"][0]
    assert fragments[0] == {
        "index": 0,
        "id": call["id"],
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert len(fragments) >= 3 and all(set(f) == {"index", "function"} for f in fragments[1:])
    stream = StreamAnswer(clock=lambda: 0.0)
    for data in events:
        stream.add(data)
    streamed = stream.answer()
    assert streamed["choices"][0]["message"] == plain["choices"][0]["message"]
    assert streamed["choices"][0]["finish_reason"] == "tool_calls"
    streamed_body = complete(body(USER, stream=True))
    assert streamed_body.message == plain["choices"][0]["message"]


def test_requests_without_tools_or_not_ending_with_the_user_are_answered_as_before() -> None:
    assistant_last = body(USER, {"role": "assistant", "content": "Hm."})
    assert "tool_calls" not in answer(assistant_last)["choices"][0]["message"]
    assert "tool_calls" not in answer(body(USER, tools=[]))["choices"][0]["message"]


def test_a_tool_call_message_sent_back_without_content_is_accepted() -> None:
    call = {
        "role": "assistant",
        "tool_calls": answer(body(USER))["choices"][0]["message"]["tool_calls"],
    }
    result = {"role": "tool", "tool_call_id": call["tool_calls"][0]["id"], "content": "18"}
    assert 'The tool said: "18".' in complete(body(USER, call, result)).content
