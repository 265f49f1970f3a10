"""--stream: tool-call deltas assemble into the message a non-streamed answer gives."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from toolserver import Reply, ToolServer, calls, halves, sse, text, tool_call

from runner.http.client import ChatClient, Completion
from runner.http.streaming import STREAM_FIELDS, StreamAnswer

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
ARGS = {"city": "São Paulo", "units": "metric", "days": [1, 2]}
SINGLE = calls(tool_call("get_weather", ARGS, "call_1"))
PARALLEL = calls(
    tool_call("get_weather", {"city": "Paris"}, "call_a"),
    tool_call("get_time", {}, "call_b"),
    tool_call("get_weather", ARGS, "call_c"),
)


def ask(server: ToolServer, stream: bool) -> Completion:
    body: dict[str, Any] = {
        "model": "m",
        "messages": [{"role": "user", "content": "Weather?"}],
        "tools": TOOLS,
    }
    if stream:
        body.update(STREAM_FIELDS)

    async def go() -> Completion:
        async with ChatClient(server.base_url, api_key=None) as client:
            return await client.complete(body)

    return asyncio.run(go())


def both(reply: Reply, split: Callable[[str], list[str]] = halves, **mode: Any) -> list[Completion]:
    """The same reply from a plain and from a streaming loopback server."""
    answers = []
    for stream in (False, True):
        with ToolServer([reply], split=split, **mode) as server:
            answers.append(ask(server, stream))
    return answers


@pytest.mark.parametrize("reply", [SINGLE, PARALLEL], ids=["single", "parallel"])
def test_streamed_tool_calls_assemble_to_the_plain_message(reply: Reply) -> None:
    plain, streamed = both(reply)
    assert streamed.message == plain.message == {"role": "assistant", **reply}
    assert list(streamed.message) == list(plain.message)  # the same keys in the same order
    assert [list(c) for c in streamed.message["tool_calls"]] == [["id", "type", "function"]] * len(
        reply["tool_calls"]
    )
    assert streamed.finish_reason == plain.finish_reason == "tool_calls"
    assert streamed.content is None and streamed.first_token_ms is not None


def test_every_character_its_own_fragment_and_reasoning_too() -> None:
    plain, streamed = both(PARALLEL, split=list, mode="deepseek")
    assert streamed.message == plain.message
    assert streamed.message["reasoning_content"] == "Thinking, step 0 of Weather?."


def test_text_with_tool_calls_and_text_alone() -> None:
    with_text = calls(tool_call("get_weather", ARGS, "call_1"), content="Let me look.")
    assert both(with_text)[0].message == both(with_text)[1].message
    plain, streamed = both(text("Sunny."))
    assert streamed.message == plain.message == {"role": "assistant", "content": "Sunny."}


def events_of(reply: Reply, split: Callable[[str], list[str]]) -> list[str]:
    completion = {
        "id": "c1",
        "model": "m",
        "choices": [{"index": 0, "message": reply, "finish_reason": "tool_calls"}],
        "usage": {},
    }
    return [e.removeprefix("data: ") for e in sse(completion, split).decode().split("\n\n") if e]


def assembled(events: list[str]) -> dict[str, Any]:
    stream = StreamAnswer(clock=lambda: 0.0)
    for data in events:
        stream.add(data)
    message: dict[str, Any] = stream.answer()["choices"][0]["message"]
    return message


ARGUMENTS = SINGLE["tool_calls"][0]["function"]["arguments"]


@pytest.mark.parametrize("cut", range(len(ARGUMENTS) + 1))
def test_arguments_cut_at_every_boundary_assemble_whole(cut: int) -> None:
    reply = {"role": "assistant", **PARALLEL}
    message = assembled(events_of(reply, lambda piece: [piece[:cut], piece[cut:]]))
    assert message == reply
    assert json.loads(message["tool_calls"][2]["function"]["arguments"]) == ARGS


def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    return json.dumps(
        {"id": "c1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    )


def test_ids_only_in_the_first_fragment_and_interleaved_calls() -> None:
    message = assembled(
        [
            chunk({"role": "assistant", "content": None}),
            chunk(
                {
                    "tool_calls": [
                        {"index": 1, "id": "call_b", "function": {"name": "b", "arguments": ""}}
                    ]
                }
            ),
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "call_a", "type": "function", "function": {"name": "a"}}
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"x":'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
            chunk({"tool_calls": [{"index": 1, "id": None, "function": {"arguments": "1}"}}]}),
            chunk({}, "tool_calls"),
        ]
    )
    assert message == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "a", "arguments": "{}"}},
            {"id": "call_b", "type": "function", "function": {"name": "b", "arguments": '{"x":1}'}},
        ],
    }


def test_a_provider_resending_id_and_name_or_leaving_out_index() -> None:
    repeated = [
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "c",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{"},
                    }
                ]
            }
        ),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "c",
                        "type": "function",
                        "function": {"name": "f", "arguments": "}"},
                    }
                ]
            }
        ),
        chunk({}, "tool_calls"),
    ]
    whole = [
        chunk(
            {
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "g", "arguments": "[]"},
                        "extra_content": {"google": {"thought_signature": "sig"}},
                    },
                ]
            }
        ),
        chunk({}, "tool_calls"),
    ]
    assert assembled(repeated)["tool_calls"] == [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ]
    assert assembled(whole)["tool_calls"] == [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {
            "id": "c2",
            "type": "function",
            "function": {"name": "g", "arguments": "[]"},
            "extra_content": {"google": {"thought_signature": "sig"}},
        },
    ]


def test_reasoning_details_lists_are_concatenated() -> None:
    first = {"type": "reasoning.text", "text": "Look ", "index": 0}
    second = {"type": "reasoning.encrypted", "data": "xyz", "index": 1}
    message = assembled(
        [
            chunk({"role": "assistant", "reasoning": "Look ", "reasoning_details": [first]}),
            chunk({"reasoning": "up.", "reasoning_details": [second]}),
            chunk({"content": "Sunny."}, "stop"),
        ]
    )
    assert message == {
        "role": "assistant",
        "content": "Sunny.",
        "reasoning": "Look up.",
        "reasoning_details": [first, second],
    }


def test_a_history_with_null_content_is_sent_verbatim_and_calls_come_back_verbatim() -> None:
    history = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": SINGLE["tool_calls"]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    ]
    body = {"model": "m", "messages": history, "tools": TOOLS}
    no_content = {"role": "assistant", "tool_calls": PARALLEL["tool_calls"], "refusal": None}

    async def go(server: ToolServer) -> Completion:
        async with ChatClient(server.base_url, api_key=None) as client:
            return await client.complete(body)

    with ToolServer(lambda body, n: no_content) as server:
        completion = asyncio.run(go(server))
    assert server.requests == [body] and server.refusals == []
    assert completion.message == no_content and completion.content is None
