"""Token estimates, one rule for every layer: about four characters a token.

The cost plan (``--dry-run``), the ``--tpm`` booking of each request and the
offline backend's ``usage`` all count tokens before any tokenizer is known,
so they share this rule of thumb (right for English with BPE tokenizers;
real counts depend on the model). A message costs
:data:`MESSAGE_OVERHEAD_TOKENS` besides its content, and an answer not yet
received is counted as the request's ``max_tokens`` when it sets one, else
as :data:`ASSUMED_ANSWER_TOKENS`.

It sits in the spec layer, which every other layer may import.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

CHARS_PER_TOKEN = 4
"""Characters a token, on average."""
MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens a message costs besides its content (role and separators)."""
ASSUMED_ANSWER_TOKENS = 300
"""Answer length assumed for a request whose parameters set no ``max_tokens``."""


def text_tokens(text: str) -> int:
    """The tokens of ``text``: a token per four characters, rounded up (0 for no text)."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def message_tokens(content: Any) -> int:
    """The tokens of a message with ``content``: a string, or content parts counted as JSON."""
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    return MESSAGE_OVERHEAD_TOKENS + text_tokens(text)


def answer_cap(params: Mapping[str, Any]) -> int | None:
    """The ``max_tokens`` (or ``max_completion_tokens``) of request parameters, when positive."""
    value = params.get("max_tokens", params.get("max_completion_tokens"))
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def request_tokens(body: Mapping[str, Any]) -> int:
    """The tokens of a request body: its messages, plus what its answer may take."""
    prompt = sum(message_tokens(message["content"]) for message in body["messages"])
    return prompt + (answer_cap(body) or ASSUMED_ANSWER_TOKENS)
