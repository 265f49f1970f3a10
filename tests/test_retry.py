"""Retry rules: status classes, Retry-After, waits, and the retry loop."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from virtualtime import START, RecordedSleep, clock, run_virtual

from runner.errors import APIError, FatalAPIError, QuotaExhaustedError, TransientAPIError
from runner.http.headers import parse_retry_after
from runner.http.status import classify_status
from runner.send.retry import AttemptRecord, GaveUp, RetryPolicy, call_with_retries, next_wait

NOW = datetime(2025, 3, 14, 12, 0, 0, tzinfo=timezone.utc)

# --- classify_status ---------------------------------------------------------


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 599])
def test_retryable_statuses_are_transient(status: int) -> None:
    assert classify_status(status) is TransientAPIError


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_other_client_errors_are_fatal_but_do_not_stop_the_run(status: int) -> None:
    assert classify_status(status) is FatalAPIError


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (402, None),
        (429, "insufficient_quota"),
        (429, "billing_hard_limit_reached"),
        (429, "quota_exceeded"),
    ],
)
def test_exhausted_quota_stops_the_run(status: int, code: str | None) -> None:
    assert classify_status(status, code=code) is QuotaExhaustedError


def test_a_429_with_an_ordinary_rate_limit_code_is_still_transient() -> None:
    assert classify_status(429, code="rate_limit_exceeded") is TransientAPIError


# --- parse_retry_after -------------------------------------------------------


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5


def test_garbage_retry_after_ms_falls_back_to_retry_after() -> None:
    assert parse_retry_after({"retry-after-ms": "soon", "retry-after": "4"}) == 4.0


@pytest.mark.parametrize(
    ("value", "seconds"), [("3", 3.0), ("0.02", 0.02), ("1.5", 1.5), (" 7 ", 7.0)]
)
def test_retry_after_in_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after({"retry-after": value}) == seconds


def test_retry_after_as_a_future_http_date_is_the_seconds_until_then() -> None:
    when = format_datetime(NOW + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"retry-after": when}, now=NOW) == 30.0


@pytest.mark.parametrize("ago", [timedelta(hours=1), timedelta(0)])
def test_retry_after_as_a_past_http_date_is_no_wait_asked(ago: timedelta) -> None:
    when = format_datetime(NOW - ago, usegmt=True)
    assert parse_retry_after({"retry-after": when}, now=NOW) is None


def test_a_huge_retry_after_is_the_servers_word_and_waits_the_cap() -> None:
    asked = parse_retry_after({"retry-after": "99999999999999999999"})
    assert asked == 1e20
    error = TransientAPIError("HTTP 429", kind="http_429", status=429, retry_after=asked)
    wait = next_wait(error, 1, RetryPolicy(max_retry_after=5.0), random.Random(3))
    assert 5.0 <= wait <= 6.0


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "5"},
        {"RETRY-AFTER": "5"},
        {"retry-after": "5"},
        {"Retry-After-Ms": "5000"},
        {"RETRY-AFTER-MS": "5000", "Retry-After": "99"},
    ],
)
def test_header_names_are_case_insensitive(headers: dict[str, str]) -> None:
    assert parse_retry_after(headers) == 5.0


def test_no_header_means_no_wait_was_asked() -> None:
    assert parse_retry_after({"content-type": "application/json"}) is None


@pytest.mark.parametrize(
    "value",
    [
        "soon",
        "",
        "   ",
        "0",
        "0.0",
        "-0",
        "-3",
        "nan",
        "inf",
        "-inf",
        "1e999",
        "Fri, 32 Foo 2025 99:99:99 GMT",
    ],
)
@pytest.mark.parametrize("name", ["retry-after", "retry-after-ms"])
def test_unusable_values_are_ignored(name: str, value: str) -> None:
    assert parse_retry_after({name: value}, now=NOW) is None


@settings(database=None)
@given(value=st.text(), name=st.sampled_from(["retry-after", "retry-after-ms", "Retry-After"]))
def test_any_text_gives_none_or_a_finite_non_negative_wait(name: str, value: str) -> None:
    seconds = parse_retry_after({name: value}, now=NOW)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)


@settings(database=None)
@given(
    when=st.datetimes(
        min_value=datetime(1990, 1, 1),
        max_value=datetime(2100, 1, 1),
        timezones=st.just(timezone.utc),
    )
)
def test_any_http_date_gives_the_whole_seconds_until_it(when: datetime) -> None:
    header = format_datetime(when, usegmt=True)
    until = (when.replace(microsecond=0) - NOW).total_seconds()
    assert parse_retry_after({"retry-after": header}, now=NOW) == (until if until > 0 else None)


def test_a_zero_retry_after_ms_falls_back_to_retry_after_or_backoff() -> None:
    assert parse_retry_after({"retry-after-ms": "0", "retry-after": "4"}) == 4.0
    assert parse_retry_after({"retry-after-ms": "0"}) is None
    # Positive in milliseconds, 0 in seconds (hypothesis found it): no wait was asked.
    assert parse_retry_after({"retry-after-ms": "5e-324"}) is None
    assert parse_retry_after({"retry-after-ms": "5e-324", "retry-after": "4"}) == 4.0


_NUMBERS = st.one_of(
    st.integers(min_value=-(10**25), max_value=10**25).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["0", "-0", "0.0", "nan", "NaN", "inf", "-inf", "Infinity", "1e999", "1e-9"]),
)
_DATES = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(timezone.utc)
).map(lambda d: format_datetime(d, usegmt=True))
_VALUES = st.one_of(_NUMBERS, _DATES, st.text(max_size=40))


@settings(database=None, max_examples=300)
@given(
    seconds=st.none() | _VALUES,
    millis=st.none() | _VALUES,
    cap=st.floats(min_value=0.0, max_value=600.0),
    attempt=st.integers(min_value=1, max_value=30),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_any_retry_after_headers_give_a_bounded_wait_and_backoff_unless_positive(
    seconds: str | None, millis: str | None, cap: float, attempt: int, seed: int
) -> None:
    headers = {k: v for k, v in (("Retry-After", seconds), ("retry-after-ms", millis)) if v}
    asked = parse_retry_after(headers, now=NOW)
    policy = RetryPolicy(max_retry_after=cap, backoff_base=1.0, backoff_max=60.0)
    error = TransientAPIError("HTTP 429", kind="http_429", status=429, retry_after=asked)
    wait = next_wait(error, attempt, policy, random.Random(seed))
    assert math.isfinite(wait)
    if asked is None:
        # Not a positive, finite wait: exponential backoff, never a quick return.
        step = min(60.0, 2.0 ** (attempt - 1))
        assert step / 2 <= wait <= step
    else:
        assert math.isfinite(asked) and asked > 0
        honoured = min(asked, cap)
        assert honoured <= wait <= honoured + 1.0


# --- next_wait ---------------------------------------------------------------


def transient(retry_after: float | None = None, kind: str = "http_503") -> TransientAPIError:
    return TransientAPIError(f"failed: {kind}", kind=kind, retry_after=retry_after)


@pytest.mark.parametrize("asked", [0.5, 2.0, 7.0, 119.0])
def test_a_server_asked_wait_is_honoured_with_at_most_a_second_of_jitter(asked: float) -> None:
    rng = random.Random(42)
    waits = [next_wait(transient(asked), 1, RetryPolicy(), rng) for _ in range(50)]
    assert all(asked <= w <= asked + 1.0 for w in waits)
    if asked > 0:
        assert len(set(waits)) > 1


def test_a_server_asked_wait_ignores_the_attempt_number() -> None:
    waits = [next_wait(transient(3.0), n, RetryPolicy(), random.Random(7)) for n in (1, 5, 9)]
    assert waits[0] == waits[1] == waits[2]
    assert 3.0 <= waits[0] <= 4.0


@pytest.mark.parametrize("asked", [0.0, -1.0, math.nan, math.inf])
def test_a_wait_that_is_not_positive_and_finite_backs_off(asked: float) -> None:
    policy = RetryPolicy(backoff_base=2.0)
    waits = [next_wait(transient(asked), 3, policy, random.Random(s)) for s in range(20)]
    assert all(4.0 <= w <= 8.0 for w in waits)  # the third step, not a quick return


@pytest.mark.parametrize(("cap", "asked"), [(120.0, 3600.0), (10.0, 30.0), (5.0, 1e300)])
def test_a_server_asked_wait_is_capped(cap: float, asked: float) -> None:
    rng = random.Random(1)
    for _ in range(20):
        wait = next_wait(transient(asked), 1, RetryPolicy(max_retry_after=cap), rng)
        assert cap <= wait <= cap + 1.0


def test_backoff_grows_per_attempt_until_the_cap_with_jitter_inside_the_step() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_max=8.0)
    for seed in range(30):
        rng = random.Random(seed)
        waits = [next_wait(transient(), n, policy, rng) for n in range(1, 9)]
        steps = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0]
        for wait, step in zip(waits, steps, strict=True):
            assert step / 2 <= wait <= step
        assert waits[:4] == sorted(waits[:4])


def test_backoff_jitter_varies_and_is_reproducible_with_a_seed() -> None:
    policy = RetryPolicy(backoff_base=2.0, backoff_max=60.0)
    first = [next_wait(transient(), 3, policy, random.Random(s)) for s in range(20)]
    again = [next_wait(transient(), 3, policy, random.Random(s)) for s in range(20)]
    assert first == again
    assert len(set(first)) > 10
    assert all(4.0 <= w <= 8.0 for w in first)


# --- call_with_retries -------------------------------------------------------


class Script:
    """An attempt that raises or returns the queued outcomes in order."""

    def __init__(self, *outcomes: object, latency: float = 0.0) -> None:
        self.outcomes = list(outcomes)
        self.latency = latency
        self.started: list[float] = []
        self.ended: list[float] = []

    async def __call__(self) -> object:
        self.started.append(clock())
        await asyncio.sleep(self.latency)
        self.ended.append(clock())
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def run_retries(
    attempt: Callable[[], Awaitable[object]],
    sleeps: RecordedSleep,
    policy: RetryPolicy,
    on_retry: Callable[[AttemptRecord], None] | None = None,
) -> tuple[object, list[AttemptRecord]]:
    return run_virtual(
        call_with_retries(
            attempt,
            policy,
            sleep=sleeps,
            clock=clock,
            rng=random.Random(3),
            on_retry=on_retry,
        )
    )


def gave_up(
    attempt: Callable[[], Awaitable[object]], sleeps: RecordedSleep, policy: RetryPolicy
) -> GaveUp:
    with pytest.raises(GaveUp) as info:
        run_retries(attempt, sleeps, policy)
    return info.value


def test_transient_failures_then_success_records_every_attempt() -> None:
    sleeps = RecordedSleep()
    busy = TransientAPIError("HTTP 503: busy", kind="http_503", status=503)
    slow = TransientAPIError("no answer within the timeout (ReadTimeout)", kind="read_timeout")
    attempt = Script(busy, slow, "the answer", latency=0.25)
    told: list[AttemptRecord] = []

    result, records = run_retries(attempt, sleeps, RetryPolicy(), on_retry=told.append)

    assert result == "the answer"
    assert [r.number for r in records] == [1, 2, 3]
    assert [r.outcome for r in records] == ["http_503", "read_timeout", "ok"]
    assert [r.status for r in records] == [503, None, 200]
    assert [r.message for r in records] == [busy.message, slow.message, None]
    assert [r.latency_ms for r in records] == [250.0, 250.0, 250.0]
    assert len(sleeps.waits) == 2
    assert 0.5 <= sleeps.waits[0] <= 1.0
    assert 1.0 <= sleeps.waits[1] <= 2.0
    assert records[0].wait_s == pytest.approx(sleeps.waits[0], abs=1e-3)
    assert records[1].wait_s == pytest.approx(sleeps.waits[1], abs=1e-3)
    assert records[2].wait_s is None
    assert told == records[:2]


def test_prepare_runs_untimed_before_every_attempt_and_no_attempt_is_sent_twice() -> None:
    sleeps = RecordedSleep()
    steps: list[str] = []
    script = Script(transient(), transient(), "the answer", latency=0.25)

    async def prepare() -> None:
        steps.append("prepare")
        await asyncio.sleep(5.0)  # waiting for a slot is not the request's latency

    async def attempt() -> object:
        steps.append("send")
        return await script()

    result, records = run_virtual(
        call_with_retries(
            attempt,
            RetryPolicy(),
            sleep=sleeps,
            clock=clock,
            rng=random.Random(3),
            prepare=prepare,
        )
    )

    assert result == "the answer"
    assert steps == ["prepare", "send"] * 3
    assert [r.number for r in records] == [1, 2, 3]
    assert [r.latency_ms for r in records] == [250.0, 250.0, 250.0]


def test_attempt_records_as_stored_leave_out_empty_fields() -> None:
    sleeps = RecordedSleep()
    limited = TransientAPIError("HTTP 429: slow down", kind="http_429", status=429, retry_after=1)
    _, records = run_retries(Script(limited, "ok", latency=0.5), sleeps, RetryPolicy())
    assert records[0].as_dict() == {
        "attempt": 1,
        "outcome": "http_429",
        "status": 429,
        "latency_ms": 500.0,
        "message": "HTTP 429: slow down",
        "retry_after_s": 1,
        "wait_s": round(sleeps.waits[0], 3),
    }
    assert records[1].as_dict() == {
        "attempt": 2,
        "outcome": "ok",
        "status": 200,
        "latency_ms": 500.0,
    }


@pytest.mark.parametrize(
    "error",
    [
        FatalAPIError("HTTP 401: bad key", kind="http_401", status=401),
        QuotaExhaustedError("HTTP 429: quota", kind="http_429", status=429, retry_after=1.0),
    ],
)
def test_a_fatal_error_is_not_retried(error: APIError) -> None:
    sleeps = RecordedSleep()
    attempt = Script(error, "never reached")
    told: list[AttemptRecord] = []

    with pytest.raises(GaveUp) as info:
        run_retries(attempt, sleeps, RetryPolicy(), on_retry=told.append)

    assert info.value.error is error
    assert str(info.value) == error.message
    assert len(attempt.started) == 1
    assert sleeps.waits == []
    assert told == []
    [record] = info.value.attempts
    assert (record.number, record.outcome, record.status) == (1, error.kind, error.status)
    assert record.wait_s is None


def test_retries_run_out_after_max_retries() -> None:
    sleeps = RecordedSleep()
    errors = [transient(kind=f"http_50{i}") for i in range(5)]
    attempt = Script(*errors)

    failure = gave_up(attempt, sleeps, RetryPolicy(max_retries=2))

    assert len(attempt.started) == 3
    assert failure.error is errors[2]
    assert [r.number for r in failure.attempts] == [1, 2, 3]
    assert [r.outcome for r in failure.attempts] == ["http_500", "http_501", "http_502"]
    assert [r.wait_s for r in failure.attempts[:2]] == [
        pytest.approx(w, abs=1e-3) for w in sleeps.waits
    ]
    assert failure.attempts[2].wait_s is None
    assert len(sleeps.waits) == 2


def test_max_retries_zero_means_one_attempt() -> None:
    sleeps = RecordedSleep()
    attempt = Script(transient())
    failure = gave_up(attempt, sleeps, RetryPolicy(max_retries=0))
    assert len(attempt.started) == 1
    assert len(failure.attempts) == 1
    assert sleeps.waits == []


def test_max_elapsed_bounds_the_total_time_spent_waiting() -> None:
    sleeps = RecordedSleep()
    attempt = Script(transient())
    policy = RetryPolicy(max_retries=1000, backoff_base=4.0, backoff_max=4.0, max_elapsed=30.0)

    failure = gave_up(attempt, sleeps, policy)

    assert attempt.ended[-1] - START <= 30.0
    # Waits are 2-4 s each, so some retries happen but far fewer than max_retries.
    assert 8 <= len(attempt.started) <= 16
    assert len(failure.attempts) == len(attempt.started)
    assert failure.attempts[-1].wait_s is None


def test_no_retry_starts_after_max_elapsed_even_when_attempts_are_slow() -> None:
    sleeps = RecordedSleep()
    attempt = Script(transient(), latency=3.0)
    policy = RetryPolicy(max_retries=1000, backoff_base=2.0, backoff_max=2.0, max_elapsed=20.0)

    gave_up(attempt, sleeps, policy)

    assert len(attempt.started) > 2
    assert all(started - START <= 20.0 for started in attempt.started)


def test_a_server_asked_wait_beyond_max_elapsed_gives_up_at_once() -> None:
    sleeps = RecordedSleep()
    attempt = Script(transient(retry_after=120.0), "never reached")
    failure = gave_up(attempt, sleeps, RetryPolicy(max_elapsed=60.0))
    assert len(attempt.started) == 1
    assert sleeps.waits == []
    assert failure.attempts[0].retry_after_s == 120.0


def test_a_429_retry_after_is_waited_for_and_recorded() -> None:
    sleeps = RecordedSleep()
    limited = TransientAPIError("HTTP 429: slow down", kind="http_429", status=429, retry_after=7)
    attempt = Script(limited, "done")

    result, records = run_retries(attempt, sleeps, RetryPolicy())

    assert result == "done"
    assert len(sleeps.waits) == 1
    assert 7.0 <= sleeps.waits[0] <= 8.0
    assert records[0].retry_after_s == 7
    assert records[0].wait_s is not None and records[0].wait_s >= 7.0
    assert attempt.started[1] - attempt.started[0] == pytest.approx(sleeps.waits[0])


def test_a_bug_in_the_attempt_is_not_retried_or_disguised() -> None:
    sleeps = RecordedSleep()
    attempt = Script(KeyError("choices"), "never reached")
    with pytest.raises(KeyError):
        run_retries(attempt, sleeps, RetryPolicy())
    assert len(attempt.started) == 1
    assert sleeps.waits == []


def test_rate_limits_have_their_own_larger_allowance() -> None:
    from runner.send.retry import GaveUp as _GaveUp

    def rate_limited(n: int) -> Any:
        calls = 0

        async def attempt() -> str:
            nonlocal calls
            calls += 1
            if calls <= n:
                raise TransientAPIError("HTTP 429: slow", kind="http_429", status=429)
            return "ok"

        return attempt

    def retries(attempt: Any, policy: RetryPolicy) -> Any:
        return run_virtual(call_with_retries(attempt, policy, sleep=asyncio.sleep, clock=clock))

    # Time is not what runs out here: 20 backoffs add up to more than the default 900 s.
    policy = RetryPolicy(max_retries=2, max_rate_limit_retries=20, max_elapsed=3600.0)
    result, records = retries(rate_limited(10), policy)
    assert result == "ok" and len(records) == 11
    with pytest.raises(_GaveUp) as info:
        retries(rate_limited(50), policy)
    assert len(info.value.attempts) == 21
    with pytest.raises(_GaveUp) as info:
        retries(rate_limited(5), RetryPolicy(max_retries=0, max_elapsed=3600.0))
    assert len(info.value.attempts) == 1  # 0 disables retrying altogether
