"""A log of sends, ``(number, time)`` in the order sent, kept as machine numbers.

The refill estimate (``refill.py``) remembers two minutes of sends; a busy
run sends a thousand requests a second, so that is over 100,000 of them.
As a deque of tuples each cost about 120 bytes (the tuple, its int and its
float); here it is 16, in two arrays. :class:`SendLog` offers what the
estimate uses of a deque: ``append``, ``popleft``, indexing, iteration
(oldest first) and ``reversed``; the pairs it gives are equal to those put.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from itertools import islice

COMPACT_AFTER = 4096
"""Sends dropped from the front before the arrays give their room back (at half empty)."""


class SendLog:
    """Send numbers and times, oldest first; drop the oldest with :meth:`popleft`."""

    def __init__(self) -> None:
        self._numbers = array("q")
        self._times = array("d")
        self._start = 0
        """Where the log begins in the arrays: entries before it were popped."""

    def __len__(self) -> int:
        return len(self._numbers) - self._start

    def append(self, send: tuple[int, float]) -> None:
        """Add the newest send."""
        number, at = send
        self._numbers.append(number)
        self._times.append(at)

    def popleft(self) -> tuple[int, float]:
        """Remove and return the oldest send (IndexError when empty)."""
        oldest = self[0]
        self._start += 1
        if self._start >= COMPACT_AFTER and 2 * self._start >= len(self._numbers):
            del self._numbers[: self._start]
            del self._times[: self._start]
            self._start = 0
        return oldest

    def __getitem__(self, index: int) -> tuple[int, float]:
        size = len(self)
        if not -size <= index < size:
            raise IndexError("send log index out of range")
        at = self._start + index % size
        return self._numbers[at], self._times[at]

    def __iter__(self) -> Iterator[tuple[int, float]]:
        numbers = islice(self._numbers, self._start, None)
        return zip(numbers, islice(self._times, self._start, None), strict=True)

    def __reversed__(self) -> Iterator[tuple[int, float]]:
        numbers, times = self._numbers, self._times
        return ((numbers[i], times[i]) for i in range(len(numbers) - 1, self._start - 1, -1))
