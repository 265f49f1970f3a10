"""Adaptive concurrency: how many requests may be in flight at once, learned from 429s.

``-j`` sets a ceiling on conversations in flight; the limiter decides how many
of their requests run at once. It starts at the ceiling (or, with ``-j auto``,
at a modest value) and follows additive-increase / multiplicative-decrease:

- a 429 halves the limit, once per *episode*: the 429s of requests that were
  already in flight when the limit was cut say nothing new and are ignored;
- so does an answer that did not come within ``--timeout`` while other
  requests were being answered: a server that queues what it cannot serve
  yet (llama.cpp, Ollama, vLLM past its batch) never says 429, and the
  requests at the back of its queue time out (the dispatcher decides which
  timeouts are these; with nothing answered at all, the endpoint is down,
  not overloaded, and ``gate.py`` stops the run instead);
- after as many clean answers as the limit, received while every slot was
  busy, the limit grows by one, up to the ceiling; before the first 429
  (slow start, when it began below the ceiling) every such answer adds one,
  so the limit doubles each round until the server pushes back;
- after a storm, when the server refused everything for a while
  (``pacing.py`` tells them apart from 429s of sending too fast), the cuts
  it made said nothing about concurrency: once the server answers again,
  every clean answer adds one until the limit is back where it was when
  answers last came (:meth:`AdaptiveLimiter.recover`);
- 5xx answers, dropped connections and failed connects change nothing:
  they say the server is unwell, not that we send too fast.

A request holds a slot only while it is being sent and answered, never while
it sleeps in backoff. When a slot frees, a conversation that is already
running gets it before a conversation that has not started: finishing
started chains first keeps the batch's critical path short and keeps the
provider's prompt caches warm.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LimitChange:
    """One change of the limit, for the run's metadata."""

    at_s: float
    """Seconds since the run started."""
    limit: int
    reason: str


class AdaptiveLimiter:
    """Slots for requests in flight, with a limit that adapts to 429s."""

    def __init__(
        self, *, ceiling: int, start: int | None = None, clock: Callable[[], float]
    ) -> None:
        self.ceiling = ceiling
        self.limit = min(ceiling, start or ceiling)
        self._slow_start = self.limit < ceiling
        self.clock = clock
        self.started = clock()
        self.in_flight = 0
        self.changes: list[LimitChange] = []
        self._epoch = 0
        self._clean = 0
        self._answered_at = 0
        """The limit when a request sent since the last cut was last answered (0: never)."""
        self._recover_to = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def acquire(self, *, continuing: bool) -> int:
        """Wait for a slot; return the episode it was taken in (give it to :meth:`release`).

        ``continuing``: the request continues a conversation already running,
        which goes before one that starts a new conversation.
        """
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return self._epoch
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (0 if continuing else 1, next(self._order), future)
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
        return self._epoch

    def release(self, epoch: int, *, outcome: str) -> None:
        """Give the slot back; ``outcome``: ``ok``, ``rate_limited``, ``timed_out`` or ``other``."""
        saturated = self.in_flight >= self.limit
        self._free()
        if outcome == "ok" and epoch == self._epoch:
            self._answered_at = self.limit
        if outcome in ("rate_limited", "timed_out") and epoch == self._epoch:
            self._slow_start = False
            self._epoch += 1
            self._clean = 0
            new = max(1, self.limit // 2)
            if new != self.limit:
                self.limit = new
                self._note("429: halved" if outcome == "rate_limited" else "timeout: halved")
        elif outcome == "ok" and self.limit < self._recover_to:
            self.limit += 1
            self._note("answered again: +1")
            self._wake()
        elif outcome == "ok" and saturated and self._slow_start:
            if self.limit < self.ceiling:
                self.limit += 1
                self._note("slow start: +1")
                self._wake()
            else:
                self._slow_start = False
        elif outcome == "ok" and saturated:
            self._clean += 1
            if self._clean >= self.limit and self.limit < self.ceiling:
                self._clean = 0
                self.limit += 1
                self._note("clean saturated round: +1")
                self._wake()

    def recover(self) -> None:
        """A storm of refusals is over: grow back quickly to the limit answers last came at."""
        self._recover_to = self._answered_at
        if self.limit < self._recover_to:
            self.limit += 1
            self._note("answered again: +1")
            self._wake()

    def _free(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            _, _, future = heapq.heappop(self._waiters)
            if future.cancelled():
                continue
            self.in_flight += 1
            future.set_result(None)

    def _note(self, reason: str) -> None:
        at = round(self.clock() - self.started, 3)
        self.changes.append(LimitChange(at, self.limit, reason))
