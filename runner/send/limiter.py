"""Adaptive concurrency: how many requests may be in flight at once, learned from overload.

``-j`` sets a ceiling on conversations in flight; the limiter decides how many
of their requests run at once. It starts at the ceiling (or, with ``-j auto``,
at a few) and follows additive-increase / multiplicative-decrease on what
says the server is *overloaded*:

- with ``-j auto``, a queue (``queueing.py``): a server that queues what it
  cannot serve yet (llama.cpp, Ollama, vLLM past ``max_num_seqs``) never
  says 429, but its answers wait; once they wait most of a service time on
  average, the limit is cut to one and a half times the parallelism the
  waits show. That keeps every slot of the server busy and its queue short,
  so nothing is abandoned on ``--timeout`` for the server to work through
  while fresh requests wait behind it. Below a limit of
  :data:`PROBE_BELOW`, one request in :data:`PROBE_EVERY` answers is sent
  alone, to measure the server's own time that a queue of one or two hides;
- an answer that did not come within ``--timeout`` from an endpoint that
  has answered before halves the limit (with nothing ever answered, the
  endpoint is down, not overloaded: ``gate.py`` stops the run instead);
- a 503 cuts it by a quarter;
- each cut happens once per *episode*: what requests that were already in
  flight when the limit was cut say, says nothing new, and is ignored;
- after as many clean answers as the limit, received while every slot was
  busy, the limit grows by one, up to the ceiling; before the first cut
  (slow start, when it began below the ceiling) every such answer adds one,
  so the limit doubles each round until the server pushes back (with
  ``-j auto``, which starts low, two: it triples). With ``-j auto`` an
  answer is clean only when its wait and the recent waits are short;
- with ``-j auto``, the *opening round* (the requests sent before any
  answer came) decides how fast to go on. ``-j auto`` starts at a few
  (``AUTO_START``), so that a server that serves one at a time is never
  handed more than it answers well within ``--timeout`` before anything is
  known of it. Once the whole opening round has answered, if its answers
  came back as from a server that served them all at once (each in its own
  service time: latencies on one line rising with the answer's length,
  :func:`~runner.send.queueing.served_at_once`; a server with fewer slots
  answers them one behind another), the limit jumps, up to the ceiling, to
  as many requests as a server serving *one at a time* would still answer
  within :data:`JUMP_SHARE` of ``--timeout`` at the round's slowest
  latency. So a wrong guess costs latency and is cut by the queue detector
  as usual, but never a request abandoned at ``--timeout`` for the server to
  work through. Against a server that queues nothing this is the ceiling
  after one round trip: slow start alone (tripling from 4) took three round
  trips, most of a short batch (MT-bench's 80 two-turn dialogues of 0.4 s
  at 32 slots, on the virtual clock: 2.8-3.2 s before, 2.5 s now, the
  bound 2.0 s, the opening round 0.4 s of it and the stagger of the jump's
  spread sends 0.1 s; see also ``run/seats.py``).
  Why not a larger start, or growth per answer from the first one: before
  the first answer nothing tells a one-slot server from a 32-slot one, and
  a single answer's wait cannot be told from a long answer (the envelope
  needs points); a whole round sent together can be judged at once;
- after a storm, when the server refused everything for a while
  (``pacing.py`` tells them apart from 429s of sending too fast), the cuts
  it made said nothing about concurrency: once the server answers again,
  every clean answer adds one until the limit is back where it was when
  answers last came (:meth:`AdaptiveLimiter.recover`);
- 429s change nothing: a rate limit limits the rate, and one request in
  flight can already exceed it; the pacer learns the rate instead. Other
  5xx answers, dropped connections and failed connects change nothing
  either: they say the server is unwell, not that we send too much.

A request holds a slot while it waits for its pace and while it is sent and
answered, never while it sleeps in backoff. When a slot frees, the request
whose conversation has the most turns left gets it (among equals, one that
continues a conversation before one that starts one): the batch's longest
chain is never the one left waiting, so its critical path stays short. (A
conversation already running first, whatever it has left, starved the
conversations started late under a rate limit: their turns all came at the
end, one after another.)
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass

from runner.send.queueing import (
    HEADROOM,
    HIGH_RATIO,
    LOW_RATIO,
    SETTLED_RATIO,
    Answer,
    QueueWatch,
    Reading,
    served_at_once,
)

PROBE_BELOW = 4
"""With ``-j auto`` below this limit, one request in :data:`PROBE_EVERY` answers goes alone."""
PROBE_EVERY = 8
JUMP_SHARE = 0.5
"""The share of ``--timeout`` that the requests of the opening jump may take, one at a time."""


@dataclass(frozen=True, slots=True)
class LimitChange:
    """One change of the limit, for the run's metadata."""

    at_s: float
    """Seconds since the run started."""
    limit: int
    reason: str


@dataclass(frozen=True, slots=True)
class Ticket:
    """A slot taken: give it back to :meth:`AdaptiveLimiter.release`."""

    epoch: int
    """The episode it was taken in (overload seen by older episodes is ignored)."""
    in_flight: int
    """Requests in flight once it was taken, itself included."""
    opening: bool = False
    """Taken before any answer came: one of the opening round."""


class AdaptiveLimiter:
    """Slots for requests in flight, with a limit that adapts to overload."""

    def __init__(
        self,
        *,
        ceiling: int,
        start: int | None = None,
        clock: Callable[[], float],
        watch_queue: bool = False,
        timeout: float | None = None,
    ) -> None:
        self.ceiling = ceiling
        self.limit = min(ceiling, start or ceiling)
        self._slow_start = self.limit < ceiling
        self.clock = clock
        self.started = clock()
        self.in_flight = 0
        self.changes: list[LimitChange] = []
        self.watch = QueueWatch()
        """What the answers say of the server's queue (for ``gate.py`` too)."""
        self.watch_queue = watch_queue
        """Whether a queue cuts the limit (``-j auto``); otherwise it follows overload only."""
        self.timeout = timeout
        """Seconds a request may take (``--timeout``): what bounds the opening round's jump."""
        self.answered = False
        """Whether any request got an answer (timeouts before that say 'down', not 'busy')."""
        self._epoch = 0
        self._clean = 0
        self._probing = False
        self._since_probe = 0
        self._queue_seen = False
        self._answered_at = 0
        """The limit when a request sent since the last cut was last answered (0: never)."""
        self._recover_to = 0
        self._opening: list[Answer] | None = []
        """The opening round's answers so far (None once judged, or spoiled by a failure)."""
        self._opening_left = 0
        self._waiters: list[tuple[int, int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def acquire(self, *, continuing: bool, remaining: int = 0) -> Ticket:
        """Wait for a slot; return its ticket (give it to :meth:`release`).

        ``remaining``: turns its conversation has left, this one included; the
        request with the most goes first, so the batch's critical path is the
        shortest (its longest chain is never the one left waiting). Among equals,
        ``continuing`` (the request continues a conversation already running)
        goes before one that starts a new conversation.
        """
        if self.in_flight < self._room and not self._waiters:
            self.in_flight += 1
            return self._ticket()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (-remaining, 0 if continuing else 1, next(self._order), future)
        heapq.heappush(self._waiters, entry)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._free()  # the slot was handed over just as we were cancelled
            elif entry in self._waiters:  # _wake may have dropped it already
                self._waiters.remove(entry)
                heapq.heapify(self._waiters)
            raise
        return self._ticket()

    def _ticket(self) -> Ticket:
        opening = not self.answered and self._opening is not None
        self._opening_left += opening
        return Ticket(self._epoch, self.in_flight, opening)

    def release(self, ticket: Ticket, *, outcome: str, answer: Answer | None = None) -> bool:
        """Give the slot back and learn from how the request went; whether a request waiting
        for a slot was given one.

        ``outcome``: ``ok``, ``rate_limited``, ``overloaded`` (503), ``timed_out``
        or ``other``; ``answer``: what an ``ok`` answer took (for ``-j auto``).
        """
        saturated = self.in_flight >= self.limit
        current = ticket.epoch == self._epoch
        alone = ticket.in_flight == 1  # behind nothing of ours (a FIFO serves it at once)
        if alone and self._probing:
            self._probing = False  # whatever it says, one measurement is enough
            saturated = False
        handed = self._free()
        if outcome == "ok":
            self.answered = True
            if current:
                self._answered_at = self.limit
            clean = True
            if answer is not None:
                clean = self._watch(answer, ticket, alone=alone, current=current)
            if clean:
                self._grow(saturated)
            else:
                self._clean = 0  # growth needs a whole round of clean answers
        elif outcome == "timed_out" and current and self.answered:
            self._cut(max(1, self.limit // 2), "timeout: halved")
        elif outcome == "overloaded" and current:
            self._cut(max(1, self.limit * 3 // 4), "503: cut by a quarter", slow_start=True)
        if ticket.opening:
            self._opened(answer if outcome == "ok" else None)
        return handed

    def _opened(self, answer: Answer | None) -> None:
        """One answer of the opening round (None: it failed); judge the round once all came."""
        self._opening_left -= 1
        if self._opening is None:
            return
        if answer is None:
            self._opening = None  # a failure says nothing of parallelism: no jump
            return
        self._opening.append(answer)
        if self._opening_left == 0:
            answers, self._opening = self._opening, None
            self._jump(answers)

    def _jump(self, answers: list[Answer]) -> None:
        """After an opening round served all at once, go as far as the timeout allows.

        Even a server that serves one request at a time would answer the new limit's
        requests within half of ``--timeout``, so a wrong guess costs latency, never an
        abandoned request; the queue detector then cuts the limit as usual.
        """
        if not (self.watch_queue and self._slow_start and self.timeout) or len(answers) < 2:
            return
        if not served_at_once(answers):
            return
        slowest = max(a.latency_s for a in answers)
        new = min(self.ceiling, int(self.timeout * JUMP_SHARE / max(slowest, 1e-3)))
        if new > self.limit:
            self.limit = new
            self._note(f"opening round served at once: {new}")
            self._wake()

    def _watch(self, answer: Answer, ticket: Ticket, *, alone: bool, current: bool) -> bool:
        """Feed one answer to the queue detector; cut on a queue; say whether it was clean."""
        informed = len(self.watch.latency) > 0  # the first answer cannot show a queue
        reading = self.watch.observe(answer, in_flight=ticket.in_flight, alone=alone)
        if not self.watch_queue:
            return True
        if current and reading.answers >= 2 and reading.ratio > HIGH_RATIO:
            self._cut(_queue_limit(reading), f"queueing (about {reading.slots:.1f} served at once)")
            self._since_probe = PROBE_EVERY  # the waits seen so far may be loose: re-measure
            self._queue_seen = True
            return False
        self._maybe_probe()
        low = SETTLED_RATIO if self._queue_seen else LOW_RATIO
        # Clean: the averages are low, and so is this answer (the averages lag a growing queue).
        return informed and reading.answers >= 2 and max(reading.ratio, reading.latest) < low

    def _maybe_probe(self) -> None:
        """Now and then, at a low limit, let one request go alone to re-measure the server.

        At a limit of a few, every request queues behind the others, so no answer
        shows the server's own time and the envelope stays loose (a queue of one
        or two looks smaller than it is). A request sent with nothing else in
        flight shows it exactly; at such a limit, draining to one costs little.
        """
        if self._slow_start or self.limit >= PROBE_BELOW:
            return
        self._since_probe += 1
        if self._since_probe > PROBE_EVERY:
            self._since_probe = 0
            self._probing = True

    def _grow(self, saturated: bool) -> None:
        """A clean answer: grow back after a storm, in slow start, or after a clean round."""
        if self.limit < self._recover_to:
            self.limit += 1
            self._note("answered again: +1")
            self._wake()
        elif saturated and self._slow_start:
            if self.limit < self.ceiling:
                # -j auto starts low, and a server without a queue says so answer by answer:
                # it triples each round, as fast as -j N halving twice would come back.
                step = 2 if self.watch_queue else 1
                self.limit = min(self.ceiling, self.limit + step)
                self._note(f"slow start: +{step}")
                self._wake()
            else:
                self._slow_start = False
        elif saturated:
            self._clean += 1
            if self._clean >= self.limit and self.limit < self.ceiling:
                self._clean = 0
                self.limit += 1
                self._note("clean saturated round: +1")
                self._wake()

    def _cut(self, new: int, reason: str, *, slow_start: bool = False) -> None:
        """Start a new episode at limit ``new`` (never higher than now).

        ``slow_start``: keep growing fast afterwards (a 503 says nothing of how far to go).
        """
        self._slow_start = self._slow_start and slow_start
        self._epoch += 1
        self._clean = 0
        self.watch.restart()
        if new < self.limit:
            self.limit = new
            self._note(reason)

    def recover(self) -> None:
        """A storm of refusals is over: grow back quickly to the limit answers last came at."""
        self._recover_to = self._answered_at
        if self.limit < self._recover_to:
            self.limit += 1
            self._note("answered again: +1")
            self._wake()

    def backlog_s(self) -> float:
        """How long the server may take to work through the requests still in flight.

        Their count times the typical service time, over the requests the server
        was seen serving at once (0 before any answer).
        """
        watch = self.watch
        slots = max(1.0, watch.typical_slots)
        return self.in_flight * watch.typical_service_s / slots

    @property
    def _room(self) -> int:
        """Requests that may be in flight now: the limit, or one while probing."""
        return 1 if self._probing else self.limit

    def _free(self) -> bool:
        self.in_flight -= 1
        return self._wake()

    def _wake(self) -> bool:
        woken = False
        while self._waiters and self.in_flight < self._room:
            *_, future = heapq.heappop(self._waiters)
            if future.cancelled():
                continue
            self.in_flight += 1
            future.set_result(None)
            woken = True
        return woken

    def _note(self, reason: str) -> None:
        at = round(self.clock() - self.started, 3)
        self.changes.append(LimitChange(at, self.limit, reason))


def _queue_limit(reading: Reading) -> int:
    """The limit a queue reading asks for: some headroom over the slots it shows."""
    return max(1, int(reading.slots * HEADROOM))
