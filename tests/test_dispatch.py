"""The send path: slots, budget and accounting around each request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import read_jsonl
from jsonschema import Draft202012Validator
from virtualtime import RecordedSleep, clock, run_virtual

from runner.errors import TransientAPIError
from runner.http.client import Completion, completion_from_json
from runner.http.mock import answer
from runner.run.engine import RunConfig, RunControl, run_batch
from runner.send.dispatch import Dispatcher, Slot
from runner.spec.model import Conversation, Turn

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def dispatcher(
    replies: list[Exception | None],
    control: RunControl,
    budget: int | None = None,
    *,
    ceiling: int = 2,
    sent: list[float] | None = None,
) -> Dispatcher:
    """A dispatcher whose requests get ``replies`` in turn (None: answered), their send
    times noted in ``sent``."""

    async def respond(body: Mapping[str, Any], **_: Any) -> Completion:
        if sent is not None:
            sent.append(clock())
        reply = replies.pop(0)
        if reply is not None:
            raise reply
        return completion_from_json(answer(dict(body)))

    return around(respond, control, ceiling=ceiling, budget=budget)


def around(
    respond: Any, control: RunControl, *, ceiling: int, budget: int | None = None
) -> Dispatcher:
    """A dispatcher on virtual time whose requests ``respond`` answers."""
    return Dispatcher(
        respond,
        base_url="http://127.0.0.1:9/v1",
        control=control,
        ceiling=ceiling,
        initial_limit=None,
        rpm=None,
        tpm=None,
        budget_tokens=budget,
        sleep=RecordedSleep(),
        clock=clock,
    )


async def attempt(d: Dispatcher, conversation_id: str = "c") -> Completion:
    slot = Slot()
    await d.wait_to_send(BODY, slot, continuing=False)
    return await d.send(BODY, slot, conversation_id=conversation_id, turn=0)


def test_a_429_is_counted_leaves_the_limit_alone_and_gives_the_slot_back() -> None:
    refused = TransientAPIError("HTTP 429", kind="http_429", status=429)
    d = dispatcher([refused, None], RunControl())

    async def go() -> None:
        with pytest.raises(TransientAPIError):
            await attempt(d)
        await attempt(d)

    run_virtual(go())
    assert d.rate_limited == 1
    assert d.limiter.changes == [] and d.limiter.limit == 2  # the pacer slows down instead
    assert d.limiter.in_flight == 0  # both slots came back


def handed_over(on_second_send: Any = None) -> tuple[list[str], Any]:
    """One slot, two requests: what happened in which order, and the first one's outcome.

    The second waits for the slot the first holds; ``on_second_send(first_task)`` runs as
    the second is sent.
    """
    events: list[str] = []
    control = RunControl()
    holder: dict[str, asyncio.Task[Completion]] = {}

    async def respond(body: Mapping[str, Any], **_: Any) -> Completion:
        name = str(body["messages"][0]["content"])
        events.append(f"{name} sent")
        if name == "first":
            await asyncio.sleep(0.5)  # virtual: the second is waiting for the slot by now
        elif on_second_send is not None:
            on_second_send(control, holder["first"])
        return completion_from_json(answer(dict(body)))

    d = around(respond, control, ceiling=1)

    async def one(name: str) -> Completion:
        body = {"model": "m", "messages": [{"role": "user", "content": name}]}
        slot = Slot()
        await d.wait_to_send(body, slot, continuing=False)
        completion = await d.send(body, slot, conversation_id=name, turn=0)
        events.append(f"{name} answered")
        task = asyncio.current_task()
        assert task is not None
        events.append(f"{name} cancelling {task.cancelling()}")
        return completion

    async def go() -> Any:
        holder["first"] = asyncio.ensure_future(one("first"))
        second = asyncio.ensure_future(one("second"))
        results = await asyncio.gather(holder["first"], second, return_exceptions=True)
        return results[0]

    return events, run_virtual(go())


def test_a_slot_handed_over_sends_the_waiting_request_before_the_answer_is_returned() -> None:
    events, first = handed_over()
    assert isinstance(first, Completion)
    assert events.index("second sent") < events.index("first answered")


def test_a_stop_while_the_slot_is_handed_over_keeps_the_answer_in_hand() -> None:
    def stop(control: RunControl, first: asyncio.Task[Completion]) -> None:
        control.stop("stopped by a test")
        first.cancel()  # as the engine cancels its workers on a stop

    events, first = handed_over(stop)
    assert isinstance(first, Completion)  # not a CancelledError: the answer is returned
    assert events.index("second sent") < events.index("first answered")
    # The cancellation taken back no longer counts, so a later deadline is read as its own.
    assert "first cancelling 0" in events


def test_a_cancel_while_the_slot_is_handed_over_without_a_stop_still_cancels() -> None:
    events, first = handed_over(lambda control, first: first.cancel())
    assert isinstance(first, asyncio.CancelledError)
    assert "first answered" not in events


def test_judge_requests_count_their_tokens_and_a_spent_budget_stops_the_run() -> None:
    control = RunControl()
    d = dispatcher([None, None], control, budget=1)

    async def go() -> None:
        await d.ask_judge(BODY, conversation_id="c", turn=0, purpose="judge")
        with pytest.raises(asyncio.CancelledError):
            await attempt(d)

    run_virtual(go())
    assert sum(d.tokens) > 0
    assert control.stopping and "budget" in (control.reason or "")


def test_failures_that_reach_nobody_across_conversations_stop_the_run() -> None:
    down = [TransientAPIError("cannot connect", kind="connect_error") for _ in range(12)]
    control = RunControl()
    d = dispatcher(list(down), control)

    async def go() -> int:
        sent = 0
        for n in range(12):
            try:
                await attempt(d, conversation_id=f"c{n % 2}")
            except TransientAPIError:
                sent += 1
            except asyncio.CancelledError:
                return sent + 1
        return sent

    assert run_virtual(go()) == 12
    assert control.stopping and "unreachable" in (control.reason or "")


def test_an_answer_that_timed_out_while_others_were_answered_halves_the_limit() -> None:
    """A queueing server: one request waits behind another that is answered, then times out."""
    timed_out = TransientAPIError("no answer within the timeout", kind="read_timeout")
    answered = asyncio.Event()
    d = dispatcher([], RunControl())

    async def respond(body: Mapping[str, Any], *, conversation_id: str, **_: Any) -> Completion:
        if conversation_id == "queued":
            await answered.wait()
            raise timed_out
        answered.set()
        return completion_from_json(answer(dict(body)))

    d.respond = respond

    async def go() -> None:
        queued = asyncio.create_task(attempt(d, "queued"))
        await asyncio.sleep(0)
        await attempt(d, "served")
        with pytest.raises(TransientAPIError):
            await queued

    run_virtual(go())
    assert [(c.limit, c.reason) for c in d.limiter.changes] == [(1, "timeout: halved")]
    assert d.rate_limited == 0 and d.waited_s == 0


def test_timeouts_with_nothing_answered_leave_the_limit_alone() -> None:
    """Nothing answers: the server is unwell, and halving would only hide it."""
    timed_out = TransientAPIError("no answer within the timeout", kind="read_timeout")
    d = dispatcher([timed_out, timed_out], RunControl())

    async def go() -> None:
        for _ in range(2):
            with pytest.raises(TransientAPIError):
                await attempt(d)

    run_virtual(go())
    assert d.limiter.changes == [] and d.limiter.limit == 2


def test_a_429_backoff_ends_when_the_endpoint_answers_again_after_a_storm() -> None:
    d = dispatcher([], RunControl())
    sleeps = d.sleep
    assert isinstance(sleeps, RecordedSleep)
    refused = TransientAPIError("HTTP 429", kind="http_429", status=429)
    busy = TransientAPIError("HTTP 503", kind="http_503", status=503)

    async def go() -> None:
        d.pacer.refused()
        await asyncio.sleep(1.5)
        d.pacer.refused()  # refused again, with nothing answered in between: a storm
        waiting = asyncio.create_task(d.back_off(30.0, refused))
        await asyncio.sleep(0)
        d.pacer.answered()  # ...and it is over
        await waiting
        assert sum(sleeps.waits) <= 2.0
        sleeps.waits.clear()
        await d.back_off(30.0, busy)  # other failures back off as planned
        assert sleeps.waits == [30.0]

    run_virtual(go())


def test_a_503_cuts_the_limit_and_an_answer_reaches_the_queue_detector() -> None:
    busy = TransientAPIError("HTTP 503", kind="http_503", status=503)
    d = dispatcher([None, busy], RunControl())

    async def go() -> None:
        await attempt(d)
        with pytest.raises(TransientAPIError):
            await attempt(d)

    run_virtual(go())
    assert [(c.limit, c.reason) for c in d.limiter.changes] == [(1, "503: cut by a quarter")]
    watch = d.limiter.watch
    assert watch.answers == 0  # restarted by the cut...
    assert len(watch.latency) == 1  # ...but the answer's time stays in the envelope
    assert d.limiter.backlog_s() == 0.0  # nothing in flight


def test_the_time_a_request_waits_inside_mtrun_is_recorded_apart_from_its_latency(
    tmp_path: Path,
) -> None:
    """One slot, two conversations, answers of 1 s: the second waits 1 s for the slot."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(1.0)
        return httpx.Response(200, json=answer(json.loads(request.content)))

    convs = [Conversation(id=f"c{i}", source="s", turns=(Turn(f"c{i} a"),)) for i in range(2)]
    config = RunConfig(
        output=tmp_path / "out.jsonl",
        base_url="http://127.0.0.1:9/v1",
        transport=httpx.MockTransport(handler),
        concurrency=4,
        initial_limit=1,
    )
    run_virtual(run_batch(convs, config, sleep=asyncio.sleep, clock=clock))
    turns = {r["id"]: r["turns"][0] for r in read_jsonl(tmp_path / "out.jsonl")}
    first, second = sorted(turns.values(), key=lambda t: t["queued_ms"])
    assert (first["queued_ms"], first["latency_ms"]) == (0.0, 1000.0)
    assert (second["queued_ms"], second["latency_ms"]) == (1000.0, 1000.0)
    assert "queued_ms" not in first["attempts"][0]  # attempts say it when there was a wait
    assert second["attempts"][0]["queued_ms"] == 1000.0
    schema = json.loads(
        resources.files("runner.schemas").joinpath("transcript.schema.json").read_text()
    )
    for record in read_jsonl(tmp_path / "out.jsonl"):
        Draft202012Validator(schema).validate(record)
