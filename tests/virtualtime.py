"""An asyncio event loop whose clock jumps ahead instead of waiting.

Whole runs can then be watched over minutes of time in milliseconds, with
real concurrency: ``asyncio.sleep`` and every timer work as usual, only the
loop's clock moves straight to the next timer whenever nothing is ready.
Pass ``sleep=asyncio.sleep, clock=loop.time`` to the engine. For mock
transports only: real sockets would not wait for virtual time.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

REAL_WAIT_S = 0.001
"""Real seconds the loop waits for other threads before its clock jumps."""


class _Selector(selectors.DefaultSelector):
    """A selector that never blocks: a wait for ``timeout`` advances the clock instead."""

    loop: VirtualTimeLoop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            return super().select(None)  # nothing scheduled: only a thread can wake us
        # A short real wait first, so that work handed to a thread (the store's
        # fsyncs) is not overtaken by a jump of the clock.
        events = super().select(min(timeout, REAL_WAIT_S))
        if not events and timeout > 0:
            self.loop.now += timeout
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop on virtual time, starting at ``start`` seconds."""

    def __init__(self, start: float = 1000.0) -> None:
        selector = _Selector()
        super().__init__(selector)
        selector.loop = self
        self.now = start

    def time(self) -> float:
        return self.now


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a fresh :class:`VirtualTimeLoop`."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
