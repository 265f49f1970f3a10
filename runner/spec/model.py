"""Validated conversation specs: what the YAML files ask mtrun to replay.

These are plain frozen data. ``loader.py`` builds them from files and is the
only place that knows about YAML; the engine only ever sees these types.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from runner.checks.kinds import Check
from runner.spec.tools import DEFAULT_MAX_TOOL_STEPS, NO_TOOLS, ToolSettings, empty

DEFAULT_MODEL = "arcee-ai/AFM-4.5B"

MESSAGE_ROLES = ("system", "developer", "user", "assistant", "tool")

MAX_ID_LENGTH = 200
"""Longest id a conversation may have, a matrix's ``--name=value`` parts included."""

FINGERPRINT_PREFIX = "sha256:"
"""What a fingerprint starts with; 64 lowercase hex digits of the digest follow."""


@dataclass(frozen=True, slots=True)
class Message:
    """One pre-filled chat message that precedes the scripted turns."""

    role: str
    """``system``, ``developer``, ``user``, ``assistant`` or ``tool``."""
    content: Any
    """A string, or a list of content parts passed through as given (None only on an
    assistant message with tool calls)."""
    name: str | None = None
    """Optional participant name, passed through to the API."""
    tool_calls: tuple[Mapping[str, Any], ...] | None = None
    """An assistant message's tool calls (``{"id", "type", "function"}``), as written."""
    tool_call_id: str | None = None
    """A ``tool`` message: the id of the call it answers."""

    def as_dict(self) -> dict[str, Any]:
        """The message as the chat-completions API expects it."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name is not None:
            out["name"] = self.name
        if self.tool_calls is not None:
            out["tool_calls"] = [dict(call) for call in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


@dataclass(frozen=True, slots=True)
class Turn:
    """One scripted user turn."""

    content: str | list[dict[str, Any]]
    """The user message sent for this turn: text, or content parts (``{type: text, ...}``,
    ``image_url``, ``input_audio``) as the API takes them."""
    params: Mapping[str, Any] = field(default_factory=empty)
    """Request parameters for this turn only, laid over the conversation's."""
    line: int = 0
    """1-based line of the turn in its file (0 when unknown)."""
    expect: tuple[Check, ...] = ()
    """Expectations on this turn's answer."""
    tools: ToolSettings = NO_TOOLS
    """The tools declared for this turn and their scripted results, resolved at load
    (the turn's own over the conversation's over ``defaults:``)."""


@dataclass(frozen=True, slots=True)
class Conversation:
    """One scripted dialogue, validated and ready to replay."""

    id: str
    """Unique id across the batch; names the conversation in transcripts."""
    source: str
    """Path of the file it came from, as the user gave it."""
    turns: tuple[Turn, ...]
    """The ordered user turns; never empty."""
    model: str | None = None
    """Model named by the file (``--model`` and ``MTRUN_MODEL`` are applied later)."""
    system: str | None = None
    """System prompt sent first, when given."""
    messages: tuple[Message, ...] = ()
    """Pre-filled history sent after the system prompt and before the first turn."""
    params: Mapping[str, Any] = field(default_factory=empty)
    """Request parameters passed through to the API as given."""
    line: int = 0
    """1-based line where the conversation starts in its file (0 when unknown)."""
    expect: tuple[Check, ...] = ()
    """Expectations on every turn's answer."""
    expect_final: tuple[Check, ...] = ()
    """Expectations on the last turn's answer."""
    variant_of: str | None = None
    """With several ``--model``: the id this conversation is a per-model copy of."""
    group: str | None = None
    """With ``--repeat``: the id this conversation is a repetition of."""
    repeat: int | None = None
    """With ``--repeat``: which repetition (1-based)."""
    max_tool_steps: int = DEFAULT_MAX_TOOL_STEPS
    """Requests one turn may make while the model keeps calling tools."""
    reasoning: str = "tool_chain"
    """Which reasoning goes back into the history (see ``spec.tools.REASONING_POLICIES``)."""

    def checks_for(self, index: int) -> tuple[Check, ...]:
        """Every expectation that applies to turn ``index``'s answer."""
        final = self.expect_final if index == len(self.turns) - 1 else ()
        return (*self.turns[index].expect, *self.expect, *final)

    def for_model(self, model: str) -> Conversation:
        """This conversation run with ``model``, as its own conversation ``ID@MODEL``."""
        return replace(self, id=f"{self.id}@{model}", model=model, variant_of=self.id)

    def repetition(self, k: int) -> Conversation:
        """The ``k``-th (from 1) of independent runs of this conversation, as ``ID#k``."""
        return replace(self, id=f"{self.id}#{k}", group=self.id, repeat=k)

    def prefix(self) -> list[dict[str, Any]]:
        """The messages sent before the first scripted turn."""
        head: list[dict[str, Any]] = []
        if self.system is not None:
            head.append({"role": "system", "content": self.system})
        head.extend(m.as_dict() for m in self.messages)
        return head


@dataclass(frozen=True, slots=True)
class RequestSettings:
    """What will be sent for a conversation once every override is applied."""

    conversation: Conversation
    """The conversation as loaded."""
    model: str
    """The model after ``--model``, the file, ``MTRUN_MODEL`` and the default."""
    params: Mapping[str, Any]
    """Conversation parameters after ``--param`` overrides."""
    reasoning: str = "tool_chain"
    """Which reasoning goes back into the history: the conversation's, or ``--reasoning``."""

    @property
    def uses_tools(self) -> bool:
        """Whether any turn declares tools (its requests may take several steps)."""
        return any(t.tools.tools for t in self.conversation.turns)

    def turn_body(self, index: int, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The request body of turn ``index`` (any of its steps) with this history."""
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        body.update(self.turn_params(index))
        tools = self.conversation.turns[index].tools.tools
        if tools:
            body["tools"] = [dict(t) for t in tools]
        return body

    def turn_params(self, index: int) -> dict[str, Any]:
        """Parameters for one turn: the conversation's, then the turn's own."""
        merged = dict(self.params)
        for key, value in self.conversation.turns[index].params.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return merged

    def fingerprint(self) -> str:
        """A stable hash of everything that decides the requests' content.

        Resuming compares it with the one stored in the transcript, so a
        conversation whose file or parameters changed is never silently
        continued from a history it would not have produced.
        """
        conv = self.conversation
        material: dict[str, Any] = {
            "model": self.model,
            "prefix": conv.prefix(),
            "params": dict(self.params),
            "turns": [{"content": t.content, "params": dict(t.params)} for t in conv.turns],
        }
        if self.uses_tools:  # only then: fingerprints of conversations without tools stay
            material["tools"] = [_tools_material(t.tools) for t in conv.turns]
            material["max_tool_steps"] = conv.max_tool_steps
            material["reasoning"] = self.reasoning
        blob = json.dumps(material, sort_keys=True, separators=(",", ":"))
        return FINGERPRINT_PREFIX + hashlib.sha256(blob.encode("ascii")).hexdigest()


def _tools_material(settings: ToolSettings) -> dict[str, Any]:
    """A turn's tools and scripted results as plain data, for the fingerprint."""
    return {
        "tools": [dict(t) for t in settings.tools],
        "results": {name: script.as_data() for name, script in sorted(settings.results.items())},
        "unscripted_result": settings.unscripted_result,
    }


def apply_overrides(
    conversation: Conversation,
    *,
    model_override: str | None = None,
    env_model: str | None = None,
    param_overrides: Mapping[str, Any] | None = None,
) -> RequestSettings:
    """Apply the model and parameter precedence rules to one conversation.

    Model: ``--model``, else the conversation's, else ``MTRUN_MODEL``, else the
    default. Parameters: the conversation's, with ``--param`` overrides on top;
    an override whose value is null removes that parameter.
    """
    model = model_override or conversation.model or env_model or DEFAULT_MODEL
    params = dict(conversation.params)
    for key, value in (param_overrides or {}).items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    return RequestSettings(
        conversation=conversation, model=model, params=params, reasoning=conversation.reasoning
    )
