"""What an answer's headers say about waiting: Retry-After and the ``x-ratelimit-*`` family.

- ``parse_retry_after`` reads ``retry-after-ms``, then ``retry-after``
  (seconds, fractional allowed, or an HTTP-date); only a positive, finite
  wait counts.
- ``parse_rate_limits`` reads, for requests and for tokens, the limit, what
  remains of it and when it resets (``parse_duration``: ``6m0s``, ``20ms``,
  ``1m30.5s``, plain seconds), as a :class:`RateLimits`; Together's
  unsuffixed ``x-ratelimit-limit/remaining/reset`` are its requests limit
  and read as such. A value that is not a count or a duration (Azure's
  ``-1`` among them) is left out, as if not sent: the pacer then falls back
  to what the rest says.

Both are read by the client from every answer, refusals included: a 429's or
503's ride on its ``APIError`` (``retry_after``, ``rate_limits``), parsed, never
the headers themselves. The send path (retry waits, pacing) acts on what they
found.

What providers send on a refusal, from their documentation and issue threads
(2026): Groq sends the ``x-ratelimit-*`` set on every answer and adds
``retry-after`` on its 429s (``-requests`` counting per day); Azure OpenAI sends
``retry-after-ms`` and ``retry-after`` on its 429s and ``x-ratelimit-remaining-*``
on answers (its request limit counted over 10-second windows; ``-1`` on some
APIs); OpenAI documents the set for its answers and says the wait of a 429 in the
message ("Please try again in 23.03s"); Together sends the unsuffixed trio (per
second in one version of its documentation) and answers 503, not 429, at or
below its dynamic rate. LiteLLM's proxy puts the set on its answers (the
backend's, or ``x-ratelimit-<descriptor>-remaining-requests`` for its own key
limits, which are not read here) while its own 429s carry ``retry-after`` (its
window, 60 s) and no ``x-ratelimit-*``; an upstream's 429 headers come through
prefixed ``llm_provider-`` (not read). OpenRouter puts them in the 429's body.
So a gateway that tells its bucket only on refusals is the rarer case; the common
one is a 429 whose set says which bucket was empty while answers say the rest.
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone


@dataclass(frozen=True, slots=True)
class RateLimits:
    """What an answer's ``x-ratelimit-*`` headers said (None: not given)."""

    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None
    limit_requests: int | None = None
    """``x-ratelimit-limit-requests``: requests per minute at OpenAI and Azure, per day at Groq."""
    limit_tokens: int | None = None
    """``x-ratelimit-limit-tokens``: tokens per minute."""


def parse_retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds the server asks us to wait, or None when it says nothing usable.

    ``retry-after-ms`` wins over ``retry-after``. ``retry-after`` may be
    seconds (fractions allowed) or an HTTP-date. Only a positive, finite,
    parsable wait is the server's word: zero, negative, non-finite and
    unparsable values, and dates that are not in the future, are None, so
    the request backs off instead of coming straight back. A huge value is
    returned as is; the retry policy caps it.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = _parse_seconds(lowered.get("retry-after-ms"))
    # Positive after the division: 5e-324 ms is a positive number of milliseconds and 0 s.
    seconds_ms = _positive(millis / 1000.0) if millis is not None else None
    if seconds_ms is not None:
        return seconds_ms
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
        "x-ratelimit-limit-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    }
)


def parse_rate_limits(headers: Mapping[str, str]) -> RateLimits | None:
    """The ``x-ratelimit-*`` headers of an answer, or None when it has none."""
    lowered = {k.lower(): v for k, v in headers.items() if k.lower() in _RATE_LIMIT_HEADERS}
    if not lowered:
        return None  # most answers: nothing to parse, on every request
    if "x-ratelimit-remaining-requests" not in lowered:
        # Together's requests limit, without the suffix (and the same meaning)
        for field in ("limit", "remaining", "reset"):
            if f"x-ratelimit-{field}" in lowered:
                lowered[f"x-ratelimit-{field}-requests"] = lowered[f"x-ratelimit-{field}"]
    limits = RateLimits(
        remaining_requests=_count(lowered.get("x-ratelimit-remaining-requests")),
        reset_requests_s=parse_duration(lowered.get("x-ratelimit-reset-requests")),
        remaining_tokens=_count(lowered.get("x-ratelimit-remaining-tokens")),
        reset_tokens_s=parse_duration(lowered.get("x-ratelimit-reset-tokens")),
        limit_requests=_count(lowered.get("x-ratelimit-limit-requests")),
        limit_tokens=_count(lowered.get("x-ratelimit-limit-tokens")),
    )
    return None if limits == RateLimits() else limits


def _count(raw: str | None) -> int | None:
    """A remaining-requests or -tokens value: a whole count, or None."""
    value = _parse_seconds(raw)
    return None if value is None else int(value)


def _parse_seconds(raw: str | None) -> float | None:
    """A plain non-negative, finite number in a header value, or None."""
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value
