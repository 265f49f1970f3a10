"""The history of a turn that calls tools: what is kept, what is sent back, what answers a call.

A turn is steps (see docs/design/tool-calls.md). When an answer carries
``tool_calls``, the history keeps the assistant message as the API accepts
it back (:func:`assistant_message`), then one ``role: tool`` message per call
with the script's result (:func:`answer_calls`). Reasoning never enters
``messages``: each step's reasoning fields are recorded on its step record,
and :func:`with_reasoning` puts them back on the assistant messages the
conversation's policy names when a request is built.

The engine (building the history) and resume (checking a journaled step is
the one the script gives) share these, so the two can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runner.spec.tools import REASONING_FIELDS, ToolSettings, parse_arguments, scripted_result

KEPT_FIELDS = ("tool_calls", "refusal", "name")
"""Fields of a tool-calling answer kept on its assistant message, besides role and content."""


def tool_calls_of(message: Mapping[str, Any]) -> list[Any]:
    """The calls an assistant message makes (none when it makes none, or they are odd)."""
    calls = message.get("tool_calls")
    return list(calls) if isinstance(calls, list) and calls else []


def assistant_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A tool-calling answer as the history keeps it: content as received, calls verbatim."""
    kept: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    for key in KEPT_FIELDS:
        if message.get(key) is not None:
            kept[key] = message[key]
    return kept


def reasoning_of(message: Mapping[str, Any]) -> dict[str, Any]:
    """The reasoning fields an answer carries, as they arrived (empty ones left out)."""
    return {k: message[k] for k in REASONING_FIELDS if message.get(k) not in (None, "", [], {})}


@dataclass(frozen=True, slots=True)
class Unscripted:
    """A call the conversation's script does not answer."""

    name: str
    """The tool called."""
    arguments: str
    """The call's argument text, as the model sent it."""


def call_parts(call: Any) -> tuple[str, str, str]:
    """A call's id, tool name and argument text (empty strings where missing)."""
    call = call if isinstance(call, Mapping) else {}
    function = call.get("function")
    function = function if isinstance(function, Mapping) else {}
    arguments = function.get("arguments")
    return (
        str(call.get("id") or ""),
        str(function.get("name") or ""),
        arguments if isinstance(arguments, str) else "",
    )


def count_calls(messages: Sequence[Any]) -> dict[str, int]:
    """How many calls of each tool the assistant messages of ``messages`` make."""
    counts: dict[str, int] = {}
    for message in messages:
        if isinstance(message, Mapping) and message.get("role") == "assistant":
            for call in tool_calls_of(message):
                name = call_parts(call)[1]
                counts[name] = counts.get(name, 0) + 1
    return counts


def answer_calls(
    settings: ToolSettings, calls: Sequence[Any], counts: dict[str, int]
) -> list[dict[str, Any]] | Unscripted:
    """One tool message per call, in order, or the first call nothing answers.

    ``counts`` holds the earlier calls of each tool in the conversation; it
    is advanced past these calls.
    """
    messages = []
    for call in calls:
        call_id, name, arguments = call_parts(call)
        content = scripted_result(settings, name, arguments, counts.get(name, 0))
        counts[name] = counts.get(name, 0) + 1
        if content is None:
            return Unscripted(name, arguments)
        messages.append({"role": "tool", "tool_call_id": call_id, "content": content})
    return messages


def scripted_flags(
    settings: ToolSettings, calls: Sequence[Any], counts: dict[str, int]
) -> list[bool]:
    """For each call, whether the script answers it (False: ``unscripted_tool_result`` does)."""
    own = dict(counts)
    flags = []
    for call in calls:
        _, name, arguments = call_parts(call)
        script = settings.results.get(name)
        number = own.get(name, 0)
        own[name] = number + 1
        flags.append(
            script is not None and script.result(parse_arguments(arguments), number) is not None
        )
    return flags


def with_reasoning(
    messages: Sequence[dict[str, Any]], reasoning: Mapping[int, Mapping[str, Any]], policy: str
) -> list[dict[str, Any]]:
    """``messages`` as sent: reasoning put back on the assistant messages ``policy`` names.

    ``reasoning`` maps a message index to the reasoning its answer carried.
    ``tool_chain``: only the messages after the last user message; ``always``:
    every one; ``never``: none.
    """
    out = list(messages)
    if policy == "never" or not reasoning:
        return out
    after = 0
    if policy == "tool_chain":
        users = [i for i, m in enumerate(out) if m.get("role") == "user"]
        after = users[-1] + 1 if users else 0
    for index, fields in reasoning.items():
        if after <= index < len(out) and fields and out[index].get("role") == "assistant":
            out[index] = {**out[index], **fields}
    return out
