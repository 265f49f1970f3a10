"""What an answer's headers say about waiting: Retry-After, and the durations rate limits use.

- ``parse_retry_after`` reads ``retry-after-ms``, then ``retry-after``
  (seconds, fractional allowed, or an HTTP-date); only a positive, finite
  wait counts.
- ``parse_duration`` reads a rate limit's reset (``6m0s``, ``20ms``,
  ``1m30.5s``, plain seconds); ``ratelimits.py`` reads the rate-limit headers
  themselves, in each form servers send them.

Retry-After and the rate limits are read by the client from every answer,
refusals included: a 429's or 503's ride on its ``APIError`` (``retry_after``,
``rate_limits``), parsed, never the headers themselves. The send path (retry
waits, pacing) acts on what they found.

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
from datetime import datetime, timezone


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
    millis = parse_seconds(lowered.get("retry-after-ms"))
    # Positive after the division: 5e-324 ms is a positive number of milliseconds and 0 s.
    seconds_ms = _positive(millis / 1000.0) if millis is not None else None
    if seconds_ms is not None:
        return seconds_ms
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    seconds = parse_seconds(raw)
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
    plain = parse_seconds(text)
    if plain is not None:
        return plain
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    seconds = sum(float(number) * scale[unit] for number, unit in parts)
    return seconds if math.isfinite(seconds) else None


def parse_seconds(raw: str | None) -> float | None:
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
