"""The refill rate of a rate limit nobody tells us about, from the sends between 429s.

Without ``x-ratelimit-*`` headers a 429 is the only word from the server's
limiter, and it says one thing: the bucket was empty when that request
arrived (for a fixed window: the window's count was spent). Each refused
send is such an *empty moment*. What follows from them, for a token bucket
refilling at ``r`` (a window is the same with ``r`` its count over its
length):

- between two empty moments ``e < t``, what was let through is what refilled
  less what overflowed a full bucket: ``admitted(e, t) <= r (t - e) + 1``,
  and ``>=  r (t - e) - 1`` when sends never paused long enough to fill the
  bucket. Over a second or more this *measures* ``r``; it is what the pacer
  paces at, just under it. (A rate guessed from answers lags the sends by a
  latency and, early in a run, counts too few of them.)
- over a shorter span it is not a measure (a token more or less is a large
  share), but the second inequality still bounds ``r`` from above: a 429
  soon after the last empty moment, with few let through since, says the
  pace is too fast *now*, and by how much, without waiting a second of
  refusals for the measure. Every such 429 tightens the bound.
- the first 429 has no empty moment before it, but the bucket was full at
  the first send: what was let through since then is its burst plus its
  refill since. The first guess takes the burst as one second's worth (a
  common size: a bigger burst makes the guess high, and the bound above
  brings it down at the next 429s; a smaller one makes it low, and the pacer
  speeds up fast until a 429 measures the rate). After a storm (``reset``)
  the bucket was not full: the last second only counts.

Refused sends are counted by their send times, and a wave of sends that
went out together before any 429 came back is refused together: the first
empty moment is the earliest of them, and the guess is worked out again as
each of their 429s arrives, so that sends of the wave not yet known to be
refused do not count as let through. Measures are averaged with the one
before (one send more or less is 5% at 20 a second); a lower bound than the
current rate replaces it at once, as a pace too fast costs refusals and one
too slow only a little time. Fewer than ``MIN_ADMITTED`` let through (a slow
limit) is too few to measure: the span grows to the next 429.
"""

from __future__ import annotations

from runner.send.sendlog import SendLog

WINDOW_S = 120.0
"""How far back sends are remembered."""
MIN_SPAN_S = 1.0
"""Shortest time between two empty moments that gives a measure."""
MIN_ADMITTED = 5
"""Fewest requests let through between them for a measure."""
GUESS_BURST_S = 1.0
"""The first guess takes the bucket's burst as this many seconds of its refill."""
SAME_WAVE_S = 0.5
"""Refusals this close to the first one belong to its wave (sent before its 429 was back)."""


class RefillEstimate:
    """Sends and refusals of one endpoint, and the refill rate they show."""

    def __init__(self) -> None:
        self._sends = SendLog()
        self._refused: dict[int, float] = {}
        """Refused sends still remembered: number -> send time."""
        self._empty: float | None = None
        """Send time of the last empty moment that measures start from."""
        self._guessing = False
        self._reset = False
        """Whether the rate is still the first guess, worked out again at each 429 of its wave."""
        self.rate: float | None = None
        """The latest estimate of the refill rate, in requests a second."""
        self.measured = False
        """Whether a rate was ever measured between two 429s (not only guessed or bounded)."""
        self.kind = ""
        """What ``rate`` is: ``guess`` (the first 429's), ``bound`` (a 429 soon after an empty
        moment) or ``measure`` (between two empty moments a second or more apart)."""

    def sent(self, seq: int, now: float) -> None:
        """Send ``seq`` went at ``now``."""
        self._sends.append((seq, now))
        while self._sends[0][1] < now - WINDOW_S:
            self._refused.pop(self._sends.popleft()[0], None)

    def reset(self) -> None:
        """Forget the last empty moment (after a storm, which let nothing through)."""
        self._empty = None
        self._guessing = False
        self._reset = True

    def refused(self, seq: int, now: float) -> float | None:
        """Send ``seq`` was refused: the refill rate it shows, or None when it shows nothing new."""
        at = next((t for s, t in reversed(self._sends) if s == seq), now)
        self._refused[seq] = at
        if self._empty is None or (self._guessing and at < self._empty + SAME_WAVE_S):
            return self._guess(at)
        empty = self._empty
        if at <= empty:
            return None  # refused in a wave already counted from
        admitted = self._admitted(empty, at)
        span = at - empty
        if span >= MIN_SPAN_S and admitted >= MIN_ADMITTED:
            self._empty, self._guessing = at, False
            return self._measure(admitted / span)
        bound = (admitted + 1) / span
        # Nothing let through since: a storm (the server refusing everything for now) says
        # nothing of the rate, and must not wear it down (pacing.py spaces sends instead).
        if admitted and self.rate is not None and bound < self.rate:
            self.rate, self.kind = bound, "bound"  # a 429 this soon: the pace is too fast now
            return bound
        return None

    def _guess(self, at: float) -> float | None:
        """The first guess (again), from the earliest refused send of the first wave."""
        self._empty = at if self._empty is None else min(self._empty, at)
        self._guessing = True
        empty = self._empty
        first = self._sends[0][1] if self._sends else empty
        if self._reset:  # after a storm the bucket was not full: the last second only
            first = max(first, empty - 1.0)
        # Sent with the refused one but let through: before it in the same wave.
        admitted = self._admitted(first, empty, closed=True) + sum(
            t == empty and s not in self._refused for s, t in self._sends
        )
        if admitted < MIN_ADMITTED:
            return None
        guess = admitted / (empty - first + GUESS_BURST_S)
        if self.rate is not None and guess >= self.rate:
            return None
        self.rate, self.kind = guess, "guess"
        return guess

    def _admitted(self, after: float, before: float, *, closed: bool = False) -> int:
        """Sends after ``after`` (or at it, ``closed``) and before ``before``, not refused."""
        return sum(
            (after <= t if closed else after < t) and t < before and s not in self._refused
            for s, t in self._sends
        )

    def _measure(self, rate: float) -> float:
        """A measured rate, averaged with the one measured before unless lower than the estimate."""
        if self.measured and self.rate is not None and rate >= self.rate:
            rate = (rate + self.rate) / 2
        self.measured, self.kind = True, "measure"
        self.rate = rate
        return rate
