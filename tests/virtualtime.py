"""The tests' one clock: an asyncio event loop whose time jumps ahead instead of waiting.

Whole runs can then be watched over minutes of time in milliseconds, with
real concurrency: ``asyncio.sleep`` and every timer work as usual, only the
loop's clock moves straight to the next timer when every task is waiting.
Time never moves while a task can still run, so a request handler that
awaits ``asyncio.sleep(0.25)`` takes exactly 0.25 s, latencies are real
numbers, and a test gives the same times on every machine. How to use it::

    result = run_virtual(run_batch(convs, config, sleep=asyncio.sleep, clock=clock))

:func:`clock` reads the running loop's time (the same as ``loop.time``);
:class:`RecordedSleep` is ``asyncio.sleep`` that also lists every wait it
was asked for, for tests that assert exact waits.

A test has one timeline: it starts at :data:`START` (``conftest.py`` resets
it before every test), each :func:`run_virtual` starts its loop where the
last one ended, and outside a loop :func:`clock` reads where time stands
and :func:`pass_time` moves it on. So an object built before the run (a
pacer, a progress line) reads the same clock as the run, and time never
goes back between two runs.

The one real wait a run has is the transcript journal's fsync, done on a
thread: while one is outstanding the clock does not jump, the loop really
waits for it, so a slow disk cannot make a turn take virtual seconds and
the times stay deterministic. (The loop spots those futures by the module
that creates them, :data:`FSYNC_MODULE`; ``tests/test_virtualtime.py`` fails
if that module stops creating them, so a move cannot break this silently.)

For mock transports only: a real socket would not answer in virtual time,
and the loop would jump to its timeout instead. Tests over real sockets
(loopback and fault servers) run on a real loop with ``sleep=RecordedSleep(skip=True)``
and its ``clock`` (or ``time.monotonic``): real time, waits recorded but skipped.
"""

from __future__ import annotations

import asyncio
import selectors
import sys
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

START = 1000.0
"""Where the virtual clock starts, in seconds."""

FSYNC_MODULE = "runner.transcripts.journal"
"""The module whose futures a thread completes (the journal's fsyncs)."""

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

    def __init__(self, start: float = START) -> None:
        selector = _Selector()
        super().__init__(selector)
        selector.loop = self
        self.now = start
        self.thread_work: set[asyncio.Future[Any]] = set()
        """Futures a thread of the store will complete (its fsyncs), not yet done."""
        self.thread_futures_seen = 0
        """How many futures of :data:`FSYNC_MODULE` this loop has created."""

    def time(self) -> float:
        return self.now

    def create_future(self) -> asyncio.Future[Any]:
        future = super().create_future()
        if sys._getframe(1).f_globals.get("__name__") == FSYNC_MODULE:
            self.thread_futures_seen += 1
            self.thread_work.add(future)
            future.add_done_callback(self.thread_work.discard)
        return future


class _Timeline:
    """Where virtual time stands between loops: one timeline for a whole test."""

    now = START
    last_loop: VirtualTimeLoop | None = None
    """The loop of the latest :func:`run_virtual` (tests look at what it saw)."""


def reset() -> None:
    """Start a new timeline at :data:`START` (before every test)."""
    _Timeline.now = START


def pass_time(seconds: float) -> None:
    """Let ``seconds`` of virtual time pass between runs (in a run, ``asyncio.sleep``)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _Timeline.now += seconds
        return
    raise RuntimeError("pass_time() is for between runs: in a run, await asyncio.sleep()")


def clock() -> float:
    """Virtual time: pass as ``clock=`` next to ``sleep=asyncio.sleep``."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return _Timeline.now  # before or between runs
    if not isinstance(loop, VirtualTimeLoop):
        raise RuntimeError("clock() is virtual time: run the coroutine with run_virtual()")
    return loop.time()


class RecordedSleep:
    """``asyncio.sleep`` that records every wait asked for, in ``waits``.

    ``skip=True`` is for runs over real sockets, which cannot be on virtual
    time: on a real loop, each wait is recorded and skipped (after letting
    other tasks run, as a wait would), and :meth:`clock` is real time with
    the skipped waits added, as if each had been slept.
    """

    def __init__(self, *, skip: bool = False) -> None:
        self.waits: list[float] = []
        self.skip = skip
        self._skipped = 0.0

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.skip:
            self._skipped += seconds
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(seconds)

    def clock(self) -> float:
        """The clock these waits pass on: virtual time, or real time plus the skipped waits."""
        return time.monotonic() + self._skipped if self.skip else clock()


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a fresh :class:`VirtualTimeLoop`, going on from where time stands."""
    loop = VirtualTimeLoop(_Timeline.now)
    _Timeline.last_loop = loop
    try:
        return loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        _Timeline.now = loop.now
