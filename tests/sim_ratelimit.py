"""A rate-limited chat endpoint in virtual time, shaped like the real providers.

Plugged in where the tests' mock transports go (``httpx.MockTransport(server.handle)``)
and run on ``virtualtime.run_virtual``, so "60 s of a 1,200 rpm server with
headers" takes a moment and every count is exact. What it does, as OpenAI does:

- **token bucket** for requests (``rpm``) and for tokens (``tpm``): continuous
  refill at limit per minute, a size of ``burst`` / ``tpm_burst`` (default: the limit, as
  OpenAI; ``scripts/bench_server.py`` keeps one second's worth). A request
  is admitted when the requests bucket holds 1 and the tokens bucket holds
  its prompt plus ``max_tokens`` (or is full, for a booking bigger than the
  bucket: its level then goes below zero, as ``scripts/bench_server.py``'s
  does); both are drawn on admission, and the tokens
  it did not use are refunded when it is answered (``refund=False`` keeps the
  whole booking, as ``scripts/bench_server.py`` does without ``--tpm-refund``);
- **fixed window** instead (``window_s``): ``rpm`` requests per window, the
  count starting again at each window's start;
- ``rpd`` in place of ``rpm``: a requests bucket of a day's worth, refilled per
  day (Cerebras's ``-requests-day``, Groq's requests); ``level_requests`` starts
  the requests bucket that low instead of full (a day's limit nearly spent);
- headers on every answer, 429s included (``headers=True``):
  ``x-ratelimit-limit/remaining/reset-requests`` and ``-tokens``, read at
  admission, ``reset`` the time until full (Go-style durations: ``20ms``,
  ``1s``, ``6m0s``), or in another provider's forms (``style``: ``cerebras``,
  ``anthropic``, ``ietf``, ``kong``; ``scripts/bench_headers.py``), and on a 429
  ``retry-after`` (whole seconds, rounded up) and ``retry-after-ms``
  (``retry_after=False`` leaves both out);
  ``headers="429"`` sends them on its 429s only, none on its answers (a gateway that
  says its bucket only when it refuses);
- answers whose latency varies: ``base_s`` plus ``per_token_s`` for each
  answer token, the answer's length drawn from a seeded generator;
- a network in between (``network_s``, each way): a request reaches the
  server that long after it was sent, and its answer (a 429 too) reaches the
  client that long after the server gave it. Without it a refusal would be
  back before the next request of the same wave went out, and a client
  would be seen to stop a wave that, over a real network, is already sent;
- a client that works for its requests (``client_cpu_s``): each request
  keeps the client's event loop busy that long as it goes out, and each
  answer (a 429 too) as it comes in, in a few steps (virtual time moves on
  with nothing else running, as on a real loop busy building, writing and
  reading requests), so what is due meanwhile, the next sends and the 429s
  already back, runs late. mtrun spends about a millisecond of its loop per request
  on the bench server (httpx, aiohttp and the turn's own work): sends spread
  closer than that queue up in the client, and a wave is a few sends deeper
  when its first 429 is read than the network alone would make it.

Everything it saw is in :attr:`SimServer.log`: arrival times, refusals,
answers, requests in flight.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from virtualtime import VirtualTimeLoop

from runner.http.mock import answer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import bench_headers as styles

CPU_STEPS = 4
"""Steps of the loop the client's work on one request or answer is spread over."""


@dataclass
class Log:
    """What the server saw, in seconds since it started."""

    arrived: list[float] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)
    answered: list[float] = field(default_factory=list)
    tokens: list[tuple[float, int]] = field(default_factory=list)
    """(admitted at, tokens drawn and kept) of each admitted request."""
    in_flight: int = 0
    max_in_flight: int = 0

    def per_second(self, times: list[float], start: float, end: float) -> float:
        """Events a second between ``start`` and ``end``."""
        return sum(start <= t < end for t in times) / (end - start)


class _Bucket:
    """A server-side bucket: continuous refill of ``limit`` per ``period`` up to ``size``."""

    def __init__(self, limit: float, size: float, period: float = 60.0) -> None:
        self.limit, self.size, self.period = limit, size, period
        self.rate = limit / period
        self.level, self.at = size, 0.0

    def refill(self, now: float) -> None:
        self.level = min(self.size, self.level + (now - self.at) * self.rate)
        self.at = now

    def wait_for(self, cost: float) -> float:
        """Seconds until the bucket holds ``cost``, or is full for a bigger one (which then
        takes the level below zero, as ``scripts/bench_limits.py`` does)."""
        return max(0.0, (min(cost, self.size) - self.level) / self.rate)

    def headers(self, kind: str, style: str) -> dict[str, str]:
        reset = (self.size - self.level) / self.rate
        return styles.headers(style, kind, int(self.limit), int(self.level), reset, self.period)


class _Window:
    """A fixed-window limiter: ``limit`` requests per ``length`` seconds."""

    def __init__(self, limit: int, length: float) -> None:
        self.limit, self.length = limit, length
        self.start, self.count = 0.0, 0

    def roll(self, now: float) -> None:
        if now >= self.start + self.length:
            self.start += self.length * math.floor((now - self.start) / self.length)
            self.count = 0

    def headers(self, now: float, style: str) -> dict[str, str]:
        reset = self.start + self.length - now
        return styles.headers(
            style, "requests", self.limit, self.limit - self.count, reset, self.length
        )


class SimServer:
    """A chat-completions endpoint under a rate limit, on the running loop's clock."""

    def __init__(
        self,
        *,
        rpm: float | None = None,
        burst: float | None = None,
        tpm: float | None = None,
        tpm_burst: float | None = None,
        window_s: float | None = None,
        headers: bool | str = True,
        style: str = "openai",
        rpd: float | None = None,
        level_requests: float | None = None,
        retry_after: bool = True,
        base_s: float = 0.3,
        per_token_s: float = 0.002,
        answer_tokens: tuple[int, int] = (20, 200),
        refund: bool = True,
        seed: int = 1,
        network_s: float = 0.0,
        client_cpu_s: float = 0.0,
    ) -> None:
        self.requests = _Bucket(rpm, burst or rpm) if rpm and not window_s else None
        if rpd:
            self.requests = _Bucket(rpd, rpd, 86400.0)
        if self.requests is not None and level_requests is not None:
            self.requests.level = level_requests
        self.window = _Window(int(rpm), window_s) if rpm and window_s else None
        self.tokens = _Bucket(tpm, tpm_burst or tpm) if tpm else None
        self.send_headers, self.retry_after = bool(headers), retry_after
        self.style = style
        self.headers_on_429_only = headers == "429"
        self.base_s, self.per_token_s = base_s, per_token_s
        self.answer_tokens = answer_tokens
        self.refund = refund
        self.rng = random.Random(seed)
        self.network_s = network_s
        self.client_cpu_s = client_cpu_s
        self.log = Log()
        self._began: float | None = None

    def _now(self) -> float:
        loop_time = asyncio.get_running_loop().time()
        if self._began is None:
            self._began = loop_time
        return loop_time - self._began

    async def handle(self, request: httpx.Request) -> httpx.Response:
        """The transport's handler: admit or refuse, then answer after a while."""
        await self._client_busy()
        if self.network_s:
            await asyncio.sleep(self.network_s)
        response = await self._serve(request)
        if self.network_s:
            await asyncio.sleep(self.network_s)
        await self._client_busy()
        return response

    async def _client_busy(self) -> None:
        """The client's work on a request going out or an answer coming in: ``client_cpu_s``
        of its loop, in steps (a request passes several layers, each a step of the loop)."""
        if not self.client_cpu_s:
            return
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop), "client_cpu_s needs run_virtual"
        for _ in range(CPU_STEPS):
            loop.now += self.client_cpu_s / CPU_STEPS  # busy: nothing else of the client runs
            await asyncio.sleep(0)

    async def _serve(self, request: httpx.Request) -> httpx.Response:
        """What the server does with a request that reached it."""
        now = self._now()
        self.log.arrived.append(now)
        body = json.loads(request.content)
        prompt = sum(len(str(m.get("content") or "")) // 4 + 1 for m in body["messages"])
        cap = body.get("max_tokens") or body.get("max_completion_tokens") or 4096
        wait = self._admit(now, prompt + cap)
        headers = self._headers(now)
        if wait is not None:
            self.log.refused.append(now)
            if self.retry_after:
                headers["retry-after"] = str(max(1, math.ceil(wait)))
                headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
            error = {"error": {"message": "Rate limit reached", "type": "requests"}}
            return httpx.Response(429, json=error, headers=headers)
        used = self.rng.randint(*self.answer_tokens)
        used = min(used, cap)
        self.log.in_flight += 1
        self.log.max_in_flight = max(self.log.max_in_flight, self.log.in_flight)
        try:
            await asyncio.sleep(self.base_s + self.per_token_s * used)
        finally:
            self.log.in_flight -= 1
        done = self._now()
        if self.tokens is not None and self.refund:
            self.tokens.refill(done)
            self.tokens.level = min(self.tokens.size, self.tokens.level + cap - used)
        self.log.tokens.append((now, prompt + (used if self.refund else cap)))
        self.log.answered.append(done)
        reply = answer(body)
        reply["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": used,
            "total_tokens": prompt + used,
        }
        return httpx.Response(200, json=reply, headers={} if self.headers_on_429_only else headers)

    def _admit(self, now: float, cost: int) -> float | None:
        """Draw one request of ``cost`` tokens; None when admitted, else the wait until it fits."""
        waits = []
        if self.requests is not None:
            self.requests.refill(now)
            waits.append(self.requests.wait_for(1))
        if self.window is not None:
            self.window.roll(now)
            if self.window.count >= self.window.limit:
                waits.append(self.window.start + self.window.length - now)
        if self.tokens is not None:
            self.tokens.refill(now)
            waits.append(self.tokens.wait_for(cost))
        if any(w > 0 for w in waits):
            return max(waits)
        if self.requests is not None:
            self.requests.level -= 1
        if self.window is not None:
            self.window.count += 1
        if self.tokens is not None:
            self.tokens.level -= cost
        return None

    def _headers(self, now: float) -> dict[str, str]:
        if not self.send_headers:
            return {}
        parts = []
        if self.requests is not None:
            parts.append(self.requests.headers("requests", self.style))
        if self.window is not None:
            parts.append(self.window.headers(now, self.style))
        if self.tokens is not None:
            parts.append(self.tokens.headers("tokens", self.style))
        return styles.merged(parts)
