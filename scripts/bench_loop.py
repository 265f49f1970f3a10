"""The bench server's event loop: asyncio's, with timers that fire when they are due.

The latency model holds a slot ``base_latency + per_token * tokens`` seconds, and the
benchmark's bound assumes exactly that. asyncio waits for its next timer in
``epoll_wait``, whose timeout is whole milliseconds, rounded up; on the benchmark's VM a
12.3 ms ``asyncio.sleep`` on an idle loop came back 2.2 ms late on average (0.5 ms with
the selector below, 0.2 ms for ``time.sleep``). Under load that lateness was about 1% of
every service time: a share of each span over its bound that no client could take back.

:class:`PreciseSelector` waits out a timeout in ``select()`` on the epoll descriptor
itself (which is readable when epoll has events), whose timeout is microseconds, then
collects the events from epoll without waiting. One more system call per wait, no
spinning. Where epoll is missing (not Linux), :func:`new_loop` gives asyncio's own loop.
"""

from __future__ import annotations

import asyncio
import select
import selectors
from typing import Any


class PreciseSelector(selectors.EpollSelector):
    """epoll, with its waits timed to the microsecond by ``select()``."""

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout > 0:
            select.select([self.fileno()], [], [], timeout)
            timeout = 0
        return super().select(timeout)


def new_loop() -> asyncio.AbstractEventLoop:
    """An event loop on :class:`PreciseSelector` (asyncio's default where epoll is missing)."""
    if not hasattr(select, "epoll"):
        return asyncio.new_event_loop()
    return asyncio.SelectorEventLoop(PreciseSelector())


def run(main: Any) -> Any:
    """``asyncio.run(main)`` on :func:`new_loop`."""
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(main)
