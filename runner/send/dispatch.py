"""The send path: how one request to the endpoint waits its turn and is accounted for.

Every request to the answers' endpoint, an answer or a judge request, goes
through one :class:`Dispatcher`, in this order:

1. wait out a Retry-After hold (``gate.py``), and stop the run once the token
   budget is spent;
2. take a request slot (``limiter.py``: adaptive concurrency, with
   ``-j auto`` from the queue the answers' latencies show, ``queueing.py``);
   the conversation with the most turns left goes first;
3. wait out a hold that began meanwhile, then for its pace (``pacing.py``:
   ``--rpm``, ``--tpm``, ``x-ratelimit-*`` headers, the pace learned from
   429s). Pacing is the last wait, so a send goes out at the pace and the
   bucket level of the moment it is sent: paced first and then kept waiting
   for a slot, it would go out on a pace or a bucket that a 429 or a newer
   header had already changed (and be refused);
4. send it, give the slot back, and tell the limiter (with what the answer
   took), the pacer and the gate how it went. A run of failures that reached
   nobody, or of requests that timed out with nothing answered, stops the
   run (``gate.py``). When the slot went to a waiting request, yield once
   before returning the answer, so that request is sent first.

The retry layer calls steps 1-3 before every attempt and step 4 as the
attempt, so a request sleeping in backoff holds no slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from runner.errors import APIError
from runner.http.client import Completion, public_base_url
from runner.http.ratelimits import RateLimits
from runner.send.gate import EndpointGate
from runner.send.limiter import AdaptiveLimiter, Ticket
from runner.send.pacing import RECHECK_S, Pacer
from runner.send.queueing import Answer
from runner.send.responder import Responder
from runner.send.retry import is_server_wait
from runner.send.waits import WaitSpans
from runner.spec.tokens import request_tokens
from runner.words import plural

FIRST = 1 << 30
"""``remaining`` of a request that goes before every other: a judge's, which ends a turn."""


class Stoppable(Protocol):
    """What the send path needs of a run's control: whether it stops, and a way to stop it."""

    @property
    def stopping(self) -> bool: ...

    def stop(self, reason: str, *, by_user: bool = False) -> None: ...


@dataclass(slots=True)
class Slot:
    """The request slot and token booking of the attempt about to be sent."""

    ticket: Ticket | None = None
    """The request slot taken (None until then)."""
    estimate: int = 0
    """Tokens booked ahead for ``--tpm`` or a token limit in the headers."""
    seq: int = 0
    """The pacer's number for the send, matching its answer's rate-limit snapshot to it."""


class Dispatcher:
    """Sends requests to one endpoint within its limits, and counts what they cost."""

    def __init__(
        self,
        respond: Responder,
        *,
        base_url: str,
        control: Stoppable,
        ceiling: int,
        initial_limit: int | None,
        rpm: float | None,
        tpm: float | None,
        budget_tokens: int | None,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
        max_hold: float = 120.0,
        timeout: float | None = None,
        watch_queue: bool = False,
        on_hold: Callable[[float, str], None] | None = None,
        spent_before: int = 0,
    ) -> None:
        self.respond = respond
        self.base_url = base_url
        self.control = control
        self.tpm = tpm
        self.budget_tokens = budget_tokens
        self.sleep = sleep
        self.clock = clock
        self.waits = WaitSpans()
        self.gate = EndpointGate(
            sleep=sleep, clock=clock, max_hold=max_hold, waits=self.waits, timeout=timeout
        )
        self.spent_before = spent_before
        """Tokens the output already used before this run (a resume): the budget counts them."""
        self.limiter = AdaptiveLimiter(
            ceiling=ceiling,
            start=initial_limit,
            clock=clock,
            watch_queue=watch_queue,
            timeout=timeout,
        )
        self.pacer = Pacer(rpm=rpm, tpm=tpm, sleep=sleep, clock=clock, waits=self.waits)
        self.on_hold = on_hold
        """Told (seconds, why) when a Retry-After hold starts or grows by a second or more."""
        self.rate_limited = 0
        """Requests refused with 429."""
        self.tokens = [0, 0]
        """Prompt and completion tokens used so far (answers and judge requests)."""

    @property
    def waited_s(self) -> float:
        """Wall-clock seconds during which some request waited on a Retry-After hold or pacing."""
        return self.waits.seconds

    async def wait_to_send(
        self, body: Mapping[str, Any], slot: Slot, *, continuing: bool, remaining: int = 0
    ) -> None:
        """Steps 1-3: wait out holds, the budget, pacing and the request limit."""
        await self.gate.before_send()
        self.check_budget()
        if self.control.stopping:
            raise asyncio.CancelledError  # stopped while waiting: it is interrupted
        # Every send says its tokens, token limit known or not: the first answers may tell of
        # one, and the sends before them, or waiting for a slot meanwhile, draw from it too.
        slot.estimate = request_tokens(body)
        slot.ticket = await self.limiter.acquire(continuing=continuing, remaining=remaining)
        try:
            await self.gate.before_send()  # a hold that began while this waited for its slot
            await self.pacer.wait_turn(slot.estimate)
        except BaseException:
            self.limiter.release(slot.ticket, outcome="other")
            slot.ticket = None
            raise

    def check_budget(self) -> None:
        """Stop the run once the token budget is spent (this run's tokens and earlier ones)."""
        budget = self.budget_tokens
        spent = self.spent_before + sum(self.tokens)
        if budget is not None and spent >= budget and not self.control.stopping:
            self.control.stop(
                f"the token budget is spent ({spent:,} of {budget:,} tokens used); "
                "continue with --resume and a larger --budget-tokens"
            )

    async def send(
        self,
        body: Mapping[str, Any],
        slot: Slot,
        *,
        conversation_id: str,
        turn: int,
        purpose: str = "answer",
    ) -> Completion:
        """Step 4: one attempt, in the slot ``wait_to_send`` took; gives the slot back."""
        outcome, answer, handed = "other", None, False
        sent = self.clock()
        slot.seq = self.pacer.sending(slot.estimate)
        try:
            if self.control.stopping:
                raise asyncio.CancelledError  # stopped while waiting: it is interrupted
            completion = await self.respond(
                body, conversation_id=conversation_id, turn=turn, purpose=purpose
            )
            outcome, answer = "ok", answer_of(completion, self.clock() - sent)
        except APIError as exc:
            outcome = _outcome(exc)
            limits = exc.rate_limits if isinstance(exc.rate_limits, RateLimits) else None
            if exc.status == 429:
                self.rate_limited += 1
                self.pacer.refused(slot.seq, limits, in_flight=self.limiter.limit)
            elif limits is not None and exc.status == 503:
                self.pacer.observe(
                    limits, in_flight=self.limiter.limit, seq=slot.seq, answered=False
                )
            held = self.gate.hold_until
            self.gate.failed(exc, conversation_id, sent_at=sent)
            if self.gate.hold_until > held:
                self.pacer.hold(self.gate.hold_until)  # sends already waiting on the pace too
            self._tell_hold(held, exc)
            if self.gate.down and not self.control.stopping:
                self.control.stop(self._down_reason())
                raise asyncio.CancelledError from None
            raise
        finally:
            if slot.ticket is not None:
                handed = self.limiter.release(slot.ticket, outcome=outcome, answer=answer)
                slot.ticket = None
        self.gate.succeeded(backlog_s=self.limiter.backlog_s())
        storms = self.pacer.storms_ended
        self.pacer.answered(self.clock() - sent, in_flight=self.limiter.limit)
        if self.pacer.storms_ended != storms:
            self.limiter.recover()  # the cuts of a storm said nothing about concurrency
        if completion.rate_limits is not None:  # first: then the mirror knows answers tell
            self.pacer.observe(completion.rate_limits, in_flight=self.limiter.limit, seq=slot.seq)
        total = (completion.usage or {}).get("total_tokens")
        self.pacer.settle(slot.estimate, total if isinstance(total, int) else None)
        if handed:
            await self._let_next_go()
        return completion

    async def _let_next_go(self) -> None:
        """Yield once, so the request just given the slot goes out before this answer is
        recorded and its conversation's next request is built: the server's freed slot waits
        for the next request's send, not for that work too (docs/BENCHMARKS.md, skewed).

        A stop that lands here does not lose the answer, which is in hand and paid for:
        it is returned and recorded, and the conversation's next wait stops it. The
        cancellation taken back is uncounted too, or a request deadline met later in the
        task would read it as another cancellation still pending (``http/deadline.py``).
        """
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            if not self.control.stopping:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()

    def _tell_hold(self, before: float, error: APIError) -> None:
        """Tell ``on_hold`` about a hold that ``error`` started or extended noticeably."""
        now = self.clock()
        until = self.gate.hold_until
        if self.on_hold is not None and until > now and until >= max(before, now) + 1.0:
            self.on_hold(until - now, error.message)

    async def back_off(self, seconds: float, error: APIError) -> None:
        """Wait ``seconds`` before retrying a request that failed with ``error``.

        After a 429 that named no wait, the wait ends when the endpoint answers
        again after a storm of 429s (``pacing.py``): pacing and the request
        limit, not each request's own backoff grown long during the storm, say
        how fast to go again.
        """
        if error.status != 429 or is_server_wait(error.retry_after):
            await self.sleep(seconds)
            return
        storms, slept = self.pacer.storms_ended, 0.0
        while slept < seconds and self.pacer.storms_ended == storms:
            step = min(seconds - slept, RECHECK_S)
            await self.sleep(step)
            slept += step

    def _down_reason(self) -> str:
        """Why the run stops when the endpoint is down, and what to do next."""
        url, gate = public_base_url(self.base_url), self.gate
        if gate.unreachable:
            return (
                f"{url} is unreachable: {plural(gate.down_after, 'request')} in a row got "
                f"no answer (last: {gate.last_error}); check the URL and the network, "
                "then continue with --resume"
            )
        return (
            f"{url} is not answering: {plural(gate.timed_out, 'request')} in a row timed out "
            f"(--timeout {gate.timeout:g}s) and nothing was answered for "
            f"{gate.unanswered_s:.1f}s; check the server (or allow a longer --timeout), "
            "then continue with --resume"
        )

    async def ask_judge(
        self, body: Mapping[str, Any], *, conversation_id: str, turn: int, purpose: str
    ) -> Completion:
        """A judge request, sent like an answer and counted like one (a :data:`Responder`)."""
        slot = Slot()
        await self.wait_to_send(body, slot, continuing=True, remaining=FIRST)  # ends a turn
        completion = await self.send(
            body, slot, conversation_id=conversation_id, turn=turn, purpose=purpose
        )
        self.count_tokens(completion)
        return completion

    def count_tokens(self, completion: Completion) -> None:
        """Add an answer's usage to the run's totals (and to what --budget-tokens sees)."""
        usage = completion.usage or {}
        for i, key in enumerate(("prompt_tokens", "completion_tokens")):
            value = usage.get(key)
            if isinstance(value, int):
                self.tokens[i] += value


def _outcome(error: APIError) -> str:
    """What a failed attempt tells the limiter: overload (a 503, a timeout) or nothing."""
    if error.status == 429:
        return "rate_limited"
    if error.status == 503:
        return "overloaded"
    if error.kind == "read_timeout":
        return "timed_out"  # the limiter ignores it until the endpoint has answered once
    return "other"


def answer_of(completion: Completion, latency_s: float) -> Answer:
    """What an answer took, for the queue detector: time, tokens, first token."""
    usage = completion.usage or {}
    tokens = usage.get("completion_tokens")
    if not isinstance(tokens, int):
        content = completion.content
        tokens = len(content) // 4 if isinstance(content, str) else 0  # about 4 chars a token
    prompt = usage.get("prompt_tokens")
    first = completion.first_token_ms
    return Answer(
        latency_s=latency_s,
        tokens=float(tokens),
        prompt_tokens=float(prompt) if isinstance(prompt, int) else 0.0,
        first_token_s=None if first is None else first / 1000.0,
    )
