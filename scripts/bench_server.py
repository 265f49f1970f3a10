"""A local OpenAI-compatible chat server with a latency model and real limits, for benchmarks.

Model of the server (every knob is an option):

- **latency**: each answer takes ``base_latency + per_token * answer_tokens`` seconds
  once it is admitted to a slot, whatever the prompt;
- **answer lengths**: ``--answer-tokens N`` words in every answer, or, with
  ``--answer-tokens-min/--answer-tokens-max``, a length drawn per (conversation, turn)
  from ``--answer-seed``: the same turn of the same conversation always gets the same
  length (a retry too), different turns differ. The conversation is known by its first
  user message, the turn by the number of user messages. ``max_tokens`` (or
  ``max_completion_tokens``) below that length cuts the answer (``finish_reason: length``);
- **slots**: at most ``capacity`` requests are processed at once; extra requests wait in
  a FIFO queue (``--overflow queue``, the default: llama.cpp, Ollama, vLLM) or are refused
  at once with 429 (``--overflow reject``). A request whose client has gone (a timeout)
  keeps its slot, queued or in service, until its service time is over (the worst case,
  and llama.cpp's in several releases: it did not cancel on disconnect); the close is
  counted as a timeout when the answer is ready;
- **rate limits** (:mod:`bench_limits`): ``--rpm N`` requests per minute and ``--tpm N``
  tokens per minute, each a token bucket (``--limiter bucket``, refill N/60 per second,
  burst ``--burst``/``--tpm-burst``, default one second's worth) or a fixed window
  (``--limiter window``, N per ``--window-s`` seconds, default 60). A request books one
  request and ``prompt tokens + max_tokens`` tokens on arrival, as OpenAI and Azure
  estimate it (``--default-max-tokens`` when the request sets none); ``--tpm-refund``
  gives back what the answer did not use. Over either limit: 429 with ``retry-after``
  and ``retry-after-ms``; nothing is booked. ``--rpd N`` puts a per-day request bucket
  (full at the start) in place of ``--rpm``: Groq's ``-requests`` headers count requests
  per day beside a per-minute token limit;
- **headers**: with ``--ratelimit-headers`` every answer, 429s included, carries
  ``x-ratelimit-limit/remaining/reset-requests`` and, with ``--tpm``, the ``-tokens``
  trio, with OpenAI's meaning (reset = time until the limit is back to its initial state,
  written like ``20ms``, ``1s``, ``6m0s``); with ``--ratelimit-headers-on-429-only``, the
  429s of the rate limits only (a gateway that tells its bucket only when it refuses);
  with ``--ratelimit-header-style cerebras|anthropic|ietf|kong``, in that family's names
  and forms instead of OpenAI's (:mod:`bench_headers`).

``GET /_stats`` serves the counts, one record per request and the figures of
:func:`bench_stats.summarize` (span, served/refused per second, requests in flight over
time, tokens); ``POST /_reset`` clears them and refills the limits between runs.

Standalone: ``python scripts/bench_server.py --port 0 --base-latency 0.2 --per-token 0.002
--capacity 32 --rpm 600 --ratelimit-headers`` prints ``http://127.0.0.1:PORT/v1`` and serves
until Ctrl-C. HTTP/1.1 with keep-alive is parsed by hand on ``asyncio.start_server``:
no dependencies. The clock is the event loop's, so the server also runs on a virtual one;
standalone, on :mod:`bench_loop`'s, whose waits are timed in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import bench_loop
from bench_answers import answer_text, conversation_key, max_tokens, prompt_tokens
from bench_headers import PERIOD_WORDS, STYLES
from bench_limits import Limiter, Limits, TokenBucket, make_limiter, retry_headers
from bench_slots import Slots
from bench_stats import RequestTiming, Stats, summarize

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests"}


@dataclass(frozen=True)
class ServerConfig:
    """The server's model."""

    base_latency: float = 0.2
    """Seconds every admitted request takes before its tokens."""
    per_token: float = 0.002
    """Seconds per completion token."""
    answer_tokens: int = 100
    """Completion tokens (words) in every answer, unless a range is set."""
    answer_tokens_min: int | None = None
    """Shortest answer of the per-turn range (with ``answer_tokens_max``)."""
    answer_tokens_max: int | None = None
    """Longest answer of the per-turn range."""
    answer_seed: int = 0
    """Seed of the per-turn answer lengths."""
    capacity: int = 32
    """Requests processed at once."""
    overflow: str = "queue"
    """What happens beyond capacity: ``queue`` (wait, FIFO) or ``reject`` (429)."""
    rpm: float | None = None
    """Requests per minute allowed; None: unlimited."""
    burst: float | None = None
    """Bucket size for ``rpm`` (default: one second's worth, at least 1)."""
    rpd: float | None = None
    """Requests per day (a day's bucket, Groq's ``-requests`` headers); replaces ``rpm``."""
    tpm: float | None = None
    """Tokens per minute allowed (prompt + max_tokens booked on arrival); None: unlimited."""
    tpm_burst: float | None = None
    """Bucket size for ``tpm`` (default: one second's worth)."""
    tpm_refund: bool = False
    """Give back the booked tokens an answer did not use."""
    default_max_tokens: int = 0
    """Completion tokens booked for a request that sets no ``max_tokens``."""
    limiter: str = "bucket"
    """``bucket`` (continuous refill) or ``window`` (fixed windows)."""
    window_s: float = 60.0
    """Length of a fixed window."""
    ratelimit_headers: bool = False
    """Send ``x-ratelimit-*`` headers with every answer."""
    ratelimit_headers_on_429_only: bool = False
    """Send them with the rate limits' 429s only, none with the answers."""
    ratelimit_header_style: str = "openai"
    """Whose names and forms those headers take (``bench_headers.STYLES``)."""

    def answer_length(self, conversation: str, turn: int) -> int:
        """Completion tokens of the answer to ``turn`` (1-based) of ``conversation``."""
        lo, hi = self.answer_tokens_min, self.answer_tokens_max
        if lo is None or hi is None:
            return self.answer_tokens
        key = f"{self.answer_seed}\0{conversation}\0{turn}".encode()
        draw = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
        return lo + draw % (hi - lo + 1)

    def service_time(self, tokens: int | None = None) -> float:
        """Seconds one admitted request with ``tokens`` completion tokens takes."""
        return self.base_latency + self.per_token * (
            self.answer_tokens if tokens is None else tokens
        )

    def limits(self) -> Limits:
        """Fresh limiters for this model."""
        requests: Limiter | None = None
        tokens: Limiter | None = None
        if self.rpd is not None:
            requests = TokenBucket(
                limit=round(self.rpd), capacity=self.rpd, rate=self.rpd / 86400, period=86400.0
            )
        elif self.rpm is not None:
            requests = make_limiter(self.limiter, self.rpm, self.burst, self.window_s)
        if self.tpm is not None:
            tokens = make_limiter(self.limiter, self.tpm, self.tpm_burst, self.window_s)
        return Limits(requests, tokens)


class BenchServer:
    """The server: limits, slots, latency model and bookkeeping around one handler."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.server: asyncio.Server | None = None
        self.reset()

    @staticmethod
    def now() -> float:
        """The server's clock: the running loop's (``time.monotonic`` on a real loop)."""
        return asyncio.get_running_loop().time()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen; return the API base URL."""
        self.reset()
        self.server = await asyncio.start_server(self._connection, host, port, backlog=4096)
        bound = self.server.sockets[0].getsockname()
        return f"http://{bound[0]}:{bound[1]}/v1"

    def reset(self) -> None:
        """Forget counts and records, refill the limits (slots in use stay in use)."""
        try:
            started = self.now()
        except RuntimeError:  # built outside a loop
            started = time.monotonic()
        self.stats = Stats(started=started)
        self.limits = self.config.limits()
        if not hasattr(self, "slots"):
            self.slots = Slots(self.config.capacity)
        self.slots.on_change = lambda s, q: self.stats.note(self.now(), s, q)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                timing = RequestTiming(arrived=self.now())
                status, extra, payload = await self.handle(method, path, body, timing)
                if reader.at_eof() and timing.status == 200:
                    timing.abandoned = True
                    self.stats.abandoned += 1
                keep = headers.get("connection", "").lower() != "close"
                writer.write(_response(status, extra, payload, keep))
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def handle(
        self, method: str, path: str, body: bytes, timing: RequestTiming | None = None
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        """Answer one request: ``(status, headers, JSON body)``."""
        if method == "GET" and path == "/_stats":
            return 200, {}, self._stats_json()
        if method == "POST" and path == "/_reset":
            self.reset()
            return 200, {}, {"reset": True}
        if method != "POST" or not path.endswith("/chat/completions"):
            return 404, {}, _error(f"no route for {method} {path}", "not_found")
        timing = timing or RequestTiming(arrived=self.now())
        self.stats.requests += 1
        self.stats.records.append(timing)
        try:
            request = json.loads(body)
            messages = request["messages"]
            conversation, turn = conversation_key(messages)
        except (ValueError, KeyError, TypeError, AttributeError):
            timing.status = 400
            return 400, {}, _error("body must be JSON with 'messages'", "invalid_request_error")
        return await self._complete(request, messages, conversation, turn, timing)

    async def _complete(
        self,
        request: dict[str, Any],
        messages: list[dict[str, Any]],
        conversation: str,
        turn: int,
        timing: RequestTiming,
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        """Book the limits, wait for a slot, take the service time, answer."""
        config, stats = self.config, self.stats
        prompt = prompt_tokens(messages)
        cap = max_tokens(request)
        booked = prompt + (cap if cap is not None else config.default_max_tokens)
        refusal = self.limits.admit(booked, timing.arrived)
        if refusal is not None:
            timing.status = 429
            if refusal.which == "tokens":
                stats.refused_tokens += 1
            else:
                stats.refused_rate += 1
            rate = self._rate_headers(timing.arrived, refused=True)
            headers = {**retry_headers(refusal.wait_s), **rate}
            message = f"Rate limit reached for {refusal.which}"
            return 429, headers, _error(message, "rate_limit_exceeded")
        headers = self._rate_headers(timing.arrived)
        if config.overflow == "reject" and self.slots.full:
            stats.refused_capacity += 1
            timing.status = 429
            return 429, {"retry-after": "1"}, _error("Server at capacity", "server_busy")
        length = config.answer_length(conversation, turn)
        completion = min(length, cap) if cap is not None else length
        timing.service_s = config.service_time(completion)
        finish = "length" if completion < length else "stop"
        number = stats.requests
        async with self.slots:
            timing.admitted = self.now()
            # Made within the service time, as a server generating it would: when the slot
            # is freed, the answer is ready to go.
            answer = self._answer(request, messages, prompt, completion, finish, number)
            await asyncio.sleep(timing.admitted + timing.service_s - self.now())
        timing.finished = self.now()
        timing.status = 200
        timing.used_tokens = prompt + completion
        unused = booked - timing.used_tokens
        if config.tpm_refund and unused > 0:
            self.limits.refund_tokens(unused, timing.finished)
            booked -= unused
        timing.booked_tokens = booked
        stats.ok += 1
        return 200, headers, answer

    def _rate_headers(self, now: float, *, refused: bool = False) -> dict[str, str]:
        config = self.config
        if config.ratelimit_headers or (refused and config.ratelimit_headers_on_429_only):
            return self.limits.headers(now, config.ratelimit_header_style)
        return {}

    def _answer(
        self,
        request: dict[str, Any],
        messages: list[dict[str, Any]],
        prompt: int,
        completion: int,
        finish: str,
        number: int,
    ) -> dict[str, Any]:
        content = answer_text(len(messages), completion)
        return {
            "id": f"chatcmpl-bench-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(request.get("model", "bench")),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    def _stats_json(self) -> dict[str, Any]:
        s = self.stats
        return {
            "config": asdict(self.config),
            "service_time": self.config.service_time(),
            "started": s.started,
            "now": self.now(),
            "requests": s.requests,
            "ok": s.ok,
            "refused_rate": s.refused_rate,
            "refused_tokens": s.refused_tokens,
            "refused_capacity": s.refused_capacity,
            "abandoned": s.abandoned,
            "max_in_flight": s.max_in_flight,
            "max_queued": s.max_queued,
            "summary": summarize(s, self.config.capacity),
            "records": [r.row() for r in s.records],
        }


def _response(status: int, extra: dict[str, str], payload: dict[str, Any], keep: bool) -> bytes:
    data = json.dumps(payload).encode()
    out = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        "content-type: application/json",
        f"content-length: {len(data)}",
        f"connection: {'keep-alive' if keep else 'close'}",
        *(f"{k}: {v}" for k, v in extra.items()),
    ]
    return ("\r\n".join(out) + "\r\n\r\n").encode() + data


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": code, "code": code}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, shared with benchmark.py."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: pick a free port")
    p.add_argument("--base-latency", type=float, default=0.2)
    p.add_argument("--per-token", type=float, default=0.002)
    p.add_argument("--answer-tokens", type=int, default=100)
    p.add_argument("--answer-tokens-min", type=int, default=None)
    p.add_argument("--answer-tokens-max", type=int, default=None)
    p.add_argument("--answer-seed", type=int, default=0)
    p.add_argument("--capacity", type=int, default=32)
    p.add_argument("--overflow", choices=("queue", "reject"), default="queue")
    p.add_argument("--rpm", type=float, default=None)
    p.add_argument("--rpd", type=float, default=None, help="requests per day, as Groq's headers")
    p.add_argument("--burst", type=float, default=None)
    p.add_argument("--tpm", type=float, default=None)
    p.add_argument("--tpm-burst", type=float, default=None)
    p.add_argument("--tpm-refund", action="store_true")
    p.add_argument("--default-max-tokens", type=int, default=0)
    p.add_argument("--limiter", choices=("bucket", "window"), default="bucket")
    p.add_argument("--window-s", type=float, default=60.0)
    p.add_argument("--ratelimit-headers", action="store_true")
    p.add_argument("--ratelimit-headers-on-429-only", action="store_true")
    p.add_argument("--ratelimit-header-style", choices=STYLES, default="openai")
    args = p.parse_args(argv)
    windowed = args.ratelimit_header_style in ("cerebras", "kong")
    if windowed and args.limiter == "window" and args.window_s not in PERIOD_WORDS:
        p.error(
            f"--ratelimit-header-style {args.ratelimit_header_style} names only windows of "
            "1, 60, 3600 or 86400 s"
        )
    if args.ratelimit_header_style == "kong" and args.tpm is not None:
        p.error("--ratelimit-header-style kong counts requests only (no --tpm)")
    if (args.answer_tokens_min is None) != (args.answer_tokens_max is None):
        p.error("--answer-tokens-min and --answer-tokens-max go together")
    if (
        args.answer_tokens_min is not None
        and not 0 <= args.answer_tokens_min <= args.answer_tokens_max
    ):
        p.error("need 0 <= --answer-tokens-min <= --answer-tokens-max")
    return args


def config_from(args: argparse.Namespace) -> ServerConfig:
    """The server model the options describe."""
    names = set(ServerConfig.__dataclass_fields__)
    return ServerConfig(**{k: v for k, v in vars(args).items() if k in names})


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
        bench_loop.run(serve(parse_args(argv)))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
