"""Seats: a worker per seat, and a seat handed on once its conversation sends nothing more."""

from __future__ import annotations

import asyncio

from virtualtime import run_virtual

from runner.run.seats import HAND_ON_FROM, Seat, Seats


def test_a_seat_handed_on_starts_one_worker_and_the_run_waits_for_it() -> None:
    started: list[int] = []

    async def work(seat: Seat) -> None:
        number = len(started)
        started.append(number)
        await asyncio.sleep(1.0)
        if number < 6:  # the first six hand their seat on, twice each: once counts
            seat.hand_on()
            seat.hand_on()
            assert seat.handed
        await asyncio.sleep(1.0)

    seats = Seats(HAND_ON_FROM, work)
    outcomes = run_virtual(seats.run())
    # Four seats; the first six workers each start one more; those started later do not.
    assert len(started) == HAND_ON_FROM + 6 and outcomes == []
    assert seats.tasks == set()  # none kept once ended


def test_few_seats_or_a_stop_hand_nothing_on() -> None:
    async def work(seat: Seat) -> None:
        seat.hand_on()
        assert not seat.handed

    few = Seats(HAND_ON_FROM - 1, work)
    assert run_virtual(few.run()) == []
    stopped = Seats(HAND_ON_FROM, work)
    stopped.stopped = True
    assert run_virtual(stopped.run()) == []


def test_what_a_worker_raised_is_returned() -> None:
    async def work(seat: Seat) -> None:
        raise ValueError("a bug")

    outcomes = run_virtual(Seats(2, work).run())
    assert [type(o) for o in outcomes] == [ValueError, ValueError]
