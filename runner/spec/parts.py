"""The parts of a conversation, read from its nodes: settings, id, turns, messages, params.

Expectations are read here too, and parsed by ``runner/checks/kinds.py``.

Each part is checked field by field; the first problem raises an
:class:`~runner.errors.InputError` pointed at the value it is about.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from runner.checks.base import CheckSpecError
from runner.checks.kinds import Check, parse_expect
from runner.spec.content import ContentReader
from runner.spec.model import MAX_ID_LENGTH, MESSAGE_ROLES, Message, Turn
from runner.spec.nodes import NodeReader, join, locate
from runner.spec.toolspec import ScriptedResults, ToolReader, ToolSet
from runner.spec.variables import Variables, braced_name
from runner.spec.yamlsafe import NULL_TAG

CONVERSATION_KEYS = (
    "id",
    "model",
    "models",
    "system",
    "params",
    "messages",
    "expect",
    "expect_final",
    "vars",
    "tools",
    "tool_results",
    "unscripted_tool_result",
    "max_tool_steps",
    "reasoning",
    "turns",
)
DEFAULTS_KEYS = tuple(key for key in CONVERSATION_KEYS if key not in ("id", "turns"))
"""What ``defaults:`` may set: everything a conversation may, except its id and turns."""
TURN_KEYS = ("content", "params", "expect", "tools", "tool_results")
MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")
RESERVED_PARAMS: Mapping[str, str] = {
    "model": "set 'model' at the conversation level",
    "messages": "'messages' cannot be a parameter; use the conversation's 'messages'",
    "stream": "streaming is not supported in params",
}
"""Parameter names refused in ``params``, with the reason given to the user."""

_EMPTY_TURN = "empty turn; write the user's message or remove the turn"
T = TypeVar("T")
_ONLY_ASSISTANT = "only an assistant message has 'tool_calls'"
_ONLY_TOOL = "only a 'role: tool' message has 'tool_call_id'"


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == NULL_TAG


@dataclass(frozen=True)
class Settings:
    """What a conversation and ``defaults:`` may both set; None when not given."""

    model: str | None = None
    models: tuple[str, ...] | None = None
    system: str | None = None
    params: Mapping[str, Any] | None = None
    messages: tuple[Message, ...] | None = None
    expect: tuple[Check, ...] | None = None
    expect_final: tuple[Check, ...] | None = None
    tools: ToolSet | None = None
    tool_results: ScriptedResults | None = None
    unscripted_tool_result: tuple[str | None] | None = None
    """Wrapped, so a null given (fail on unscripted calls) differs from none given."""
    max_tool_steps: int | None = None
    reasoning: str | None = None

    def over(self, base: Settings) -> Settings:
        """These settings laid over ``base``; params merge key by key, null removes one."""
        params = {**(base.params or {}), **(self.params or {})}
        return Settings(
            model=base.model if self.model is None else self.model,
            # A conversation's own 'model' wins over the defaults' 'models'.
            models=self.models
            if self.models is not None
            else (None if self.model is not None else base.models),
            system=base.system if self.system is None else self.system,
            params={key: value for key, value in params.items() if value is not None},
            messages=base.messages if self.messages is None else self.messages,
            expect=base.expect if self.expect is None else self.expect,
            expect_final=base.expect_final if self.expect_final is None else self.expect_final,
            tools=base.tools if self.tools is None else self.tools,
            tool_results={**(base.tool_results or {}), **(self.tool_results or {})},
            unscripted_tool_result=_first(self.unscripted_tool_result, base.unscripted_tool_result),
            max_tool_steps=_first(self.max_tool_steps, base.max_tool_steps),
            reasoning=_first(self.reasoning, base.reasoning),
        )


def _first(value: T | None, base: T | None) -> T | None:
    """``value`` when given, else ``base``."""
    return base if value is None else value


class PartsReader:
    """Reads the parts of one file's conversations, vars filled in by ``variables``."""

    def __init__(self, reader: NodeReader, variables: Variables) -> None:
        self.reader = reader
        self.variables = variables
        self.content = ContentReader(reader, variables)
        self.tools: ToolReader = self.content.tools
        self.parsed_expect: dict[tuple[int, str], tuple[Check, ...]] = {}
        """Expectations by node and scope: they use no vars, so a matrix parses them once."""

    def settings(self, node: Node, field: str, allowed: Sequence[str], what: str) -> Settings:
        """Model, system, params and messages of a conversation or of ``defaults:``."""
        read = self.reader
        if not isinstance(node, MappingNode):
            raise read.type_error(node, field, what)
        items = read.items(node, field)
        read.check_keys(items, field, allowed)
        given = {key: (items[key][1], join(field, key)) for key in DEFAULTS_KEYS if key in items}
        model = system = None
        if "model" in given:
            model = read.nonblank(
                *given["model"], "must not be empty; name a model or remove 'model'"
            )
        models = None
        if "models" in given:
            if "model" in given:
                key_node = items["models"][0]
                raise read.error(key_node, given["models"][1], "give 'model' or 'models', not both")
            models = self.model_list(*given["models"])
        if "system" in given:
            system = self.variables.filled(
                *given["system"], "must not be empty; write a system prompt or remove 'system'"
            )
        return Settings(
            model=model,
            models=models,
            system=system,
            params=self.params(*given["params"]) if "params" in given else None,
            messages=self.messages(*given["messages"]) if "messages" in given else None,
            expect=self.expect(*given["expect"], "every_turn") if "expect" in given else None,
            expect_final=(
                self.expect(*given["expect_final"], "final") if "expect_final" in given else None
            ),
            **self.tool_settings(given),
        )

    def tool_settings(self, given: Mapping[str, tuple[Node, str]]) -> dict[str, Any]:
        """The tool parts of a conversation or of ``defaults:`` that are given."""
        tools = self.tools
        readers: dict[str, Any] = {
            "tools": tools.tools,
            "tool_results": tools.results,
            "unscripted_tool_result": lambda n, f: (tools.unscripted(n, f),),
            "max_tool_steps": tools.max_steps,
            "reasoning": tools.reasoning,
        }
        return {key: read(*given[key]) for key, read in readers.items() if key in given}

    def model_list(self, node: Node, field: str) -> tuple[str, ...]:
        """``models:``: the conversation runs once per model, as ``ID@MODEL``."""
        if not isinstance(node, SequenceNode) or not node.value:
            raise self.reader.type_error(node, field, "a non-empty list of model names")
        names = []
        for i, item in enumerate(node.value):
            name = self.reader.nonblank(item, f"{field}[{i}]", "must not be empty; name a model")
            if name in names:
                raise self.reader.error(item, f"{field}[{i}]", f"model {name!r} is listed twice")
            names.append(name)
        return tuple(names)

    def conversation_id(self, node: Node, field: str) -> str:
        """``id:``: not blank, not too long, no control characters."""
        value = self.reader.nonblank(
            node, field, "must not be empty; name the conversation or remove 'id'"
        )
        if len(value) > MAX_ID_LENGTH:
            message = f"too long ({len(value)} characters; at most {MAX_ID_LENGTH})"
            raise self.reader.error(node, field, message)
        for char in value:
            if unicodedata.category(char) == "Cc":
                message = f"contains a control character (U+{ord(char):04X})"
                raise self.reader.error(node, field, message)
        return value

    def turns(self, node: Node, field: str, settings: Settings) -> tuple[Turn, ...]:
        """``turns:``: a non-empty list of user turns, tools resolved over ``settings``."""
        if not isinstance(node, SequenceNode):
            raise self.reader.type_error(node, field, "a list of turns")
        if not node.value:
            raise self.reader.error(node, field, "no turns; add at least one user turn")
        return tuple(
            self.turn(item, f"{field}[{i}]", settings) for i, item in enumerate(node.value)
        )

    def turn(self, node: Node, field: str, settings: Settings) -> Turn:
        """One turn: its text, or a mapping with ``content`` and its own params and expect."""
        line = node.start_mark.line + 1
        unscripted = (settings.unscripted_tool_result or (None,))[0]
        if not isinstance(node, MappingNode) or braced_name(node) is not None:
            expected = "a string or a mapping with 'content'"
            tools = self.tools.resolve(settings.tools, settings.tool_results, None, unscripted)
            content = self.variables.filled(node, field, _EMPTY_TURN, expected)
            return Turn(content=content, line=line, tools=tools)
        items = self.reader.items(node, field)
        self.reader.check_keys(items, field, TURN_KEYS)
        content_node = self.reader.require(node, items, field, "content")
        params: dict[str, Any] = {}
        if "params" in items:
            params = self.params(items["params"][1], join(field, "params"))
        expect: tuple[Check, ...] = ()
        if "expect" in items:
            expect = self.expect(items["expect"][1], join(field, "expect"), "turn")
        own: dict[str, tuple[Node, str]] = {
            key: (items[key][1], join(field, key))
            for key in ("tools", "tool_results")
            if key in items
        }
        given = self.tool_settings(own)
        tools = self.tools.resolve(
            given.get("tools", settings.tools),
            {**(settings.tool_results or {}), **given.get("tool_results", {})},
            given.get("tool_results"),
            unscripted,
        )
        return Turn(
            content=self.turn_content(content_node, join(field, "content")),
            params=params,
            line=line,
            expect=expect,
            tools=tools,
        )

    def turn_content(self, node: Node, field: str) -> str | list[dict[str, Any]]:
        """A turn's text, or its content parts."""
        if isinstance(node, SequenceNode):
            return self.content.parts(node, field)
        return self.variables.filled(
            node, field, _EMPTY_TURN, "a string or a list of content parts"
        )

    def expect(self, node: Node, field: str, scope: str) -> tuple[Check, ...]:
        """Expectations, pointing any problem at the value it is about."""
        known = self.parsed_expect.get((id(node), scope))
        if known is not None:
            return known
        try:
            checks = parse_expect(self.reader.plain(node, field), field=field, scope=scope)
        except CheckSpecError as exc:
            raise self.reader.error(
                locate(node, exc.field[len(field) :]), exc.field, exc.message
            ) from None
        self.parsed_expect[id(node), scope] = checks
        return checks

    def params(self, node: Node, field: str) -> dict[str, Any]:
        """API parameters, passed through as written; :data:`RESERVED_PARAMS` refused."""
        if not isinstance(node, MappingNode):
            raise self.reader.type_error(node, field, "a mapping of API parameters")
        params: dict[str, Any] = {}
        for name, (key_node, value_node) in self.reader.items(node, field).items():
            if name in RESERVED_PARAMS:
                raise self.reader.error(key_node, join(field, name), RESERVED_PARAMS[name])
            params[name] = self.reader.plain(value_node, join(field, name))
        return params

    def messages(self, node: Node, field: str) -> tuple[Message, ...]:
        """``messages:``: the history sent before the first turn."""
        if not isinstance(node, SequenceNode):
            raise self.reader.type_error(node, field, "a list of messages")
        messages = tuple(self.message(item, f"{field}[{i}]") for i, item in enumerate(node.value))
        self.content.check_pairing(messages, node.value, field)
        return messages

    def message(self, node: Node, field: str) -> Message:
        """One message: a known role, content, and an optional name."""
        read = self.reader
        if not isinstance(node, MappingNode):
            raise read.type_error(node, field, "a message (a mapping with 'role' and 'content')")
        items = read.items(node, field)
        read.check_keys(items, field, MESSAGE_KEYS)
        role_node = read.require(node, items, field, "role")
        role = read.text(role_node, join(field, "role"))
        if role not in MESSAGE_ROLES:
            message = f"unknown role '{role}'; use one of: {', '.join(MESSAGE_ROLES)}"
            raise read.error(role_node, join(field, "role"), message)
        tool_calls = tool_call_id = None
        if "tool_calls" in items:
            if role != "assistant":
                raise read.error(items["tool_calls"][0], join(field, "tool_calls"), _ONLY_ASSISTANT)
            tool_calls = self.content.tool_calls(items["tool_calls"][1], join(field, "tool_calls"))
        if role == "tool":
            id_node = read.require(node, items, field, "tool_call_id")
            tool_call_id = read.nonblank(id_node, join(field, "tool_call_id"), "must not be empty")
        elif "tool_call_id" in items:
            raise read.error(items["tool_call_id"][0], join(field, "tool_call_id"), _ONLY_TOOL)
        content = None
        if tool_calls is None or ("content" in items and not _is_null(items["content"][1])):
            content_node = read.require(node, items, field, "content")
            content = self.message_content(content_node, join(field, "content"))
        name = None
        if "name" in items:
            name = read.nonblank(items["name"][1], join(field, "name"), "must not be empty")
        return Message(role, content, name, tool_calls, tool_call_id)

    def message_content(self, node: Node, field: str) -> Any:
        """A message's text (vars filled in), or its content parts as written."""
        if not isinstance(node, SequenceNode):
            expected = "a string or a list of content parts"
            return self.variables.filled(node, field, "must not be empty", expected)
        if not node.value:
            raise self.reader.error(node, field, "must not be an empty list; add a content part")
        for i, part in enumerate(node.value):
            if not isinstance(part, MappingNode):
                expected = "a content part (a mapping)"
                raise self.reader.type_error(part, f"{field}[{i}]", expected)
        return self.reader.plain(node, field)
