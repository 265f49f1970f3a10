"""The records a replay writes: a conversation's, its turns', filled in as they happen.

Pure functions on :mod:`runner.transcripts.records` types; the engine
decides when, these decide what a record holds.
"""

from __future__ import annotations

from typing import Any, Protocol

from runner.http.client import Completion
from runner.run.shard import Shard
from runner.send.retry import AttemptRecord
from runner.spec.model import Conversation, RequestSettings
from runner.transcripts.records import ConversationRecord, TurnRecord, utc_now
from runner.transcripts.resume import TurnsDone
from runner.transcripts.status import Status


def new_record(
    conversation: Conversation, settings: RequestSettings, run_id: str, base_url: str
) -> ConversationRecord:
    """The record ``conversation`` starts with: its settings and the history before turn 1."""
    return ConversationRecord(
        run_id=run_id,
        id=conversation.id,
        source=conversation.source,
        model=settings.model,
        base_url=base_url,
        params=dict(settings.params),
        fingerprint=settings.fingerprint(),
        started_at=utc_now(),
        messages=conversation.prefix(),
    )


def answered_status(record: ConversationRecord) -> str:
    """The status of a conversation whose every turn was answered."""
    failed_checks = any(not c.get("passed") for t in record.turns for c in t.checks or ())
    return Status.CHECKS_FAILED if failed_checks else Status.COMPLETED


def mark_interrupted(record: ConversationRecord, reason: str) -> None:
    """The run stopped before ``record``'s conversation ended."""
    record.status = Status.INTERRUPTED
    record.error = {"kind": "interrupted", "message": reason}


class Failure(Protocol):
    """Why a turn failed: an API error, or a tool chain that cannot go on."""

    @property
    def kind(self) -> str: ...
    @property
    def status(self) -> int | None: ...
    @property
    def message(self) -> str: ...


def mark_failed(record: ConversationRecord, turn: TurnRecord, error: Failure) -> None:
    """``turn`` failed for good: it ends the conversation, with the error."""
    turn.error = {"kind": error.kind, "status": error.status, "message": error.message}
    record.turns.append(turn)
    record.status = Status.FAILED
    record.error = {"turn": turn.index, **turn.error}


def mark_finished(
    record: ConversationRecord, conversation: Conversation, shard: Shard | None
) -> None:
    """The fields a record gets when its conversation reaches its final status."""
    record.finished_at = utc_now()
    record.group = conversation.group
    record.repeat = conversation.repeat
    record.variant_of = conversation.variant_of
    if shard is not None:
        record.shard = {"index": shard.index, "count": shard.count}


def fill_answered_turn(turn: TurnRecord, completion: Completion, latency_ms: float | None) -> None:
    """Record an answer on its turn: timings, usage, and the message's extra fields."""
    extra = {
        k: v
        for k, v in completion.message.items()
        if k not in ("role", "content") and v not in (None, [], {}, "")
    }
    turn.latency_ms = latency_ms
    turn.first_token_ms = completion.first_token_ms
    tokens = (completion.usage or {}).get("completion_tokens")
    if completion.first_token_ms is not None and latency_ms and isinstance(tokens, int):
        generating = (latency_ms - completion.first_token_ms) / 1000.0
        turn.tokens_per_s = round(tokens / generating, 1) if generating > 0 else None
    turn.usage = completion.usage
    turn.finish_reason = completion.finish_reason
    turn.response_id = completion.response_id
    turn.model = completion.model
    turn.extra = extra or None


def numbered_attempts(
    earlier: list[dict[str, Any]], attempts: list[AttemptRecord]
) -> list[dict[str, Any]]:
    """A turn's attempt records, numbered on after the attempts made before a resume."""
    out = [dict(a, resumed=True) for a in earlier]
    for attempt in attempts:
        data = attempt.as_dict()
        data["attempt"] = len(out) + 1
        out.append(data)
    return out


def continue_record(
    record: ConversationRecord, progress: TurnsDone | None
) -> tuple[list[dict[str, Any]], TurnRecord | None]:
    """Put what an earlier run recorded into ``record``.

    Returns the attempts already spent on the next turn, and that turn's
    answered steps when the run stopped in its tool calls.
    """
    if progress is None:
        return [], None
    record.started_at = progress.started_at or record.started_at
    record.turns = list(progress.turns)
    record.messages.extend(progress.exchanges)
    if progress.partial is not None:
        record.messages.extend(progress.partial_exchange)
    return progress.failed_attempts, progress.partial
