"""What a run reports: progress events while it goes, and its result at the end.

The engine emits :data:`Event` objects to a callback and returns a
:class:`RunResult`; renderers (``cli/progress.py``) read only these types.
They are plain data, holding plain values: a renderer depends on this
module alone, not on the store, the limiter or the retry loop they come from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class RunStarted:
    """The batch is about to start."""

    run_id: str
    output: Path
    total: int
    """Conversations in the batch."""
    already_completed: int
    """Skipped because the output already holds them completed."""
    to_continue: int = 0
    """Resuming: conversations cut short that continue from their last completed turn."""
    torn_bytes: int = 0
    """Resuming: bytes of an incomplete last line cut off the transcript."""
    discarded: tuple[str, ...] = ()
    """Resuming: recorded lines and turns not trusted, each saying why (sent again)."""


@dataclass(frozen=True, slots=True)
class TurnCompleted:
    """A turn got its answer and was made durable."""

    conversation_id: str
    index: int
    turns: int
    """Turns in the conversation."""
    latency_ms: float | None


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    """An attempt failed and will be retried after a wait."""

    conversation_id: str
    index: int
    number: int
    """The failed attempt's 1-based number."""
    outcome: str
    """Its failure kind: ``http_429``, ``read_timeout``, ``invalid_json``, ..."""
    message: str | None
    """Its failure's message."""
    wait_s: float | None
    """The wait planned before the next attempt."""


@dataclass(frozen=True, slots=True)
class ConversationFinished:
    """A conversation reached its final status and was written."""

    conversation_id: str
    source: str
    status: str
    completed_turns: int
    turns: int
    error: str | None


@dataclass(frozen=True, slots=True)
class SendsHeld:
    """A Retry-After holds every request to the endpoint (started, or extended)."""

    seconds: float
    """How long from now no request is sent."""
    reason: str
    """The failure that asked for the hold."""


@dataclass(frozen=True, slots=True)
class RunStopping:
    """No new requests will be sent."""

    reason: str


Event = RunStarted | TurnCompleted | RetryScheduled | ConversationFinished | SendsHeld | RunStopping


@dataclass(frozen=True, slots=True)
class Failure:
    """A conversation that failed, for the summary."""

    conversation_id: str
    source: str
    turn: int
    message: str


@dataclass(frozen=True, slots=True)
class CheckFailure:
    """An expectation that failed, for the summary."""

    conversation_id: str
    source: str
    turn: int
    kind: str
    expected: str
    seen: str
    message: str


@dataclass(frozen=True, slots=True)
class PassRate:
    """With ``--repeat``: how often one conversation passed."""

    conversation_id: str
    passed: int
    """Repetitions that completed with every check passing."""
    runs: int
    """Repetitions recorded (in this run or before it)."""

    @property
    def rate(self) -> float:
        """``passed / runs`` (0 when nothing ran)."""
        return self.passed / self.runs if self.runs else 0.0


@dataclass(frozen=True, slots=True)
class LimitChanged:
    """One change of the limit on requests in flight, and why."""

    at_s: float
    """Seconds since the run started."""
    limit: int
    reason: str


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a run did."""

    run_id: str
    output: Path
    total: int
    """Conversations in the batch."""
    completed: int
    """Completed with every check passing, in this run or already before it."""
    checks_failed: int
    """Every turn answered but some expectation failed, in this run or before it."""
    failed: int
    interrupted: int
    not_started: int
    """Never started because the run stopped early."""
    already_completed: int
    """Skipped because the output already held them completed."""
    turns: int
    """Turns answered in this run."""
    prompt_tokens: int
    completion_tokens: int
    retries: int
    wall_seconds: float
    stop_reason: str | None
    """Why the run stopped early, or None."""
    interrupted_by_user: bool
    failures: tuple[Failure, ...]
    check_failures: tuple[CheckFailure, ...] = ()
    """Every failed expectation of this run."""
    pass_rates: tuple[PassRate, ...] = ()
    """With ``--repeat``: pass rate per conversation."""
    rate_limited: int = 0
    """Requests answered 429 in this run."""
    rate_limit_wait_s: float = 0.0
    """Wall-clock seconds during which sends were held by Retry-After or paced under a rate
    limit (many requests waiting at once count once)."""
    limit_changes: tuple[LimitChanged, ...] = ()
    """How the concurrency limit changed, and why."""
    output_error: str | None = None
    """Why the transcript could not be written, when that stopped the run."""

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens used in this run."""
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        """The result as plain JSON data (``--summary-json``)."""
        data = dataclasses.asdict(self)
        data["output"] = str(self.output)
        data["total_tokens"] = self.total_tokens
        data["wall_seconds"] = round(self.wall_seconds, 3)
        data["pass_rates"] = [
            {**dataclasses.asdict(rate), "rate": round(rate.rate, 4)} for rate in self.pass_rates
        ]
        return {"schema": "mtrun.summary/1", **data}
