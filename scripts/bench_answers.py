"""What a bench answer is made of: its words, the prompt's token estimate, the turn it answers.

Shared by the server and the benchmark's bound, which replays the server's answers to know
how each prompt grows (the token limit books prompt tokens).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

_WORDS = "the quick brown fox jumps over a lazy dog while benchmarks count every token".split()


def conversation_key(messages: list[dict[str, Any]]) -> tuple[str, int]:
    """(first user message, number of user messages): which turn of which conversation."""
    users = [str(m.get("content", "")) for m in messages if m.get("role") == "user"]
    return (users[0] if users else ""), len(users)


@lru_cache(maxsize=4096)
def answer_text(n_messages: int, completion: int) -> str:
    """The answer's words: ``completion`` of them, starting where the history's length says
    (kept: the same few pairs come again and again)."""
    return " ".join(_WORDS[(n_messages + i) % len(_WORDS)] for i in range(completion))


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Prompt tokens, estimated at four characters a token."""
    return max(1, sum(len(str(m.get("content", ""))) for m in messages) // 4)


def max_tokens(request: dict[str, Any]) -> int | None:
    """The request's completion cap (``max_completion_tokens`` first), if a positive int."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = request.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
