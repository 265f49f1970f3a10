"""Pacing: keep under a rate limit instead of waiting to be refused.

A rate limit limits the *rate*, so it is met by spacing sends, never by
cutting concurrency: one request in flight can already exceed it. What says
how fast we may send, from the best word to the weakest:

- what the user knows (``--rpm``, ``--tpm``): requests are spaced so that no
  minute holds more than the limit, and each request's tokens are booked
  ahead, estimated as its prompt plus its ``max_tokens``, then corrected by
  the usage the answer reports;
- what the server says in its rate-limit headers (OpenAI's
  ``x-ratelimit-limit/remaining/reset-*`` and the other families' forms, read by
  ``runner.http.ratelimits``), on its
  answers and its refusals alike (a 429's or 503's ride on its error): a mirror
  of the server's requests and tokens buckets (``bucket.py``) lets a request
  go while the bucket holds it and otherwise waits only until enough has
  refilled for it. A 429's snapshot sets the level to what it says remains
  (0, mostly): a server that tells its bucket only when it refuses is mirrored
  from its first 429, with nothing to learn. Requests waiting on the mirror book
  again at once when a fresher snapshot shows more room than they were given.
  Headers with a
  remaining count and a reset but no limit keep the older rule: the last
  requests of a window are spread over the time left, and sends wait for
  the reset when nothing is left;
- what 429s say when nobody said anything else (``refill.py``): between two
  429s the bucket went from empty to empty, so what got through between
  them is its refill rate; sends are paced at 97% of it. A first 429 has no
  such measure: what went through in the second before it, the bucket's
  burst taken as one second's worth, is a first guess, from which the pace
  speeds up by 0.25% an answer until the next 429 measures the rate; a 429
  soon after the last one bounds the rate from above at once (the pace was
  too fast). Once measured or bounded, the pace speeds up by only 0.02% an
  answer, probing for a higher limit without running into the known one
  every few seconds. When no measure can be had (too few requests), the
  older rule: 85% of the rate that was getting answers;
- what the run itself shows (unless the headers' mirror is active): sends
  are kept apart by the shortest latency over three times the request limit
  (:meth:`Pacer._wait_flight`), and by at least the few milliseconds the
  client itself takes to send one and read a 429, so a wave of sends opened
  at once by answers coming back together reaches an unknown limit one by
  one, and the first 429 holds the rest of the wave instead of coming back
  after all of it;
- a Retry-After: no send before it, whether it is waiting at the gate
  (``gate.py``) or already here (:meth:`Pacer.hold`). Beside the headers of the
  same 429, the later of the two waits applies, never their sum: each says when
  a request can get through at the earliest, the mirror from the refill, the
  server from what it knows besides (a window, a limit upstream). Sends waiting
  on the mirror book again from the hold's end, where the bucket holds its size
  at most, not all the refill of the hold;
- a storm: 429s keep coming with (almost) nothing answered since the
  previous episode. That says nothing new about the rate, only that the server
  refuses everything for now, so it must not wear the learned pace down:
  sends are spaced further apart (twice as far each episode, up to
  ``STORM_MAX_INTERVAL``) on top of it, and the first answer after the storm
  ends that at once.

Whenever the pace changes (a storm ends, a 429 measures the rate, a hold
starts), sends already booked at the old pace are woken and book again, so
the rate returns to what it should be at once, not after the waits booked
at the old one.

Every wait goes through the injected ``sleep``, so tests take no time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from runner.http.ratelimits import RateLimits
from runner.send.bucket import Mirror
from runner.send.refill import RefillEstimate
from runner.send.waits import WaitSpans

RATE_WINDOW_S = 10.0
"""How far back answers count when estimating the rate a limit allows."""
LEARNED_SHARE = 0.85
"""After a 429, the pace is this share of the rate that was being answered."""
TRACK_SHARE = 0.97
"""The pace is this share of the refill rate measured between two 429s (``refill.py``)."""
PROBE_SPEEDUP = 1.0025
"""Per answer, how much faster a learned pace gets while well under the refused rate..."""
NEAR_SHARE = 0.95
NEAR_SPEEDUP = 1.0002
"""...and once above NEAR_SHARE of it."""
MAX_HEADER_HOLD = 600.0
"""Longest a rate-limit reset header can hold sends, whatever it says."""
STORM_MAX_INTERVAL = 2.0
"""Widest spacing of sends while 429s keep coming and nothing is answered: the first
answer after a storm arrives at most this long after the server answers again."""
RECHECK_S = 1.0
"""Longest single sleep of a waiting send, so it notices a pace that sped up."""
FLIGHT_PACE = 3.0
"""Sends go at most this many times the request limit per shortest latency: the rate at
which ``-j auto``'s ramp (three sends per answer) grows, so the ramp is as fast, its waves
spread over a third of a latency. (At 1.5 the bench server's 1,200 rpm batch lost 1-2
requests to its first wave instead of 1-8, but a slow limit, 60 rpm with a bucket of one,
was learned worse in the simulation: its goodput fell from 97% to 94%.)"""
FLIGHT_MIN_S = 0.004
"""...and never closer than this, nor further than the latency over the limit. A request
costs the client's own loop about a millisecond (httpx, aiohttp, the turn's own work), and
reading a 429 as much: sends spread closer than a few of those fill the loop and queue in
it, and a wave's first 429 is read only after every send queued ahead of it went out. On the
bench server (0.1 s answers, sends 1.1 ms apart) sends took 3-8 ms from booked to arrived,
and 1-10 of the first wave were refused (600 and 1,200 rpm); at 3.2 ms (the cap), 1-2. The
cap keeps a steady flow unslowed (``limit`` in flight answered after a latency), a fast
server's ramp within a latency, and a wave from meeting the answers of its own first sends,
whose replacements go unspread (at 6 ms, 4 of them were refused together in the simulation)."""
FLIGHT_SLACK_S = 0.001
"""Sends that spacing would delay less than this go at once (no sleep for so little)."""


class Pacer:
    """Spaces out sends to one endpoint."""

    def __init__(
        self,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
        waits: WaitSpans | None = None,
    ) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.sleep = sleep
        self.clock = clock
        self._next_request = 0.0
        self._next_tokens = 0.0
        self._header_interval = 0.0
        self._learned_interval = 0.0
        self._refused_interval = 0.0
        self._storm_interval = 0.0
        self._answered_since_refused = 0
        self._episodes = 0
        self._storm_episodes = 0
        """Storm episodes in a row, with no answer between them."""
        self.storms_ended = 0
        """Storms of 429s that an answer ended (every booking is dropped then)."""
        self._answers: deque[float] = deque()
        self._quiet_until = 0.0
        self._header_hold = 0.0
        self.waits = waits or WaitSpans()
        """Wall-clock time sends waited on pacing (shared with the gate by the dispatcher)."""
        self.mirror = Mirror()
        """The server's buckets, as its ``x-ratelimit-*`` headers tell them (``bucket.py``)."""
        self._wakes: tuple[list[asyncio.Future[None]], list[asyncio.Future[None]]] = ([], [])
        """Naps to wake when the mirror drops its waiting bookings / when the pace changes."""
        self._paced = 0
        """Moves on when the pace changes and booked sends book again."""
        self._refill = RefillEstimate()
        self._min_latency = float("inf")
        self._flight_interval = 0.0
        self._next_flight = 0.0
        self._last_sent = float("-inf")
        self._clocked = 0
        """Answers not yet matched by a send: the sends that replace them go unspread."""

    def sending(self, estimated_tokens: int) -> int:
        """A request is sent now; return its number, to give with its answer or 429."""
        now = self._last_sent = self.clock()
        seq = self.mirror.sending(estimated_tokens, now)
        self._refill.sent(seq, now)
        return seq

    async def wait_turn(self, estimated_tokens: int) -> None:
        """Wait until a request of about ``estimated_tokens`` may be sent, and book it."""
        await self._wait_flight()
        if self.mirror.active:
            await self._wait_mirrored(estimated_tokens)
        else:
            self.mirror.passed(estimated_tokens)  # no bucket to wait for: on its way
        await self._wait_booked(estimated_tokens)

    async def _wait_mirrored(self, estimated_tokens: int) -> None:
        """Wait until the mirrored buckets hold the request; book again when they gain room."""
        while True:
            now = self.clock()
            start, generation = self.mirror.book(estimated_tokens, now, held=self._header_hold)
            if start > now:
                self.waits.add(now, start)
                try:
                    slept, wait = 0.0, start - now
                    while slept < wait and generation == self.mirror.generation:
                        if await self._nap(wait - slept, self._wakes[0]):
                            slept = wait
                except BaseException:
                    self.mirror.unbook(estimated_tokens, generation)
                    raise
            if generation == self.mirror.generation:
                self.mirror.released(estimated_tokens)
                return

    async def _wait_flight(self) -> None:
        """Keep sends apart by the shortest latency over ``FLIGHT_PACE`` times the request limit.

        A wave of sends that goes out at once, as answers come back together and
        the ramp opens slots, reaches an unknown rate limit all at once: when its
        bucket runs dry, every send of the wave still to arrive is refused before
        the first 429 is back. Spread over a third of a latency, the first 429 is
        back after a few sends, and holds the rest (TCP paces its sends over a
        round trip for the same reason). Nor closer than the client's own work on
        a send allows (``FLIGHT_MIN_S``): sends queued in a busy loop all go out
        before it reads the 429 that came back meanwhile. The spacing never slows
        a steady flow: ``limit`` requests in flight answered after a latency go at
        most at ``limit / latency``. Nor does it spread a send that replaces an answer
        (TCP's ack clock): answers that came back together were served together,
        so their replacements may go together; spreading them cost a server
        whose answers all take the same time a third of a latency every round
        (MT-bench's: 1.25x the bound at ``-j 32``, 1.06x unspread). Only the
        sends beyond them, those a grown limit opens, are spread, and a 429
        spends what answers gave.
        """
        if not self._flight_interval or self.mirror.active:
            return  # (the headers say the bucket's level: the mirror spaces the sends)
        if self._clocked:
            self._clocked -= 1  # replaces an answer: the server took as many at once before
            return
        now = self.clock()
        start = max(now, self._next_flight)
        self._next_flight = start + self._flight_interval
        if start > now + FLIGHT_SLACK_S:
            self.waits.add(now, start)
            await self.sleep(start - now)
        # A loop that was kept from running (a busy machine) wakes many sends at once, and
        # they would all go out before it reads a 429: one at a time, the loop polled between.
        while (wait := self._last_sent + self._flight_interval - self.clock()) > FLIGHT_SLACK_S:
            await self.sleep(wait)

    async def _wait_booked(self, estimated_tokens: int) -> None:
        """Wait for the slot of the pace and of ``--tpm``, and book it."""
        now = self.clock()
        tokens_free = now
        if self.tpm:
            tokens_free = max(now, self._next_tokens)
            self._next_tokens = max(self._next_tokens, now) + estimated_tokens * 60.0 / self.tpm
        while True:
            paced = self._paced
            now = self.clock()
            start = max(self._book_request(now), tokens_free)
            if start <= now:
                return
            self.waits.add(now, start)
            # Slept in steps (counted, not read off the clock, so any sleep will do), and
            # booked again when the pace changes meanwhile (a storm ended, a 429 measured it).
            slept, wait = 0.0, start - now
            while slept < wait and paced == self._paced:
                step = min(wait - slept, RECHECK_S)
                if await self._nap(step, self._wakes[1]):
                    slept += step
            if paced == self._paced:
                return

    async def _nap(self, seconds: float, wakes: list[asyncio.Future[None]]) -> bool:
        """Sleep ``seconds``, or less when woken (:meth:`_wake`); True when all was slept."""
        loop = asyncio.get_running_loop()
        woken = loop.create_future()
        wakes.append(woken)
        sleeper = asyncio.ensure_future(self.sleep(seconds))
        try:
            await asyncio.wait({sleeper, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if woken in wakes:
                wakes.remove(woken)
            if not sleeper.done():
                sleeper.cancel()
        if sleeper.done() and not sleeper.cancelled():
            sleeper.result()
            return True
        return False

    def _wake(self, wakes: list[asyncio.Future[None]]) -> None:
        """Wake every nap on ``wakes``: their bookings are to be made again."""
        for woken in wakes:
            if not woken.done():
                woken.set_result(None)
        wakes.clear()

    def hold(self, until: float) -> None:
        """No send before ``until`` (a Retry-After hold), sends already waiting here included.

        The gate holds the sends that have not reached the pacer yet; those booked
        here book again, spaced at the pace from the end of the hold, and those
        waiting on the mirror book again at its end, as the buckets will be then.
        """
        if until > self._header_hold:
            self._header_hold = until
            self._repace(self.clock())
            if self.mirror.active:
                self.mirror.rebook()
                self._wake(self._wakes[0])

    def _repace(self, now: float) -> None:
        """The pace changed: sends booked at the old one book again, from now."""
        self._paced += 1
        self._next_request = min(self._next_request, now)
        self._wake(self._wakes[1])

    def _book_request(self, now: float) -> float:
        """Book the next request slot at the current pace; return when it starts."""
        interval = max(
            60.0 / self.rpm if self.rpm else 0.0,
            self._header_interval,
            self._learned_interval,
            self._storm_interval,
        )
        start = max(now, self._header_hold, self._next_request)
        self._next_request = start + interval
        return start

    def settle(self, estimated_tokens: int, used_tokens: int | None) -> None:
        """Correct the ``--tpm`` booking by what the answer really used.

        The mirrored bucket's only when answers carry no snapshot (``Mirror.settle``):
        otherwise the server's own snapshots say what it gave back.
        """
        if self.tpm and used_tokens is not None:
            self._next_tokens += (used_tokens - estimated_tokens) * 60.0 / self.tpm
        self.mirror.settle(estimated_tokens, used_tokens, self.clock())

    def answered(self, latency_s: float | None = None, *, in_flight: int = 0) -> None:
        """An answer came back after ``latency_s`` with ``in_flight`` allowed: note it, and
        speed a learned pace up a little."""
        now = self.clock()
        if latency_s is not None and latency_s > 0 and in_flight > 0:
            self._min_latency = min(self._min_latency, latency_s)
            per_slot = self._min_latency / in_flight
            self._flight_interval = max(per_slot / FLIGHT_PACE, min(FLIGHT_MIN_S, per_slot))
            self._clocked = min(self._clocked + 1, in_flight)
        self._answers.append(now)
        while self._answers and self._answers[0] < now - RATE_WINDOW_S:
            self._answers.popleft()
        self._answered_since_refused += 1
        if self._storm_interval:
            # Answered again: the storm is over. Back to the pace learned before it,
            # and what was booked at the storm's spacing is booked again.
            self._storm_interval = 0.0
            self.storms_ended += 1
            self._repace(now)
            if self._storm_episodes >= 2:  # refused for a while: no measure spans that
                self._refill.reset()
            self._storm_episodes = 0
        elif self._learned_interval:
            near = self._learned_interval * NEAR_SHARE <= self._refused_interval
            self._learned_interval /= NEAR_SPEEDUP if near else PROBE_SPEEDUP
            if self._learned_interval < 0.001:
                self._learned_interval = 0.0

    def refused(
        self, seq: int = 0, limits: RateLimits | None = None, *, in_flight: int = 0
    ) -> None:
        """A 429 to send ``seq``: the mirrored buckets were empty; else learn a pace from it.

        ``limits`` (the 429's own headers) are read as an answer's (:meth:`observe`);
        a snapshot with room for the request in every bucket it names (a limit it does
        not name refused it) also empties the mirror, as a bare 429 does. Without a
        mirror, pacing just under the rate that was being answered, once per episode.
        """
        now = self.clock()
        self._clocked = 0  # a limit was met: every send is spread again
        if limits is not None and self.observe(
            limits, in_flight=in_flight, seq=seq, answered=False
        ):
            if not self.mirror.short(limits, seq):
                self.mirror.refused(seq, now)
            return
        if self.mirror.active:
            self.mirror.refused(seq, now)  # the headers say the rate: nothing to learn
            return
        refill = self._refill.refused(seq, now)
        if refill is not None:  # what got through since the last 429 (refill.py)
            # Measured: probe slowly near it. A first guess: probe fast to the next 429.
            guessed = self._refill.kind == "guess"
            self._refused_interval = 0.0 if guessed else 1.0 / refill
            self._learned_interval = 1.0 / (TRACK_SHARE * refill)
            self._storm_interval = 0.0
            self._episodes += 1
            self._answered_since_refused = 0
            self._quiet_until = now + 1.0
            self._repace(now)
            return
        if now < self._quiet_until:
            return
        recent = [t for t in self._answers if t >= now - RATE_WINDOW_S]
        span = max(1.0, now - recent[0]) if recent else 0.0
        if len(recent) >= 2 and self._answered_since_refused >= 2:
            rate = len(recent) / span
            self._refused_interval = 1.0 / rate
            self._learned_interval = max(self._learned_interval, 1.0 / (LEARNED_SHARE * rate))
        elif not self._episodes:  # refused before anything was answered: a first guess
            self._learned_interval = max(0.05, self._learned_interval * 2)
        else:  # a storm: nothing new about the rate; space sends out, keep the pace
            current = max(self._learned_interval, self._storm_interval)
            self._storm_interval = min(STORM_MAX_INTERVAL, max(0.05, current * 2))
            self._storm_episodes += 1
        self._episodes += 1
        self._answered_since_refused = 0
        self._quiet_until = now + max(1.0, 4 * max(self._learned_interval, self._storm_interval))

    def observe(
        self, limits: RateLimits, *, in_flight: int, seq: int = 0, answered: bool = True
    ) -> bool:
        """Adapt to what the answer to send ``seq`` (``answered``: not a refusal) says of
        the server's limits.

        A snapshot the mirror can use replaces the rules below (and True is
        returned), which stay for a header set without a limit (remaining and
        reset only).
        """
        now = self.clock()
        generation = self.mirror.generation
        if self.mirror.observe(limits, seq, now):
            self.mirror.answers_tell |= answered
            self._header_interval = 0.0
            if generation != self.mirror.generation:
                self._wake(self._wakes[0])
            return True
        remaining, reset = limits.remaining_requests, limits.reset_requests_s
        if reset is not None:
            reset = min(reset, MAX_HEADER_HOLD)
        if remaining is not None and reset is not None:
            if remaining <= 0:
                self._header_hold = max(self._header_hold, now + reset)
            # Spread what is left over the window, once it is nearly spent.
            self._header_interval = reset / remaining if 0 < remaining <= 2 * in_flight else 0.0
        tokens, token_reset = limits.remaining_tokens, limits.reset_tokens_s
        if tokens is not None and token_reset is not None and tokens <= 0:
            self._header_hold = max(self._header_hold, now + min(token_reset, MAX_HEADER_HOLD))
        return False
