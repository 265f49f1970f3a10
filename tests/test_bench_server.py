"""The bench server behaves like the servers it stands for: headers, windows, TPM, slots.

The limiters are pure functions of the time given; the server's handler runs on the
virtual clock (``handle`` without sockets), and two tests go through real loopback sockets
(the headers on the wire, and a client that hangs up while its request is served).
"""

from __future__ import annotations

import asyncio
import json
import select
import selectors
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import bench_loop
from bench_headers import format_duration
from bench_limits import FixedWindow, Limits, make_limiter
from bench_server import BenchServer, ServerConfig, parse_args
from bench_stats import (
    RequestTiming,
    Stats,
    handover_ms,
    held_over_pct,
    occupancy,
    peak_per_second,
    per_second,
    quantile,
    summarize,
)
from virtualtime import run_virtual


def _body(first: str = "Hello", turns: int = 1, **params: Any) -> bytes:
    messages: list[dict[str, str]] = []
    for t in range(turns):
        if t:
            messages.append({"role": "assistant", "content": "ok"})
        messages.append({"role": "user", "content": first if t == 0 else f"turn {t}"})
    return json.dumps({"model": "bench", "messages": messages, **params}).encode()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0ms"),
        (0.0004, "1ms"),
        (0.02, "20ms"),
        (0.9991, "1s"),
        (1.0, "1s"),
        (7.66, "7.66s"),
        (179.56, "2m59.56s"),
        (360.0, "6m0s"),
        (3725.5, "1h2m5.5s"),
    ],
)
def test_durations_are_written_like_openai(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_bucket_remaining_drops_and_reset_is_the_time_until_full() -> None:
    limits = Limits(make_limiter("bucket", 1200, None, 60), None)  # 20/s, burst 20
    seen = []
    for _ in range(3):
        assert limits.admit(0, now=10.0) is None
        seen.append(limits.headers(10.0))
    assert [h["x-ratelimit-remaining-requests"] for h in seen] == ["19", "18", "17"]
    assert [h["x-ratelimit-reset-requests"] for h in seen] == ["50ms", "100ms", "150ms"]
    assert {h["x-ratelimit-limit-requests"] for h in seen} == {"1200"}
    # 100 ms later two have refilled: 19 left, full again in 50 ms.
    later = limits.headers(10.1)
    assert later["x-ratelimit-remaining-requests"] == "19"
    assert later["x-ratelimit-reset-requests"] == "50ms"
    assert "x-ratelimit-limit-tokens" not in later


def test_bucket_refuses_when_empty_and_says_when_one_is_back() -> None:
    limits = Limits(make_limiter("bucket", 60, None, 60), None)  # 1/s, burst 1
    assert limits.admit(0, now=0.0) is None
    refusal = limits.admit(0, now=0.25)
    assert refusal is not None and refusal.which == "requests"
    assert refusal.wait_s == pytest.approx(0.75)
    assert limits.headers(0.25)["x-ratelimit-remaining-requests"] == "0"
    assert limits.admit(0, now=1.0) is None


def test_fixed_window_resets_at_its_end() -> None:
    window = FixedWindow(limit=3, window_s=60.0)
    limits = Limits(window, None)
    for _ in range(3):
        assert limits.admit(0, now=10.0) is None
    assert limits.headers(10.0)["x-ratelimit-remaining-requests"] == "0"
    assert limits.headers(10.0)["x-ratelimit-reset-requests"] == "1m0s"
    refusal = limits.admit(0, now=40.0)
    assert refusal is not None and refusal.wait_s == pytest.approx(30.0)
    assert limits.headers(69.9)["x-ratelimit-reset-requests"] == "100ms"
    assert limits.admit(0, now=70.0) is None  # the next window
    assert limits.headers(70.0)["x-ratelimit-remaining-requests"] == "2"
    assert limits.headers(70.0)["x-ratelimit-reset-requests"] == "1m0s"
    assert limits.admit(0, now=200.0) is None  # two windows skipped: aligned to the first
    assert limits.headers(200.0)["x-ratelimit-reset-requests"] == "50s"


def _serve(config: ServerConfig, *bodies: bytes, gap: float = 0.0) -> tuple[BenchServer, list[Any]]:
    """Send ``bodies`` to a server on the virtual clock, ``gap`` seconds apart; all answers."""
    server = BenchServer(config)

    async def main() -> list[Any]:
        server.reset()
        tasks = []
        for body in bodies:
            tasks.append(asyncio.create_task(server.handle("POST", "/v1/chat/completions", body)))
            await asyncio.sleep(gap)
        return list(await asyncio.gather(*tasks))

    return server, run_virtual(main())


def test_token_limit_books_prompt_and_max_tokens_and_refuses_when_over() -> None:
    config = ServerConfig(base_latency=0.5, tpm=6000, ratelimit_headers=True)  # 100/s, burst 100
    body = _body("Hi, how are you?", max_tokens=56)  # 16 characters: 4 prompt tokens + 56
    server, answers = _serve(config, body, body)
    (status1, headers1, _), (status2, headers2, payload2) = answers
    assert status1 == 200
    assert headers1["x-ratelimit-limit-tokens"] == "6000"
    assert headers1["x-ratelimit-remaining-tokens"] == "40"
    assert headers1["x-ratelimit-reset-tokens"] == "600ms"
    assert status2 == 429
    assert payload2["error"]["code"] == "rate_limit_exceeded"
    assert headers2["retry-after-ms"] == "200"  # 20 more tokens at 100/s
    assert headers2["retry-after"] == "1"
    assert headers2["x-ratelimit-remaining-tokens"] == "40"
    assert (server.stats.refused_tokens, server.stats.refused_rate) == (0 + 1, 0)
    assert server.stats.records[0].booked_tokens == 60


def test_token_refund_gives_back_what_the_answer_did_not_use() -> None:
    config = ServerConfig(base_latency=0.5, answer_tokens=10, tpm=6000, tpm_refund=True)
    server, answers = _serve(config, _body("Hi, how are you?", max_tokens=56))
    assert answers[0][2]["usage"]["completion_tokens"] == 10
    assert server.stats.records[0].booked_tokens == 14
    # Booked 60 at 0 s; 46 back at 0.5 s, when 50 had refilled: full again.
    assert (
        server.limits.headers(server.stats.records[0].arrived + 0.5)["x-ratelimit-remaining-tokens"]
        == "100"
    )


def test_429s_carry_the_rate_headers_too() -> None:
    config = ServerConfig(base_latency=0.1, rpm=60, ratelimit_headers=True)
    _, answers = _serve(config, _body("a"), _body("b"))
    status, headers, _ = answers[1]
    assert status == 429
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "1s"
    assert headers["retry-after-ms"] == "1000"


def test_k_slots_serve_at_most_k_and_queue_the_rest_in_order() -> None:
    config = ServerConfig(base_latency=1.0, per_token=0.0, capacity=2)
    bodies = [_body(f"conversation {i}") for i in range(6)]
    server, answers = _serve(config, *bodies, gap=0.01)
    assert [a[0] for a in answers] == [200] * 6
    t0 = server.stats.records[0].arrived
    admitted = [round(r.admitted - t0, 2) for r in server.stats.records]
    assert admitted == [0.0, 0.01, 1.0, 1.01, 2.0, 2.01]
    assert (server.stats.max_in_flight, server.stats.max_queued) == (2, 4)
    assert max(s for _, s, _ in server.stats.timeline) == 2


def test_answer_lengths_vary_by_turn_and_are_deterministic() -> None:
    config = ServerConfig(answer_tokens_min=10, answer_tokens_max=300, answer_seed=3)
    lengths = [config.answer_length("conversation A", t) for t in range(1, 21)]
    assert lengths == [config.answer_length("conversation A", t) for t in range(1, 21)]
    assert all(10 <= n <= 300 for n in lengths)
    assert len(set(lengths)) > 10
    other_seed = ServerConfig(answer_tokens_min=10, answer_tokens_max=300, answer_seed=4)
    assert lengths != [other_seed.answer_length("conversation A", t) for t in range(1, 21)]


def test_the_answer_and_its_service_time_follow_the_turns_length() -> None:
    config = ServerConfig(
        base_latency=0.1, per_token=0.01, answer_tokens_min=5, answer_tokens_max=50
    )
    server, answers = _serve(
        config, _body("Tell me", turns=3), _body("Tell me", turns=3, max_tokens=2)
    )
    expected = config.answer_length("Tell me", 3)
    usage = answers[0][2]["usage"]
    assert usage["completion_tokens"] == expected
    assert len(answers[0][2]["choices"][0]["message"]["content"].split()) == expected
    record = server.stats.records[0]
    assert record.finished - record.admitted == pytest.approx(0.1 + 0.01 * expected)
    capped = answers[1][2]
    assert capped["usage"]["completion_tokens"] == 2
    assert capped["choices"][0]["finish_reason"] == "length"


def test_in_flight_distribution_is_time_weighted() -> None:
    timeline = [(1.0, 1, 0), (2.0, 2, 1), (4.0, 1, 0), (5.0, 0, 0)]
    shares = occupancy(timeline, 0.0, 5.0)
    assert shares == {0: 0.2, 1: 0.4, 3: 0.4}
    assert (quantile(shares, 0.1), quantile(shares, 0.5), quantile(shares, 0.9)) == (0, 1, 3)
    assert per_second([0.1, 0.9, 1.5, 3.2], 0.0) == [2, 1, 0, 1]
    assert peak_per_second(timeline, 0.0) == [0, 1, 3, 3, 1, 0]
    assert Stats(started=0.0).max_queued == 0


def test_answer_range_options_go_together() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--answer-tokens-min", "5"])


async def _raw_request(port: int, body: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n\r\n"
    writer.write(head.encode() + body)
    await writer.drain()
    return reader, writer


@pytest.mark.skipif(not hasattr(select, "epoll"), reason="epoll is Linux's")
def test_the_precise_selector_waits_out_its_timeout_and_reports_what_is_ready() -> None:
    selector = bench_loop.PreciseSelector()
    a, b = socket.socketpair()
    try:
        selector.register(a, selectors.EVENT_READ, "a")
        assert selector.select(0.01) == []  # nothing ready: the timeout passes
        b.send(b"x")
        ready = selector.select(5.0)  # ready now: no wait
        assert [(key.data, events) for key, events in ready] == [("a", selectors.EVENT_READ)]
        assert selector.select(None) == ready  # no timeout: epoll's own wait
    finally:
        selector.close()
        a.close()
        b.close()


def test_over_sockets_headers_arrive_and_an_abandoned_request_keeps_its_slot() -> None:
    config = ServerConfig(
        base_latency=0.15, per_token=0.0, capacity=1, rpm=600, ratelimit_headers=True
    )
    server = BenchServer(config)

    async def main() -> tuple[httpx.Response, float]:
        url = await server.start()
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        async with httpx.AsyncClient(base_url=url) as client:
            _, abandoning = await _raw_request(port, _body("gone"))
            await asyncio.sleep(0.02)
            abandoning.close()  # a client timeout: the server keeps serving it
            answer = await client.post("/chat/completions", content=_body("waiting"))
        await asyncio.sleep(0.02)  # the server sees both connections close
        assert server.server is not None
        server.server.close()
        return answer, server.now()

    answer, _ = bench_loop.run(main())  # the standalone server's loop
    assert answer.status_code == 200
    assert answer.headers["x-ratelimit-limit-requests"] == "600"
    assert int(answer.headers["x-ratelimit-remaining-requests"]) in (8, 9)  # 10/s, 2 taken
    assert answer.headers["x-ratelimit-reset-requests"].endswith("ms")
    gone, waiting = server.stats.records
    assert gone.abandoned and not waiting.abandoned
    assert server.stats.abandoned == 1
    assert waiting.admitted is not None and gone.finished is not None
    assert waiting.admitted >= gone.finished  # it waited out the abandoned one's service
    assert gone.finished - gone.arrived >= 0.15
    assert server.stats.max_in_flight == 1


def test_a_booking_bigger_than_the_bucket_goes_through_when_it_is_full() -> None:
    limits = Limits(None, make_limiter("bucket", 6000, None, 60))  # 100 tokens/s, burst 100
    assert limits.admit(150, now=0.0) is None
    assert limits.headers(0.0)["x-ratelimit-remaining-tokens"] == "0"
    assert limits.headers(0.0)["x-ratelimit-reset-tokens"] == "1.5s"
    refusal = limits.admit(150, now=0.5)
    assert refusal is not None and refusal.which == "tokens"
    assert refusal.wait_s == pytest.approx(1.0)  # until full again


def test_overflow_reject_refuses_beyond_capacity_at_once() -> None:
    config = ServerConfig(base_latency=1.0, per_token=0.0, capacity=1, overflow="reject")
    server, answers = _serve(config, _body("a"), _body("b"))
    assert [a[0] for a in answers] == [200, 429]
    assert answers[1][2]["error"]["code"] == "server_busy"
    assert (server.stats.refused_capacity, server.stats.max_queued) == (1, 0)


def test_requests_per_day_beside_tokens_per_minute_as_groq_sends_them() -> None:
    config = ServerConfig(base_latency=0.1, rpd=14400, tpm=6000, ratelimit_headers=True)
    _, answers = _serve(config, _body("Hi, how are you?", max_tokens=56))
    headers = answers[0][1]
    assert headers["x-ratelimit-limit-requests"] == "14400"
    assert headers["x-ratelimit-remaining-requests"] == "14399"
    assert headers["x-ratelimit-reset-requests"] == "6s"  # one request back: a day / 14,400
    assert headers["x-ratelimit-limit-tokens"] == "6000"
    assert headers["x-ratelimit-remaining-tokens"] == "40"


def _served(admitted: float, finished: float, service_s: float = 0.1) -> RequestTiming:
    return RequestTiming(
        arrived=admitted, status=200, admitted=admitted, finished=finished, service_s=service_s
    )


def test_handover_is_how_long_a_freed_slot_stays_free_the_longest_free_taken_first() -> None:
    records = [
        _served(0.0, 1.0),
        _served(0.0, 2.0),  # two slots, both new: no hand-over
        _served(1.004, 3.0),  # takes the slot freed at 1.0
        _served(2.010, 4.0),  # the one freed at 2.0
        RequestTiming(arrived=2.5, status=429),  # refused: never held a slot
        _served(4.5, 5.0),  # freed at 3.0 and 4.0 both free: the one free longest
    ]
    gaps = handover_ms(records, capacity=2)
    assert gaps == pytest.approx([4.0, 10.0, 1500.0])
    summary = summarize(Stats(started=0.0, records=records, max_in_flight=2), capacity=2)
    assert summary["handover_p50_ms"] == pytest.approx(10.0)
    assert "handover_p50_ms" not in summarize(Stats(started=0.0, records=records))
    # Slots to spare: a freed one waits for no one, and no hand-over is reported.
    spare = summarize(Stats(started=0.0, records=records, max_in_flight=2), capacity=3)
    assert "handover_p50_ms" not in spare


def test_held_over_is_the_slot_time_beyond_the_modelled_service() -> None:
    records = [_served(0.0, 0.101), _served(0.0, 0.103), _served(1.0, 1.2, service_s=0.2)]
    assert held_over_pct(records) == pytest.approx(100 * 0.004 / 0.4)
    assert held_over_pct([RequestTiming(arrived=0.0, status=429)]) is None


@pytest.mark.parametrize("style", ["openai", "cerebras", "anthropic", "ietf", "kong"])
def test_each_header_style_tells_mtrun_the_same_limits(style: str) -> None:
    """The bench server's header families (bench_headers.py), read back by mtrun's parser."""
    from runner.http.ratelimits import parse_rate_limits

    tokens = None if style == "kong" else 6000  # Kong's plugin counts requests only
    config = ServerConfig(
        base_latency=0.1,
        rpd=14400,
        tpm=tokens,
        ratelimit_headers=True,
        ratelimit_header_style=style,
    )
    _, answers = _serve(config, _body("Hi, how are you?", max_tokens=56))
    limits = parse_rate_limits(answers[0][1])
    assert limits is not None
    assert (limits.limit_requests, limits.remaining_requests) == (14400, 14399)
    named = style in ("cerebras", "ietf", "kong")  # the others leave the period unsaid
    assert limits.period_requests_s == (86400.0 if named else None)
    if tokens:
        assert (limits.limit_tokens, limits.remaining_tokens) == (6000, 40)
        assert limits.period_tokens_s == (60.0 if named and style != "kong" else None)
    assert limits.reset_requests_s == pytest.approx(6.0, abs=1.0)  # whole seconds at some


def test_a_windowed_header_style_needs_a_window_it_can_name() -> None:
    with pytest.raises(SystemExit):
        parse_args(
            [
                "--limiter",
                "window",
                "--window-s",
                "10",
                "--rpm",
                "60",
                "--ratelimit-header-style",
                "cerebras",
            ]
        )
