"""An asyncio event loop whose clock jumps ahead instead of waiting.

Whole runs can then be watched over minutes of time in milliseconds, with
real concurrency: ``asyncio.sleep`` and every timer work as usual, only the
loop's clock moves straight to the next timer whenever nothing is ready.
Pass ``sleep=asyncio.sleep, clock=loop.time`` to the engine. For mock
transports only: real sockets would not wait for virtual time.

The one real wait a run has is the transcript journal's fsync, done on a
thread: while one is outstanding the clock does not jump, the loop really
waits for it, so a slow disk cannot make a turn take virtual seconds.
"""

from __future__ import annotations

import asyncio
import selectors
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

REAL_WAIT_S = 0.001
"""Real seconds of each wait for a thread's work (which wakes the loop when done)."""


class _Selector(selectors.DefaultSelector):
    """A selector that never blocks: a wait for ``timeout`` advances the clock instead."""

    loop: VirtualTimeLoop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout <= 0:
            return super().select(timeout)  # work is ready, or only a thread can wake us
        while any(not work.done() for work in self.loop.thread_work):
            events = super().select(REAL_WAIT_S)  # an fsync is under way: really wait
            if events:
                return events
        events = super().select(0)
        if not events:
            self.loop.now += timeout
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop on virtual time, starting at ``start`` seconds."""

    def __init__(self, start: float = 1000.0) -> None:
        selector = _Selector()
        super().__init__(selector)
        selector.loop = self
        self.now = start
        self.thread_work: set[asyncio.Future[Any]] = set()
        """Futures a thread of the store will complete (its fsyncs), not yet done."""

    def time(self) -> float:
        return self.now

    def create_future(self) -> asyncio.Future[Any]:
        future = super().create_future()
        if sys._getframe(1).f_globals.get("__name__") == "runner.transcripts.journal":
            self.thread_work.add(future)
            future.add_done_callback(self.thread_work.discard)
        return future


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a fresh :class:`VirtualTimeLoop`."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
