"""The running count of a batch's outcomes, and the :class:`RunResult` made from it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from runner.checks.kinds import CheckResult
from runner.errors import OutputError
from runner.run.control import RunControl
from runner.run.events import CheckFailure, Failure, LimitChanged, PassRate, RunResult
from runner.send.dispatch import Dispatcher
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


def run_result(
    tally: Tally,
    batch: Sequence[Conversation],
    *,
    run_id: str,
    output: Path,
    already: int,
    wall: float,
    dispatch: Dispatcher,
    control: RunControl,
    output_error: OutputError | None,
) -> RunResult:
    """What the run did: ``tally``'s counts, ``dispatch``'s tokens and limits, why it stopped."""
    total = len(batch)
    return RunResult(
        run_id=run_id,
        output=output,
        total=total,
        completed=tally.counts[Status.COMPLETED],
        checks_failed=tally.counts[Status.CHECKS_FAILED],
        failed=tally.counts[Status.FAILED],
        interrupted=tally.counts[Status.INTERRUPTED],
        not_started=total - already - tally.started,
        already_completed=already,
        turns=tally.turns,
        prompt_tokens=dispatch.tokens[0],
        completion_tokens=dispatch.tokens[1],
        retries=tally.retries,
        wall_seconds=wall,
        stop_reason=control.reason,
        interrupted_by_user=control.by_user,
        failures=tuple(tally.failures),
        check_failures=tuple(tally.check_failures),
        pass_rates=tally.pass_rates(batch),
        rate_limited=dispatch.rate_limited,
        rate_limit_wait_s=round(dispatch.waited_s, 3),
        limit_changes=limit_changes(dispatch.limiter.changes),
        output_error=None if output_error is None else str(output_error),
    )


def limit_changes(changes: Sequence[LimitChange]) -> tuple[LimitChanged, ...]:
    """The limiter's changes as plain event data."""
    return tuple(LimitChanged(c.at_s, c.limit, c.reason) for c in changes)
