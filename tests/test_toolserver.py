"""The strict tool-call server refuses what the providers refuse and accepts correct histories."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from toolserver import ToolServer, calls, never_stops, sse, text, tool_call

from runner.http.streaming import StreamAnswer

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
CALL = tool_call("get_weather", {"city": "Paris"}, "call_1")
OTHER = tool_call("get_weather", {"city": "Rome"}, "call_2")
USER = {"role": "user", "content": "Weather?"}


def asked(call_ids: list[str], content: Any = None, **extra: Any) -> dict[str, Any]:
    made = [tool_call("get_weather", {}, i) for i in call_ids]
    return {"role": "assistant", "content": content, "tool_calls": made, **extra}


def result(call_id: str, content: str = "18C") -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def post(server: ToolServer, messages: list[dict[str, Any]], **extra: Any) -> httpx.Response:
    body = {"model": "m", "messages": messages, "tools": TOOLS, **extra}
    return httpx.post(f"{server.base_url}/chat/completions", json=body)


MISSING = (
    "An assistant message with 'tool_calls' must be followed by tool messages responding to "
    "each 'tool_call_id'. The following tool_call_ids did not have response messages: "
)


@pytest.mark.parametrize(
    ("messages", "message", "param"),
    [
        ([USER, asked(["call_x"])], MISSING + "call_x", "messages.[1].role"),
        (
            [USER, asked(["call_a", "call_b"]), result("call_a"), USER],
            MISSING + "call_b",
            "messages.[1].role",
        ),
        (
            [USER, asked(["call_a", "call_b"]), {"role": "assistant", "content": "x"}],
            MISSING + "call_a, call_b",
            "messages.[1].role",
        ),
        (
            [USER, result("call_1")],
            "Invalid parameter: messages with role 'tool' must be a response to a preceeding "
            "message with 'tool_calls'.",
            "messages.[1].role",
        ),
        (
            [USER, asked(["call_1"]), result("call_9")],
            "Invalid parameter: 'tool_call_id' of 'call_9' not found in 'tool_calls' of "
            "previous message.",
            "messages.[2].tool_call_id",
        ),
        (
            [USER, asked(["call_1"]), result("call_1"), result("call_1")],
            "Invalid parameter: 'tool_call_id' of 'call_1' not found in 'tool_calls' of "
            "previous message.",
            "messages.[3].tool_call_id",
        ),
        (
            [USER, {"role": "assistant", "content": None}, USER],
            "Invalid value for 'content': expected a string, got null.",
            "messages.[1].content",
        ),
    ],
    ids=[
        "unanswered",
        "half-answered",
        "parallel-unanswered",
        "orphan",
        "wrong-id",
        "twice",
        "null",
    ],
)
def test_broken_histories_get_openais_400(
    messages: list[dict[str, Any]], message: str, param: str
) -> None:
    with ToolServer() as server:
        response = post(server, messages)
    assert response.status_code == 400
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": None}
    assert response.json() == {"error": error}
    assert server.refusals == [(0, 400, {"error": error})] and server.answers == []


def test_arguments_sent_back_parsed_are_refused() -> None:
    parsed = {**asked(["call_1"])}
    parsed["tool_calls"] = [{**CALL, "function": {"name": "get_weather", "arguments": {}}}]
    with ToolServer() as server:
        response = post(server, [USER, parsed, result("call_1")])
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "Invalid type for 'messages[1].tool_calls[0].function.arguments': expected a string, "
        "but got an object instead."
    )


@pytest.mark.parametrize(
    "messages",
    [
        [USER],
        [USER, asked(["call_1"]), result("call_1")],
        [USER, asked(["call_1", "call_2"]), result("call_2"), result("call_1"), USER],
        [
            USER,
            asked(["call_1"], "Let me look."),
            result("call_1"),
            {"role": "assistant", "content": "18C"},
            USER,
        ],
    ],
    ids=["first", "answered", "parallel-any-order-then-user", "chain-then-text"],
)
def test_correct_histories_are_answered(messages: list[dict[str, Any]]) -> None:
    with ToolServer([text("Sunny.")]) as server:
        response = post(server, messages)
    assert response.status_code == 200
    assert response.json()["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "Sunny."},
        "finish_reason": "stop",
    }
    assert server.requests == [{"model": "m", "messages": messages, "tools": TOOLS}]


def test_a_script_list_answers_each_conversation_step_by_step() -> None:
    script = [calls(CALL), calls(CALL, OTHER), text("Done.")]
    with ToolServer(script) as server:
        first = post(server, [USER]).json()["choices"][0]
        again = post(server, [{"role": "user", "content": "Other conversation"}]).json()
        second = post(server, [USER, asked(["call_1"]), result("call_1")]).json()["choices"][0]
        history = [USER, asked(["call_1"]), result("call_1"), asked(["call_1", "call_2"])]
        third = post(server, [*history, result("call_1"), result("call_2")]).json()
        past_end = post(server, [USER, asked(["call_1"]), result("call_1")]).json()
    assert first["finish_reason"] == "tool_calls"
    assert first["message"] == {"role": "assistant", "content": None, "tool_calls": [CALL]}
    assert again["choices"][0]["message"]["tool_calls"] == [CALL]
    assert second["message"]["tool_calls"] == [CALL, OTHER]
    assert third["choices"][0]["message"] == {"role": "assistant", "content": "Done."}
    assert past_end["id"].startswith("chatcmpl-offline-")  # the offline backend's answer
    assert server.answered == {"Weather?": 4, "Other conversation": 1}


def test_a_mapping_and_a_callable_script() -> None:
    with ToolServer({"Weather?": [text("Mapped.")]}) as server:
        assert post(server, [USER]).json()["choices"][0]["message"]["content"] == "Mapped."
    with ToolServer(never_stops("get_weather", {"city": "Paris"})) as server:
        ids = [post(server, [USER]).json()["choices"][0]["message"]["tool_calls"][0]["id"]]
        ids.append(
            post(server, [USER, asked(ids), result(ids[0])]).json()["choices"][0]["message"][
                "tool_calls"
            ][0]["id"]
        )
    assert ids == ["call_loop_0", "call_loop_1"]


def test_deepseek_mode_sends_reasoning_and_wants_it_back_in_the_chain() -> None:
    with ToolServer([calls(CALL), calls(OTHER), text("18C.")], mode="deepseek") as server:
        first = post(server, [USER]).json()["choices"][0]["message"]
        assert first["reasoning_content"] == "Thinking, step 0 of Weather?."
        bare = {k: v for k, v in first.items() if k != "reasoning_content"}
        refused = post(server, [USER, bare, result("call_1")])
        wrong = post(server, [USER, {**first, "reasoning_content": "other"}, result("call_1")])
        second = post(server, [USER, first, result("call_1")]).json()["choices"][0]["message"]
        chain = [USER, first, result("call_1"), second, result("call_2")]
        last = post(server, chain).json()["choices"][0]["message"]
        # an earlier turn's chain may come back without its reasoning
        later = [USER, bare, result("call_1"), {"role": "assistant", "content": "18C."}, USER]
        assert post(server, later).status_code == 200
    assert refused.status_code == 400 and refused.json()["error"] == {
        "message": "Missing `reasoning_content` field in the assistant message at message index 1",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_request_error",
    }
    assert wrong.status_code == 400
    assert wrong.json()["error"]["message"] == (
        "reasoning_content of the assistant message at message index 1 is not the one sent with it"
    )
    assert last == {
        "role": "assistant",
        "content": "18C.",
        "reasoning_content": "Thinking, step 2 of Weather?.",
    }
    assert [n for n, _, _ in server.refusals] == [1, 2]


def test_a_streamed_answer_is_fragmented_and_assembles_to_the_plain_one() -> None:
    with ToolServer([calls(CALL, OTHER)], mode="deepseek") as server:
        response = post(server, [USER], stream=True)
    assert response.headers["content-type"] == "text/event-stream"
    events = [
        json.loads(line[6:]) for line in response.text.split("\n\n") if line.startswith("data: {")
    ]
    fragments = [e["choices"][0]["delta"].get("tool_calls") for e in events if e["choices"]]
    assert [f[0] for f in fragments if f] == [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather"}},
        {"index": 0, "function": {"arguments": '{"city":'}},
        {"index": 0, "function": {"arguments": '"Paris"}'}},
        {"index": 1, "id": "call_2", "type": "function", "function": {"name": "get_weather"}},
        {"index": 1, "function": {"arguments": '{"city"'}},
        {"index": 1, "function": {"arguments": ':"Rome"}'}},
    ]
    stream = StreamAnswer()
    for data in response.text.split("\n\n"):
        if data:
            stream.add(data.removeprefix("data: "))
    assert stream.answer()["choices"][0]["message"] == server.answers[0]["choices"][0]["message"]
    assert sse(server.answers[0]).decode() == response.text
