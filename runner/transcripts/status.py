"""The statuses a conversation's record can have: one set, named once.

They are plain strings on disk and in every API (``record["status"]``), so
the names here are ``str`` constants rather than an ``Enum``: a transcript
reads and compares the same whether or not the reader imports mtrun.
"""

from __future__ import annotations

from typing import Final


class Status:
    """A conversation's status, as written to its transcript line."""

    COMPLETED: Final = "completed"
    """Every turn answered and every expectation passed."""
    CHECKS_FAILED: Final = "checks_failed"
    """Every turn answered; some expectation failed."""
    FAILED: Final = "failed"
    """A turn failed for good (an API error after retries, a replay miss)."""
    INTERRUPTED: Final = "interrupted"
    """The run stopped before the conversation ended; ``--resume`` continues it."""

    ALL: Final = (COMPLETED, CHECKS_FAILED, FAILED, INTERRUPTED)
    """Every status, in the order summaries list them."""
    FINISHED: Final = frozenset({COMPLETED, CHECKS_FAILED})
    """Statuses of a conversation whose every turn was answered: resuming skips them."""

    @staticmethod
    def counted(number: int, status: str) -> str:
        """``number`` conversations in ``status`` as a summary says it: "2 with failed checks"."""
        words = "with failed checks" if status == Status.CHECKS_FAILED else status
        return f"{number:,} {words}"
