"""The running count of a batch's outcomes, for its summary and its result."""

from __future__ import annotations

from collections.abc import Sequence

from runner.checks.kinds import CheckResult
from runner.run.events import CheckFailure, Failure, LimitChanged, PassRate
from runner.send.limiter import LimitChange
from runner.spec.model import Conversation
from runner.transcripts.records import ConversationRecord
from runner.transcripts.status import Status


class Tally:
    """Outcomes counted as conversations finish: statuses, failures, failed checks."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(Status.ALL, 0)
        """Conversations per final status, including those resumed as already finished."""
        self.turns = 0
        """Turns answered in this run."""
        self.retries = 0
        """Retries scheduled in this run."""
        self.started = 0
        """Conversations this run started."""
        self.statuses: dict[str, str] = {}
        self.failures: list[Failure] = []
        self.check_failures: list[CheckFailure] = []

    def count_finished(self, conversation_id: str, status: str) -> None:
        """A conversation reached ``status`` (in this run, or already before it)."""
        self.counts[status] += 1
        self.statuses[conversation_id] = status

    def count_failure(self, record: ConversationRecord, message: str | None) -> None:
        """A conversation failed: remember it for the summary."""
        turn = int(record.error["turn"]) if record.error else 0
        self.failures.append(Failure(record.id, record.source, turn, message or Status.FAILED))

    def count_check(self, record: ConversationRecord, turn: int, result: CheckResult) -> None:
        """An expectation was evaluated: remember it for the summary when it failed."""
        if result.passed:
            return
        self.check_failures.append(
            CheckFailure(
                record.id,
                record.source,
                turn,
                result.kind,
                result.expected,
                result.seen,
                result.message,
            )
        )

    def pass_rates(self, batch: Sequence[Conversation]) -> tuple[PassRate, ...]:
        """Per repeated conversation: repetitions that completed with every check passing."""
        rates: dict[str, list[int]] = {}
        for conv in batch:
            if conv.group is None or conv.id not in self.statuses:
                continue
            tally = rates.setdefault(conv.group, [0, 0])
            tally[0] += self.statuses[conv.id] == Status.COMPLETED
            tally[1] += 1
        return tuple(PassRate(group, passed, runs) for group, (passed, runs) in rates.items())


def limit_changes(changes: Sequence[LimitChange]) -> tuple[LimitChanged, ...]:
    """The limiter's changes as plain event data."""
    return tuple(LimitChanged(c.at_s, c.limit, c.reason) for c in changes)
