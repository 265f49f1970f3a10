"""Streamed answers (``--stream``): server-sent events assembled into one Completion.

A chat-completions stream is a series of ``data: {json}`` events, each with
a delta of the answer, usually ended by ``data: [DONE]``. The bytes are split
into events by the rules of the SSE specification (WHATWG HTML, "Parsing an
event stream"), not by ``str.splitlines``: a line ends only at CR, LF or
CRLF, so U+2028, U+2029 or U+0085 inside an answer stay text; the ``data:``
lines of one event are joined with LF; comments (``: ping``) and other fields
(``event:``, ``id:``, ``retry:``, unknown ones) are ignored; an event counts
once a blank line ends it.

An answer is complete once the stream said ``[DONE]`` or a choice gave a
``finish_reason``; what comes after that (a usage chunk, a cut connection)
cannot make it incomplete. A stream that ends before either was cut mid-way:
that raises a transient ``stream_cut`` error so the turn is retried, and the
partial text is discarded, never put in the history. A stream that never
showed a choice (only ``[DONE]``, only usage, empty chunks, Azure's
``prompt_filter_results``) is no answer at all: ``no_choices``, retried like
a plain answer with ``choices: []``.

The assembled message has the API's shape: ``content`` is the joined text,
or null when no delta carried content (an answer of tool calls only), as in
a non-streamed answer. Other string fields of the deltas (``reasoning_content``,
``reasoning``, ``refusal``) are joined the same way; ``reasoning_details``
merged by ``index`` (``reasoning_parts.py``). ``delta.tool_calls[]`` fragments are
assembled by their ``index`` into the ``tool_calls`` list a non-streamed
answer gives, in index order: ``function.arguments`` and ``function.name``
pieces are concatenated (a piece that repeats the whole name so far is a
provider resending it, not a new piece); ``id`` and ``type`` are taken from
the first fragment that has them (``type`` defaults to ``function``); any
other field of a call (Gemini's ``extra_content``) is kept as first sent.

Besides the answer, a stream tells when the first token (of content or of a
tool call) came, counted from the moment the request was sent (the client's
clock: the one ``latency_ms`` is timed on, so a server that holds its
headers counts), recorded with the usage of its last chunk (``stream_options``).
"""

from __future__ import annotations

import codecs
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from runner.errors import TransientAPIError
from runner.http.reasoning_parts import ReasoningDetailParts
from runner.words import plural

STREAM_FIELDS = {"stream": True, "stream_options": {"include_usage": True}}
"""What ``--stream`` adds to every request body."""

_LINE_END = re.compile(r"\r\n|\r|\n")


class SSEParser:
    """Bytes of an event stream in, the data of each complete event out (pure, no I/O)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial: list[str] = []
        """The start of a line whose end has not arrived yet."""
        self._data: list[str] = []
        """The ``data`` lines of the event being read."""
        self._after_cr = False
        self._started = False

    def feed(self, data: bytes) -> list[str]:
        """The data of every event that ``data`` completes, in order."""
        text = self._decoder.decode(data)
        if not text:
            return []
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")  # the spec drops one leading BOM
        if self._after_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF split across two reads
        self._after_cr = text.endswith("\r")
        lines = _LINE_END.split(text)
        if len(lines) == 1:
            self._partial.append(text)
            return []
        lines[0] = "".join(self._partial) + lines[0]
        last = lines.pop()
        self._partial = [last] if last else []
        events = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> str | None:
        """Take in one line; the event's data when the line is the blank one that ends it."""
        if not line:
            if not self._data:
                return None
            data = "\n".join(self._data)
            self._data = []
            return data
        field, _, value = line.partition(":")
        if field == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None  # a comment (an empty field name) or another field


class StreamAnswer:
    """The answer assembled from a stream's events, and whether it is complete yet."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, started: float | None = None
    ) -> None:
        self._clock = clock
        self._started = clock() if started is None else started
        """When the request was sent (default: now), on ``clock``."""
        self.first_token_ms: float | None = None
        """Milliseconds from ``started`` to the first content of the answer."""
        self.done = False
        """Whether ``[DONE]`` arrived."""
        self.events = 0
        self._choice_seen = False
        self._index: Any = None
        self._content: list[str] | None = None
        self._extra: dict[str, list[str]] = {}
        self._details = ReasoningDetailParts()
        self._tool_calls = ToolCallParts()
        self._finish_reason: str | None = None
        self._usage: dict[str, Any] | None = None
        self._id: str | None = None
        self._model: str | None = None

    @property
    def complete(self) -> bool:
        """Whether the answer is whole: ``[DONE]`` or a ``finish_reason`` came."""
        return self.done or self._finish_reason is not None

    async def read(
        self,
        chunks: AsyncIterator[bytes],
        *,
        on_event: Callable[[], None] = lambda: None,
        scrub: Callable[[str], str] = lambda text: text,
    ) -> None:
        """Read ``chunks`` up to ``[DONE]`` or their end, calling ``on_event`` for each event.

        ``scrub`` cleans each event's text before it is parsed (the API key out).
        """
        parser = SSEParser()
        async for chunk in chunks:
            for data in parser.feed(chunk):
                on_event()
                if self.add(scrub(data)):
                    return

    def add(self, data: str) -> bool:
        """Take in one event's data; True when it was ``[DONE]``."""
        self.events += 1
        if data.strip() == "[DONE]":
            self.done = True
            return True
        try:
            chunk = json.loads(data)
        except ValueError:
            raise TransientAPIError(
                f"the stream sent an event that is not JSON: {data[:200]!r}", kind="stream_invalid"
            ) from None
        if not isinstance(chunk, dict):
            return False
        if "error" in chunk:
            error = chunk["error"]
            said = error.get("message") if isinstance(error, dict) else error
            raise TransientAPIError(f"the stream reported an error: {said}", kind="stream_error")
        self._id = self._id or _text(chunk.get("id"))
        self._model = self._model or _text(chunk.get("model"))
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                # With n > 1 the choices' deltas interleave: follow the first one seen.
                if isinstance(choice, dict) and self._index in (None, choice.get("index")):
                    self._index = choice.get("index")
                    self._add_choice(choice)
                    break
        return False

    def _add_choice(self, choice: dict[str, Any]) -> None:
        """Take in the delta and finish_reason of the choice being followed."""
        self._choice_seen = True
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for key, value in delta.items():
                if key == "tool_calls" and isinstance(value, list) and value:
                    self._first_token()
                    self._tool_calls.add(value)
                elif key == "reasoning_details" and isinstance(value, list):
                    self._details.add(value)
                elif not isinstance(value, str) or key == "role":
                    continue
                elif key == "content":
                    if value:
                        self._first_token()
                    if self._content is None:
                        self._content = []
                    self._content.append(value)
                else:
                    self._extra.setdefault(key, []).append(value)
        self._finish_reason = _text(choice.get("finish_reason")) or self._finish_reason

    def _first_token(self) -> None:
        if self.first_token_ms is None:
            self.first_token_ms = round((self._clock() - self._started) * 1000.0, 1)

    def answer(self) -> dict[str, Any]:
        """The answer in the shape of a non-streamed one, or the transient error it is."""
        if not self.complete:
            raise TransientAPIError(
                "the stream ended before the answer was complete (no finish_reason, no [DONE]); "
                "the partial answer was discarded",
                kind="stream_cut",
            )
        if not self._choice_seen:
            raise TransientAPIError(
                "HTTP 200 with no choices in the streamed answer "
                f"({plural(self.events, 'event')}, none with a choice)",
                kind="no_choices",
                status=200,
            )
        content = None if self._content is None else "".join(self._content)
        message: dict[str, Any] = {"role": "assistant", "content": content}
        message.update({key: "".join(parts) for key, parts in self._extra.items()})
        if self._details.seen:
            message["reasoning_details"] = self._details.merged()
        if self._tool_calls:
            message["tool_calls"] = self._tool_calls.assembled()
        return {
            "id": self._id,
            "object": "chat.completion",
            "model": self._model,
            "choices": [{"index": 0, "message": message, "finish_reason": self._finish_reason}],
            "usage": self._usage,
        }


class ToolCallParts:
    """The fragments of ``delta.tool_calls[]``, gathered by index (pure, no I/O)."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, fragments: list[Any]) -> None:
        """Take in one delta's ``tool_calls`` list."""
        known = len(self._calls)
        for position, fragment in enumerate(fragments):
            if not isinstance(fragment, dict):
                continue
            index = fragment.get("index")
            # A provider that leaves out ``index`` sends each call whole, in order.
            key = index if isinstance(index, int) else known + position
            call = self._calls.setdefault(key, {"name": [], "arguments": [], "other": {}})
            for field in ("id", "type"):
                call.setdefault(field, None)
                if call[field] is None and _text(fragment.get(field)):
                    call[field] = fragment[field]
            function = fragment.get("function")
            if isinstance(function, dict):
                name = function.get("name")
                if isinstance(name, str) and name != "".join(call["name"]):
                    call["name"].append(name)
                arguments = function.get("arguments")
                if isinstance(arguments, str):
                    call["arguments"].append(arguments)
            for field, value in fragment.items():
                if field not in ("index", "id", "type", "function") and value is not None:
                    call["other"].setdefault(field, value)

    def assembled(self) -> list[dict[str, Any]]:
        """The calls as a non-streamed answer gives them, in index order."""
        calls = []
        for key in sorted(self._calls):
            parts = self._calls[key]
            call: dict[str, Any] = {} if parts["id"] is None else {"id": parts["id"]}
            call["type"] = parts["type"] or "function"
            call["function"] = {
                "name": "".join(parts["name"]),
                "arguments": "".join(parts["arguments"]),
            }
            call.update(parts["other"])
            calls.append(call)
        return calls


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
