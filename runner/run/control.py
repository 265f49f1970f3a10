"""Stopping a run from outside it: a signal handler, a test, a quota error."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


class RunControl:
    """Lets the caller (a signal handler, a test) stop a run cleanly."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.by_user = False
        self._on_stop: Callable[[str], None] | None = None

    @property
    def stopping(self) -> bool:
        """Whether a stop was asked for."""
        return self.reason is not None

    def stop(self, reason: str, *, by_user: bool = False) -> None:
        """Send nothing more; record in-flight conversations as interrupted."""
        if self.reason is not None:
            return
        self.reason = reason
        self.by_user = by_user
        if self._on_stop is not None:
            self._on_stop(reason)

    @contextmanager
    def on_stop(self, callback: Callable[[str], None]) -> Iterator[None]:
        """Call ``callback(reason)`` on a stop while the block runs; detached however it ends."""
        if self._on_stop is not None:
            raise RuntimeError("this RunControl already controls a running batch")
        self._on_stop = callback
        try:
            yield
        finally:
            self._on_stop = None
