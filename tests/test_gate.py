"""The endpoint gate: a shared Retry-After hold, and stopping when the endpoint is down."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from helpers import read_jsonl
from virtualtime import RecordedSleep, clock, pass_time, run_virtual

from runner.cli.progress import summary_lines
from runner.errors import TransientAPIError
from runner.http.mock import answer
from runner.run.engine import RunConfig, run_batch
from runner.run.events import Event, RunResult, SendsHeld
from runner.send.gate import EndpointGate
from runner.send.retry import RetryPolicy
from runner.spec.model import Conversation, Turn

LOCAL = "http://127.0.0.1:9/v1"


def conv(cid: str, turns: int = 2) -> Conversation:
    return Conversation(
        id=cid, source="g.yaml", turns=tuple(Turn(f"{cid} {i}") for i in range(turns))
    )


def test_a_hold_read_a_rounding_error_short_of_its_end_is_over() -> None:
    """A clock that stops a hair before the hold's end (float sums) is not slept on forever."""
    slept: list[float] = []
    now = 1060.0005

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) > 3:
            raise AssertionError(f"slept on and on: {slept}")

    gate = EndpointGate(sleep=sleep, clock=lambda: now)
    gate.hold_until = now + 2.3e-13  # the next float or so: the clock never gets there
    asyncio.run(gate.before_send())
    assert slept == []


def test_a_retry_after_holds_every_request() -> None:
    sleeps = RecordedSleep()
    gate = EndpointGate(sleep=sleeps, clock=clock)
    run_virtual(gate.before_send())
    assert sleeps.waits == []
    gate.failed(TransientAPIError("slow", kind="http_429", status=429, retry_after=5.0), "a")
    run_virtual(gate.before_send())
    assert sleeps.waits == [5.0]
    run_virtual(gate.before_send())  # the hold is over
    assert sleeps.waits == [5.0] and gate.waits.seconds == 5.0
    gate.failed(TransientAPIError("x", kind="http_429", status=429, retry_after=999.0), "a")
    run_virtual(gate.before_send())
    assert sleeps.waits[-1] == 120.0  # capped


def test_down_needs_consecutive_unreachable_failures_over_two_conversations() -> None:
    sleeps = RecordedSleep()
    gate = EndpointGate(sleep=sleeps, clock=clock, down_after=3)
    refused = TransientAPIError("cannot connect", kind="connect_error")
    for _ in range(5):
        gate.failed(refused, "a")
    assert not gate.down  # one conversation alone may just be unlucky
    gate.failed(refused, "b")
    assert gate.down
    gate.failed(TransientAPIError("HTTP 500", kind="http_500", status=500), "b")
    assert not gate.down  # something answered


def test_a_dead_endpoint_stops_the_run_quickly_and_leaves_it_resumable(tmp_path: Path) -> None:
    requests = 0

    def refuse(request: httpx.Request) -> httpx.Response:
        nonlocal requests
        requests += 1
        raise httpx.ConnectError("Connection refused")

    sleeps = RecordedSleep()
    config = RunConfig(
        output=tmp_path / "o.jsonl",
        base_url=LOCAL,
        transport=httpx.MockTransport(refuse),
        concurrency=3,
    )
    convs = [conv(f"c{i}") for i in range(20)]
    result = run_virtual(run_batch(convs, config, sleep=sleeps, clock=clock))
    assert requests <= 12 + 3  # not 20 conversations x 7 attempts
    assert result.stop_reason is not None
    assert result.stop_reason.startswith("http://127.0.0.1:9/v1 is unreachable: 12 requests")
    assert result.failed == 0 and result.completed == 0
    assert result.interrupted + result.not_started == 20
    assert {r["status"] for r in read_jsonl(tmp_path / "o.jsonl")} == {"interrupted"}


def test_errors_from_a_live_endpoint_do_not_count_as_down(tmp_path: Path) -> None:
    def overloaded(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="busy")

    sleeps = RecordedSleep()
    config = RunConfig(
        output=tmp_path / "o.jsonl",
        base_url=LOCAL,
        transport=httpx.MockTransport(overloaded),
        concurrency=2,
    )
    result = run_virtual(
        run_batch([conv(f"c{i}") for i in range(4)], config, sleep=sleeps, clock=clock)
    )
    assert result.stop_reason is None and result.failed == 4


def test_one_conversations_retry_after_delays_the_others(tmp_path: Path) -> None:
    sleeps = RecordedSleep()
    sent_at: list[tuple[str, float]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        first = body["messages"][0]["content"]
        sent_at.append((first, clock()))
        if first == "a 0" and len([s for s in sent_at if s[0] == "a 0"]) == 1:
            return httpx.Response(
                429, headers={"retry-after": "30"}, json={"error": {"message": "slow"}}
            )
        return httpx.Response(200, json=answer(body))

    config = RunConfig(
        output=tmp_path / "o.jsonl",
        base_url=LOCAL,
        transport=httpx.MockTransport(handler),
        concurrency=1,
    )
    run_virtual(run_batch([conv("a", 1), conv("b", 1)], config, sleep=sleeps, clock=clock))
    start = sent_at[0][1]
    b_sent = next(t for name, t in sent_at if name == "b 0")
    assert b_sent - start >= 30.0


def test_a_token_budget_stops_new_requests_and_leaves_a_resumable_output(tmp_path: Path) -> None:
    sent = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal sent
        sent += 1
        body = json.loads(request.content)
        data = answer(body)
        data["usage"] = {"prompt_tokens": 60, "completion_tokens": 40, "total_tokens": 100}
        return httpx.Response(200, json=data)

    config = RunConfig(
        output=tmp_path / "o.jsonl",
        base_url=LOCAL,
        concurrency=1,
        transport=httpx.MockTransport(handler),
        budget_tokens=250,
    )
    result = run_virtual(run_batch([conv(f"c{i}", 2) for i in range(5)], config))
    assert sent == 3  # 300 tokens used once the third answer arrived
    assert result.stop_reason == (
        "the token budget is spent (300 of 250 tokens used); "
        "continue with --resume and a larger --budget-tokens"
    )
    assert result.completed == 1 and result.interrupted == 1 and result.not_started == 3


def test_longest_conversations_start_first(tmp_path: Path) -> None:
    order: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if len(body["messages"]) == 1:
            order.append(body["messages"][0]["content"].split()[0])
        return httpx.Response(200, json=answer(body))

    config = RunConfig(
        output=tmp_path / "o.jsonl",
        base_url=LOCAL,
        concurrency=1,
        transport=httpx.MockTransport(handler),
    )
    convs = [conv("short", 1), conv("long", 5), conv("mid", 3), conv("mid2", 3)]
    run_virtual(run_batch(convs, config))
    assert order == ["long", "mid", "mid2", "short"]


def slow_down(retry_after: str) -> httpx.Response:
    return httpx.Response(
        429, headers={"retry-after": retry_after}, json={"error": {"message": "slow"}}
    )


def test_max_retry_wait_caps_the_endpoint_wide_hold_too(tmp_path: Path) -> None:
    asked: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(1)
        if len(asked) == 1:
            return slow_down("300")
        return httpx.Response(200, json=answer(json.loads(request.content)))

    config = RunConfig(
        output=tmp_path / "o.jsonl",
        base_url=LOCAL,
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(max_retry_after=2.0),
    )

    async def go() -> float:
        loop = asyncio.get_running_loop()
        began = loop.time()
        result = await run_batch([conv("a")], config, sleep=asyncio.sleep, clock=loop.time)
        assert result.completed == 1
        return loop.time() - began

    took = run_virtual(go())
    assert 2.0 <= took < 3.5  # the capped wait and its jitter, not a 120 s hold
    (record,) = read_jsonl(tmp_path / "o.jsonl")
    first = record["turns"][0]["attempts"][0]
    assert first["retry_after_s"] == 300.0
    assert 2.0 <= first["wait_s"] <= took + 0.001  # rounded up to the millisecond


def test_the_recorded_wait_includes_the_hold_waited_after_the_backoff(tmp_path: Path) -> None:
    """b's 503 backs off under a second, then waits out the hold a's 429 started."""

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        first = body["messages"][0]["content"]
        seen[first] = seen.get(first, 0) + 1
        if seen[first] == 1:
            if first == "a 0":
                await asyncio.sleep(0.1)  # b has failed by now, and is backing off
                return slow_down("10")
            return httpx.Response(503, json={"error": {"message": "busy"}})
        return httpx.Response(200, json=answer(body))

    seen: dict[str, int] = {}
    config = RunConfig(
        output=tmp_path / "o.jsonl",
        base_url=LOCAL,
        transport=httpx.MockTransport(handler),
        concurrency=2,
    )

    async def go() -> None:
        loop = asyncio.get_running_loop()
        await run_batch([conv("a", 1), conv("b", 1)], config, sleep=asyncio.sleep, clock=loop.time)

    run_virtual(go())
    waits = {
        r["id"]: r["turns"][0]["attempts"][0]["wait_s"] for r in read_jsonl(tmp_path / "o.jsonl")
    }
    assert 10.0 <= waits["a"] <= 11.1
    assert 10.0 <= waits["b"] <= 10.2  # not the backoff alone (0.5 to 1 s)


def test_time_held_is_wall_clock_time_not_every_requests_wait_added_up(tmp_path: Path) -> None:
    """Eight conversations held together for 10 s: 10 s held, not 80."""

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["messages"][0]["content"] == "c0 0" and not refused:
            refused.append(1)
            return slow_down("10")
        await asyncio.sleep(0.5)
        return httpx.Response(200, json=answer(body))

    refused: list[int] = []
    config = RunConfig(
        output=tmp_path / "o.jsonl",
        base_url=LOCAL,
        transport=httpx.MockTransport(handler),
        concurrency=8,
    )

    async def go() -> RunResult:
        loop = asyncio.get_running_loop()
        convs = [conv(f"c{i}", 3) for i in range(8)]
        return await run_batch(convs, config, sleep=asyncio.sleep, clock=loop.time)

    result = run_virtual(go())
    assert result.completed == 8 and result.rate_limited == 1
    assert 9.0 <= result.rate_limit_wait_s <= 11.1
    assert f"sends held {result.rate_limit_wait_s:.1f}s (Retry-After, pacing)" in "\n".join(
        summary_lines(result)
    )


def timed_out() -> TransientAPIError:
    return TransientAPIError("no answer within the timeout (ReadTimeout)", kind="read_timeout")


def test_two_timeouts_with_nothing_answered_for_two_timeouts_mean_down() -> None:
    sleeps = RecordedSleep()
    gate = EndpointGate(sleep=sleeps, clock=clock, timeout=5.0)
    sent = clock()
    pass_time(5.0)
    gate.failed(timed_out(), "a", sent_at=sent)
    assert not gate.down  # one timeout: could be one slow answer
    pass_time(0.7)  # the retry's backoff
    sent = clock()
    pass_time(5.0)
    gate.failed(timed_out(), "a", sent_at=sent)  # the same conversation (-j 1)
    assert gate.down and gate.unanswering and not gate.unreachable
    assert gate.unanswered_s == pytest.approx(10.7)


def test_a_wave_of_timeouts_is_not_down_until_its_retries_time_out_too() -> None:
    sleeps = RecordedSleep()
    gate = EndpointGate(sleep=sleeps, clock=clock, timeout=5.0)
    sent = clock()
    pass_time(5.0)
    for name in "abcdefgh":  # -j 8: all sent together, all timed out together
        gate.failed(timed_out(), name, sent_at=sent)
    assert not gate.down
    pass_time(0.5)
    sent = clock()
    pass_time(5.0)
    gate.failed(timed_out(), "a", sent_at=sent)
    assert gate.down


def test_a_slow_server_that_answers_now_and_then_is_not_down() -> None:
    sleeps = RecordedSleep()
    gate = EndpointGate(sleep=sleeps, clock=clock, timeout=5.0)
    for _ in range(20):
        for name in "ab":
            sent = clock()
            pass_time(5.0)
            gate.failed(timed_out(), name, sent_at=sent)
        gate.succeeded()  # an answer, even only now and then, resets the count
        assert not gate.down
    gate.failed(TransientAPIError("HTTP 503", kind="http_503", status=503), "a")
    assert not gate.down and gate.timed_out == 0  # an error status is an answer too


def test_time_held_before_the_first_unanswered_request_does_not_count() -> None:
    sleeps = RecordedSleep()
    gate = EndpointGate(sleep=sleeps, clock=clock, timeout=5.0)
    gate.succeeded()
    pass_time(60.0)  # held by a Retry-After, then a wave is sent
    sent = clock()
    pass_time(5.0)
    gate.failed(timed_out(), "a", sent_at=sent)
    gate.failed(timed_out(), "b", sent_at=sent)
    assert not gate.down  # one timeout's worth of quiet, not 65 s


def test_quiet_starts_once_the_server_could_have_worked_through_its_backlog() -> None:
    """A queueing server still busy with what was in flight at the last answer is not silent."""
    sleeps = RecordedSleep()
    gate = EndpointGate(sleep=sleeps, clock=clock, timeout=5.0)
    gate.succeeded(backlog_s=8.0)  # e.g. 16 in flight, 0.5 s each, one at a time
    answered = clock()
    sent = clock()
    pass_time(5.0)
    gate.failed(timed_out(), "a", sent_at=sent)
    gate.failed(timed_out(), "b", sent_at=sent)
    pass_time(0.5)
    sent = clock()
    pass_time(5.0)
    gate.failed(timed_out(), "a", sent_at=sent)
    assert not gate.down  # 10.5 s of quiet, but 8 s of it the server was still working
    pass_time(18.0 - (clock() - answered))
    assert gate.down and gate.unanswered_s == pytest.approx(10.0)


def test_an_endpoint_that_never_answered_has_no_backlog() -> None:
    sleeps = RecordedSleep()
    gate = EndpointGate(sleep=sleeps, clock=clock, timeout=5.0)
    sent = clock()
    pass_time(5.0)
    gate.failed(timed_out(), "a", sent_at=sent)
    gate.failed(timed_out(), "b", sent_at=sent)
    pass_time(5.0)
    assert gate.down and gate.backlog_s == 0.0


def test_timeouts_never_mean_down_without_a_timeout() -> None:
    sleeps = RecordedSleep()
    gate = EndpointGate(sleep=sleeps, clock=clock)
    for _ in range(5):
        pass_time(100.0)
        gate.failed(timed_out(), "a", sent_at=clock() - 100.0)
    assert not gate.down


def test_a_hold_is_reported_once_when_it_starts(tmp_path: Path) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        sent.append(1)
        n = len(sent)
        await asyncio.sleep(0.01)  # all three are in flight together
        if n <= 3:  # three 429s at once: one hold, which the other two extend only a little
            return slow_down(["10", "10.5", "10.2"][n - 1])
        return httpx.Response(200, json=answer(json.loads(request.content)))

    sent: list[int] = []
    events: list[Event] = []
    config = RunConfig(
        output=tmp_path / "o.jsonl",
        base_url=LOCAL,
        transport=httpx.MockTransport(handler),
        concurrency=3,
    )

    async def go() -> None:
        loop = asyncio.get_running_loop()
        convs = [conv("a", 1), conv("b", 1), conv("c", 1)]
        await run_batch(convs, config, sleep=asyncio.sleep, clock=loop.time, on_event=events.append)

    run_virtual(go())
    held = [e for e in events if isinstance(e, SendsHeld)]
    assert held == [SendsHeld(10.0, "HTTP 429: slow")]
