"""Transcript records: the JSON written for each conversation and each completed turn.

A transcript file is JSON Lines, one :class:`ConversationRecord` a line. Its
``messages`` are the history exactly as sent and received; its ``turns`` hold
per-turn metadata, each pointing at its user message by ``message_index``.
The schema is documented in the README and shipped as
``runner/schemas/transcript.schema.json``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from runner.transcripts.fields import answer_index
from runner.transcripts.status import Status
from runner.transcripts.totals import totals

SCHEMA = "mtrun.transcript/1"
"""Version string carried by every record; bumped on incompatible changes."""


def utc_now() -> str:
    """The current time as an ISO 8601 UTC string with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_run_id() -> str:
    """A sortable, unique run id such as ``20261124T101500Z-3f2a1c``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


@dataclass(slots=True)
class TurnRecord:
    """Metadata of one turn; its messages live in the conversation's ``messages``."""

    index: int
    """0-based turn number."""
    message_index: int
    """Index in ``messages`` of this turn's user message; the answer follows it."""
    attempts: list[dict[str, Any]]
    """Every attempt made for this turn, the last one being the one that counted."""
    latency_ms: float | None = None
    """Latency of the successful attempt."""
    queued_ms: float | None = None
    """How long the successful attempt waited inside mtrun before it was sent (a hold,
    pacing, a request slot): apart from ``latency_ms``, which is the server's time."""
    first_token_ms: float | None = None
    """With streaming: time to the first token of the answer."""
    tokens_per_s: float | None = None
    """With streaming: completion tokens per second after the first token."""
    usage: dict[str, Any] | None = None
    """Token usage reported by the API."""
    finish_reason: str | None = None
    """Why the model stopped."""
    response_id: str | None = None
    """The API's response id."""
    model: str | None = None
    """The model the API says answered."""
    extra: dict[str, Any] | None = None
    """Fields of the assistant message other than role and content (reasoning too, as before)."""
    reasoning: dict[str, Any] | None = None
    """The reasoning fields the answer carried (``reasoning_content``, ``reasoning``,
    ``reasoning_details``), as they arrived; absent when it carried none."""
    params: dict[str, Any] | None = None
    """This turn's own parameter overrides, when it had any."""
    checks: list[dict[str, Any]] | None = None
    """Results of the expectations on this turn's answer, when it had any."""
    error: dict[str, Any] | None = None
    """Why the turn failed: kind, status, message."""
    steps: list[dict[str, Any]] | None = None
    """With tool calls: one record per request the turn made (absent when the model called none)."""

    def as_dict(self) -> dict[str, Any]:
        """The JSON form, without empty optional fields."""
        out: dict[str, Any] = {
            "index": self.index,
            "message_index": self.message_index,
            "latency_ms": self.latency_ms,
            "usage": self.usage,
            "finish_reason": self.finish_reason,
            "response_id": self.response_id,
            "attempts": self.attempts,
        }
        for key in (
            "queued_ms",
            "first_token_ms",
            "tokens_per_s",
            "model",
            "extra",
            "reasoning",
            "params",
            "checks",
            "error",
            "steps",
        ):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    @property
    def completed(self) -> bool:
        """Whether the turn got an answer."""
        return self.error is None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TurnRecord:
        """Rebuild a record read back from a transcript or journal."""
        return cls(
            index=int(data["index"]),
            message_index=int(data["message_index"]),
            attempts=list(data.get("attempts") or []),
            latency_ms=data.get("latency_ms"),
            queued_ms=data.get("queued_ms"),
            first_token_ms=data.get("first_token_ms"),
            tokens_per_s=data.get("tokens_per_s"),
            usage=data.get("usage"),
            finish_reason=data.get("finish_reason"),
            response_id=data.get("response_id"),
            model=data.get("model"),
            extra=data.get("extra"),
            reasoning=data["reasoning"] if isinstance(data.get("reasoning"), dict) else None,
            params=data.get("params"),
            checks=data.get("checks"),
            error=data.get("error"),
            steps=data["steps"] if isinstance(data.get("steps"), list) else None,
        )

    @property
    def answer_index(self) -> int:
        """Index in ``messages`` of this turn's answer (see :func:`fields.answer_index`).

        Steps that say nowhere (a hand-edited record, which resume refuses)
        count as none: the message after the user's.
        """
        found = answer_index(self.as_dict())
        return self.message_index + 1 if found is None else found


@dataclass(slots=True)
class ConversationRecord:
    """Everything recorded about one conversation: one line of the transcript file."""

    run_id: str
    """The run that wrote the file (kept across resumes)."""
    id: str
    """The conversation id."""
    source: str
    """The conversation file it came from."""
    model: str
    """The model requested."""
    base_url: str
    """The endpoint, without credentials."""
    params: dict[str, Any]
    """Request parameters after overrides."""
    fingerprint: str
    """Hash of what decides the requests; resume refuses a changed conversation."""
    started_at: str
    """When its first turn was sent."""
    status: str = Status.INTERRUPTED
    """``completed``, ``checks_failed``, ``failed`` or ``interrupted``."""
    messages: list[dict[str, Any]] = field(default_factory=list)
    """The full history exactly as sent and received."""
    turns: list[TurnRecord] = field(default_factory=list)
    """One record per turn sent, the failed one included."""
    finished_at: str | None = None
    """When it reached its final status."""
    error: dict[str, Any] | None = None
    """Why it failed or was interrupted."""
    group: str | None = None
    """With ``--repeat``: the conversation id this record is a repetition of."""
    repeat: int | None = None
    """With ``--repeat``: which repetition (1-based)."""
    variant_of: str | None = None
    """With several ``--model``: the conversation id this per-model record is a copy of."""
    shard: dict[str, int] | None = None
    """With ``--shard K/N``: ``{"index": K, "count": N}``."""

    @property
    def completed_turns(self) -> int:
        """How many turns got an answer."""
        return sum(1 for t in self.turns if t.completed)

    def totals(self) -> dict[str, Any]:
        """Token, turn and attempt totals, as every reader counts them (``totals.py``)."""
        return totals({"turns": [t.as_dict() for t in self.turns]}).as_dict()

    def as_dict(self) -> dict[str, Any]:
        """The JSON form written as one transcript line."""
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "run_id": self.run_id,
            "id": self.id,
            "source": self.source,
            "model": self.model,
            "base_url": self.base_url,
            "params": self.params,
            "status": self.status,
            "messages": self.messages,
            "turns": [t.as_dict() for t in self.turns],
            "totals": self.totals(),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "fingerprint": self.fingerprint,
        }
        if self.error is not None:
            out["error"] = self.error
        if self.group is not None:
            out["group"] = self.group
            out["repeat"] = self.repeat
        if self.variant_of is not None:
            out["variant_of"] = self.variant_of
        if self.shard is not None:
            out["shard"] = self.shard
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConversationRecord:
        """Rebuild a record read back from a transcript line."""
        return cls(
            run_id=str(data["run_id"]),
            id=str(data["id"]),
            source=str(data.get("source", "")),
            model=str(data.get("model", "")),
            base_url=str(data.get("base_url", "")),
            params=dict(data.get("params") or {}),
            fingerprint=str(data.get("fingerprint", "")),
            started_at=str(data.get("started_at", "")),
            status=str(data["status"]),
            messages=list(data.get("messages") or []),
            turns=[TurnRecord.from_dict(t) for t in data.get("turns") or []],
            finished_at=data.get("finished_at"),
            error=data.get("error"),
            group=data.get("group"),
            repeat=data.get("repeat"),
            shard=data.get("shard"),
            variant_of=data.get("variant_of"),
        )


def records_of_model(records: Iterable[Mapping[str, Any]], model: str) -> list[dict[str, Any]]:
    """The records of one model in a several-model output, under their original ids.

    So two models of one run can be compared like two runs.
    """
    chosen = []
    for record in records:
        if record.get("model") == model:
            copy = dict(record)
            copy["id"] = record.get("variant_of") or record["id"]
            chosen.append(copy)
    return chosen
