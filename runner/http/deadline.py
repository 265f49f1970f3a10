"""A deadline for a whole request, which a stream can push back as it makes progress.

httpx's timeouts apply to each read, so a server that trickles one byte, or
an SSE ``: ping`` comment, a little faster than the timeout is waited on
forever. :class:`Deadline` bounds the whole block instead: when it expires,
the task running the block is cancelled and the block raises
``TimeoutError``. A streamed answer calls :meth:`Deadline.extend` for each
event with data, so a long generation that keeps producing tokens is never
cut, while silence (or only comments) for the whole limit is.

It works like ``asyncio.timeout`` (Python 3.11), which mtrun cannot use on
3.10, and re-arms its timer lazily: extending is one assignment, however many
events a stream has.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Deadline:
    """``async with Deadline(seconds)``: the block may run ``seconds`` past its last extend."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        """Whether the deadline passed and cancelled the block."""
        self._until = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[object] | None = None
        self._handle: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> Deadline:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a Deadline bounds a block of a task: enter it inside one")
        self._loop, self._task = loop, task
        self._until = loop.time() + self.seconds
        self._handle = loop.call_at(self._until, self._check, loop, task)
        return self

    def extend(self) -> None:
        """Give the block ``seconds`` more from now (it made progress)."""
        if self._loop is not None and not self.expired:
            self._until = self._loop.time() + self.seconds

    def _check(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[object]) -> None:
        """The timer: cancel the block once the deadline passed, else look again then."""
        if loop.time() < self._until:
            self._handle = loop.call_at(self._until, self._check, loop, task)
            return
        self.expired = True
        task.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if not self.expired:
            return
        # Python 3.11+ counts cancellations: take ours back, and let another one through.
        uncancel = getattr(self._task, "uncancel", None)
        others = uncancel() if uncancel is not None else 0
        if exc_type is asyncio.CancelledError and not others:
            raise TimeoutError(f"no progress within {self.seconds:g} s") from None
