"""The refill estimate's log of sends behaves as the deque of pairs it replaces."""

from __future__ import annotations

from collections import deque

import pytest

from runner.send.sendlog import COMPACT_AFTER, SendLog


def test_appended_sends_come_back_in_order_and_reversed() -> None:
    log = SendLog()
    assert not log and len(log) == 0 and list(log) == []
    sends = [(1, 0.5), (2, 0.75), (7, 2.0)]
    for send in sends:
        log.append(send)
    assert list(log) == sends
    assert list(reversed(log)) == sends[::-1]
    assert log[0] == (1, 0.5) and log[-1] == (7, 2.0) and log[1] == (2, 0.75)
    assert len(log) == 3


def test_popleft_drops_the_oldest_and_raises_when_empty() -> None:
    log = SendLog()
    log.append((1, 1.0))
    log.append((2, 2.0))
    assert log.popleft() == (1, 1.0)
    assert list(log) == [(2, 2.0)] and list(reversed(log)) == [(2, 2.0)]
    assert log.popleft() == (2, 2.0)
    assert not log
    with pytest.raises(IndexError):
        log.popleft()
    with pytest.raises(IndexError):
        log[0]


def test_a_long_run_of_sends_and_drops_matches_a_deque() -> None:
    """Past the point where the arrays give their room back, nothing is lost or reordered."""
    log, pairs = SendLog(), deque[tuple[int, float]]()
    for number in range(1, 5 * COMPACT_AFTER):
        send = (number, number / 8)
        log.append(send)
        pairs.append(send)
        while pairs[0][1] < send[1] - 100.0:  # the window refill.py keeps, in small
            assert log.popleft() == pairs.popleft()
        if number % 997 == 0:
            assert list(log) == list(pairs)
            assert list(reversed(log)) == list(reversed(pairs))
            assert log[0] == pairs[0] and log[-1] == pairs[-1] and len(log) == len(pairs)
    assert list(log) == list(pairs)
