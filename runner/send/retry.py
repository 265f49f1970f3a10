"""Retry rules: which failures are retried, how long to wait, when to give up.

One place decides all of it:

- ``classify_status`` maps an HTTP status (and the API's error code) to an
  error class: 408, 409, 429 and 5xx are transient; other 4xx are fatal; a 429
  whose code says the quota or billing is exhausted stops the run.
- ``parse_retry_after`` reads ``retry-after-ms``, then ``retry-after``
  (seconds, fractional allowed, or an HTTP-date); only a positive, finite
  wait counts.
- ``next_wait`` honours the server's wait up to a cap (a longer one waits
  the cap), with a little jitter, and otherwise backs off exponentially with
  jitter.
- ``call_with_retries`` runs one request under those rules with tenacity and
  returns every attempt it made, so transcripts can say what happened.

Waiting goes through an injected ``sleep`` so tests never really sleep, and
so a scheduler can release a concurrency slot while a request waits.
"""

from __future__ import annotations

import dataclasses
import email.utils
import math
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

import tenacity

from runner.errors import APIError, FatalAPIError, QuotaExhaustedError, TransientAPIError
from runner.send.pacing import RateLimits

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({408, 409, 429})
"""Statuses below 500 that are worth retrying (every 5xx is, too)."""

QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "quota_exceeded"})
"""Error codes or types that mean the account cannot send more, not "slow down"."""


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

    def as_dict(self) -> dict[str, Any]:
        """The record as stored in transcripts, without empty fields."""
        out: dict[str, Any] = {"attempt": self.number, "outcome": self.outcome}
        for key in ("status", "latency_ms", "message", "retry_after_s", "wait_s"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


class GaveUp(Exception):
    """A request failed for good; carries the last error and every attempt."""

    def __init__(self, error: APIError, attempts: list[AttemptRecord]) -> None:
        super().__init__(error.message)
        self.error = error
        self.attempts = attempts


def classify_status(status: int, *, code: str | None = None) -> type[APIError]:
    """The error class for a non-2xx status and the API's error code or type."""
    if code in QUOTA_CODES or status == 402:
        return QuotaExhaustedError
    if status in RETRYABLE_STATUSES or 500 <= status <= 599:
        return TransientAPIError
    return FatalAPIError


def parse_retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds the server asks us to wait, or None when it says nothing usable.

    ``retry-after-ms`` wins over ``retry-after``. ``retry-after`` may be
    seconds (fractions allowed) or an HTTP-date. Only a positive, finite,
    parsable wait is the server's word: zero, negative, non-finite and
    unparsable values, and dates that are not in the future, are None, so
    the request backs off instead of coming straight back. A huge value is
    returned as is; :func:`next_wait` caps it.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = _positive(_parse_seconds(lowered.get("retry-after-ms")))
    if millis is not None:
        return millis / 1000.0
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    seconds = _parse_seconds(raw)
    if seconds is not None:
        return _positive(seconds)
    try:
        when = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = now or datetime.now(timezone.utc)
    return _positive((when - current).total_seconds())


def _positive(seconds: float | None) -> float | None:
    """``seconds`` when it is a wait worth honouring (more than 0), else None."""
    return seconds if seconds is not None and seconds > 0 else None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(raw: str | None) -> float | None:
    """Seconds in a rate-limit reset value: ``12ms``, ``1.5s``, ``6m0s``, ``1h2m``, ``30``."""
    if raw is None:
        return None
    text = raw.strip().lower()
    plain = _parse_seconds(text)
    if plain is not None:
        return plain
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    seconds = sum(float(number) * scale[unit] for number, unit in parts)
    return seconds if math.isfinite(seconds) else None


_RATE_LIMIT_HEADERS = frozenset(
    {
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    }
)


def parse_rate_limits(headers: Mapping[str, str]) -> RateLimits | None:
    """The ``x-ratelimit-*`` headers of an answer, or None when it has none."""
    lowered = {k.lower(): v for k, v in headers.items() if k.lower() in _RATE_LIMIT_HEADERS}
    if not lowered:
        return None  # most answers: nothing to parse, on every request

    def count(name: str) -> int | None:
        value = _parse_seconds(lowered.get(name))
        return None if value is None else int(value)

    limits = RateLimits(
        remaining_requests=count("x-ratelimit-remaining-requests"),
        reset_requests_s=parse_duration(lowered.get("x-ratelimit-reset-requests")),
        remaining_tokens=count("x-ratelimit-remaining-tokens"),
        reset_tokens_s=parse_duration(lowered.get("x-ratelimit-reset-tokens")),
    )
    return None if limits == RateLimits() else limits


def _parse_seconds(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value


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
    rand = rng or random.Random()
    records: list[AttemptRecord] = []
    started = clock()
    last_sent = [started]
    failed_at: list[float] = []  # when the last failure was recorded, until the next send

    async def timed_attempt() -> T:
        if prepare is not None:
            await prepare()
        last_sent[0] = clock()
        if failed_at:
            # What was waited, not what was planned: a Retry-After hold, pacing or
            # a busy endpoint may have kept the attempt waiting after its backoff.
            waited = math.ceil((last_sent[0] - failed_at.pop()) * 1000) / 1000
            records[-1] = dataclasses.replace(records[-1], wait_s=waited)
        return await attempt()

    def elapsed_ms() -> float:
        return round((clock() - last_sent[0]) * 1000.0, 1)

    def record_failure(state: tenacity.RetryCallState, wait: float | None) -> AttemptRecord:
        outcome = state.outcome
        assert outcome is not None and outcome.failed
        error = outcome.exception()
        assert isinstance(error, APIError)
        rec = AttemptRecord(
            number=state.attempt_number,
            outcome=error.kind,
            status=error.status,
            latency_ms=elapsed_ms(),
            message=error.message,
            retry_after_s=error.retry_after,
            # Rounded up, so a recorded wait is never below the Retry-After it honoured.
            wait_s=None if wait is None else math.ceil(wait * 1000) / 1000,
        )
        records.append(rec)
        return rec

    def wait(state: tenacity.RetryCallState) -> float:
        outcome = state.outcome
        assert outcome is not None
        error = outcome.exception()
        assert isinstance(error, APIError)
        return next_wait(error, state.attempt_number, policy, rand)

    failures = {"rate_limited": 0, "other": 0}

    def stop(state: tenacity.RetryCallState) -> bool:
        if policy.max_retries == 0:
            return True
        outcome = state.outcome
        assert outcome is not None
        error = outcome.exception()
        if isinstance(error, APIError) and error.status == 429:
            failures["rate_limited"] += 1
            if failures["rate_limited"] > policy.max_rate_limit_retries:
                return True
        else:
            failures["other"] += 1
            if failures["other"] > policy.max_retries:
                return True
        upcoming = state.upcoming_sleep
        return clock() - started + upcoming > policy.max_elapsed

    last_error: list[APIError] = []

    def before_sleep(state: tenacity.RetryCallState) -> None:
        assert state.next_action is not None
        rec = record_failure(state, state.next_action.sleep)
        failed_at.append(clock())
        assert state.outcome is not None
        error = state.outcome.exception()
        assert isinstance(error, APIError)
        last_error[:] = [error]
        if on_retry is not None:
            on_retry(rec)

    async def pause(seconds: float) -> None:
        if back_off is not None and last_error:
            await back_off(seconds, last_error[0])
        else:
            await sleep(seconds)

    try:
        try:
            # Most requests succeed at once, and tenacity's machinery costs more
            # than the rest of a turn's bookkeeping: it takes over only after a
            # transient failure, which it sees as its own first attempt.
            result: T = await timed_attempt()
        except TransientAPIError as error:
            retrying = tenacity.AsyncRetrying(
                sleep=pause,
                stop=stop,
                wait=wait,
                retry=tenacity.retry_if_exception_type(TransientAPIError),
                before_sleep=before_sleep,
                reraise=True,
            )
            result = await retrying(_after_failing(error, timed_attempt))
    except APIError as error:
        records.append(
            AttemptRecord(
                number=len(records) + 1,
                outcome=error.kind,
                status=error.status,
                latency_ms=elapsed_ms(),
                message=error.message,
                retry_after_s=error.retry_after,
            )
        )
        raise GaveUp(error, records) from None
    records.append(
        AttemptRecord(number=len(records) + 1, outcome="ok", status=200, latency_ms=elapsed_ms())
    )
    return result, records


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
