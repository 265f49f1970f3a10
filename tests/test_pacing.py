"""Pacing under rate limits: --rpm, --tpm and the servers' x-ratelimit headers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from virtualtime import RecordedSleep, clock, pass_time, run_virtual

from runner.http.headers import parse_duration
from runner.http.mock import answer
from runner.http.ratelimits import RateLimits, parse_rate_limits
from runner.run.engine import RunConfig, run_batch
from runner.run.events import RunResult
from runner.send.pacing import STORM_MAX_INTERVAL, Pacer
from runner.spec.model import Conversation, Turn


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("12ms", 0.012),
        ("1s", 1.0),
        ("1.5s", 1.5),
        ("6m0s", 360.0),
        ("1h2m3s", 3723.0),
        ("30", 30.0),
        ("0.25", 0.25),
        (" 2S ", 2.0),
    ],
)
def test_parse_duration(raw: str, seconds: float) -> None:
    assert parse_duration(raw) == pytest.approx(seconds)


@pytest.mark.parametrize("raw", ["soon", "", "5x", "m", "-3", "1s junk", None])
def test_parse_duration_garbage(raw: str | None) -> None:
    assert parse_duration(raw) is None


def test_parse_rate_limits() -> None:
    headers = {
        "X-RateLimit-Remaining-Requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-remaining-tokens": "149000",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    assert parse_rate_limits(headers) == RateLimits(59, 1.0, 149000, 360.0)
    assert parse_rate_limits({"content-type": "application/json"}) is None
    assert parse_rate_limits({"X-RATELIMIT-RESET-TOKENS": "2s"}) == RateLimits(reset_tokens_s=2.0)
    assert parse_rate_limits({"x-ratelimit-remaining-requests": "soon"}) is None
    assert parse_rate_limits({"x-ratelimit-limit-requests": "60"}) == RateLimits(limit_requests=60)


def pacer(**kw: float) -> tuple[Pacer, RecordedSleep]:
    sleeps = RecordedSleep()
    return Pacer(sleep=sleeps, clock=clock, **kw), sleeps  # type: ignore[arg-type]


def test_rpm_spaces_requests_evenly() -> None:
    p, sleeps = pacer(rpm=120)

    async def go() -> None:
        for _ in range(5):
            await p.wait_turn(10)

    run_virtual(go())
    assert sleeps.waits == pytest.approx([0.5, 0.5, 0.5, 0.5])  # the first goes at once


def test_tpm_books_tokens_ahead_and_settles_by_usage() -> None:
    p, sleeps = pacer(tpm=6000)  # 100 tokens a second

    async def go() -> None:
        await p.wait_turn(500)  # books 5 s
        p.settle(500, 100)  # only 100 were used: 4 s given back
        await p.wait_turn(500)

    run_virtual(go())
    assert sleeps.waits == pytest.approx([1.0])


def test_headers_spread_the_last_requests_and_hold_at_zero() -> None:
    p, sleeps = pacer()
    p.observe(RateLimits(remaining_requests=4, reset_requests_s=2.0), in_flight=4)

    async def go() -> None:
        await p.wait_turn(1)
        await p.wait_turn(1)

    run_virtual(go())
    assert sleeps.waits == pytest.approx([0.5])  # 2 s left for 4 requests
    p.observe(RateLimits(remaining_requests=0, reset_requests_s=7.0), in_flight=4)
    before = len(sleeps.waits)
    run_virtual(p.wait_turn(1))
    assert sum(sleeps.waits[before:]) >= 7.0 - 0.5
    p.observe(RateLimits(remaining_requests=1000, reset_requests_s=60.0), in_flight=4)
    before = len(sleeps.waits)
    run_virtual(p.wait_turn(1))
    run_virtual(p.wait_turn(1))
    assert len(sleeps.waits) == before  # plenty left: no pacing


def test_a_run_under_rpm_sends_one_request_a_second(tmp_path: Path) -> None:
    sent: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(asyncio.get_running_loop().time())
        return httpx.Response(200, json=answer(json.loads(request.content)))

    convs = [Conversation(id=f"c{i}", source="s", turns=(Turn("a"), Turn("b"))) for i in range(10)]
    config = RunConfig(
        output=tmp_path / "o.jsonl",
        base_url="http://127.0.0.1:9/v1",
        transport=httpx.MockTransport(handler),
        concurrency=8,
        rpm=60,
    )

    async def go() -> RunResult:
        loop = asyncio.get_running_loop()
        return await run_batch(convs, config, sleep=asyncio.sleep, clock=loop.time)

    result = run_virtual(go())
    assert result.completed == 10
    # 20 requests at 60 a minute: the first at once, then one a second.
    assert [round(t - sent[0], 6) for t in sent] == [float(k) for k in range(20)]
    # Wall-clock time held, not the sum of every request's wait (which is 190 s).
    assert result.rate_limit_wait_s == pytest.approx(19.0)


def test_waiting_for_a_rate_limit_is_not_counted_as_latency(tmp_path: Path) -> None:
    from helpers import read_jsonl

    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.25)  # the server takes a quarter of a second
        return httpx.Response(200, json=answer(json.loads(request.content)))

    convs = [Conversation(id="c", source="s", turns=(Turn("a"), Turn("b"), Turn("c")))]
    config = RunConfig(
        output=tmp_path / "o.jsonl",
        base_url="http://127.0.0.1:9/v1",
        transport=httpx.MockTransport(handler),
        rpm=6,  # one request every 10 s
    )
    result = run_virtual(run_batch(convs, config, sleep=asyncio.sleep, clock=clock))
    assert result.rate_limit_wait_s == pytest.approx(19.5)  # sends at 0, 10 and 20 s
    (record,) = read_jsonl(tmp_path / "o.jsonl")
    assert [t["latency_ms"] for t in record["turns"]] == [pytest.approx(250.0)] * 3


def allowed_rate(p: Pacer, sleeps: RecordedSleep) -> float:
    """Requests per second the pacer lets through now."""

    async def go() -> float:
        await p.wait_turn(0)
        before = len(sleeps.waits)
        await p.wait_turn(0)
        return sum(sleeps.waits[before:])  # a long wait is slept in steps

    return 1.0 / run_virtual(go())


def test_a_429_teaches_a_pace_that_probes_slowly_near_the_refused_rate() -> None:
    p, sleeps = pacer()
    for _ in range(100):  # ten answers a second for ten seconds, then a 429
        pass_time(0.1)
        p.answered()
    p.refused()
    refused_rate = 100 / 9.9  # what the window saw
    assert allowed_rate(p, sleeps) == pytest.approx(0.85 * refused_rate)

    for _ in range(46):  # 0.25% faster per answer, back to 95% of the refused rate
        p.answered()
    assert 0.95 * refused_rate <= allowed_rate(p, sleeps) < 0.96 * refused_rate
    for _ in range(200):  # then only 0.02% per answer: it stays under the known limit
        p.answered()
    assert allowed_rate(p, sleeps) < refused_rate
    for _ in range(2000):  # but keeps probing, in case the limit went up
        p.answered()
    assert allowed_rate(p, sleeps) > 1.3 * refused_rate


def test_429s_of_one_episode_teach_the_pace_once() -> None:
    p, sleeps = pacer()
    for _ in range(100):
        pass_time(0.1)
        p.answered()
    p.refused()
    first = allowed_rate(p, sleeps)
    pass_time(0.5)  # no answers meanwhile: the window's rate looks lower now
    p.refused()  # another request that was in flight
    assert allowed_rate(p, sleeps) == pytest.approx(first)
    pass_time(2.0)  # a new episode, later: it learns again, from the lower rate
    p.refused()
    assert allowed_rate(p, sleeps) < first


def test_a_first_429_before_any_answer_is_a_guess_not_a_storm() -> None:
    p, sleeps = pacer()
    p.refused()
    assert allowed_rate(p, sleeps) == pytest.approx(20.0)
    p.answered()
    assert p.storms_ended == 0
    assert allowed_rate(p, sleeps) == pytest.approx(20.0 * 1.0025)  # probing up, slowly


def test_a_storm_of_429s_spaces_sends_out_without_wearing_the_learned_pace_down() -> None:
    p, sleeps = pacer()
    for _ in range(100):  # ten answers a second, then a 429
        pass_time(0.1)
        p.answered()
    p.refused()
    learned = allowed_rate(p, sleeps)
    for _ in range(30):  # then 30 s of nothing but 429s
        pass_time(1.0)
        p.refused()
    assert allowed_rate(p, sleeps) == pytest.approx(1 / STORM_MAX_INTERVAL)
    p.answered()  # the server answers again
    assert allowed_rate(p, sleeps) == pytest.approx(learned, rel=0.01)


def test_sends_booked_during_a_storm_go_at_the_pace_once_it_ends() -> None:
    async def go() -> list[float]:
        loop = asyncio.get_running_loop()
        p = Pacer(sleep=asyncio.sleep, clock=loop.time)
        for _ in range(100):
            await asyncio.sleep(0.1)
            p.answered()
        p.refused()
        for _ in range(30):
            await asyncio.sleep(1.0)
            p.refused()
        began = loop.time()
        started: list[float] = []

        async def send() -> None:
            await p.wait_turn(0)
            started.append(loop.time() - began)

        sends = [asyncio.create_task(send()) for _ in range(6)]  # booked 2 s apart
        await asyncio.sleep(0.1)
        p.answered()
        await asyncio.gather(*sends)
        return started

    started = run_virtual(go())
    assert max(started) < 1.5  # not 10 s: re-booked at the learned pace (about 8.5 a second)


def test_the_refill_rate_is_what_got_through_between_two_429s() -> None:
    from runner.send.refill import RefillEstimate

    refill = RefillEstimate()
    seq = 0
    for k in range(40):  # 40 sends in the second before the first 429: a high first guess
        seq += 1
        refill.sent(seq, k / 40)
    for _ in range(4):  # then a wave of 4 sent at once, before any of their 429s was back
        seq += 1
        refill.sent(seq, 1.0)
    # The 429s of the wave, the latest sent first: the guess counts the burst as one
    # second's worth, and each refusal of the wave takes one more out of it.
    assert refill.refused(seq, 1.0) == pytest.approx(43 / 2)
    assert refill.refused(seq - 1, 1.0) == pytest.approx(42 / 2)
    assert refill.kind == "guess" and not refill.measured
    # Then 20 sends a second against a refill of 10: every other one refused. A 429 half a
    # second on, with 5 let through since the wave, says the guess is too fast (a bound).
    for k in range(20):
        seq += 1
        refill.sent(seq, 1.0 + (k + 1) / 20)
        if k % 2:
            rate = refill.refused(seq, 1.0 + (k + 1) / 20)
            if k == 9:
                assert rate == pytest.approx((5 + 1) / 0.5)
                assert refill.kind == "bound"
    # The last, at 2 s, a second after the wave: 10 let through, the refill measured.
    assert refill.rate == pytest.approx(10 / 1.0)
    assert refill.kind == "measure" and refill.measured
    for k in range(13):  # 12 let through in 13/12 s: a higher measure, averaged
        seq += 1
        refill.sent(seq, 2.0 + (k + 1) / 12)
    assert refill.refused(seq, 2.0 + 13 / 12) == pytest.approx((10 + 12 / (13 / 12)) / 2)
    for k in range(11):  # 10 let through in 11/10 s: lower than the estimate, taken as it is
        seq += 1
        refill.sent(seq, 2.0 + 13 / 12 + (k + 1) / 10)
    assert refill.refused(seq, 2.0 + 13 / 12 + 1.1) == pytest.approx(10 / 1.1)


def test_a_hold_also_holds_sends_already_waiting_on_the_pace() -> None:
    p, _ = pacer(rpm=60)  # one a second

    async def go() -> list[float]:
        loop = asyncio.get_running_loop()
        began = loop.time()
        started: list[float] = []

        async def send() -> None:
            await p.wait_turn(0)
            started.append(loop.time() - began)

        sends = [asyncio.create_task(send()) for _ in range(3)]  # booked at 0, 1 and 2 s
        await asyncio.sleep(0.5)
        p.hold(began + 10.0)  # a Retry-After of 9.5 s arrives
        await asyncio.gather(*sends)
        return started

    assert run_virtual(go()) == [0.0, 10.0, 11.0]


def test_a_slow_limit_is_measured_over_a_longer_span() -> None:
    from runner.send.refill import RefillEstimate

    refill = RefillEstimate()
    refill.sent(1, 0.0)
    assert refill.refused(1, 0.0) is None  # nothing went through before it
    for seq in range(2, 12):  # 10 sends over 10 s, one a second
        refill.sent(seq, float(seq - 1))
    refill.sent(12, 11.0)
    assert refill.refused(12, 11.0) == pytest.approx(10 / 11)  # 60 rpm, about


def _wave(p: Pacer, sends: int) -> list[float]:
    """Two answers (the shortest latency 0.3 s, 10 allowed), then ``sends`` sends at once."""

    async def go() -> list[float]:
        loop = asyncio.get_running_loop()
        began = loop.time()
        p.answered(0.5, in_flight=4)  # the shortest latency so far...
        p.answered(0.3, in_flight=10)  # ...is this one: 0.3 s / (3 x 10) apart
        return await _send_times(p, began, sends, sending=False)

    return run_virtual(go())


async def _send_times(p: Pacer, began: float, n: int, *, sending: bool = True) -> list[float]:
    """``n`` sends ready at once: when each went (s since ``began``), told ``p`` if ``sending``."""
    loop = asyncio.get_running_loop()
    started: list[float] = []

    async def send() -> None:
        await p.wait_turn(0)
        if sending:
            p.sending(0)
        started.append(round(loop.time() - began, 6))

    await asyncio.gather(*(send() for _ in range(n)))
    return started


def test_a_wave_of_sends_beyond_the_answers_they_replace_is_spread() -> None:
    """Slots a grown limit opens go apart (0.3 s / 30), the two replacing answers at once."""
    p, sleeps = pacer()
    assert _wave(p, 5) == [0.0, 0.0, 0.0, 0.01, 0.02]
    assert sleeps.waits == pytest.approx([0.01, 0.02])


@pytest.mark.parametrize(
    ("latency", "limit", "apart"),
    [
        (0.3, 10, 0.01),  # a third of a latency over the limit: wider than FLIGHT_MIN_S
        (0.06, 10, 0.004),  # a third would be 2 ms, closer than the client's own work allows
        (0.1, 32, 0.003125),  # 4 ms would spread the wave over more than a latency: 0.1 s / 32
    ],
)
def test_a_wave_goes_no_closer_than_the_client_can_read_a_429(
    latency: float, limit: int, apart: float
) -> None:
    """Spread sends are a third of a latency over the limit apart, at least FLIGHT_MIN_S (4 ms),
    and never more than a latency over the limit (which would slow a steady flow)."""
    p, _ = pacer()

    async def go() -> list[float]:
        loop = asyncio.get_running_loop()
        began = loop.time()
        p.answered(latency, in_flight=limit)  # the first send replaces it: it goes at once
        return await _send_times(p, began, 3)

    assert run_virtual(go()) == pytest.approx([0.0, apart, 2 * apart])


def test_spacing_too_short_to_sleep_for_is_not_slept() -> None:
    """0.45 ms apart at most (a fast server, many in flight): every send goes at once."""
    p, sleeps = pacer()

    async def go() -> None:
        p.answered(0.0045, in_flight=10)
        await asyncio.gather(*(p.wait_turn(0) for _ in range(3)))

    run_virtual(go())
    assert sleeps.waits == []


def test_sends_woken_together_by_a_stalled_loop_still_go_one_at_a_time() -> None:
    """A busy machine keeps the loop from running: the sends due meanwhile wake together,
    and go out spaced from the send before each, not all before a 429 can be read."""
    p, _ = pacer()

    async def go() -> list[float]:
        loop = asyncio.get_running_loop()
        began = loop.time()

        async def stalled(seconds: float) -> None:  # nothing runs until 50 ms
            await asyncio.sleep(max(seconds, began + 0.05 - loop.time()))

        p.sleep = stalled
        p.answered(0.3, in_flight=10)  # 10 ms apart
        return await _send_times(p, began, 3)

    assert run_virtual(go()) == [0.0, 0.05, 0.06]
