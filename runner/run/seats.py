"""The conversations a batch runs at once: one worker per seat, and a seat handed on early.

A batch runs ``conversations_in_flight`` conversations at once, each on a
worker task that takes the next conversation when its own is done. When a
slot frees, the request whose conversation has the most turns left gets it
(``limiter.py``), but only among the conversations already running. A
conversation whose last request is on its way sends nothing more; if its seat
waited for the answer, the conversations that should take the freed slots
would not have started yet, and the slots would go to those waiting for
their last turn: MT-bench's 80 two-turn dialogues at ``-j 32`` took 6 rounds
where 5 do. So once a conversation's last request has its slot, its seat is
*handed on*: a new worker starts the next conversation at once, and the old
one ends with the conversation it has. At most the slots' count of
conversations more than the seats are running (those awaiting their last
answer). A last turn that declares tools keeps its seat: its answer may call
them and take more requests, and seats handed on meanwhile would let the
conversations in flight grow without bound. Below :data:`HAND_ON_FROM`
seats nothing is handed on: ``-j 1`` replays one conversation after another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

HAND_ON_FROM = 4
"""The fewest seats whose workers hand their seat on early."""


class Seat:
    """One worker's seat: ``hand_on`` starts the next worker, once."""

    __slots__ = ("_seats", "handed")

    def __init__(self, seats: Seats) -> None:
        self._seats = seats
        self.handed = False
        """Whether a new worker has this seat: this one ends with its conversation."""

    def hand_on(self) -> None:
        """This worker's conversation sends nothing more: let the next one start now."""
        if not self.handed and self._seats.hands_on:
            self.handed = True
            self._seats.start()


class Seats:
    """Runs ``work`` on ``count`` seats; a seat handed on runs ``work`` again on a new task."""

    def __init__(self, count: int, work: Callable[[Seat], Awaitable[None]]) -> None:
        self.count = count
        self.hands_on = count >= HAND_ON_FROM
        self.stopped = False
        """Set by a stop: no seat is handed on any more."""
        self._work = work
        self.tasks: set[asyncio.Task[None]] = set()
        """The workers still running (a batch of 100,000 starts about as many: none is kept)."""
        self._failures: list[BaseException] = []
        self._all_done: asyncio.Event | None = None

    def start(self) -> None:
        """Start one worker on a seat of its own (none once stopped)."""
        if self.stopped:
            return
        task = asyncio.ensure_future(self._work(Seat(self)))
        self.tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            self._failures.append(asyncio.CancelledError())
        elif (error := task.exception()) is not None:
            self._failures.append(error)
        if not self.tasks and self._all_done is not None:
            self._all_done.set()

    async def run(self) -> list[BaseException]:
        """Start every seat's worker and wait for all of them, those started later too.

        Returns what the workers that did not end normally raised (a cancelled one:
        a :class:`asyncio.CancelledError`).
        """
        self._all_done = asyncio.Event()
        for _ in range(self.count):
            self.start()
        if self.tasks:
            await self._all_done.wait()
        return self._failures
