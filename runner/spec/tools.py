"""Tools a conversation declares, and the results its script gives when the model calls one.

A model that answers with ``tool_calls`` expects one ``role: tool`` message
per call before it goes on. mtrun never runs tools: the conversation file
scripts what each call gets back (``tool_results:``), so a dialogue that uses
tools replays as exactly as one that does not. A call the script does not
answer fails the conversation by default (a made-up result would test
nothing); ``unscripted_tool_result`` answers it with a fixed text instead.

A tool's script is either rules, tried in order (the first whose ``when``
is a subset of the call's arguments, or whose ``when_schema`` the arguments
validate against, or that has neither, answers), or a ``sequence``
answered call by call. Results are the tool message's content: a string as
written, any other YAML value as compact JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

# One subset rule for 'when:' and for 'tool_called: {args: ...}'; checks may not import spec.

if TYPE_CHECKING:
    from runner.checks.structured import Schema

EMPTY: Mapping[str, Any] = MappingProxyType({})
"""The one empty mapping every spec without params or scripted results shares: a batch of
100,000 conversations would otherwise hold an empty dict per conversation and per turn.
A dataclass takes it as ``field(default_factory=empty)`` (no unhashable default)."""


def empty() -> Mapping[str, Any]:
    """:data:`EMPTY`, for a dataclass field's ``default_factory``."""
    return EMPTY


REASONING_POLICIES = ("never", "tool_chain", "always")
"""What reasoning goes back into the history: never; only on the assistant messages of
a tool-call chain since the last user message (the default, which DeepSeek, OpenRouter
and Qwen require); or on every assistant message."""

REASONING_FIELDS = ("reasoning_content", "reasoning", "reasoning_details")
"""Fields of an assistant message that carry reasoning (DeepSeek, vLLM, OpenRouter)."""

DEFAULT_MAX_TOOL_STEPS = 10
"""Requests one turn may make while the model keeps calling tools."""


@dataclass(frozen=True, slots=True)
class ToolRule:
    """One scripted answer to a tool: what it returns, and which calls it answers."""

    result: str
    """The tool message's content."""
    when: Mapping[str, Any] | None = None
    """Answers calls whose arguments contain these keys with these values (a subset match)."""
    when_schema: Schema | None = None
    """Answers calls whose arguments validate against this JSON Schema (checked at load,
    like a ``json_schema`` expectation: it refers only inside itself and always ends)."""

    def answers(self, arguments: Any) -> bool:
        """Whether this rule answers a call with these (parsed) arguments."""
        from runner.checks.tools import is_subset  # the check kinds' rule; loaded when used

        if self.when is not None and not is_subset(self.when, arguments):
            return False
        if self.when_schema is not None:
            if isinstance(arguments, _NotJSON):
                return False
            try:
                return bool(self.when_schema.validator.is_valid(arguments))
            except RecursionError:
                return False
        return True


@dataclass(frozen=True, slots=True)
class ToolScript:
    """Everything one tool answers: rules tried in order, or a sequence call by call."""

    rules: tuple[ToolRule, ...] = ()
    sequence: tuple[str, ...] = ()

    def result(self, arguments: Any, call_number: int) -> str | None:
        """The result for the ``call_number``-th (0-based) call with ``arguments``, or None."""
        if self.sequence:
            return self.sequence[call_number] if call_number < len(self.sequence) else None
        for rule in self.rules:
            if rule.answers(arguments):
                return rule.result
        return None

    def as_data(self) -> dict[str, Any]:
        """A plain form for fingerprints."""
        if self.sequence:
            return {"sequence": list(self.sequence)}
        return {
            "rules": [
                {
                    "result": r.result,
                    "when": r.when,
                    "when_schema": None if r.when_schema is None else r.when_schema.schema,
                }
                for r in self.rules
            ]
        }


@dataclass(frozen=True, slots=True)
class ToolSettings:
    """A turn's tools: what is declared to the model and what the script answers."""

    tools: tuple[Mapping[str, Any], ...] = ()
    """OpenAI function definitions, sent as the request's ``tools``."""
    results: Mapping[str, ToolScript] = field(default_factory=empty)
    """Scripted results by tool name."""
    unscripted_result: str | None = None
    """Content for a call no script answers; None fails the conversation instead."""


NO_TOOLS = ToolSettings()
"""The tool settings of every turn that declares no tool (one object, shared)."""


def scripted_result(
    settings: ToolSettings, name: str, arguments: str, call_number: int
) -> str | None:
    """The tool message content for one call, or None when nothing answers it.

    ``arguments`` is the call's raw argument text; text that is not JSON only
    matches rules without ``when``/``when_schema``. ``call_number`` counts the
    earlier calls of the same tool in the conversation (for sequences).
    """
    script = settings.results.get(name)
    found = None
    if script is not None:
        found = script.result(parse_arguments(arguments), call_number)
    return found if found is not None else settings.unscripted_result


def result_text(value: Any) -> str:
    """A scripted result as the tool message's content: strings as written, else JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class _NotJSON:
    """Arguments that are not JSON: only rules without conditions answer them."""


def parse_arguments(arguments: str) -> Any:
    """A call's arguments parsed, or a marker that matches no condition when not JSON."""
    try:
        return json.loads(arguments)
    except (TypeError, ValueError, RecursionError):
        return _NotJSON()
