"""The refill rate of a rate limit nobody tells us about, from the sends between two 429s.

Without ``x-ratelimit-*`` headers a 429 is the only word from the server's
bucket, and it says one thing: the bucket was empty when that request
arrived. Between two such moments, what the server let through is exactly
what refilled, so the requests sent between two refused ones, less the
refused among them, over the time between, is the refill rate (a lower
bound: less, when sends paused long enough for the bucket to fill up and
waste its refill). That is what the pacer paces at, just under it, instead
of a rate guessed from answers, which lags behind the sends by a latency
and, early in a run, counts too few of them.

The first 429 has no empty moment before it; what was let through in the
second before it (the bucket's burst and its refill) is taken as a first,
high guess: pacing at it brings the next 429 soon, and with it a real
estimate. Two 429s less than ``MIN_SPAN_S`` apart come from the same burst
and say nothing new.
"""

from __future__ import annotations

from collections import deque

WINDOW_S = 120.0
"""How far back sends are remembered."""
MIN_SPAN_S = 1.0
"""Shortest time between two empty moments that gives an estimate."""
MIN_ADMITTED = 5
"""Fewest requests let through between them for an estimate."""


class RefillEstimate:
    """Sends and refusals of one endpoint, and the refill rate they show."""

    def __init__(self) -> None:
        self._sends: deque[tuple[int, float]] = deque()
        self._refused: deque[float] = deque()
        self._empty_at: float | None = None

    def sent(self, seq: int, now: float) -> None:
        """Send ``seq`` went at ``now``."""
        self._sends.append((seq, now))
        while self._sends[0][1] < now - WINDOW_S:
            self._sends.popleft()
        while self._refused and self._refused[0] < now - WINDOW_S:
            self._refused.popleft()

    def reset(self) -> None:
        """Forget the last empty moment (after a storm, which let nothing through)."""
        self._empty_at = None

    def refused(self, seq: int, now: float) -> float | None:
        """Send ``seq`` was refused: the refill rate since the last refusal, or None."""
        at = next((t for s, t in reversed(self._sends) if s == seq), now)
        self._refused.append(at)
        start = self._empty_at
        if start is None:  # the first: what went through in the second before it
            start = max(at - MIN_SPAN_S, self._sends[0][1] if self._sends else at)
            self._empty_at = at
            return self._rate(start, at, max(MIN_SPAN_S, at - start))
        if at - start < MIN_SPAN_S:
            return None
        self._empty_at = at
        return self._rate(start, at, at - start)

    def _rate(self, start: float, end: float, span: float) -> float | None:
        sent = sum(start <= t < end for _, t in self._sends)
        refused = sum(start <= t < end for t in self._refused)
        admitted = sent - refused
        return admitted / span if admitted >= MIN_ADMITTED else None
