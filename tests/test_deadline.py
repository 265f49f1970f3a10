"""Deadline: a whole-block limit that progress pushes back, and that never eats a real cancel.

The deadline runs on the event loop's clock, which is what it bounds: on the
virtual loop (``virtualtime.py``) its hundredths of a second pass at once.
"""

from __future__ import annotations

import asyncio

import pytest
from helpers import bounded
from virtualtime import run_virtual

from runner.http.deadline import Deadline

LIMIT = 0.05


def test_a_block_that_runs_past_its_deadline_raises_timeout_error() -> None:
    async def go() -> None:
        async with Deadline(LIMIT):
            await asyncio.Event().wait()

    with pytest.raises(TimeoutError, match=r"^no progress within 0\.05 s$"):
        run_virtual(bounded(go()))


def test_progress_pushes_the_deadline_back() -> None:
    async def go() -> tuple[int, bool]:
        steps = 0
        async with Deadline(LIMIT) as deadline:
            while steps < 8:  # 8 x LIMIT/2: twice the limit, in all
                await asyncio.sleep(LIMIT / 2)
                deadline.extend()
                steps += 1
        return steps, deadline.expired

    assert run_virtual(bounded(go())) == (8, False)


def test_a_block_done_in_time_is_untouched_and_leaves_no_pending_cancel() -> None:
    async def go() -> str:
        async with Deadline(LIMIT):
            await asyncio.sleep(0)
        await asyncio.sleep(LIMIT * 2)  # the timer is gone: nothing cancels this
        return "done"

    assert run_virtual(bounded(go())) == "done"


def test_a_cancel_from_outside_is_never_turned_into_a_timeout() -> None:
    async def block() -> None:
        async with Deadline(10.0):
            await asyncio.Event().wait()

    async def go() -> None:
        task = asyncio.create_task(block())
        await asyncio.sleep(0)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        run_virtual(bounded(go()))


def test_a_block_that_swallows_its_expiry_carries_on_uncancelled() -> None:
    async def go() -> str:
        async with Deadline(LIMIT) as deadline:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                assert deadline.expired
        await asyncio.sleep(0)  # no cancellation left pending for the task
        task = asyncio.current_task()
        assert task is not None and getattr(task, "cancelling", lambda: 0)() == 0
        return "carried on"

    assert run_virtual(bounded(go())) == "carried on"
