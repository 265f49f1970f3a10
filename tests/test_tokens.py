"""The one token estimate: text, messages, the answer a request may take."""

from __future__ import annotations

from typing import Any

import pytest

from runner.spec.tokens import (
    ASSUMED_ANSWER_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    answer_cap,
    message_tokens,
    request_tokens,
    text_tokens,
)


@pytest.mark.parametrize(("text", "tokens"), [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2)])
def test_four_characters_a_token_rounded_up(text: str, tokens: int) -> None:
    assert text_tokens(text) == tokens


def test_a_message_costs_its_overhead_and_content_parts_count_as_json() -> None:
    assert message_tokens("abcdefgh") == MESSAGE_OVERHEAD_TOKENS + 2
    parts = [{"type": "text", "text": "é"}]  # '[{"type": "text", "text": "é"}]': 31 characters
    assert message_tokens(parts) == MESSAGE_OVERHEAD_TOKENS + 8


@pytest.mark.parametrize(
    ("params", "cap"),
    [
        ({"max_tokens": 50}, 50),
        ({"max_completion_tokens": 7}, 7),
        ({"max_tokens": 5, "max_completion_tokens": 7}, 5),
        ({"max_tokens": 0}, None),
        ({"max_tokens": True}, None),
        ({"max_tokens": "9"}, None),
        ({}, None),
    ],
)
def test_the_answer_cap_is_a_positive_whole_max_tokens(params: dict[str, Any], cap: int) -> None:
    assert answer_cap(params) == cap


def test_a_request_is_its_messages_and_its_answer() -> None:
    messages = [{"role": "system", "content": "abcd"}, {"role": "user", "content": "abcdefgh"}]
    prompt = 2 * MESSAGE_OVERHEAD_TOKENS + 1 + 2
    assert request_tokens({"messages": messages}) == prompt + ASSUMED_ANSWER_TOKENS
    assert request_tokens({"messages": messages, "max_tokens": 10}) == prompt + 10
