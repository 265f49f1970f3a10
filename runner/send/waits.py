"""The time sends spent waiting, counted once however many waited together (for the summary)."""

from __future__ import annotations


class WaitSpans:
    """Wall-clock time during which at least one send was waiting (for the summary).

    Many requests wait out the same hold or pace at once: adding up their
    waits would count the same seconds many times over. Spans are added as
    each wait starts, so starts come in order and the union is a running sum.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        """Length of the union of every span added."""
        self._until = float("-inf")

    def add(self, start: float, end: float) -> None:
        """A send waits from ``start`` (now, or later than any earlier start) to ``end``."""
        if end > self._until:
            self.seconds += end - max(start, self._until)
            self._until = end
