"""Rate-limit headers in each form servers send them (runner/http/ratelimits.py)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from runner.http.ratelimits import RateLimits, parse_rate_limits
from runner.send.bucket import Mirror

NOW = datetime(2026, 12, 2, 16, 0, 0, tzinfo=timezone.utc).timestamp()


def parse(headers: dict[str, str]) -> RateLimits | None:
    return parse_rate_limits(headers, now=NOW)


def test_cerebras_windowed_names_say_each_limits_period() -> None:
    limits = parse(
        {
            "x-ratelimit-limit-requests-day": "14400",
            "x-ratelimit-limit-tokens-minute": "60000",
            "x-ratelimit-remaining-requests-day": "14390",
            "x-ratelimit-remaining-tokens-minute": "59000",
            "x-ratelimit-reset-requests-day": "33011.382867097855",
            "x-ratelimit-reset-tokens-minute": "11.382867097854614",
        }
    )
    assert limits == RateLimits(
        remaining_requests=14390,
        reset_requests_s=pytest.approx(33011.382867097855),
        remaining_tokens=59000,
        reset_tokens_s=pytest.approx(11.382867097854614),
        limit_requests=14400,
        limit_tokens=60000,
        period_requests_s=86400.0,
        period_tokens_s=60.0,
    )


def test_of_several_windows_of_one_resource_the_one_with_least_left_is_kept() -> None:
    headers = {
        "x-ratelimit-limit-requests-minute": "30",
        "x-ratelimit-remaining-requests-minute": "25",
        "x-ratelimit-limit-requests-day": "14400",
        "x-ratelimit-remaining-requests-day": "10",
    }
    day = parse(headers)
    assert day is not None
    assert (day.limit_requests, day.remaining_requests, day.period_requests_s) == (
        14400,
        10,
        86400.0,
    )
    headers["x-ratelimit-remaining-requests-minute"] = "3"  # now the minute runs dry first
    minute = parse(headers)
    assert minute is not None
    assert (minute.limit_requests, minute.remaining_requests, minute.period_requests_s) == (
        30,
        3,
        60.0,
    )


def test_anthropic_names_with_resets_as_rfc3339_moments() -> None:
    limits = parse(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": "2026-12-02T16:00:30Z",
            "anthropic-ratelimit-tokens-limit": "40000",
            "anthropic-ratelimit-tokens-remaining": "39000",
            "anthropic-ratelimit-tokens-reset": "2026-12-02T17:00:01.500+01:00",
        }
    )
    assert limits == RateLimits(49, 30.0, 39000, 1.5, 50, 40000)


def test_the_ietf_drafts_structured_fields_name_the_quota_window_and_unit() -> None:
    limits = parse(
        {
            "RateLimit-Policy": (
                '"burst";q=100;w=60, "daily";q=1000;w=86400, '
                '"bytes";q=5000;qu="content-bytes", "tpm";q=50000;w=60;qu="tokens"'
            ),
            "RateLimit": '"burst";r=50;t=30, "daily";r=20;t=3000, "bytes";r=1, "tpm";r=100;t=2',
        }
    )
    # Of the two request policies the daily one has the least left; bytes are not requests.
    assert limits == RateLimits(
        remaining_requests=20,
        reset_requests_s=3000.0,
        remaining_tokens=100,
        reset_tokens_s=2.0,
        limit_requests=1000,
        limit_tokens=50000,
        period_requests_s=86400.0,
        period_tokens_s=60.0,
    )


def test_ietf_policy_names_may_be_tokens_and_a_current_value_without_a_policy_has_no_limit() -> (
    None
):
    limits = parse({"RateLimit-Policy": "default;q=10;w=1", "RateLimit": "default;r=4;t=1"})
    assert limits == RateLimits(4, 1.0, limit_requests=10, period_requests_s=1.0)
    orphan = parse({"RateLimit": '"other";r=4;t=1'})
    assert orphan == RateLimits(remaining_requests=4, reset_requests_s=1.0)


def test_the_older_drafts_trio_takes_its_period_from_a_matching_policy() -> None:
    limits = parse(
        {
            "RateLimit-Limit": "100",
            "RateLimit-Remaining": "40",
            "RateLimit-Reset": "20",
            "RateLimit-Policy": "10;w=1, 100;w=60",
        }
    )
    assert limits == RateLimits(40, 20.0, limit_requests=100, period_requests_s=60.0)
    bare = parse({"RateLimit-Limit": "100", "RateLimit-Remaining": "40", "RateLimit-Reset": "20"})
    assert bare == RateLimits(40, 20.0, limit_requests=100)


def test_kongs_windowed_names_count_requests() -> None:
    limits = parse(
        {
            "X-RateLimit-Limit-Minute": "60",
            "X-RateLimit-Remaining-Minute": "55",
            "X-RateLimit-Limit-Hour": "1000",
            "X-RateLimit-Remaining-Hour": "10",
        }
    )
    assert limits == RateLimits(
        remaining_requests=10, limit_requests=1000, period_requests_s=3600.0
    )


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        (str(int(NOW) + 30), 30.0),  # Unix seconds
        (str(int(NOW * 1000) + 2500), 2.5),  # Unix milliseconds
        (str(int(NOW) - 5), 0.0),  # already past: nothing to wait for
        ("2026-12-02T16:01:00", 60.0),  # RFC 3339 without an offset: UTC
        ("soon", None),
    ],
)
def test_a_reset_given_as_a_moment_is_the_time_until_it(raw: str, seconds: float | None) -> None:
    limits = parse({"x-ratelimit-remaining": "3", "x-ratelimit-reset": raw})
    assert limits is not None and limits.reset_requests_s == seconds


def test_the_first_form_that_names_a_resource_wins() -> None:
    limits = parse(
        {
            "x-ratelimit-remaining-requests": "59",
            "x-ratelimit-remaining-requests-minute": "5",
            "anthropic-ratelimit-requests-remaining": "4",
            "x-ratelimit-remaining": "3",
            "ratelimit-remaining": "2",
            "x-ratelimit-remaining-tokens-minute": "900",
            "anthropic-ratelimit-tokens-remaining": "800",
        }
    )
    assert limits == RateLimits(remaining_requests=59, remaining_tokens=900, period_tokens_s=60.0)


@pytest.mark.parametrize(
    "value",
    ['"', ";;;", ",,,", '"a";r=;t=', '"a\\";r=1', "a;r=1e400;t=-3;q=-1;w=nan", "a;" * 500],
)
def test_broken_structured_fields_raise_nothing_and_give_no_nonsense(value: str) -> None:
    limits = parse({"RateLimit-Policy": value, "RateLimit": value})
    figures = [] if limits is None else [getattr(limits, f) for f in limits.__slots__]
    assert all(f is None or 0 <= f < float("inf") for f in figures), limits


def test_headers_of_other_names_are_no_limits() -> None:
    assert parse({"content-type": "application/json", "x-request-id": "abc"}) is None


def test_a_period_from_the_headers_sets_the_refill_rate() -> None:
    """Cerebras's day: 14,400 requests refill at 1 per 6 s, whatever the reset says (a
    reset that is the end of the day's window, not the time until full)."""
    mirror = Mirror()
    seq = mirror.sending(0, 0.0)
    limits = RateLimits(
        remaining_requests=20,
        reset_requests_s=33011.0,
        limit_requests=14400,
        period_requests_s=86400.0,
    )
    assert mirror.observe(limits, seq, 0.0)
    assert mirror.requests.rate == pytest.approx(1 / 6)
    unnamed = Mirror()  # no period named: read from the reset, 14,380 drawn in 33,011 s
    unnamed.observe(RateLimits(20, 33011.0, limit_requests=14400), unnamed.sending(0, 0.0), 0.0)
    assert unnamed.requests.rate == pytest.approx(14380 / 33011)
