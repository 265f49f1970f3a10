"""The bench server's K parallel slots: a FIFO queue in front of them, counted as it changes.

Unlike ``asyncio.Semaphore`` this says how many requests are in service and how many wait,
and it hands a freed slot to the longest-waiting request (strict FIFO, as llama.cpp's and
vLLM's schedulers do with equal priorities). ``on_change(in_service, queued)`` is called
after every change, for the server's timeline.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from types import TracebackType


class Slots:
    """``capacity`` slots; ``async with slots:`` holds one, waiting in line when all are busy."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.busy = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.on_change: Callable[[int, int], None] = lambda _s, _q: None

    @property
    def full(self) -> bool:
        """Every slot busy (a new request would wait)."""
        return self.busy >= self.capacity or bool(self.waiters)

    @property
    def queued(self) -> int:
        """Requests waiting for a slot."""
        return len(self.waiters)

    async def acquire(self) -> None:
        """Take a slot, after every request that came earlier."""
        if not self.full:
            self.busy += 1
            self.on_change(self.busy, self.queued)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        self.on_change(self.busy, self.queued)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as it was cancelled: pass it on
            else:
                self.waiters.remove(waiter)
                self.on_change(self.busy, self.queued)
            raise

    def release(self) -> None:
        """Free a slot: the first in line gets it, or it stays free."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self.on_change(self.busy, self.queued)
                return
        self.busy -= 1
        self.on_change(self.busy, self.queued)

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
