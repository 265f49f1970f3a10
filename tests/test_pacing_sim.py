"""Whole runs against simulated rate-limited servers (tests/sim_ratelimit.py), in virtual time.

Issue 14's targets, with nothing configured (``-j auto``): at 600 and 1,200
rpm, with and without ``x-ratelimit-*`` headers, a short batch (about 15 s
of work at the limit) and a long one (60 s): goodput at least 95% of the
limit over the server's span, fewer than 2% of requests refused, no failed
conversation; a token-per-minute limit with headers: at least 90% of it used.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
from sim_ratelimit import Log, SimServer
from virtualtime import run_virtual

from runner.run.engine import RunConfig, run_batch
from runner.run.events import RunResult
from runner.spec.model import Conversation, Turn


def batch(
    turns: int, *, per_conversation: int = 8, params: dict[str, Any] | None = None
) -> list[Conversation]:
    """Conversations of ``per_conversation`` turns (fewer for the last), ``turns`` in all."""
    convs = []
    for i in range(0, turns, per_conversation):
        n = min(per_conversation, turns - i)
        convs.append(
            Conversation(
                id=f"c{i}",
                source="s",
                turns=tuple(
                    Turn(f"c{i} turn {t}: tell me more.", params=params or {}) for t in range(n)
                ),
            )
        )
    return convs


def run(server: SimServer, convs: list[Conversation], tmp_path: Path, **config: Any) -> RunResult:
    """``convs`` through ``server`` with mtrun's defaults (and ``config``)."""

    async def go() -> RunResult:
        loop = asyncio.get_running_loop()
        cfg = RunConfig(
            output=tmp_path / "o.jsonl",
            base_url="http://127.0.0.1:9/v1",
            transport=httpx.MockTransport(server.handle),
            **config,
        )
        return await run_batch(
            convs, cfg, sleep=asyncio.sleep, clock=loop.time, rng=random.Random(3)
        )

    return run_virtual(go())


def goodput(server: SimServer, rpm: float) -> float:
    """Answers a second over the server's span, as a share of the limit."""
    log = server.log
    span = max(log.answered) - min(log.arrived)
    return len(log.answered) / span / (rpm / 60.0)


NETWORK_S = 0.001
"""Each way between client and server: loopback plus the client's own work on a wave of
sends. With none, a wave's 429s would be back before the rest of the wave went out."""


def at_the_limit(rpm: int, seconds: int, tmp_path: Path, *, headers: bool) -> Log:
    """``seconds`` of work at ``rpm`` (a bucket of one second's worth): every turn answered,
    at least 95% of the limit; what the server saw."""
    turns = rpm * seconds // 60
    server = SimServer(rpm=rpm, burst=rpm / 60, headers=headers, network_s=NETWORK_S)
    convs = batch(turns)
    result = run(server, convs, tmp_path)
    assert result.completed == len(convs) and result.failed == 0
    assert len(server.log.answered) == turns
    assert goodput(server, rpm) >= 0.95
    return server.log


CASES = [
    pytest.param(rpm, seconds, id=f"{rpm}rpm-{seconds}s")
    for rpm in (600, 1200)
    for seconds in (15, 60)
]


@pytest.mark.parametrize(("rpm", "seconds"), CASES)
def test_a_server_with_headers_is_used_to_its_limit(rpm: int, seconds: int, tmp_path: Path) -> None:
    """A bucket of one second's worth (as scripts/bench_server.py keeps), headers on all answers."""
    log = at_the_limit(rpm, seconds, tmp_path, headers=True)
    # Nothing refused, not even in the first second: the first wave (4 at -j auto) fits the
    # bucket, and from the first answer on the mirror knows its level.
    assert log.refused == []
    # Every whole second between the start and the batch's tail, the server sees its refill
    # rate: one less when a send slips into the next second, more when the bucket saved some.
    # (In the last seconds only the conversations' last turns are left, each waiting for the
    # answer before it: fewer are ready than the rate allows, whatever the pacing.)
    rate = rpm // 60
    end = int(max(log.arrived))
    per_second = [sum(t0 <= t < t0 + 1 for t in log.arrived) for t0 in range(5, end - 3)]
    assert all(rate - 1 <= n <= rate + 2 for n in per_second), str(per_second)
    assert log.max_in_flight <= 32  # -j auto's ceiling; the pace, not concurrency, binds


@pytest.mark.parametrize(("rpm", "seconds"), CASES)
def test_a_server_without_headers_is_used_to_its_limit_learned_from_429s(
    rpm: int, seconds: int, tmp_path: Path
) -> None:
    """No x-ratelimit headers, only 429s with Retry-After: the pace measured between 429s."""
    log = at_the_limit(rpm, seconds, tmp_path, headers=False)
    assert len(log.refused) / len(log.arrived) < 0.02
    # One refused when the ramp first finds the bucket empty (its 429 holds the rest of the
    # wave, and the first guess of the rate is close enough to need no second lesson), then
    # one each time the pace, probing upward, reaches the refill rate and measures it again.
    assert len([t for t in log.refused if t < 2.0]) == 1
    assert len(log.refused) <= 2 + seconds // 30


@pytest.mark.parametrize("rpm", [600, 1200])
def test_over_a_slower_network_a_wave_is_not_refused_whole(rpm: int, tmp_path: Path) -> None:
    """3 ms each way: a wave sent at once would be all out before the first 429 was back
    (at 1,200 rpm, 20 of the wave of 40 that first finds the bucket of 20 empty)."""
    server = SimServer(rpm=rpm, burst=rpm / 60, headers=False, network_s=0.003)
    convs = batch(rpm // 4)  # 15 s at the limit
    result = run(server, convs, tmp_path)
    assert result.completed == len(convs) and result.failed == 0
    log = server.log
    assert goodput(server, rpm) >= 0.95
    assert len([t for t in log.refused if t < 2.0]) <= 2
    assert len(log.refused) <= 3
    assert len(log.refused) / len(log.arrived) < 0.02


@pytest.mark.parametrize("rpm", [600, 1200])
def test_a_wave_is_spread_wider_than_the_clients_own_work_on_a_send(
    rpm: int, tmp_path: Path
) -> None:
    """The bench server's answers (0.1 s) and a client that spends a millisecond of its loop
    on each request and each answer, as mtrun does there. The ramp's wave spread at a third of
    a latency over 32 (1.1 ms apart) kept that loop full: sends queued in it, and the first
    429 was read only after 8 (600 rpm) or 6 (1,200 rpm) sends of the wave were refused; the
    real runs lost 1-10 that way. Spread wider (FLIGHT_MIN_S), the wave stops within two."""
    server = SimServer(
        rpm=rpm,
        burst=rpm / 60,
        headers=False,
        base_s=0.05,
        per_token_s=0.0005,
        answer_tokens=(100, 100),
        network_s=0.001,
        client_cpu_s=0.001,
    )
    convs = batch(rpm // 4)  # 15 s at the limit
    result = run(server, convs, tmp_path)
    assert result.completed == len(convs) and result.failed == 0
    log = server.log
    assert goodput(server, rpm) >= 0.95
    assert len([t for t in log.refused if t < 2.0]) <= 2  # the first wave
    assert len(log.refused) <= 3  # and the probe that measures the rate
    assert len(log.refused) / len(log.arrived) < 0.02


@pytest.mark.parametrize("style", ["openai", "cerebras", "anthropic", "ietf"])
def test_a_token_limit_in_the_headers_is_used_to_90_percent_without_refusals(
    style: str, tmp_path: Path
) -> None:
    """60,000 tokens a minute, each request asking for up to 400: tokens, not requests, bind.
    The headers in each family's names and forms (scripts/bench_headers.py)."""
    tpm = 60_000
    server = SimServer(rpm=10_000, tpm=tpm, style=style, answer_tokens=(50, 400))
    convs = batch(400, params={"max_tokens": 400})
    result = run(server, convs, tmp_path)
    assert result.completed == len(convs) and result.failed == 0
    log = server.log
    # The bucket starts full (a minute's worth); from 40 s to 100 s it gives only its refill.
    assert max(log.answered) > 110.0
    used_per_minute = sum(tokens for at, tokens in log.tokens if 40.0 <= at < 100.0)
    assert used_per_minute >= 0.9 * tpm
    assert len(log.refused) / len(log.arrived) < 0.02


def test_a_small_token_bucket_that_keeps_whole_bookings_is_not_overdrawn(tmp_path: Path) -> None:
    """A burst of one second's tokens, as scripts/bench_server.py keeps, and no refunds.

    Each request books a fifth of the bucket or more. The first requests go before any
    answer has told of a token limit, and more wait for a request slot meanwhile: their
    tokens count all the same (they once went as costing nothing, overdrawing the bucket
    at every step of the ramp: 16 refused here, 13% on the benchmark).
    """
    tpm = 120_000
    server = SimServer(
        tpm=tpm,
        tpm_burst=tpm / 60,
        headers=True,
        base_s=0.05,
        per_token_s=0.0005,
        answer_tokens=(20, 150),
        refund=False,
    )
    convs = batch(300, per_conversation=6, params={"max_tokens": 150})
    result = run(server, convs, tmp_path)
    assert result.completed == len(convs) and result.failed == 0
    log = server.log
    assert log.refused == []
    span = max(log.answered) - min(log.arrived)
    assert sum(tokens for _, tokens in log.tokens) / span >= 0.95 * tpm / 60


def test_bookings_bigger_than_a_small_token_bucket_go_when_it_is_full_unrefused(
    tmp_path: Path,
) -> None:
    """60,000 tokens a minute kept over a second's 1,000 (Azure enforces its limits over
    seconds too), and every turn books more than that (``max_tokens: 1024``): each goes
    when the bucket is full and leaves it below zero. They were sent as soon as 1,000 was
    back, and half were refused."""
    server = SimServer(
        tpm=60_000,
        tpm_burst=1000,
        base_s=0.05,
        per_token_s=0.0005,
        answer_tokens=(20, 150),
        refund=False,
        network_s=NETWORK_S,
    )
    convs = batch(40, per_conversation=2, params={"max_tokens": 1024})
    result = run(server, convs, tmp_path)
    assert result.completed == len(convs) and result.failed == 0
    log = server.log
    # Only the opening wave, sent before any answer told of the limit, meets a 429.
    assert [t for t in log.refused if t > 0.5] == []
    assert len(log.refused) <= 3
    span = max(log.answered) - min(log.arrived)
    assert sum(tokens for _, tokens in log.tokens) / span >= 0.95 * 1000


def test_an_openai_sized_bucket_serves_its_burst_then_its_refill(tmp_path: Path) -> None:
    """OpenAI's bucket holds a whole minute's worth: a batch longer than that goes at the limit."""
    rpm = 300
    server = SimServer(rpm=rpm, headers=True, base_s=0.1, per_token_s=0.0005)
    convs = batch(600)  # 2 minutes at the limit, the first 300 from the full bucket
    result = run(server, convs, tmp_path)
    assert result.completed == len(convs) and result.failed == 0
    log = server.log
    assert log.refused == []
    # Once the burst is spent, the refill rate: 5 a second.
    tail = [sum(t0 <= t < t0 + 1 for t in log.arrived) for t0 in range(20, 55)]
    assert all(4 <= n <= 6 for n in tail), tail


def test_a_fixed_window_limit_is_used_without_a_stream_of_429s(tmp_path: Path) -> None:
    """300 requests per 60 s window, counted from the window's start, headers on every answer."""
    server = SimServer(rpm=300, window_s=60.0, headers=True, base_s=0.1, per_token_s=0.0005)
    convs = batch(750)
    result = run(server, convs, tmp_path)
    assert result.completed == len(convs) and result.failed == 0
    log = server.log
    assert len(log.answered) == 750
    assert len(log.refused) / len(log.arrived) < 0.02
    assert max(log.answered) < 2 * 60.0 + 15.0  # the third window, not a crawl after the first


def test_the_quick_benchmarks_rate_limited_workload_fails_no_conversation(
    tmp_path: Path,
) -> None:
    """Issue 11's "4 failed conversations" (scripts/benchmark.py --quick, 1,200 rpm, no
    x-ratelimit headers, Retry-After on 429s): 25 conversations of 1-12 turns all complete."""
    rng = random.Random(11)
    convs = [
        Conversation(
            id=f"c{i}",
            source="s",
            turns=tuple(Turn(f"c{i} turn {t}") for t in range(rng.randint(1, 12))),
        )
        for i in range(25)
    ]
    server = SimServer(rpm=1200, burst=20, headers=False, base_s=0.05, per_token_s=0.0005)
    result = run(server, convs, tmp_path)
    assert (result.completed, result.failed) == (25, 0)
    assert len(server.log.answered) == sum(len(c.turns) for c in convs)


@pytest.mark.parametrize("headers", [True, False], ids=["headers", "bare"])
def test_a_bucket_of_one_request_is_used_to_its_limit(headers: bool, tmp_path: Path) -> None:
    """60 rpm, a bucket of one: no room for a margin, and one 429 a second tells too little."""
    server = SimServer(rpm=60, burst=1, headers=headers)
    convs = batch(120)
    result = run(server, convs, tmp_path)
    assert result.completed == len(convs) and result.failed == 0
    log = server.log
    assert goodput(server, 60) >= 0.95
    # With headers, only the first request's 429 (the first wave is two); without, the
    # seconds it takes to see five requests through between two 429s, then none.
    assert len(log.refused) <= (1 if headers else 6)
    assert [t for t in log.refused if t >= 10.0] == []


REQUEST_STYLES = ["openai", "cerebras", "anthropic", "ietf", "kong"]


@pytest.mark.parametrize("style", REQUEST_STYLES)
def test_a_request_limit_in_each_providers_headers_is_used_to_its_limit(
    style: str, tmp_path: Path
) -> None:
    """600 rpm, a bucket of one second's worth, its headers in each family's names and forms
    (tests/sim_header_styles.py): the mirror keeps the pace from all of them alike."""
    rpm, turns = 600, 150
    server = SimServer(rpm=rpm, burst=rpm / 60, style=style, network_s=NETWORK_S)
    convs = batch(turns)
    result = run(server, convs, tmp_path)
    assert result.completed == len(convs) and result.failed == 0
    assert goodput(server, rpm) >= 0.95
    # Whole-second resets (Anthropic's moments, the IETF draft's and Kong's counts) say
    # the bucket's size only roughly: its first snapshot may allow one too many.
    assert len(server.log.refused) <= (0 if style in ("openai", "cerebras") else 1)


def test_a_days_request_limit_nearly_spent_paces_at_its_daily_refill(tmp_path: Path) -> None:
    """Cerebras's names: 14,400 requests a day with 20 left, beside a minute's tokens.

    The ``-day`` in the name says the period: past the 20, a request every 6 s, none
    refused; the tokens limit, with plenty left, slows nothing.
    """
    server = SimServer(rpd=14_400, level_requests=20, tpm=1_000_000, style="cerebras")
    convs = batch(30, per_conversation=3)
    result = run(server, convs, tmp_path)
    assert result.completed == len(convs) and result.failed == 0
    log = server.log
    assert log.refused == []
    arrived = sorted(log.arrived)
    assert arrived[18] < 1.0  # what is left goes at once, one kept in hand
    late = arrived[19:]
    assert all(abs(t - (late[0] + 6.0 * i)) < 0.5 for i, t in enumerate(late)), late
