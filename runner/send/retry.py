"""Retry rules: which failures are retried, how long to wait, when to give up.

One place decides all of it:

- which failures are transient is the error class the client picked
  (``runner.http.status``); Retry-After is what the client read
  (``runner.http.headers``);
- ``next_wait`` honours the server's wait up to a cap (a longer one waits
  the cap), with a little jitter, and otherwise backs off exponentially with
  jitter;
- ``call_with_retries`` runs one request under those rules with tenacity and
  returns every attempt it made, so transcripts can say what happened; a
  request gives up after ``max_retries`` failures (429s have their own,
  larger allowance) or once a retry would start after ``max_elapsed``.

Waiting goes through an injected ``sleep`` so tests never really sleep, and
so a scheduler can release a concurrency slot while a request waits.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import tenacity

from runner.errors import APIError, TransientAPIError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How persistently one request is retried."""

    max_retries: int = 6
    """Retries after failures other than 429; 0 disables retrying."""
    max_rate_limit_retries: int = 40
    """Retries after 429s: being told to slow down is expected under load, not a fault,
    so it has its own, larger allowance (still bounded, like the turn's time)."""
    max_retry_after: float = 120.0
    """Cap, in seconds, on a wait the server asks for with Retry-After."""
    backoff_base: float = 1.0
    """First exponential backoff step, in seconds."""
    backoff_max: float = 60.0
    """Largest exponential backoff step, in seconds."""
    max_elapsed: float = 900.0
    """No retry starts once a turn has spent this many seconds; nothing retries forever."""


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """What one attempt at a request did."""

    number: int
    """1-based attempt number."""
    outcome: str
    """``ok``, or the failure kind: ``http_429``, ``read_timeout``, ``invalid_json``, ..."""
    status: int | None = None
    """HTTP status, when a response arrived."""
    latency_ms: float | None = None
    """Time from sending to the response or failure."""
    message: str | None = None
    """The failure's message, when it failed."""
    retry_after_s: float | None = None
    """The wait the server asked for, when it asked."""
    wait_s: float | None = None
    """How long mtrun waited before the next attempt was sent: the backoff or Retry-After,
    plus any endpoint-wide hold, pacing and wait for a slot after it (None for the last one).
    Told to ``on_retry`` before the wait, it is the wait planned."""
    queued_ms: float = 0.0
    """How long the attempt, ready to go, waited inside mtrun before it was sent: a
    Retry-After hold, pacing, a request slot (not in ``latency_ms``)."""

    def as_dict(self) -> dict[str, Any]:
        """The record as stored in transcripts, without empty fields.

        ``queued_ms`` only when the attempt waited a millisecond or more: most wait none.
        """
        out: dict[str, Any] = {"attempt": self.number, "outcome": self.outcome}
        for key in ("status", "latency_ms", "message", "retry_after_s", "wait_s"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.queued_ms >= 1.0:
            out["queued_ms"] = self.queued_ms
        return out


class GaveUp(Exception):
    """A request failed for good; carries the last error and every attempt."""

    def __init__(self, error: APIError, attempts: list[AttemptRecord]) -> None:
        super().__init__(error.message)
        self.error = error
        self.attempts = attempts


def next_wait(
    error: APIError, attempt_number: int, policy: RetryPolicy, rng: random.Random
) -> float:
    """Seconds to wait after failed attempt ``attempt_number`` (1-based).

    A positive, finite Retry-After is honoured up to ``policy.max_retry_after``
    (a longer one waits the cap, then retries); anything else backs off.
    """
    if error.retry_after is not None and is_server_wait(error.retry_after):
        asked = min(error.retry_after, policy.max_retry_after)
        # A little jitter, never less than asked: many conversations that were
        # told the same instant should not all come back at that instant.
        return float(asked + rng.uniform(0.0, min(1.0, 0.1 * asked + 0.05)))
    step = min(policy.backoff_max, policy.backoff_base * 2.0 ** (attempt_number - 1))
    return float(step / 2 + rng.uniform(0.0, step / 2))


def is_server_wait(seconds: float | None) -> bool:
    """Whether ``seconds`` is a wait the server asked for: positive and finite."""
    return seconds is not None and math.isfinite(seconds) and seconds > 0


Sleep = Callable[[float], Awaitable[None]]


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Sleep,
    clock: Callable[[], float],
    rng: random.Random | None = None,
    on_retry: Callable[[AttemptRecord], None] | None = None,
    prepare: Callable[[], Awaitable[None]] | None = None,
    back_off: Callable[[float, APIError], Awaitable[None]] | None = None,
) -> tuple[T, list[AttemptRecord]]:
    """Run ``attempt`` until it succeeds, fails fatally, or retries run out.

    ``prepare`` runs before each attempt and is not timed: waiting for a
    slot or for a rate limit is not the request's latency.

    Returns the result and the attempt records (the successful one last).
    Raises :class:`GaveUp` with the last error and all records otherwise.
    ``on_retry`` is told about each failed attempt before the wait, with the
    wait planned; the records returned say the wait that happened.
    ``back_off(seconds, error)``, when given, does the waiting between
    attempts instead of ``sleep`` (the dispatcher ends a wait early when the
    endpoint answers again after a storm of 429s).
    """
    attempts = _Attempts(
        attempt,
        policy,
        clock=clock,
        rng=rng or random.Random(),
        prepare=prepare,
        on_retry=on_retry,
        sleep=sleep,
        back_off=back_off,
    )
    try:
        try:
            # Most requests succeed at once, and tenacity's machinery costs more
            # than the rest of a turn's bookkeeping: it takes over only after a
            # transient failure, which it sees as its own first attempt.
            result: T = await attempts.send()
        except TransientAPIError as error:
            retrying = tenacity.AsyncRetrying(
                sleep=attempts.pause,
                stop=attempts.stop,
                wait=attempts.wait,
                retry=tenacity.retry_if_exception_type(TransientAPIError),
                before_sleep=attempts.before_sleep,
                reraise=True,
            )
            result = await retrying(_after_failing(error, attempts.send))
    except APIError as error:
        attempts.records.append(attempts.record(error))
        raise GaveUp(error, attempts.records) from None
    attempts.records.append(attempts.record(None))
    return result, attempts.records


class _Attempts(Generic[T]):
    """The attempts at one request: their records, the failures counted, and when each was sent.

    ``send`` is the attempt tenacity repeats; ``wait``, ``stop``, ``before_sleep``
    and ``pause`` are the hooks it calls between two attempts.
    """

    def __init__(
        self,
        attempt: Callable[[], Awaitable[T]],
        policy: RetryPolicy,
        *,
        clock: Callable[[], float],
        rng: random.Random,
        prepare: Callable[[], Awaitable[None]] | None,
        on_retry: Callable[[AttemptRecord], None] | None,
        sleep: Sleep,
        back_off: Callable[[float, APIError], Awaitable[None]] | None,
    ) -> None:
        self.records: list[AttemptRecord] = []
        """One record per attempt made so far."""
        self._attempt = attempt
        self._policy = policy
        self._clock = clock
        self._rng = rng
        self._prepare = prepare
        self._on_retry = on_retry
        self._sleep = sleep
        self._back_off = back_off
        self._started = clock()
        self._sent = self._started
        self._queued_ms = 0.0
        self._failed_at: float | None = None  # when the last failure was recorded, until a send
        self._rate_limited = 0
        self._other_failures = 0
        self._last_error: APIError | None = None

    async def send(self) -> T:
        """One attempt, timed from after ``prepare``; the wait before it goes in its record."""
        ready = self._clock()
        if self._prepare is not None:
            await self._prepare()
        self._sent = self._clock()
        self._queued_ms = round((self._sent - ready) * 1000.0, 1)
        if self._failed_at is not None:
            # What was waited, not what was planned: a Retry-After hold, pacing or
            # a busy endpoint may have kept the attempt waiting after its backoff.
            waited = math.ceil((self._sent - self._failed_at) * 1000) / 1000
            self.records[-1] = dataclasses.replace(self.records[-1], wait_s=waited)
            self._failed_at = None
        return await self._attempt()

    def record(self, error: APIError | None, *, wait: float | None = None) -> AttemptRecord:
        """The record of the attempt that just ended: ``ok`` without ``error``."""
        latency_ms = round((self._clock() - self._sent) * 1000.0, 1)
        number = len(self.records) + 1
        if error is None:
            return AttemptRecord(
                number=number,
                outcome="ok",
                status=200,
                latency_ms=latency_ms,
                queued_ms=self._queued_ms,
            )
        return AttemptRecord(
            number=number,
            outcome=error.kind,
            status=error.status,
            latency_ms=latency_ms,
            message=error.message,
            retry_after_s=error.retry_after,
            # Rounded up, so a recorded wait is never below the Retry-After it honoured.
            wait_s=None if wait is None else math.ceil(wait * 1000) / 1000,
            queued_ms=self._queued_ms,
        )

    def wait(self, state: tenacity.RetryCallState) -> float:
        """tenacity's ``wait``: the backoff or server wait after the attempt that failed."""
        return next_wait(_error_of(state), state.attempt_number, self._policy, self._rng)

    def stop(self, state: tenacity.RetryCallState) -> bool:
        """tenacity's ``stop``: whether the allowance for this kind of failure, or time, ran out."""
        policy = self._policy
        if policy.max_retries == 0:
            return True
        if _error_of(state).status == 429:
            self._rate_limited += 1
            if self._rate_limited > policy.max_rate_limit_retries:
                return True
        else:
            self._other_failures += 1
            if self._other_failures > policy.max_retries:
                return True
        return self._clock() - self._started + state.upcoming_sleep > policy.max_elapsed

    def before_sleep(self, state: tenacity.RetryCallState) -> None:
        """tenacity's ``before_sleep``: record the failure and the wait planned; tell on_retry."""
        if state.next_action is None:
            raise RuntimeError("tenacity called before_sleep without a planned wait")
        error = _error_of(state)
        rec = self.record(error, wait=state.next_action.sleep)
        self.records.append(rec)
        self._failed_at = self._clock()
        self._last_error = error
        if self._on_retry is not None:
            self._on_retry(rec)

    async def pause(self, seconds: float) -> None:
        """tenacity's ``sleep``: ``back_off`` with the error that caused it, else ``sleep``."""
        if self._back_off is not None and self._last_error is not None:
            await self._back_off(seconds, self._last_error)
        else:
            await self._sleep(seconds)


def _error_of(state: tenacity.RetryCallState) -> APIError:
    """The APIError of the attempt that just failed (tenacity retries nothing else)."""
    outcome = state.outcome
    error = outcome.exception() if outcome is not None and outcome.failed else None
    if not isinstance(error, APIError):
        raise RuntimeError(f"a retry hook was called without a failed API attempt: {error!r}")
    return error


def _after_failing(
    error: TransientAPIError, attempt: Callable[[], Awaitable[T]]
) -> Callable[[], Awaitable[T]]:
    """``attempt``, except that its first call raises ``error``: the attempt already made."""
    pending = [error]

    async def call() -> T:
        if pending:
            raise pending.pop()
        return await attempt()

    return call
