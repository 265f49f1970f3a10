"""Streamed answers (``--stream``): server-sent events assembled into one Completion.

A chat-completions stream is a series of ``data: {json}`` events, each with
a delta of the answer, usually ended by ``data: [DONE]``. Some servers end
the stream without ``[DONE]``; an answer whose last chunk gave a
``finish_reason`` is complete anyway. A stream that ends with neither was cut
mid-way: that raises a transient error so the turn is retried, and the
partial text is discarded, never put in the history.

Besides the answer, a stream tells when the first token came: the time to
first token is recorded, and with the usage the server reports in its last
chunk (``stream_options.include_usage``), the generation speed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from runner.errors import TransientAPIError

STREAM_FIELDS = {"stream": True, "stream_options": {"include_usage": True}}
"""What ``--stream`` adds to every request body."""


async def read_stream(
    response: httpx.Response, *, clock: Callable[[], float] = time.monotonic
) -> tuple[dict[str, Any], float | None]:
    """The answer assembled from a streamed response, and the time to first token in ms.

    The answer has the shape of a non-streamed chat-completions response, so
    it is recorded and replayed like any other.
    """
    started = clock()
    first_token_ms: float | None = None
    content: list[str] = []
    extra: dict[str, list[str]] = {}
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    response_id: str | None = None
    model: str | None = None
    done = False
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue  # blank separators, comments (":"), "event:" and "id:" fields
        data = line[5:].strip()
        if data == "[DONE]":
            done = True
            break
        try:
            chunk = json.loads(data)
        except ValueError:
            raise TransientAPIError(
                f"the stream sent an event that is not JSON: {data[:200]!r}", kind="stream_invalid"
            ) from None
        if not isinstance(chunk, dict):
            continue
        if "error" in chunk:
            error = chunk["error"]
            said = error.get("message") if isinstance(error, dict) else error
            raise TransientAPIError(f"the stream reported an error: {said}", kind="stream_error")
        response_id = response_id or _text(chunk.get("id"))
        model = model or _text(chunk.get("model"))
        if isinstance(chunk.get("usage"), dict):
            usage = chunk["usage"]
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            continue
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for key, value in delta.items():
                if key == "content" and isinstance(value, str) and value:
                    if first_token_ms is None:
                        first_token_ms = round((clock() - started) * 1000.0, 1)
                    content.append(value)
                elif key not in ("role", "content") and isinstance(value, str):
                    extra.setdefault(key, []).append(value)
        finish_reason = _text(choice.get("finish_reason")) or finish_reason
    if not done and finish_reason is None:
        raise TransientAPIError(
            "the stream ended before the answer was complete (no finish_reason, no [DONE]); "
            "the partial answer was discarded",
            kind="stream_cut",
        )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content)}
    message.update({key: "".join(parts) for key, parts in extra.items()})
    answer = {
        "id": response_id,
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": usage,
    }
    return answer, first_token_ms


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
