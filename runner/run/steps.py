"""One turn as steps: the requests a turn makes while the model keeps calling tools.

Step 0 sends the history and the user message. An answer with
``tool_calls`` adds its assistant message and one scripted tool message per
call to the history (see :mod:`runner.transcripts.history`), and the turn
sends again. The first answer without calls ends the turn. The turn's record
describes it as a whole (latency and usage summed, the rest from the final
step); a turn that made more than one request also lists its ``steps``, and
each of its attempts says which step it was for.

A :class:`StepChain` holds that bookkeeping for the engine, which decides
when to send and when to make a step durable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.checks.kinds import Observation
from runner.http.client import Completion
from runner.run.turns import fill_answered_turn
from runner.spec.tools import ToolSettings
from runner.transcripts.history import (
    Unscripted,
    answer_calls,
    assistant_message,
    call_parts,
    count_calls,
    reasoning_of,
    scripted_flags,
    tool_calls_of,
)
from runner.transcripts.records import ConversationRecord, TurnRecord
from runner.words import plural


@dataclass(frozen=True, slots=True)
class ToolProblem:
    """Why a tool-calling turn cannot go on: the script does not answer, or it never ends."""

    kind: str
    """``tool_unscripted`` or ``tool_steps``."""
    message: str
    """What happened and what to do."""
    status: int | None = None
    """No HTTP status: the API answered."""


class StepChain:
    """The steps of one turn so far: its record, its calls and the history they added."""

    def __init__(self, turn: TurnRecord, record: ConversationRecord, max_steps: int) -> None:
        self.turn = turn
        self.record = record
        self.max_steps = max_steps
        self.steps: list[dict[str, Any]] = list(turn.steps or [])
        self.attempts: list[dict[str, Any]] = list(turn.attempts)
        self.calls: list[Any] = []
        for message in record.messages[turn.message_index + 1 :]:
            self.calls.extend(tool_calls_of(message))
        self.owed = self._owed_calls()
        counted = record.messages[self._replayed_from() : len(record.messages) - bool(self.owed)]
        self.counts = count_calls(counted)
        self.finished = False
        self.final: Completion
        self._queued_ms: float | None = None

    def _owed_calls(self) -> list[Any]:
        """The calls of a resumed chain's last step that got no results (the script gave none)."""
        messages = self.record.messages
        if not self.steps or len(messages) - 1 <= self.turn.message_index:
            return []
        last = messages[-1]
        return (
            tool_calls_of(last)
            if isinstance(last, dict) and last.get("role") == "assistant"
            else []
        )

    def _replayed_from(self) -> int:
        """Where the replayed turns start in ``messages`` (calls counted from there on)."""
        turns = self.record.turns
        return turns[0].message_index if turns else self.turn.message_index

    @property
    def step(self) -> int:
        """The number of the step to send next."""
        return len(self.steps)

    def add_attempts(self, attempts: list[dict[str, Any]]) -> None:
        """The attempts made for the current step, numbered on from the turn's."""
        for attempt in attempts:
            self.attempts.append({**attempt, "attempt": len(self.attempts) + 1, "step": self.step})

    def answered(
        self,
        completion: Completion,
        latency_ms: float | None,
        tools: ToolSettings,
        queued_ms: float | None = None,
    ) -> ToolProblem | None:
        """Take one step's answer into the history; say why the turn cannot go on, if so.

        ``queued_ms``: how long the step's request waited inside mtrun before it was sent.
        """
        self._queued_ms = queued_ms
        message = completion.message
        # Calls are answered even in a turn that declares no tools: sent back without their
        # results, the history is one every provider refuses (an unscripted call fails).
        calls = tool_calls_of(message)
        if not calls:
            self.record.messages.append({"role": "assistant", "content": completion.content})
            self.final = completion
            self.finished = True
            step = self._step_record(completion, latency_ms)
            if self.steps:
                self.steps.append(step)
            self._fill(completion, latency_ms)
            return None
        self.record.messages.append(assistant_message(message))
        self.calls.extend(calls)
        step = self._step_record(completion, latency_ms)
        self.steps.append(step)
        problem = self._answer(calls, step, tools)
        self.final = completion
        self._fill(completion, latency_ms)
        return problem or self.over_limit()

    def ready(self, tools: ToolSettings) -> ToolProblem | None:
        """Why the next step may not be sent: calls still without results, or the bound.

        A resumed chain whose last answer's calls the script did not answer
        (``tool_unscripted``) keeps that answer: the script is applied to its
        calls again, so the request is never sent twice, and the same
        conversation file fails the same way without a request.
        """
        owed, self.owed = self.owed, []
        problem = self._answer(owed, self.steps[-1], tools) if owed else None
        return problem or self.over_limit()

    def _answer(
        self, calls: list[Any], step: dict[str, Any], tools: ToolSettings
    ) -> ToolProblem | None:
        """The script's result for each of one step's calls, into the history; or why not."""
        flags = scripted_flags(tools, calls, self.counts)
        answers = answer_calls(tools, calls, self.counts)
        if isinstance(answers, Unscripted):
            return self._unscripted(answers)
        step["tool_results"] = [
            {"tool_call_id": a["tool_call_id"], "name": call_parts(c)[1], "scripted": flag}
            for a, c, flag in zip(answers, calls, flags, strict=True)
        ]
        self.record.messages.extend(answers)
        return None

    def over_limit(self) -> ToolProblem | None:
        """Why the next step may not be sent: the turn made ``max_tool_steps`` requests."""
        if len(self.steps) < self.max_steps:
            return None
        return ToolProblem(
            "tool_steps",
            f"turn {self.turn.index + 1}: the model was still calling tools after "
            f"{plural(self.max_steps, 'request')} (max_tool_steps); raise max_tool_steps or script "
            "results that let it answer",
        )

    def _unscripted(self, call: Unscripted) -> ToolProblem:
        return ToolProblem(
            "tool_unscripted",
            f"turn {self.turn.index + 1}: the model called {call.name!r} with arguments "
            f"{call.arguments} and the conversation scripts no result for that call; add a "
            f"rule for it under tool_results: {call.name}, or set unscripted_tool_result",
        )

    def _step_record(self, completion: Completion, latency_ms: float | None) -> dict[str, Any]:
        step: dict[str, Any] = {
            "step": self.step,
            "message_index": len(self.record.messages) - 1,
            "latency_ms": latency_ms,
            "usage": completion.usage,
            "finish_reason": completion.finish_reason,
            "response_id": completion.response_id,
        }
        if self._queued_ms is not None:
            step["queued_ms"] = self._queued_ms
        if completion.first_token_ms is not None:
            step["first_token_ms"] = completion.first_token_ms
        reasoning = reasoning_of(completion.message)
        if reasoning:
            step["reasoning"] = reasoning
        return step

    def _fill(self, completion: Completion, latency_ms: float | None) -> None:
        """The turn's record after this step: the step's fields, sums over the steps."""
        turn = self.turn
        fill_answered_turn(turn, completion, latency_ms)
        turn.queued_ms = self._queued_ms
        turn.attempts = self._labelled()
        # The answer's reasoning in a field of its own ('extra' keeps it too, as before).
        turn.reasoning = reasoning_of(completion.message) or None
        if not self.steps:
            return
        if not self.finished:
            turn.extra = turn.reasoning = None  # the calls and reasoning are in the steps
        turn.steps = self.steps
        latencies = [s["latency_ms"] for s in self.steps if s.get("latency_ms") is not None]
        turn.latency_ms = round(sum(latencies), 3) if latencies else None
        queued = [s["queued_ms"] for s in self.steps if s.get("queued_ms") is not None]
        turn.queued_ms = round(sum(queued), 3) if queued else None
        turn.usage = sum_usage([s.get("usage") for s in self.steps])

    def _labelled(self) -> list[dict[str, Any]]:
        """The attempts, each saying its step only when the turn has steps."""
        if self.steps:
            return self.attempts
        return [{k: v for k, v in a.items() if k != "step"} for a in self.attempts]

    def observation(self, tools: ToolSettings) -> Observation:
        """What the turn's checks look at: the final answer, every call of the turn."""
        completion = self.final
        tokens = (completion.usage or {}).get("completion_tokens")
        return Observation(
            content=completion.content,
            finish_reason=completion.finish_reason,
            latency_ms=self.turn.latency_ms,
            completion_tokens=tokens if isinstance(tokens, int) else None,
            tool_calls=tuple(self.calls),
            tools=tuple(tools.tools),
        )

    def ended(self) -> TurnRecord:
        """The turn's record as it stands when it fails."""
        self.turn.attempts = self._labelled()
        if self.steps:
            self.turn.steps = self.steps
        return self.turn

    def interrupted(self, reason: str) -> None:
        """The run stopped mid-turn: keep the steps answered, drop the request in flight.

        A turn without answered steps leaves the history as before it; one
        with steps stays in the record, marked interrupted, so ``--resume``
        continues after its last step.
        """
        if not self.steps:
            del self.record.messages[self.turn.message_index :]
            return
        turn = self.ended()
        turn.error = {"kind": "interrupted", "status": None, "message": reason}
        self.record.turns.append(turn)


def step_body(body: dict[str, Any], step: int) -> dict[str, Any]:
    """A step's request body: after the first step, a forcing ``tool_choice`` is ``auto``.

    ``required`` or a named function forces a call on every request it is
    sent with, so a chain would only end at ``max_tool_steps``; once the
    model has called, it decides again (as the OpenAI Agents SDK resets it).
    """
    if step > 0 and body.get("tool_choice", "none") != "none":
        body["tool_choice"] = "auto"
    return body


def sum_usage(usages: list[Any]) -> dict[str, Any] | None:
    """Usage summed key by key over steps (keys present in any; nested counts summed too)."""
    total: dict[str, Any] = {}
    for usage in usages:
        if isinstance(usage, dict):
            _add(total, usage)
    return total or None


def _add(total: dict[str, Any], usage: dict[str, Any]) -> None:
    for key, value in usage.items():
        if isinstance(value, bool):
            total.setdefault(key, value)
        elif isinstance(value, int | float):
            before = total.get(key, 0)
            total[key] = before + value if isinstance(before, int | float) else value
        elif isinstance(value, dict):
            inner = total.get(key)
            if not isinstance(inner, dict):
                inner = total[key] = {}
            _add(inner, value)


def reasoning_by_message(
    record: ConversationRecord, current: list[dict[str, Any]]
) -> dict[int, dict[str, Any]]:
    """The reasoning each replayed answer carried, by the index of its message.

    ``current``: the steps of the turn under way, not in ``record.turns`` yet.
    """
    found: dict[int, dict[str, Any]] = {}
    for turn in [*record.turns, TurnRecord(-1, -1, [], steps=current)]:
        if turn.steps:
            for step in turn.steps:
                if isinstance(step, dict) and isinstance(step.get("reasoning"), dict):
                    found[int(step["message_index"])] = step["reasoning"]
        elif turn.reasoning or turn.extra:  # extra: a turn written before 'reasoning' was
            found[turn.message_index + 1] = turn.reasoning or reasoning_of(turn.extra or {})
    return found
