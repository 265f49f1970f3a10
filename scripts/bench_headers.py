"""Rate-limit headers as each provider family writes them: the bench server's and the tests'.

:func:`headers` turns the state of one limit (requests or tokens: its limit per
``period_s``, what remains, seconds until it resets) into that family's names and
value forms, as ``runner/http/ratelimits.py`` documents them:

- ``openai``: ``x-ratelimit-limit-requests``, ``-remaining-``, ``-reset-`` with Go-style
  durations (``20ms``, ``1s``, ``6m0s``: :func:`format_duration`); the period is not said;
- ``cerebras``: the same names with the window spelled out (``-tokens-minute``,
  ``-requests-day``), resets in plain fractional seconds;
- ``anthropic``: ``anthropic-ratelimit-requests-limit`` and so on, the reset an
  RFC 3339 moment on the wall clock, in whole seconds (rounded up);
- ``ietf``: the draft's structured pair, ``RateLimit-Policy: "requests";q=600;w=60``
  beside ``RateLimit: "requests";r=9;t=1`` (whole seconds, rounded up); a tokens
  policy has ``qu="tokens"``;
- ``kong``: Kong's rate-limiting plugin: ``X-RateLimit-Limit-Minute`` and
  ``X-RateLimit-Remaining-Minute`` (requests only), and the older draft's
  ``RateLimit-Limit``, ``-Remaining`` and ``-Reset`` (whole seconds).
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone

STYLES = ("openai", "cerebras", "anthropic", "ietf", "kong")
PERIOD_WORDS = {1.0: "second", 60.0: "minute", 3600.0: "hour", 86400.0: "day"}
"""The periods windowed names spell out (Cerebras's, Kong's)."""


def format_duration(seconds: float) -> str:
    """A duration as OpenAI writes it (Go's style): ``20ms``, ``1s``, ``2m59.56s``, ``6m0s``.

    Rounded up to the millisecond, so a client never reads less than the true time.
    """
    ms = max(0, math.ceil(seconds * 1000 - 1e-6))
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def headers(
    style: str, kind: str, limit: int, remaining: int, reset_s: float, period_s: float
) -> dict[str, str]:
    """One limit's headers in ``style``; ``kind`` is ``requests`` or ``tokens``."""
    remaining = max(0, remaining)
    if style == "openai":
        return {
            f"x-ratelimit-limit-{kind}": str(limit),
            f"x-ratelimit-remaining-{kind}": str(remaining),
            f"x-ratelimit-reset-{kind}": format_duration(reset_s),
        }
    if style == "cerebras":
        word = PERIOD_WORDS[period_s]
        return {
            f"x-ratelimit-limit-{kind}-{word}": str(limit),
            f"x-ratelimit-remaining-{kind}-{word}": str(remaining),
            f"x-ratelimit-reset-{kind}-{word}": repr(reset_s),
        }
    if style == "anthropic":
        moment = datetime.fromtimestamp(math.ceil(time.time() + reset_s), tz=timezone.utc)
        return {
            f"anthropic-ratelimit-{kind}-limit": str(limit),
            f"anthropic-ratelimit-{kind}-remaining": str(remaining),
            f"anthropic-ratelimit-{kind}-reset": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    if style == "ietf":
        unit = ';qu="tokens"' if kind == "tokens" else ""
        return {
            "ratelimit-policy": f'"{kind}";q={limit};w={period_s:g}{unit}',
            "ratelimit": f'"{kind}";r={remaining};t={math.ceil(reset_s)}',
        }
    if style == "kong":
        assert kind == "requests", "Kong's plugin counts requests"
        word = PERIOD_WORDS[period_s].capitalize()
        return {
            f"X-RateLimit-Limit-{word}": str(limit),
            f"X-RateLimit-Remaining-{word}": str(remaining),
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": str(remaining),
            "RateLimit-Reset": str(math.ceil(reset_s)),
        }
    raise ValueError(f"no header style {style!r}")


_LISTS = ("ratelimit", "ratelimit-policy")
"""Structured-field lists: several limits share one field, comma-separated."""


def merged(parts: list[dict[str, str]]) -> dict[str, str]:
    """Several limits' headers in one answer."""
    out: dict[str, str] = {}
    for part in parts:
        for name, value in part.items():
            out[name] = f"{out[name]}, {value}" if name in _LISTS and name in out else value
    return out
