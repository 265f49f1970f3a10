"""Adaptive concurrency: AIMD on overload (not 429s), slots only while sending, running
conversations first. The queue that ``-j auto`` finds is in tests/test_queueing.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from virtualtime import clock, run_virtual

from runner.http.mock import answer
from runner.run.engine import RunConfig, run_batch
from runner.run.events import RunResult
from runner.send.limiter import AdaptiveLimiter
from runner.spec.model import Conversation, Turn


def limiter(ceiling: int, start: int | None = None) -> AdaptiveLimiter:
    return AdaptiveLimiter(ceiling=ceiling, start=start, clock=clock)


def test_429s_leave_the_limit_alone_and_a_503_cuts_it_once_per_episode() -> None:
    """A rate limit is the pacer's business; a 503 says the server is overloaded."""

    async def go() -> AdaptiveLimiter:
        lim = limiter(8)
        tickets = [await lim.acquire(continuing=False) for _ in range(8)]
        for ticket in tickets[:4]:
            lim.release(ticket, outcome="rate_limited")
        assert lim.limit == 8 and lim.changes == []
        for ticket in tickets[4:]:  # four requests of one episode all get 503
            lim.release(ticket, outcome="overloaded")
        assert lim.limit == 6
        fresh = await lim.acquire(continuing=False)
        lim.release(fresh, outcome="overloaded")  # a 503 from after the cut: a new episode
        return lim

    lim = run_virtual(go())
    assert lim.limit == 4
    assert [c.reason for c in lim.changes] == ["503: cut by a quarter"] * 2


def test_slow_start_doubles_until_the_first_timeout_then_growth_is_additive() -> None:
    async def answers(lim: AdaptiveLimiter, held: list[int], count: int) -> None:
        """``count`` clean answers, the slots refilled at once: always at full use."""
        for _ in range(count):
            lim.release(held.pop(0), outcome="ok")
            while lim.in_flight < lim.limit:
                held.append(await lim.acquire(continuing=False))

    async def go() -> tuple[int, int, int]:
        lim = limiter(64, start=2)
        held = [await lim.acquire(continuing=False) for _ in range(2)]
        await answers(lim, held, 2 + 4)  # a round of 2, then a round of 4
        doubled = lim.limit
        lim.release(held.pop(0), outcome="timed_out")
        halved = lim.limit
        await answers(lim, held, halved)  # one clean round: +1 only
        return doubled, halved, lim.limit

    doubled, halved, grown = run_virtual(go())
    assert doubled == 8  # 2 -> 4 -> 8: one more per clean answer before any cut
    assert halved == 4
    assert grown == 5


def test_errors_other_than_429_leave_the_limit_alone() -> None:
    async def go() -> int:
        lim = limiter(4)
        epoch = await lim.acquire(continuing=False)
        lim.release(epoch, outcome="other")
        return lim.limit

    assert run_virtual(go()) == 4


def test_a_timed_out_answer_halves_the_limit_once_per_episode() -> None:
    # A server that queues instead of refusing: the requests at the back time out.
    async def go() -> list[tuple[int, str]]:
        lim = limiter(8)
        lim.release(await lim.acquire(continuing=False), outcome="ok")  # it did answer once
        tickets = [await lim.acquire(continuing=False) for _ in range(8)]
        for ticket in tickets:  # all eight were in flight when the first timed out
            lim.release(ticket, outcome="timed_out")
        return [(c.limit, c.reason) for c in lim.changes]

    assert run_virtual(go()) == [(4, "timeout: halved")]


def test_timeouts_before_any_answer_leave_the_limit_alone() -> None:
    """Nothing answered yet: the endpoint may be down (gate.py), not overloaded."""

    async def go() -> int:
        lim = limiter(8)
        for _ in range(3):
            lim.release(await lim.acquire(continuing=False), outcome="timed_out")
        return lim.limit

    assert run_virtual(go()) == 8


def test_after_a_storm_the_limit_grows_back_to_where_answers_last_came() -> None:
    async def go() -> list[int]:
        lim = limiter(8)
        tickets = [await lim.acquire(continuing=False) for _ in range(8)]
        lim.release(tickets.pop(), outcome="ok")  # answered at 8
        for ticket in tickets:
            lim.release(ticket, outcome="overloaded")  # the storm begins: 8 -> 6
        for _ in range(4):  # and goes on: every new request refused, 6 -> 4 -> 3 -> 2 -> 1
            lim.release(await lim.acquire(continuing=False), outcome="overloaded")
        limits = [lim.limit]
        lim.recover()  # the server answers again (the pacer says when)
        limits.append(lim.limit)
        for _ in range(8):  # one request at a time: not saturated, still +1 each
            lim.release(await lim.acquire(continuing=False), outcome="ok")
            limits.append(lim.limit)
        return limits

    assert run_virtual(go()) == [1, 2, 3, 4, 5, 6, 7, 8, 8, 8]


def test_recovering_from_a_storm_before_any_answer_changes_nothing() -> None:
    lim = limiter(16)
    lim.recover()
    assert lim.limit == 16 and lim.changes == []


def test_a_running_conversation_gets_a_freed_slot_before_a_new_one() -> None:
    async def go() -> list[str]:
        lim = limiter(1)
        got: list[str] = []
        held = await lim.acquire(continuing=False)

        async def want(name: str, continuing: bool) -> None:
            epoch = await lim.acquire(continuing=continuing)
            got.append(name)
            lim.release(epoch, outcome="ok")

        new = asyncio.create_task(want("new conversation", False))
        await asyncio.sleep(0)
        running = asyncio.create_task(want("next turn", True))
        await asyncio.sleep(0)
        lim.release(held, outcome="ok")
        await asyncio.gather(new, running)
        return got

    assert run_virtual(go()) == ["next turn", "new conversation"]


def test_a_freed_slot_goes_to_the_conversation_with_most_turns_left() -> None:
    """Longest chain first: a new 8-turn conversation before the 2nd-to-last turn of another."""

    async def go() -> list[str]:
        lim = limiter(1)
        got: list[str] = []
        held = await lim.acquire(continuing=False)

        async def want(name: str, continuing: bool, remaining: int) -> None:
            ticket = await lim.acquire(continuing=continuing, remaining=remaining)
            got.append(name)
            lim.release(ticket, outcome="ok")

        tasks = []
        for name, continuing, remaining in [
            ("near its end", True, 2),
            ("new, 8 turns", False, 8),
            ("judge", True, 1 << 30),
            ("midway", True, 5),
        ]:
            tasks.append(asyncio.create_task(want(name, continuing, remaining)))
            await asyncio.sleep(0)
        lim.release(held, outcome="ok")
        await asyncio.gather(*tasks)
        return got

    assert run_virtual(go()) == ["judge", "new, 8 turns", "midway", "near its end"]


def test_a_cancelled_waiter_gives_up_its_place() -> None:
    async def go() -> int:
        lim = limiter(1)
        held = await lim.acquire(continuing=False)
        waiter = asyncio.create_task(lim.acquire(continuing=False))
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        lim.release(held, outcome="ok")
        return lim.in_flight

    assert run_virtual(go()) == 0


def test_a_waiter_cancelled_just_before_a_slot_frees_stays_cancelled() -> None:
    async def go() -> tuple[int, list[object]]:
        lim = limiter(1)
        held = await lim.acquire(continuing=False)
        waiter = asyncio.create_task(lim.acquire(continuing=False))
        await asyncio.sleep(0)
        waiter.cancel()  # ...and before it runs, the slot frees and skips it
        lim.release(held, outcome="ok")
        outcome = await asyncio.gather(waiter, return_exceptions=True)
        return lim.in_flight, outcome

    in_flight, [outcome] = run_virtual(go())
    assert in_flight == 0
    assert isinstance(outcome, asyncio.CancelledError)


def test_a_rate_limited_run_keeps_its_concurrency_and_paces_instead(tmp_path: Path) -> None:
    """A server that refuses anything beyond 2 requests in flight, with 429s only."""
    in_flight = 0
    refused = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, refused
        if in_flight >= 2:
            refused += 1
            return httpx.Response(429, json={"error": {"message": "too many"}})
        in_flight += 1
        await asyncio.sleep(0.1)  # long enough that senders pile up behind the two
        in_flight -= 1
        return httpx.Response(200, json=answer(json.loads(request.content)))

    convs = [Conversation(id=f"c{i}", source="s", turns=(Turn("a"), Turn("b"))) for i in range(40)]
    config = RunConfig(
        output=tmp_path / "o.jsonl",
        base_url="http://127.0.0.1:9/v1",
        transport=httpx.MockTransport(handler),
        concurrency=16,
    )
    # On virtual time many conversations back off at once, as they would for real:
    # their waits overlap instead of adding up, so no turn ages past its time bound.
    result = run_virtual(run_batch(convs, config, sleep=asyncio.sleep, clock=clock))
    assert result.completed == 40 and result.failed == 0
    assert result.rate_limited == refused > 0
    assert result.limit_changes == ()  # 429s say "slower", not "fewer at once"
    # With 16 senders against room for 2, an unadaptive client is refused most of the
    # time; here the pace learned from the 429s keeps refusals a minority of the 80 answers.
    assert refused < 60


def test_a_queueing_server_halves_the_limit_by_timing_out_and_does_not_stop_the_run(
    tmp_path: Path,
) -> None:
    """One request served at a time, a second each; those queued past --timeout time out."""
    timeout = 3.0

    async def go() -> RunResult:
        loop = asyncio.get_running_loop()
        free_at = [loop.time()]

        async def handler(request: httpx.Request) -> httpx.Response:
            now = loop.time()
            done = max(now, free_at[0]) + 1.0
            if done - now > timeout:
                await asyncio.sleep(timeout)
                raise httpx.ReadTimeout("timed out", request=request)
            free_at[0] = done
            await asyncio.sleep(done - now)
            return httpx.Response(200, json=answer(json.loads(request.content)))

        convs = [
            Conversation(id=f"c{i}", source="s", turns=(Turn("a"), Turn("b"))) for i in range(8)
        ]
        config = RunConfig(
            output=tmp_path / "o.jsonl",
            base_url="http://127.0.0.1:9/v1",
            transport=httpx.MockTransport(handler),
            concurrency=8,
            timeout=timeout,
        )
        return await run_batch(convs, config, sleep=asyncio.sleep, clock=loop.time)

    result = run_virtual(go())
    assert result.stop_reason is None  # answers keep coming: slow, not down
    assert result.completed == 8 and result.failed == 0
    assert [c.reason for c in result.limit_changes][:1] == ["timeout: halved"]
    assert min(c.limit for c in result.limit_changes) <= 2


def test_with_auto_a_queue_cuts_the_limit_to_the_slots_it_shows() -> None:
    """Answers of 0.5 s alone that take 1.5 s with five others in flight: they queue."""
    from runner.send.queueing import Answer

    async def go() -> list[tuple[int, str]]:
        lim = AdaptiveLimiter(ceiling=32, start=6, clock=clock, watch_queue=True)
        alone = await lim.acquire(continuing=False)
        lim.release(alone, outcome="ok", answer=Answer(latency_s=0.5, tokens=100))
        tickets = [await lim.acquire(continuing=False) for _ in range(6)]
        for ticket in tickets[::-1][:3]:  # sent with 6, 5 and 4 in flight
            lim.release(ticket, outcome="ok", answer=Answer(latency_s=1.5, tokens=100))
        return [(c.limit, c.reason) for c in lim.changes]

    # The mean of the first two answers: 3.5 in flight, waits of 0.5 s on 0.5 s of service,
    # so 1.75 served at once (Little's law), and 1.5 times that, rounded down: 2.
    assert run_virtual(go()) == [(2, "queueing (about 1.8 served at once)")]


def test_fixed_concurrency_watches_the_queue_but_keeps_its_limit() -> None:
    from runner.send.queueing import Answer

    async def go() -> AdaptiveLimiter:
        lim = limiter(6)
        alone = await lim.acquire(continuing=False)
        lim.release(alone, outcome="ok", answer=Answer(latency_s=0.5, tokens=100))
        tickets = [await lim.acquire(continuing=False) for _ in range(6)]
        for ticket in tickets[::-1][:3]:
            lim.release(ticket, outcome="ok", answer=Answer(latency_s=1.5, tokens=100))
        return lim

    lim = run_virtual(go())
    assert lim.limit == 6 and lim.changes == [] and lim.watch.answers == 4
    assert lim.watch.reading().ratio > 0.75  # it saw the queue, and left -j N alone


async def opening_round(lim: AdaptiveLimiter, latencies: list[float], *, fail: int = -1) -> None:
    """Take the limit's slots at once, then answer them in order (``fail``: that one fails).

    The answers come together: no slot is taken again in between, so slow start adds nothing.
    """
    from runner.send.queueing import Answer

    tickets = [await lim.acquire(continuing=False) for _ in range(lim.limit)]
    for i, (ticket, latency) in enumerate(zip(tickets, latencies, strict=True)):
        if i == fail:
            lim.release(ticket, outcome="other")
        else:
            lim.release(ticket, outcome="ok", answer=Answer(latency_s=latency, tokens=100))


def auto(timeout: float) -> AdaptiveLimiter:
    return AdaptiveLimiter(ceiling=32, start=4, clock=clock, watch_queue=True, timeout=timeout)


def test_an_opening_round_served_at_once_jumps_as_far_as_the_timeout_allows() -> None:
    """Four 0.4 s answers together: even one at a time, 32 of them take 12.8 s of 120."""

    async def go(timeout: float) -> list[tuple[int, str]]:
        lim = auto(timeout)
        await opening_round(lim, [0.4, 0.4, 0.41, 0.4])
        return [(c.limit, c.reason) for c in lim.changes]

    assert run_virtual(go(120.0)) == [(32, "opening round served at once: 32")]
    # --timeout 12: 14 requests of 0.41 s (the slowest) take half of it one at a time.
    assert run_virtual(go(12.0)) == [(14, "opening round served at once: 14")]
    assert run_virtual(go(3.0)) == []  # 3 s: three such answers fill half of it


def test_an_opening_round_answered_one_after_another_or_with_a_failure_does_not_jump() -> None:
    async def go(latencies: list[float], fail: int = -1) -> int:
        lim = auto(120.0)
        await opening_round(lim, latencies, fail=fail)
        return lim.limit

    assert run_virtual(go([0.4, 0.8, 1.2, 1.6])) == 1  # one slot: the queue detector's cut
    assert run_virtual(go([0.4, 0.4, 0.4, 0.4], fail=2)) == 4
    assert run_virtual(go([0.4, 0.4, 0.4, 0.4])) == 32
