"""Rate-limit headers as providers send them, and the bucket mirror kept from them."""

from __future__ import annotations

import pytest

from runner.http.headers import parse_duration, parse_retry_after
from runner.http.ratelimits import RateLimits, parse_rate_limits
from runner.send.bucket import Mirror


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("20ms", 0.02), ("1s", 1.0), ("6m0s", 360.0), ("1m30.5s", 90.5), ("2m59.56s", 179.56)],
)
def test_reset_forms_in_the_wild(raw: str, seconds: float) -> None:
    assert parse_duration(raw) == pytest.approx(seconds)


def test_openai_headers_give_limit_remaining_and_reset() -> None:
    limits = parse_rate_limits(
        {
            "x-ratelimit-limit-requests": "5000",
            "x-ratelimit-limit-tokens": "160000",
            "x-ratelimit-remaining-requests": "4999",
            "x-ratelimit-remaining-tokens": "159976",
            "x-ratelimit-reset-requests": "12ms",
            "x-ratelimit-reset-tokens": "9ms",
        }
    )
    assert limits == RateLimits(4999, 12 * 0.001, 159976, 9 * 0.001, 5000, 160000)


def test_azure_minus_one_values_are_left_out() -> None:
    limits = parse_rate_limits(
        {
            "x-ratelimit-limit-tokens": "-1",
            "x-ratelimit-remaining-tokens": "-1",
            "x-ratelimit-reset-tokens": "0",
        }
    )
    assert limits == RateLimits(reset_tokens_s=0.0)
    mirror = Mirror()
    assert limits is not None and not mirror.observe(limits, 1, 0.0)
    assert not mirror.active


def test_azure_retry_after_ms_wins() -> None:
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "2"}) == 1.5


def snapshot(limit: int, remaining: int, reset: float) -> RateLimits:
    return RateLimits(remaining_requests=remaining, reset_requests_s=reset, limit_requests=limit)


def test_openai_bucket_refills_at_limit_per_minute_and_waits_only_for_one_request() -> None:
    mirror = Mirror()
    seq = mirror.sending(0, 0.0)
    # 1,200 a minute, 0 left, full again in 60 s: the next request waits 1/20 s (+ margin),
    # not the 60 s of the reset.
    assert mirror.observe(snapshot(1200, 0, 60.0), seq, 0.0)
    assert mirror.requests.rate == pytest.approx(20.0)
    start, _ = mirror.book(0, 0.0)
    assert start == pytest.approx((1 + mirror.requests.margin) / 20.0)


def test_a_smaller_burst_than_the_limit_is_read_from_the_reset() -> None:
    mirror = Mirror()
    seq = mirror.sending(0, 0.0)
    mirror.observe(snapshot(1200, 19, 0.05), seq, 0.0)  # 20 a second, full in 50 ms: size 20
    assert mirror.requests.size == pytest.approx(20.0)


def tokens(limit: int, remaining: int, reset: float) -> RateLimits:
    return RateLimits(remaining_tokens=remaining, reset_tokens_s=reset, limit_tokens=limit)


def test_a_booking_bigger_than_the_bucket_goes_when_it_is_full_and_draws_all_of_it() -> None:
    mirror = Mirror()
    seq = mirror.sending(0, 0.0)
    # 60,000 a minute kept over a second's 1,000 (Azure, the bench server), full now.
    mirror.observe(tokens(60_000, 1000, 0.0), seq, 0.0)
    assert mirror.tokens.size == pytest.approx(1000.0)
    first, _ = mirror.book(1500, 0.0)
    assert first == pytest.approx(0.05)  # full, and a twentieth of the bucket's refill past it
    second, _ = mirror.book(1500, 0.0)
    # The first took the bucket 500 below zero: the second waits for all of that, and again
    # for the bucket to be full, not only for 1,000 to come back.
    assert second == pytest.approx(1.55)


def test_an_empty_bucket_below_zero_says_so_by_its_reset_and_keeps_its_size() -> None:
    mirror = Mirror()
    mirror.observe(tokens(60_000, 1000, 0.0), mirror.sending(0, 0.0), 0.0)
    # A booking of 1,500 went when it was full: empty, and full again in 1.5 s.
    mirror.observe(tokens(60_000, 0, 1.5), mirror.sending(1500, 0.0), 0.0)
    assert mirror.tokens.size == pytest.approx(1000.0)  # not 1,500: the reset counts the debt
    assert mirror.tokens.level_now(0.0) == pytest.approx(-500.0)
    assert mirror.tokens.level_now(0.5) == pytest.approx(0.0)


def test_requests_sent_since_a_snapshot_are_already_drawn() -> None:
    mirror = Mirror()
    first = mirror.sending(0, 0.0)
    for _ in range(5):  # in flight when the server answered the first
        mirror.released(0)
        mirror.sending(0, 0.0)
    mirror.observe(snapshot(60, 10, 50.0), first, 0.0)
    assert mirror.requests.level_now(0.0) == pytest.approx(5.0)


def test_an_older_snapshot_arriving_late_does_not_set_the_level() -> None:
    mirror = Mirror()
    old, new = mirror.sending(0, 0.0), mirror.sending(0, 0.0)
    mirror.observe(snapshot(60, 3, 57.0), new, 0.0)
    mirror.observe(snapshot(60, 40, 20.0), old, 0.0)  # out of order: ignored for the level
    assert mirror.requests.level_now(0.0) == pytest.approx(3.0)


def test_groq_requests_per_day_beside_tokens_per_minute_the_tighter_paces() -> None:
    mirror = Mirror()
    seq = mirror.sending(500, 0.0)
    limits = RateLimits(
        limit_requests=14400,
        remaining_requests=14370,
        reset_requests_s=parse_duration("2m59.56s"),
        limit_tokens=18000,
        remaining_tokens=1000,
        reset_tokens_s=parse_duration("56.66s"),
    )
    mirror.observe(limits, seq, 0.0)
    assert mirror.requests.rate == pytest.approx(30 / 179.56)  # a day's limit: slow refill
    assert mirror.tokens.rate == pytest.approx(300.0)  # 18,000 a minute
    # Plenty of requests left today; the tokens bucket is what makes a big request wait.
    assert mirror.book(100, 0.0)[0] == 0.0
    start, _ = mirror.book(2000, 0.0)
    assert start == pytest.approx((2100 - 1000 + mirror.tokens.margin) / 300.0)


def test_a_429_empties_the_mirror() -> None:
    mirror = Mirror()
    seq = mirror.sending(100, 0.0)
    mirror.observe(
        RateLimits(
            remaining_requests=50,
            reset_requests_s=1.0,
            limit_requests=60,
            remaining_tokens=5000,
            reset_tokens_s=10.0,
            limit_tokens=6000,
        ),
        seq,
        0.0,
    )
    assert mirror.tokens.level_now(0.0) == pytest.approx(5000.0)
    refused = mirror.sending(10, 0.0)
    mirror.refused(refused, 0.0)
    assert mirror.requests.level_now(0.0) == pytest.approx(0.0)


@pytest.mark.parametrize(
    "limits",
    [
        RateLimits(remaining_requests=5, reset_requests_s=1.0),  # no limit: the old rules
        RateLimits(remaining_requests=70, reset_requests_s=1.0, limit_requests=60),
        RateLimits(remaining_requests=5, reset_requests_s=1.0, limit_requests=0),
    ],
)
def test_partial_or_nonsensical_headers_mirror_nothing(limits: RateLimits) -> None:
    mirror = Mirror()
    assert not mirror.observe(limits, mirror.sending(0, 0.0), 0.0)
    assert not mirror.active


def test_together_unsuffixed_headers_are_its_requests_limit() -> None:
    limits = parse_rate_limits(
        {"x-ratelimit-limit": "600", "x-ratelimit-remaining": "598", "x-ratelimit-reset": "1"}
    )
    assert limits == RateLimits(remaining_requests=598, reset_requests_s=1.0, limit_requests=600)
    both = parse_rate_limits({"x-ratelimit-remaining": "1", "x-ratelimit-remaining-requests": "59"})
    assert both == RateLimits(remaining_requests=59)  # the suffixed ones win


def test_a_reset_given_as_a_moment_says_nothing_of_the_rate() -> None:
    mirror = Mirror()
    seq = mirror.sending(0, 0.0)
    mirror.observe(snapshot(600, 590, 1_764_600_000.0), seq, 0.0)  # epoch seconds
    assert mirror.requests.rate == pytest.approx(10.0)  # per minute, not per 56 years
    assert mirror.requests.size == 600.0
