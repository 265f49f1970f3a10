"""Comparing the tool exchange of one turn in two runs: the first step whose calls differ.

Steps are aligned by position (the steps that called tools, in order). Two
steps are the same when they made the same number of calls with the same
names and the same arguments, in order; arguments that are JSON text are
compared as JSON values (so spacing and key order do not count), other
arguments as given. Call ids never count: providers make them up per request.
A turn whose runs called tools in a different number of steps differs at the
first step one of them lacks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from runner.review.diff_model import ToolCall, ToolChange
from runner.review.view import ARGUMENTS_PARSED, StepView, tool_steps
from runner.transcripts.fields import as_text as _text
from runner.transcripts.fields import shallow, to_json


def diff_tools(
    base: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    base_messages: Sequence[Any],
    new_messages: Sequence[Any],
) -> ToolChange | None:
    """The first step where the turn's tool calls differ; None when they agree."""
    if base is None or new is None:
        return None
    olds, news = tool_steps(base, base_messages), tool_steps(new, new_messages)
    for step in range(max(len(olds), len(news))):
        old = _calls(olds[step]) if step < len(olds) else None
        now = _calls(news[step]) if step < len(news) else None
        if old is None or now is None or _key(old) != _key(now):
            return ToolChange(step, len(olds), len(news), old, now)
    return None


def _calls(step: StepView) -> tuple[ToolCall, ...]:
    return tuple(ToolCall(c.call_id, c.name, _arguments(step, n)) for n, c in enumerate(step.calls))


def _arguments(step: StepView, position: int) -> Any:
    """The recorded arguments of the step's call at ``position`` (bounded in depth)."""
    calls = [c for c in step.message.get("tool_calls") or () if isinstance(c, Mapping)]
    function = calls[position].get("function") if position < len(calls) else None
    return shallow(function.get("arguments")) if isinstance(function, Mapping) else None


def _key(calls: Sequence[ToolCall]) -> list[tuple[str, str]]:
    return [(c.name, _canonical(c.arguments)) for c in calls]


def _canonical(arguments: Any) -> str:
    if isinstance(arguments, str) and len(arguments) <= ARGUMENTS_PARSED:
        try:
            return to_json(json.loads(arguments), sort_keys=True)
        except (ValueError, RecursionError):
            return "text:" + arguments
    return "text:" + _text(arguments) if isinstance(arguments, str) else to_json(arguments)
