"""The bench server's rate limiters and the rate-limit headers they send (``bench_headers``).

Two limiters with one interface, both pure functions of the time passed in (no clock of
their own, so tests drive them with any numbers):

- :class:`TokenBucket`: holds up to ``capacity``, refills continuously at ``rate`` per
  second. ``remaining`` is the whole units in it; ``reset`` is the time until it is
  *completely full again* if nothing more is taken: ``(capacity - level) / rate``. That
  is what OpenAI documents for ``x-ratelimit-reset-requests`` ("the time until the rate
  limit resets to its initial state") and what its answers show (``12ms`` after one
  request of 5,000 rpm). The ``limit`` header is the per-minute figure, while the bucket
  may be smaller (the default burst is one second's worth): OpenAI and Azure enforce a
  minute's limit over shorter periods too. A client can tell the bucket's size from the
  three headers: ``remaining + reset * limit / 60``.
- :class:`FixedWindow`: ``limit`` per window of ``window_s`` seconds; the first window
  starts at the first booking. ``reset`` is the time to the window's end.

A booking larger than the whole bucket is let through when the bucket is full (the level
goes below zero and refills from there), so one big request cannot be refused forever.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from bench_headers import headers, merged


class Limiter(Protocol):
    """What the server asks of a limiter."""

    limit: int
    """The figure sent as ``x-ratelimit-limit-*``."""

    @property
    def period(self) -> float:
        """Seconds ``limit`` is counted over (60: per minute)."""

    def wait(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` could be booked (0: now); books nothing."""

    def book(self, amount: float, now: float) -> None:
        """Take ``amount`` (after :meth:`wait` said 0)."""

    def refund(self, amount: float, now: float) -> None:
        """Give back ``amount`` booked earlier."""

    def state(self, now: float) -> tuple[int, float]:
        """``(remaining, reset seconds)`` as the headers say them."""


@dataclass
class TokenBucket:
    """A bucket of ``capacity`` refilled at ``rate`` per second, full at ``start``."""

    limit: int
    capacity: float
    rate: float
    level: float = math.nan
    updated: float = math.nan
    period: float = 60.0
    """Seconds ``limit`` is counted over: a minute, or a day (``--rpd``)."""

    def _refill(self, now: float) -> None:
        if math.isnan(self.level):
            self.level, self.updated = self.capacity, now
        elapsed = max(0.0, now - self.updated)
        self.level = min(self.capacity, self.level + elapsed * self.rate)
        self.updated = max(self.updated, now)

    def wait(self, amount: float, now: float) -> float:
        """Seconds until the bucket holds ``amount`` (or is full, for a bigger one)."""
        self._refill(now)
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def book(self, amount: float, now: float) -> None:
        """Take ``amount`` out of the bucket."""
        self._refill(now)
        self.level -= amount

    def refund(self, amount: float, now: float) -> None:
        """Put ``amount`` back (never above full)."""
        self._refill(now)
        self.level = min(self.capacity, self.level + amount)

    def state(self, now: float) -> tuple[int, float]:
        """Whole units left, and the seconds until the bucket is full again."""
        self._refill(now)
        return max(0, math.floor(self.level + 1e-9)), (self.capacity - self.level) / self.rate


@dataclass
class FixedWindow:
    """``limit`` units per window of ``window_s`` seconds, windows back to back."""

    limit: int
    window_s: float
    start: float = math.nan
    used: float = 0.0

    @property
    def period(self) -> float:
        return self.window_s

    def _roll(self, now: float) -> float:
        """Move to the window ``now`` is in; return that window's end."""
        if math.isnan(self.start):
            self.start = now
        if now >= self.start + self.window_s:
            self.start += math.floor((now - self.start) / self.window_s) * self.window_s
            self.used = 0.0
        return self.start + self.window_s

    def wait(self, amount: float, now: float) -> float:
        """0 while the window has room (a fresh window admits anything), else until its end."""
        end = self._roll(now)
        if self.used == 0 or self.used + amount <= self.limit:
            return 0.0
        return end - now

    def book(self, amount: float, now: float) -> None:
        """Count ``amount`` in the current window."""
        self._roll(now)
        self.used += amount

    def refund(self, amount: float, now: float) -> None:
        """Uncount ``amount`` (a refund for an earlier window is lost with it)."""
        self._roll(now)
        self.used = max(0.0, self.used - amount)

    def state(self, now: float) -> tuple[int, float]:
        """Units left in this window, and the seconds to its end."""
        end = self._roll(now)
        return max(0, math.floor(self.limit - self.used)), end - now


def make_limiter(kind: str, per_minute: float, burst: float | None, window_s: float) -> Limiter:
    """A limiter of ``per_minute``: ``bucket`` (burst default one second's worth) or ``window``."""
    if kind == "window":
        return FixedWindow(limit=max(1, round(per_minute * window_s / 60.0)), window_s=window_s)
    rate = per_minute / 60.0
    capacity = burst if burst is not None else max(1.0, rate)
    return TokenBucket(limit=round(per_minute), capacity=capacity, rate=rate)


@dataclass
class Refusal:
    """Why a request was refused and how long until it would not be."""

    which: str
    """``requests`` or ``tokens``."""
    wait_s: float


class Limits:
    """The requests limiter and the optional tokens limiter of one server."""

    def __init__(self, requests: Limiter | None, tokens: Limiter | None) -> None:
        self.requests = requests
        self.tokens = tokens

    def admit(self, tokens: float, now: float) -> Refusal | None:
        """Book one request and ``tokens``, or refuse (booking nothing) when either is short."""
        for which, limiter, amount in (
            ("requests", self.requests, 1.0),
            ("tokens", self.tokens, tokens),
        ):
            if limiter is not None:
                wait = limiter.wait(amount, now)
                if wait > 0:
                    return Refusal(which, wait)
        if self.requests is not None:
            self.requests.book(1.0, now)
        if self.tokens is not None:
            self.tokens.book(tokens, now)
        return None

    def refund_tokens(self, tokens: float, now: float) -> None:
        """Give back tokens booked but not used."""
        if self.tokens is not None and tokens > 0:
            self.tokens.refund(tokens, now)

    def headers(self, now: float, style: str = "openai") -> dict[str, str]:
        """The rate-limit headers of every limiter there is, in ``style`` (``bench_headers``)."""
        parts = []
        for kind, limiter in (("requests", self.requests), ("tokens", self.tokens)):
            if limiter is not None:
                remaining, reset = limiter.state(now)
                parts.append(headers(style, kind, limiter.limit, remaining, reset, limiter.period))
        return merged(parts)


def retry_headers(wait_s: float) -> dict[str, str]:
    """A 429's waits: ``retry-after-ms`` (Azure, OpenAI; rounded up, never 0) and
    ``retry-after`` (whole seconds, rounded up, at least 1)."""
    return {
        "retry-after": str(max(1, math.ceil(wait_s - 1e-9))),
        "retry-after-ms": str(max(1, math.ceil(wait_s * 1000 - 1e-6))),
    }
