"""A local OpenAI-compatible chat server with a latency model and real limits, for benchmarks.

Model of the server (every knob is an option):

- **latency**: each answer takes ``base_latency + per_token * answer_tokens`` seconds
  once it is admitted, whatever the prompt;
- **capacity**: at most ``capacity`` requests are processed at once; extra requests
  wait in a FIFO queue (``--overflow queue``, the default) or are refused at once
  with 429 (``--overflow reject``);
- **rate limit**: with ``--rpm N``, a token bucket (refill N/60 per second, burst
  ``--burst``, default one second's worth) refuses requests beyond the limit with
  429, ``Retry-After`` (whole seconds, rounded up) and ``retry-after-ms`` (rounded up, never 0);
  ``--ratelimit-headers`` adds ``x-ratelimit-*`` headers to every answer;
- **answers**: deterministic text of ``answer_tokens`` words with ``usage``
  (prompt tokens estimated at four characters a token).

The server counts requests and 429s and keeps one timing record per request,
served as JSON by ``GET /_stats``; ``POST /_reset`` clears them between runs.

Standalone: ``python scripts/bench_server.py --port 0 --base-latency 0.2 --per-token 0.002
--capacity 32 --rpm 600`` prints ``http://127.0.0.1:PORT/v1`` and serves until Ctrl-C.
HTTP/1.1 with keep-alive is parsed by hand on ``asyncio.start_server``: no dependencies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

_WORDS = "the quick brown fox jumps over a lazy dog while benchmarks count every token".split()
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests"}


@dataclass(frozen=True)
class ServerConfig:
    """The server's model."""

    base_latency: float = 0.2
    """Seconds every admitted request takes before its tokens."""
    per_token: float = 0.002
    """Seconds per completion token."""
    answer_tokens: int = 100
    """Completion tokens (words) in every answer."""
    capacity: int = 32
    """Requests processed at once."""
    overflow: str = "queue"
    """What happens beyond capacity: ``queue`` (wait) or ``reject`` (429)."""
    rpm: float | None = None
    """Requests per minute allowed (token bucket); None: unlimited."""
    burst: float | None = None
    """Bucket size for ``rpm`` (default: one second's worth, at least 1)."""
    ratelimit_headers: bool = False
    """Send ``x-ratelimit-*`` headers with every answer."""

    @property
    def service_time(self) -> float:
        """Seconds one admitted request takes."""
        return self.base_latency + self.per_token * self.answer_tokens

    @property
    def bucket_size(self) -> float:
        """Requests the rate limit lets through at once."""
        if self.rpm is None:
            return math.inf
        return self.burst if self.burst is not None else max(1.0, self.rpm / 60.0)


@dataclass
class RequestTiming:
    """One request as the server saw it (seconds on the server's monotonic clock)."""

    arrived: float
    status: int
    admitted: float | None = None
    finished: float | None = None


@dataclass
class Stats:
    """What the server counted since the last reset."""

    started: float = field(default_factory=time.monotonic)
    requests: int = 0
    ok: int = 0
    refused_rate: int = 0
    refused_capacity: int = 0
    max_in_flight: int = 0
    records: list[RequestTiming] = field(default_factory=list)


class BenchServer:
    """The server: limits, latency model and bookkeeping around one handler."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.stats = Stats()
        self.in_flight = 0
        self.capacity = asyncio.Semaphore(config.capacity)
        self.tokens = config.bucket_size
        self.refilled = time.monotonic()
        self.server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen; return the API base URL."""
        self.server = await asyncio.start_server(self._connection, host, port, backlog=4096)
        bound = self.server.sockets[0].getsockname()
        return f"http://{bound[0]}:{bound[1]}/v1"

    def reset(self) -> None:
        """Forget counts and records, refill the bucket."""
        self.stats = Stats()
        self.tokens = self.config.bucket_size
        self.refilled = time.monotonic()

    def _take_token(self, now: float) -> float:
        """Spend one rate-limit token; return 0, or the seconds until one is available."""
        rpm = self.config.rpm
        if rpm is None:
            return 0.0
        rate = rpm / 60.0
        self.tokens = min(self.config.bucket_size, self.tokens + (now - self.refilled) * rate)
        self.refilled = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate

    def _rate_headers(self) -> dict[str, str]:
        rpm = self.config.rpm
        if not self.config.ratelimit_headers or rpm is None:
            return {}
        rate = rpm / 60.0
        reset_ms = max(0, round((self.config.bucket_size - self.tokens) / rate * 1000))
        return {
            "x-ratelimit-limit-requests": str(int(rpm)),
            "x-ratelimit-remaining-requests": str(int(self.tokens)),
            "x-ratelimit-reset-requests": f"{reset_ms}ms",
        }

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                status, extra, payload = await self._handle(method, path, body)
                keep = headers.get("connection", "").lower() != "close"
                data = json.dumps(payload).encode()
                out = [
                    f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
                    "content-type: application/json",
                    f"content-length: {len(data)}",
                    f"connection: {'keep-alive' if keep else 'close'}",
                    *(f"{k}: {v}" for k, v in extra.items()),
                ]
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + data)
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def _handle(
        self, method: str, path: str, body: bytes
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        if method == "GET" and path == "/_stats":
            return 200, {}, self._stats_json()
        if method == "POST" and path == "/_reset":
            self.reset()
            return 200, {}, {"reset": True}
        if method != "POST" or not path.endswith("/chat/completions"):
            return 404, {}, _error(f"no route for {method} {path}", "not_found")
        now = time.monotonic()
        stats = self.stats
        stats.requests += 1
        timing = RequestTiming(arrived=now, status=0)
        stats.records.append(timing)
        wait = self._take_token(now)
        if wait > 0:
            stats.refused_rate += 1
            timing.status = 429
            headers = {
                "retry-after": str(math.ceil(wait)),
                "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
            }
            headers.update(self._rate_headers())
            return 429, headers, _error("Rate limit reached for requests", "rate_limit_exceeded")
        try:
            request = json.loads(body)
            messages = request["messages"]
        except (ValueError, KeyError, TypeError):
            timing.status = 400
            return 400, {}, _error("body must be JSON with 'messages'", "invalid_request_error")
        if self.config.overflow == "reject" and self.capacity.locked():
            stats.refused_capacity += 1
            timing.status = 429
            return 429, {"retry-after": "1"}, _error("Server at capacity", "server_busy")
        async with self.capacity:
            timing.admitted = time.monotonic()
            self.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.config.service_time)
            finally:
                self.in_flight -= 1
        timing.finished = time.monotonic()
        timing.status = 200
        stats.ok += 1
        return 200, self._rate_headers(), self._answer(request, messages)

    def _answer(self, request: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
        n = self.config.answer_tokens
        content = " ".join(_WORDS[(len(messages) + i) % len(_WORDS)] for i in range(n))
        prompt_chars = sum(len(str(m.get("content", ""))) for m in messages)
        prompt_tokens = max(1, prompt_chars // 4)
        return {
            "id": f"chatcmpl-bench-{self.stats.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(request.get("model", "bench")),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": n,
                "total_tokens": prompt_tokens + n,
            },
        }

    def _stats_json(self) -> dict[str, Any]:
        s = self.stats
        return {
            "config": asdict(self.config),
            "service_time": self.config.service_time,
            "started": s.started,
            "now": time.monotonic(),
            "requests": s.requests,
            "ok": s.ok,
            "refused_rate": s.refused_rate,
            "refused_capacity": s.refused_capacity,
            "max_in_flight": s.max_in_flight,
            "records": [[r.arrived, r.status, r.admitted, r.finished] for r in s.records],
        }


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": code, "code": code}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, shared with benchmark.py."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: pick a free port")
    p.add_argument("--base-latency", type=float, default=0.2)
    p.add_argument("--per-token", type=float, default=0.002)
    p.add_argument("--answer-tokens", type=int, default=100)
    p.add_argument("--capacity", type=int, default=32)
    p.add_argument("--overflow", choices=("queue", "reject"), default="queue")
    p.add_argument("--rpm", type=float, default=None)
    p.add_argument("--burst", type=float, default=None)
    p.add_argument("--ratelimit-headers", action="store_true")
    return p.parse_args(argv)


def config_from(args: argparse.Namespace) -> ServerConfig:
    """The server model the options describe."""
    return ServerConfig(
        base_latency=args.base_latency,
        per_token=args.per_token,
        answer_tokens=args.answer_tokens,
        capacity=args.capacity,
        overflow=args.overflow,
        rpm=args.rpm,
        burst=args.burst,
        ratelimit_headers=args.ratelimit_headers,
    )


async def serve(args: argparse.Namespace) -> None:
    """Start, print the URL (one line, flushed), serve forever."""
    server = BenchServer(config_from(args))
    url = await server.start(args.host, args.port)
    print(url, flush=True)
    assert server.server is not None
    async with server.server:
        await server.server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    """Run the server until interrupted."""
    try:
        asyncio.run(serve(parse_args(argv)))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
