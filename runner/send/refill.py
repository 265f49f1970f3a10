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
second before it (the bucket's burst and its refill) is a first, high
guess, taken at ``FIRST_SHARE``: pacing at it brings the next 429 soon, and
with it a real estimate. Estimates are averaged with the one before: a
second holds few sends, and one more or less is 5% at 20 a second. Two
429s less than ``MIN_SPAN_S`` apart come from the same burst and say
nothing new; with fewer than ``MIN_ADMITTED`` let through between them
(a slow limit), the span grows to the next 429.
"""

from __future__ import annotations

from collections import deque

WINDOW_S = 120.0
"""How far back sends are remembered."""
MIN_SPAN_S = 1.0
"""Shortest time between two empty moments that gives an estimate."""
MIN_ADMITTED = 5
"""Fewest requests let through between them for an estimate."""
FIRST_SHARE = 0.85
"""The first guess, which counts the bucket's burst as refill, is taken at this share."""


class RefillEstimate:
    """Sends and refusals of one endpoint, and the refill rate they show."""

    def __init__(self) -> None:
        self._sends: deque[tuple[int, float]] = deque()
        self._refused: deque[int] = deque()
        self._empty: tuple[int, float] | None = None
        """The refused send (number, time) of the last empty moment."""
        self.rate: float | None = None
        """The latest estimate, averaged with the one before (sends a second are few)."""
        self.measured = False
        """Whether ``rate`` was measured between two 429s (not only the first guess)."""

    def sent(self, seq: int, now: float) -> None:
        """Send ``seq`` went at ``now``."""
        self._sends.append((seq, now))
        while self._sends[0][1] < now - WINDOW_S:
            self._sends.popleft()
        while self._refused and self._refused[0] < self._sends[0][0]:
            self._refused.popleft()

    def reset(self) -> None:
        """Forget the last empty moment (after a storm, which let nothing through)."""
        self._empty = None

    def refused(self, seq: int, now: float) -> float | None:
        """Send ``seq`` was refused: the refill rate it shows, or None when it shows none."""
        at = next((t for s, t in reversed(self._sends) if s == seq), now)
        self._refused.append(seq)
        if self._empty is None:  # the first: what went through in the second before it
            self._empty = (seq, at)
            first = next((s for s, t in self._sends if t >= at - MIN_SPAN_S), seq)
            return self._update(self._admitted(first - 1, seq), MIN_SPAN_S, first=True)
        empty_seq, empty_at = self._empty
        admitted = self._admitted(empty_seq, seq)
        if at - empty_at < MIN_SPAN_S or admitted < MIN_ADMITTED:
            return None  # the same burst, or too few to tell: measured over a longer span
        self._empty = (seq, at)
        return self._update(admitted, at - empty_at, first=False)

    def _admitted(self, after: int, before: int) -> int:
        """Sends numbered between ``after`` and ``before`` that were not refused."""
        sent = sum(after < s < before for s, _ in self._sends)
        return sent - sum(after < s < before for s in self._refused)

    def _update(self, admitted: int, span: float, *, first: bool) -> float | None:
        """The rate of ``admitted`` requests over ``span`` seconds, as the pace should take it."""
        if admitted < MIN_ADMITTED:
            return None
        rate = admitted / span
        if first:
            rate *= FIRST_SHARE
        elif self.rate is not None and self.measured:
            rate = (rate + self.rate) / 2
        self.measured = self.measured or not first
        self.rate = rate
        return rate
