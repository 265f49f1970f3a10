"""A mirror of the server's rate-limit buckets, kept from its headers (``ratelimits.py``).

Why a mirror: at OpenAI (and Azure, Groq, the gateways that copy them) a
limit is a bucket that refills continuously. ``x-ratelimit-limit-*`` is its
size, ``-remaining-*`` its level and ``-reset-*`` the time until it is *full
again*, not the end of a window. Spreading ``remaining`` over ``reset``
therefore paces at a fraction of the refill rate (issue 14 measured 55% of
the limit). What the pacer needs is the level now and how fast it refills:
a request may go while the level covers it, and otherwise waits only until
enough has refilled for that one request, never the whole reset.

One :class:`Bucket` for requests (each costs 1) and one for tokens (each
request books its prompt plus its ``max_tokens`` up front):

- **refill rate**: ``limit`` per period: the one the headers name (Cerebras's
  ``-tokens-minute`` and ``-requests-day``, the IETF draft's ``w``), else a
  minute, the period of OpenAI's and Azure's limits. When a snapshot that
  names no period says it is far longer (``reset`` much more than a minute's
  worth of what has been drawn, as with Groq's requests per *day*), the rate
  is ``(limit - remaining) / reset``. Each
  bucket is kept on its own and a request waits for both, so the tighter
  one applies: a daily request limit with plenty left never slows a run
  that a per-minute token limit does;
- **size**: ``remaining + reset * rate``, the level it refills to in
  ``reset``, and ``limit`` at most (a server may keep a smaller burst than
  its per-minute limit, as ``scripts/bench_server.py`` does: one second's
  worth);
- **level**: every booking draws its cost at once, so the level may go
  below zero, and waits until refilling brings the level back to a small
  margin; bookings that wait are so spaced at exactly the refill rate. The
  margin (one request, or 50 ms of tokens) covers the jitter of sends and
  costs no throughput: it shifts the level, not the rate. A booking too
  big for the margin to fit beside it waits past full instead, by a
  twentieth of the bucket's refill (none in a bucket of one request); one
  bigger than the bucket goes when it is full, drawing all of it (Azure
  keeps a minute's limit over seconds, so a turn's ``max_tokens`` may
  outgrow the bucket; the bench server lets it through when full). An
  empty bucket whose reset is longer than a whole refill is that far below
  zero, and such a snapshot leaves the size alone.

Snapshots are stale and out of order: headers say the level when the
server admitted that request, answers come back in any order, and every
request sent since then has already drawn from the bucket there. So each
send gets a sequence number (:meth:`Mirror.sending`); the answer to request
*k* sets the level to ``remaining`` plus the refill since *k* was sent,
minus every request sent after *k* and every booked one not yet sent. An
answer older than the one the level came from (a lower *k*) only refines
the rate and size. A 429 to request *k* is such a snapshot with nothing
remaining (it lowers the level, never raises it).

What an answer did not use is *not* given back here, whatever its usage
says. Whether the server gives it back is the server's business: OpenAI
books ``max_tokens`` up front, and ``scripts/bench_server.py`` keeps the
whole booking unless told ``--tpm-refund``. The next snapshot says which,
and it replaces the level; a refund made here on a server that keeps the
booking would run the mirror ahead of it, a request's unused tokens at a
time, and every answer older than the newest snapshot would add its own
(answers come back out of order): 13% of requests were refused that way.
On a server that does refund, a level without refunds is low only by the
refunds the newest snapshot has not seen yet, those of about one latency.

A bucket mirrors only once a snapshot gave a limit, a remaining count not
above it and, for the size, a reset; a partial or nonsensical set leaves it
unknown, and the pacer keeps its older rules (``pacing.py``).
"""

from __future__ import annotations

from collections import deque

from runner.http.ratelimits import RateLimits

PERIOD_S = 60.0
"""The period of a limit unless its snapshot says otherwise: OpenAI's and Azure's are per minute."""
LONG_PERIOD_S = 1800.0
"""A snapshot whose reset says a period at least this long (a day, an hour) is read as one."""
MAX_RESET_S = 2 * 86400.0
"""A reset longer than this is no period's (epoch seconds, say): it is left out."""
MARGIN_S = 0.05
"""Refill kept in hand, beyond the cost, before a booked request goes (at least one unit)."""
FULL_SHARE = 0.05
"""Share of the bucket kept in hand, in time past full, by a booking that fills it."""
SEND_LOG = 4096
"""Most sends remembered for matching snapshots (those since the newest snapshot are needed)."""


class Bucket:
    """One server-side bucket (requests or tokens), as far as its snapshots tell."""

    def __init__(self) -> None:
        self.rate = 0.0
        """Units refilled per second (0: unknown, nothing is mirrored)."""
        self.size = 0.0
        """Level the bucket refills to."""
        self.level = 0.0
        """Level at ``_at``, less what is booked; below zero while bookings wait."""
        self._at = 0.0
        self._limit = 0

    @property
    def known(self) -> bool:
        """Whether a snapshot made sense, so the bucket paces."""
        return self.rate > 0

    def learn(
        self,
        limit: int | None,
        remaining: int | None,
        reset: float | None,
        period: float | None = None,
    ) -> bool:
        """Take the rate and size from a snapshot; False (nothing learned) if it makes no sense.

        ``period``: the limit's period where the headers named it; else a minute, or what
        the reset says when it says a far longer one.
        """
        if limit is None or remaining is None or limit <= 0 or remaining > limit:
            return False
        if reset is not None and reset > MAX_RESET_S:
            reset = None  # a moment (epoch seconds), not a duration: say nothing of the rate
        rate = limit / (period or PERIOD_S)
        drawn = limit - remaining
        if period is None and reset is not None and reset > 0 and drawn > 0:
            if reset * limit / drawn >= LONG_PERIOD_S:
                rate = drawn / reset  # a per-day limit, say: it refills far slower than per minute
        size = float(limit) if reset is None else min(float(limit), remaining + reset * rate)
        if remaining > 0 or not self.known or limit != self._limit:
            # An empty bucket may be below zero (see book), and its reset then says more
            # than the size: the size comes from the others.
            self.size = max(1.0, float(remaining), size)
        self.rate = rate
        self._limit = limit
        return True

    def snapshot_level(self, remaining: int, reset: float | None) -> float:
        """The level a snapshot says: ``remaining``, or, for an empty bucket whose reset is
        longer than refilling all of it takes, how far below zero that puts it."""
        if remaining > 0 or reset is None or not self.known:
            return float(remaining)
        return min(0.0, self.size - reset * self.rate)

    @property
    def margin(self) -> float:
        """The level kept in hand when a booking goes."""
        return max(1.0, self.rate * MARGIN_S)

    def _kept(self, need: float) -> float:
        """What is kept in hand beyond ``need``: the margin, or what room the bucket has for
        it; at least a twentieth of the bucket (its refill time past full) for a booking that
        fills it, as a level mirrored a little ahead of the server's would be sent into a 429.
        A bucket of one request is exempt: its every booking fills it, and the
        twentieth would be a twentieth of its rate."""
        room = min(self.margin, self.size - need)
        if self.size <= 1.0:
            return room
        return max(room, min(self.margin, FULL_SHARE * self.size))

    def _refill(self, now: float) -> None:
        if now > self._at:
            if self.level < self.size:
                self.level = min(self.size, self.level + (now - self._at) * self.rate)
            self._at = now

    def book(self, cost: float, now: float) -> float:
        """Draw ``cost``; return when the level has refilled enough for it to go.

        A booking bigger than the bucket goes when the bucket is full (it would wait forever
        for more) and draws all of it, below zero: a server that lets it through then
        (``scripts/bench_server.py``) takes that much longer to refill, and its reset says
        so (:meth:`snapshot_level`); one that refuses it says so in its 429.
        """
        self._refill(now)
        need = min(cost, self.size)
        self.level -= cost
        ready = need + self._kept(need) - cost  # the level after the draw at which it goes
        if self.level >= ready:
            return now
        return now + (ready - self.level) / self.rate

    def unbook(self, cost: float) -> None:
        """A booking that will not be sent: give its cost back."""
        self.level += cost

    def level_from(self, remaining: float, *, since: float, drawn: float, now: float) -> float:
        """The level now from a snapshot of ``remaining`` at ``since``, less ``drawn`` since."""
        return min(self.size, remaining + max(0.0, now - since) * self.rate) - drawn

    def level_now(self, now: float) -> float:
        """The level now, as booked."""
        self._refill(now)
        return self.level

    def set_level(self, level: float, now: float) -> None:
        """The level now is ``level``."""
        self.level, self._at = level, now


_Send = tuple[int, float, int]
"""A send: its number, when it went, its tokens (a tuple: one is made per request)."""


class Mirror:
    """The requests and tokens buckets of an endpoint, and the sends their snapshots match.

    A booking is *waiting* while its request sleeps in the pacer, then *passed*
    until it is sent (it may still wait for a request slot). When a snapshot
    shows more room than the waiting bookings were given, they are dropped
    (``generation`` moves on) and the pacer books them again, earlier.
    """

    def __init__(self) -> None:
        self.requests = Bucket()
        self.tokens = Bucket()
        self.generation = 0
        """Moves on when the waiting bookings are dropped, to be booked again."""
        self._log: deque[_Send] = deque(maxlen=SEND_LOG)
        self._seq = 0
        self._latest = 0
        """Sequence number of the send whose snapshot set the levels (0: none yet)."""
        self._waiting = [0, 0]
        self._passed = [0, 0]
        """Requests and tokens booked and waiting in the pacer / past it and not yet sent."""
        self.answers_tell = False
        """Whether an answer (not only a refusal) carried a snapshot: then refunds are the
        server's to tell (:meth:`settle`)."""

    @property
    def active(self) -> bool:
        """Whether the headers told of a limit that is mirrored."""
        return self.requests.known or self.tokens.known

    def _buckets(self, tokens: int) -> list[tuple[Bucket, int]]:
        return [(b, c) for b, c in ((self.requests, 1), (self.tokens, tokens)) if b.known]

    def book(self, tokens: int, now: float, *, held: float = 0.0) -> tuple[float, int]:
        """Book one request of ``tokens``; return when the buckets let it go, and the generation.

        ``held``: no send before then (a Retry-After). The booking is made at the hold's
        end, where the buckets hold what they refilled to, never more than their size.
        """
        at = start = max(now, held)
        if self.requests.rate or self.tokens.rate:
            for bucket, cost in self._buckets(tokens):
                start = max(start, bucket.book(cost, at))
        waiting = self._waiting
        waiting[0] += 1
        waiting[1] += tokens
        return start, self.generation

    def unbook(self, tokens: int, generation: int) -> None:
        """A waiting booking that will not be sent (cancelled)."""
        if generation == self.generation:
            for bucket, cost in self._buckets(tokens):
                bucket.unbook(cost)
            self._waiting[0] -= 1
            self._waiting[1] -= tokens

    def rebook(self) -> None:
        """Drop the waiting bookings, to be made again (a hold began): give back what they drew.

        Booked before the hold, they counted on the refill while they waited, beyond what
        the buckets can hold: all would go together when it ends.
        """
        for bucket, drawn in zip((self.requests, self.tokens), self._waiting, strict=True):
            if bucket.known and drawn:
                bucket.level = min(bucket.size, bucket.level + drawn)
        self.generation += 1
        self._waiting = [0, 0]

    def released(self, tokens: int) -> None:
        """A booking's wait is over: it goes on to be sent."""
        waiting, passed = self._waiting, self._passed
        if waiting[0]:  # none when a snapshot dropped the waiting bookings meanwhile
            waiting[0] -= 1
            waiting[1] = waiting[1] - tokens if waiting[1] > tokens else 0
        passed[0] += 1
        passed[1] += tokens

    def passed(self, tokens: int) -> None:
        """A request on its way to be sent, booked while no bucket is mirrored."""
        passed = self._passed
        passed[0] += 1
        passed[1] += tokens

    def sending(self, tokens: int, now: float) -> int:
        """A request of ``tokens`` is sent now; return its sequence number (for its answer)."""
        self._seq = seq = self._seq + 1
        self._log.append((seq, now, tokens))
        passed = self._passed
        if passed[0]:
            passed[0] -= 1
            passed[1] = passed[1] - tokens if passed[1] > tokens else 0
        return seq

    def observe(self, limits: RateLimits, seq: int, now: float) -> bool:
        """Take a snapshot from the answer to send ``seq``; False when it mirrors nothing."""
        requests = self.requests.learn(
            limits.limit_requests,
            limits.remaining_requests,
            limits.reset_requests_s,
            limits.period_requests_s,
        )
        tokens = self.tokens.learn(
            limits.limit_tokens,
            limits.remaining_tokens,
            limits.reset_tokens_s,
            limits.period_tokens_s,
        )
        if seq <= self._latest:
            return requests or tokens  # older than the levels: the rate and size only
        self._latest = seq
        since, drawn = self._drawn_after(seq, now)
        levels = []
        for i, (known, remaining, bucket) in enumerate(
            (
                (requests, limits.remaining_requests, self.requests),
                (tokens, limits.remaining_tokens, self.tokens),
            )
        ):
            if known and remaining is not None:
                reset = limits.reset_tokens_s if i else limits.reset_requests_s
                base = bucket.level_from(
                    bucket.snapshot_level(remaining, reset),
                    since=since,
                    drawn=drawn[i] + self._passed[i],
                    now=now,
                )
                levels.append((bucket, base, self._waiting[i]))
        gained = any(
            base - waiting > bucket.level_now(now) + bucket.margin
            for bucket, base, waiting in levels
            if waiting
        )
        if gained:  # the waiting bookings were given too little: they book again
            self.generation += 1
            self._waiting = [0, 0]
        for bucket, base, waiting in levels:
            bucket.set_level(base if gained else base - waiting, now)
        return requests or tokens

    def settle(self, booked: int, used: int | None, now: float) -> None:
        """An answer used ``used`` of the ``booked`` tokens: refund the rest, unless answers
        carry snapshots.

        A server that sends its headers on refusals only never says what it gave back
        until the next 429, and a mirror that kept every booking would pace at what
        requests may book, not at what they use (55% of a refunding server's token limit
        in the simulation). Refunded here, a server that keeps whole bookings is run
        into, and its 429 sets the level back.
        """
        bucket = self.tokens
        if self.answers_tell or not bucket.known or used is None or used >= booked:
            return
        level = bucket.level_now(now)
        bucket.set_level(min(bucket.size, level + booked - used), now)

    def short(self, limits: RateLimits, seq: int) -> bool:
        """Whether a refusal's snapshot shows a bucket too low for send ``seq`` (its cause)."""
        if limits.remaining_requests is not None and limits.remaining_requests < 1:
            return True
        cost = next((tokens for number, _, tokens in self._log if number == seq), 0)
        return limits.remaining_tokens is not None and limits.remaining_tokens < max(1, cost)

    def refused(self, seq: int, now: float) -> None:
        """A 429 to send ``seq``: nothing remained when it arrived (lowers the levels only)."""
        since, drawn = self._drawn_after(seq, now, prune=False)
        for i, bucket in enumerate((self.requests, self.tokens)):
            if bucket.known:
                unsent = self._passed[i] + self._waiting[i]
                level = bucket.level_from(0.0, since=since, drawn=drawn[i] + unsent, now=now)
                bucket.set_level(min(level, bucket.level_now(now)), now)

    def _drawn_after(
        self, seq: int, now: float, *, prune: bool = True
    ) -> tuple[float, tuple[int, int]]:
        """When send ``seq`` went, and the requests and tokens of the sends after it.

        With ``prune``, sends before ``seq`` are forgotten: only newer snapshots matter now.
        """
        log = self._log
        if prune:
            while log and log[0][0] < seq:
                log.popleft()
        since = now
        requests = tokens = 0
        for number, at, cost in log:
            if number == seq:
                since = at
            elif number > seq:
                requests += 1
                tokens += cost
        return since, (requests, tokens)
