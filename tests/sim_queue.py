"""A queueing inference server in virtual time: K parallel slots, a FIFO queue, never a 429.

What llama.cpp (``--parallel``), Ollama (``OLLAMA_NUM_PARALLEL``) and vLLM
(``max_num_seqs``) do, as far as a client can see:

- at most ``slots`` requests are served at once; the others wait in arrival
  order, however long (nothing is refused);
- serving one takes ``base_s + per_token_s * tokens``, where ``tokens``, the
  answer's length, varies from turn to turn (drawn from the request's text,
  so the same conversation gets the same lengths on every run);
- streamed (``"stream": true``), the first token comes ``base_s`` after the
  request is taken into a slot (its prefill), the rest when it is done;
- a request the client gave up on (a timeout cancels the handler) is still
  served: it holds its slot for its whole service time, as llama.cpp does,
  and everything queued behind it waits;
- with ``silent_from``, it hangs from then on: it takes requests in and never
  answers (a wedged server).

Plug it in as ``RunConfig(transport=httpx.MockTransport(server.handle))`` and
run the batch with ``run_virtual``; every time is virtual and exact. The
server counts what a test asserts: requests served and abandoned, and the
number of requests open (sent by the client, not yet answered or abandoned)
over time.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class QueueServer:
    """The simulated server and what it saw."""

    slots: int
    """Requests served at once."""
    base_s: float = 0.2
    """Seconds of every answer before its tokens (the prefill)."""
    per_token_s: float = 0.002
    """Seconds per answer token."""
    min_tokens: int = 20
    max_tokens: int = 400
    """Answer lengths are drawn between these."""
    silent_from: float | None = None
    """From this (loop) time on, the server takes requests in and never answers them."""
    served: int = 0
    """Requests whose answer reached the client."""
    abandoned: int = 0
    """Requests the client gave up on (each still took its slot for its whole service)."""
    work_s: float = 0.0
    """Service time of every request taken in, abandoned ones included."""
    open_now: int = 0
    timeline: list[tuple[float, int]] = field(default_factory=list)
    """(time, requests open from then on), at every change."""
    _free_at: list[float] = field(default_factory=list)

    def tokens_for(self, body: dict[str, Any]) -> int:
        """The answer's length: drawn from the request's last user message."""
        last = next(m for m in reversed(body["messages"]) if m.get("role") == "user")
        digest = hashlib.sha256(str(last.get("content")).encode()).digest()
        spread = self.max_tokens - self.min_tokens + 1
        return self.min_tokens + int.from_bytes(digest[:4], "big") % spread

    def service_s(self, tokens: int) -> float:
        return self.base_s + self.per_token_s * tokens

    def _admit(self, now: float, service: float) -> float:
        """Queue a request arriving at ``now``: when its slot takes it (FIFO, earliest slot)."""
        if not self._free_at:
            self._free_at = [now] * self.slots
        start = max(now, heapq.heappop(self._free_at))
        heapq.heappush(self._free_at, start + service)
        self.work_s += service
        return start

    def _opened(self, delta: int) -> None:
        self.open_now += delta
        self.timeline.append((asyncio.get_running_loop().time(), self.open_now))

    async def handle(self, request: httpx.Request) -> httpx.Response:
        """The chat-completions endpoint (an ``httpx.MockTransport`` handler)."""
        body = json.loads(request.content)
        loop = asyncio.get_running_loop()
        tokens = self.tokens_for(body)
        service = self.service_s(tokens)
        now = loop.time()
        if self.silent_from is not None and now >= self.silent_from:
            start = now + 3600.0  # hung: the client's timeout comes first
        else:
            start = self._admit(now, service)
        self._opened(+1)
        try:
            if body.get("stream"):
                await asyncio.sleep(start + self.base_s - now)
                return self._stream(body, tokens, rest_s=service - self.base_s)
            await asyncio.sleep(start + service - now)
        except asyncio.CancelledError:
            self.abandoned += 1
            self._opened(-1)
            raise
        self.served += 1
        self._opened(-1)
        return httpx.Response(200, json=self._answer(body, tokens))

    def _stream(self, body: dict[str, Any], tokens: int, rest_s: float) -> httpx.Response:
        """A streamed answer whose first token is out now and the rest in ``rest_s``."""
        answer = self._answer(body, tokens)
        server = self

        async def events() -> AsyncIterator[bytes]:
            base = {"id": answer["id"], "object": "chat.completion.chunk", "model": body["model"]}
            words = answer["choices"][0]["message"]["content"].split(" ")
            first = {"index": 0, "delta": {"role": "assistant", "content": words[0]}}
            done = False
            try:
                yield _event({**base, "choices": [first]})
                await asyncio.sleep(rest_s)
                rest = {"index": 0, "delta": {"content": " " + " ".join(words[1:])}}
                end = {"index": 0, "delta": {}, "finish_reason": "stop"}
                done = True  # the answer is out with these (closing the stream may come later)
                server.served += 1
                server._opened(-1)
                yield _event({**base, "choices": [rest]})
                yield _event({**base, "choices": [end]})
                yield _event({**base, "choices": [], "usage": answer["usage"]})
                yield b"data: [DONE]\n\n"
            finally:
                if not done:
                    server.abandoned += 1
                    server._opened(-1)

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=events())

    def _answer(self, body: dict[str, Any], tokens: int) -> dict[str, Any]:
        prompt = sum(len(str(m.get("content"))) for m in body["messages"]) // 4
        return {
            "id": f"sim-{self.served + self.abandoned}",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": " ".join(["tok"] * tokens)},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": tokens,
                "total_tokens": prompt + tokens,
            },
        }

    def open_between(self, start: float, end: float) -> tuple[int, int, float]:
        """Fewest and most requests open for a while in [start, end), and the time-weighted mean.

        States that last no time (one request answered and the next sent at the same
        instant) do not count.
        """
        level, points = 0, []
        for at, n in self.timeline:
            if at <= start:
                level = n
            elif at < end:
                points.append((at, n))
        points = [(start, level), *points, (end, level)]
        spans = [(b[0] - a[0], a[1]) for a, b in itertools.pairwise(points)]
        lasting = [n for length, n in spans if length > 0]
        mean = sum(length * n for length, n in spans) / (end - start)
        return min(lasting), max(lasting), mean


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"
