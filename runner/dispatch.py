"""The send path: how one request to the endpoint waits its turn and is accounted for.

Every request to the answers' endpoint, an answer or a judge request, goes
through one :class:`Dispatcher`, in this order:

1. wait out a Retry-After hold (``gate.py``), and stop the run once the token
   budget is spent;
2. wait for its pace (``pacing.py``: ``--rpm``, ``--tpm``, ``x-ratelimit-*``
   headers, the pace learned from 429s);
3. take a request slot (``limiter.py``: adaptive concurrency); a conversation
   already running goes before one that has not started;
4. send it, give the slot back, and tell the limiter, the pacer and the gate
   how it went. A run of failures that reached nobody stops the run.

The retry layer calls steps 1-3 before every attempt and step 4 as the
attempt, so a request sleeping in backoff holds no slot.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from runner.client import Completion, public_base_url
from runner.errors import APIError
from runner.fixtures import Responder
from runner.gate import EndpointGate
from runner.limiter import AdaptiveLimiter
from runner.pacing import Pacer
from runner.plan import ASSUMED_ANSWER_TOKENS, estimate_tokens


class Stoppable(Protocol):
    """What the send path needs of a run's control: whether it stops, and a way to stop it."""

    @property
    def stopping(self) -> bool: ...

    def stop(self, reason: str, *, by_user: bool = False) -> None: ...


@dataclass(slots=True)
class Slot:
    """The request slot and token booking of the attempt about to be sent."""

    epoch: int = 0
    """The limiter's episode when the slot was taken (429s of older episodes are ignored)."""
    estimate: int = 0
    """Tokens booked ahead for ``--tpm``."""


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
        spent_before: int = 0,
    ) -> None:
        self.respond = respond
        self.base_url = base_url
        self.control = control
        self.tpm = tpm
        self.budget_tokens = budget_tokens
        self.spent_before = spent_before
        """Tokens the output already used before this run (a resume): the budget counts them."""
        self.gate = EndpointGate(sleep=sleep, clock=clock)
        self.limiter = AdaptiveLimiter(ceiling=ceiling, start=initial_limit, clock=clock)
        self.pacer = Pacer(rpm=rpm, tpm=tpm, sleep=sleep, clock=clock)
        self.rate_limited = 0
        """Requests refused with 429."""
        self.tokens = [0, 0]
        """Prompt and completion tokens used so far (answers and judge requests)."""

    @property
    def waited_s(self) -> float:
        """Seconds requests waited on Retry-After holds and pacing."""
        return self.gate.held_seconds + self.pacer.waited_s

    async def wait_to_send(self, body: Mapping[str, Any], slot: Slot, *, continuing: bool) -> None:
        """Steps 1-3: wait out holds, the budget, pacing and the request limit."""
        await self.gate.before_send()
        self.check_budget()
        if self.control.stopping:
            raise asyncio.CancelledError  # stopped while waiting: it is interrupted
        # Only --tpm books tokens ahead: skip the walk over the history otherwise.
        slot.estimate = estimate_request_tokens(body) if self.tpm else 0
        await self.pacer.wait_turn(slot.estimate)
        slot.epoch = await self.limiter.acquire(continuing=continuing)

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
        outcome = "other"
        try:
            if self.control.stopping:
                raise asyncio.CancelledError  # stopped while waiting: it is interrupted
            completion = await self.respond(
                body, conversation_id=conversation_id, turn=turn, purpose=purpose
            )
            outcome = "ok"
        except APIError as exc:
            if exc.status == 429:
                outcome = "rate_limited"
                self.rate_limited += 1
                self.pacer.refused()
            elif exc.kind == "read_timeout":
                outcome = "timed_out"  # sent, then no answer in time: likely queued behind others
            self.gate.failed(exc, conversation_id)
            if self.gate.down and not self.control.stopping:
                self.control.stop(
                    f"{public_base_url(self.base_url)} is unreachable: "
                    f"{self.gate.down_after} requests in a row got no answer "
                    f"(last: {self.gate.last_error}); check the URL and the network, "
                    "then continue with --resume"
                )
                raise asyncio.CancelledError from None
            raise
        finally:
            self.limiter.release(slot.epoch, outcome=outcome)
        self.gate.succeeded()
        self.pacer.answered()
        total = (completion.usage or {}).get("total_tokens")
        self.pacer.settle(slot.estimate, total if isinstance(total, int) else None)
        if completion.rate_limits is not None:
            self.pacer.observe(completion.rate_limits, in_flight=self.limiter.limit)
        return completion

    async def ask_judge(
        self, body: Mapping[str, Any], *, conversation_id: str, turn: int, purpose: str
    ) -> Completion:
        """A judge request, sent like an answer and counted like one (a :data:`Responder`)."""
        slot = Slot()
        await self.wait_to_send(body, slot, continuing=True)  # it finishes a turn: first
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


def estimate_request_tokens(body: Mapping[str, Any]) -> int:
    """A request's tokens, booked ahead for --tpm: its prompt plus what it may generate."""
    prompt = sum(
        4 + estimate_tokens(m["content"] if isinstance(m["content"], str) else json.dumps(m))
        for m in body["messages"]
    )
    cap = body.get("max_tokens", body.get("max_completion_tokens"))
    return prompt + (cap if isinstance(cap, int) and cap > 0 else ASSUMED_ANSWER_TOKENS)
