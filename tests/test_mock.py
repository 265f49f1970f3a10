"""The offline backend, driven through the same ChatClient the real API uses."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from runner.errors import FatalAPIError
from runner.http.client import ChatClient, Completion
from runner.http.mock import OfflineBackend, answer, stream_events


def complete_all(*bodies: dict[str, Any]) -> tuple[list[Completion], OfflineBackend]:
    """Send each body in turn to a fresh offline backend at ``mock://``."""
    backend = OfflineBackend()

    async def go() -> list[Completion]:
        async with ChatClient("mock://", api_key=None, transport=backend) as client:
            return [await client.complete(body) for body in bodies]

    return asyncio.run(go()), backend


def complete(body: dict[str, Any]) -> Completion:
    [completion], _ = complete_all(body)
    return completion


def chat(*contents: str, **params: Any) -> dict[str, Any]:
    """A body whose messages alternate user/assistant, starting with the user."""
    roles = ("user", "assistant")
    messages = [{"role": roles[i % 2], "content": c} for i, c in enumerate(contents)]
    return {"model": "offline-1", "messages": messages, **params}


def test_the_same_body_gets_the_same_answer_every_time() -> None:
    body = chat("Hi", "Hello.", "What is a token?", temperature=0.3)
    (first, second), _ = complete_all(body, body)
    assert first == second
    assert complete(body) == first  # a fresh backend, as in a second run


@pytest.mark.parametrize(
    "other",
    [
        chat("Hi", "Hey!", "What is a token?"),  # an earlier message differs
        chat("What is a token?"),  # history dropped
        chat("Hello.", "Hi", "What is a token?"),  # history reordered
        chat("Hi", "Hello.", "What is a token?", temperature=0.9),  # parameters differ
        {**chat("Hi", "Hello.", "What is a token?"), "model": "offline-2"},
    ],
)
def test_a_different_request_gets_a_different_answer(other: dict[str, Any]) -> None:
    base = complete(chat("Hi", "Hello.", "What is a token?"))
    changed = complete(other)
    assert changed.content != base.content
    assert changed.response_id != base.response_id


def test_the_answer_looks_like_a_chat_completion() -> None:
    completion = complete(chat("Hi", "Hello.", "What is a token?"))

    assert completion.message["role"] == "assistant"
    assert isinstance(completion.content, str)
    assert 'You asked: "What is a token?"' in completion.content
    assert "Turn 2, after 3 messages." in completion.content
    assert completion.finish_reason == "stop"
    assert completion.model == "offline-1"
    assert completion.response_id is not None
    assert completion.response_id.startswith("chatcmpl-offline-")


def test_usage_is_plausible_and_prompt_tokens_grow_with_the_history() -> None:
    bodies = [
        chat("Tell me about tokens."),
        chat("Tell me about tokens.", "They are pieces of text.", "How many per word?"),
        chat(
            "Tell me about tokens.",
            "They are pieces of text.",
            "How many per word?",
            "About 0.75 words per token in English.",
            "And in German?",
        ),
    ]
    completions, _ = complete_all(*bodies)

    prompts = []
    for completion in completions:
        usage = completion.usage
        assert usage is not None
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert abs(usage["completion_tokens"] - len(completion.content) / 4) <= 1
        prompts.append(usage["prompt_tokens"])
    assert prompts[0] < prompts[1] < prompts[2]
    # About four characters a token plus a little overhead per message.
    chars = sum(len(m["content"]) for m in bodies[2]["messages"])
    assert chars / 4 <= prompts[2] <= chars / 4 + 5 * 5


@pytest.mark.parametrize("limit", ["max_tokens", "max_completion_tokens"])
def test_a_small_token_limit_truncates_with_finish_reason_length(limit: str) -> None:
    full = complete(chat("Explain everything about language models."))
    short = complete(chat("Explain everything about language models.", **{limit: 5}))

    assert full.finish_reason == "stop"
    assert short.finish_reason == "length"
    assert len(short.content) <= 5 * 4
    assert len(short.content) < len(full.content)
    assert short.usage is not None
    assert short.usage["completion_tokens"] <= 5


def test_a_generous_token_limit_changes_nothing_about_the_finish() -> None:
    completion = complete(chat("Hi", max_tokens=4096))
    assert completion.finish_reason == "stop"


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
    ],
)
def test_json_response_format_gets_json_content(response_format: dict[str, Any]) -> None:
    completion = complete(chat("Hi", "Hello.", "Answer in JSON", response_format=response_format))
    data = json.loads(completion.content)
    assert isinstance(data, dict)
    assert data["turn"] == 2


def test_content_given_as_parts_is_understood() -> None:
    body = {
        "model": "offline-1",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Describe this"}]}],
    }
    completion = complete(body)
    assert 'You asked: "Describe this"' in completion.content


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "offline-1"}, "'messages' must be a non-empty list"),
        ({"model": "offline-1", "messages": []}, "'messages' must be a non-empty list"),
        ({"messages": [{"role": "user", "content": "Hi"}]}, "'model' is required"),
        (
            {"model": "offline-1", "messages": [{"role": "user"}]},
            "messages[0] must have 'role' and 'content'",
        ),
    ],
)
def test_an_invalid_body_is_a_400_with_the_backends_message(
    body: dict[str, Any], message: str
) -> None:
    with pytest.raises(FatalAPIError) as info:
        complete_all(body)

    assert type(info.value) is FatalAPIError
    assert info.value.status == 400
    assert info.value.kind == "http_400"
    assert info.value.message == f"HTTP 400: {message}"


def test_the_backend_counts_only_the_requests_it_answered() -> None:
    backend = OfflineBackend()

    async def go() -> None:
        async with ChatClient("mock://", api_key=None, transport=backend) as client:
            await client.complete(chat("a"))
            with pytest.raises(FatalAPIError):
                await client.complete({"model": "offline-1", "messages": []})
            await client.complete(chat("b"))

    asyncio.run(go())
    assert backend.requests == 2


def test_a_request_without_tools_gets_the_answer_it_always_got() -> None:
    """Golden: the answer (and its stream) from before tool calls existed, to the byte."""
    body = chat("Hi", "Hello.", "What is a token?", temperature=0.3)
    content = (
        '[offline reply b9598b67] Turn 2, after 3 messages. You asked: "What is a token?". '
        "So runs and tests need no network language models predict the next token from "
        "context and the answer depends on the whole history sent with each request so every."
    )
    expected = {
        "id": "chatcmpl-offline-b9598b67231e815102b483d4",
        "object": "chat.completion",
        "created": 0,
        "model": "offline-1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 19, "completion_tokens": 61, "total_tokens": 80},
    }
    assert json.dumps(answer(body)) == json.dumps(expected)
    head = '{"id": "chatcmpl-offline-b9598b67231e815102b483d4", "object": "chat.completion.chunk"'
    head += ', "model": "offline-1", "choices": '
    events = [
        '[{"index": 0, "delta": {"role": "assistant"}}]}',
        '[{"index": 0, "delta": {"content": ' + json.dumps(content[:122]) + "}}]}",
        '[{"index": 0, "delta": {"content": ' + json.dumps(content[122:]) + "}}]}",
        '[{"index": 0, "delta": {}, "finish_reason": "stop"}]}',
        '[], "usage": {"prompt_tokens": 19, "completion_tokens": 61, "total_tokens": 80}}',
    ]
    stream = "".join(f"data: {head}{e}\n\n" for e in events) + "data: [DONE]\n\n"
    assert stream_events(expected, pieces=2) == stream.encode()
