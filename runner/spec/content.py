"""Reading message shapes beyond plain text: content parts, tool calls and their pairing.

A user turn may be content parts (text, an image, audio); a pre-filled
assistant message may carry ``tool_calls``, each answered by a ``role: tool``
message before the next user or assistant message, as the API requires.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from yaml.nodes import MappingNode, Node, SequenceNode

from runner.spec.model import Message
from runner.spec.nodes import NodeReader, join
from runner.spec.toolspec import ToolReader
from runner.spec.variables import Variables

PART_TYPES = ("text", "image_url", "input_audio")
"""Content part types a user turn may hold."""
IMAGE_DETAILS = ("auto", "low", "high")
AUDIO_FORMATS = ("wav", "mp3")
TOOL_CALL_KEYS = ("id", "type", "function")


class ContentReader:
    """Reads content parts and tool calls of one file's conversations."""

    def __init__(self, reader: NodeReader, variables: Variables) -> None:
        self.reader = reader
        self.variables = variables
        self.tools = ToolReader(reader)

    def parts(self, node: SequenceNode, field: str) -> list[dict[str, Any]]:
        """A user turn's content parts, vars filled into text parts."""
        if not node.value:
            raise self.reader.error(node, field, "must not be an empty list; add a content part")
        return [self.part(item, f"{field}[{i}]") for i, item in enumerate(node.value)]

    def part(self, node: Node, field: str) -> dict[str, Any]:
        """A ``text``, ``image_url`` or ``input_audio`` part."""
        read = self.reader
        if not isinstance(node, MappingNode):
            raise read.type_error(node, field, "a content part (a mapping with 'type')")
        items = read.items(node, field)
        type_node = read.require(node, items, field, "type")
        kind = read.text(type_node, join(field, "type"))
        if kind not in PART_TYPES:
            message = f"unknown content part type '{kind}'; use one of: {', '.join(PART_TYPES)}"
            raise read.error(type_node, join(field, "type"), message)
        read.check_keys(items, field, ("type", kind))
        value = read.require(node, items, field, kind)
        where = join(field, kind)
        if kind == "text":
            text = self.variables.filled(value, where, "must not be empty; write the text")
            return {"type": "text", "text": text}
        if kind == "image_url":
            self.options(value, where, "url", "detail", IMAGE_DETAILS)
        else:
            self.options(value, where, "data", "format", AUDIO_FORMATS, required=True)
        return {"type": kind, kind: read.plain(value, where)}

    def options(
        self,
        node: Node,
        field: str,
        main: str,
        choice: str,
        choices: Sequence[str],
        *,
        required: bool = False,
    ) -> None:
        """A part's mapping: ``main`` a non-blank string, ``choice`` one of ``choices``."""
        read = self.reader
        if not isinstance(node, MappingNode):
            raise read.type_error(node, field, f"a mapping with '{main}'")
        items = read.items(node, field)
        read.check_keys(items, field, (main, choice))
        main_node = read.require(node, items, field, main)
        read.nonblank(main_node, join(field, main), "must not be empty")
        if required:
            read.require(node, items, field, choice)
        if choice in items:
            value = read.text(items[choice][1], join(field, choice))
            if value not in choices:
                message = f"unknown {choice} '{value}'; use one of: {', '.join(choices)}"
                raise read.error(items[choice][1], join(field, choice), message)

    def tool_calls(self, node: Node, field: str) -> tuple[dict[str, Any], ...]:
        """An assistant message's ``tool_calls``: ``{id, type: function, function}`` each."""
        read = self.reader
        if not isinstance(node, SequenceNode) or not node.value:
            raise read.type_error(node, field, "a non-empty list of tool calls")
        calls = []
        for i, item in enumerate(node.value):
            where = f"{field}[{i}]"
            if not isinstance(item, MappingNode):
                raise read.type_error(item, where, "a tool call (a mapping with 'id')")
            items = read.items(item, where)
            read.check_keys(items, where, TOOL_CALL_KEYS)
            read.nonblank(read.require(item, items, where, "id"), join(where, "id"), "empty id")
            type_node = read.require(item, items, where, "type")
            if read.text(type_node, join(where, "type")) != "function":
                raise read.error(type_node, join(where, "type"), "only 'function' calls exist")
            function = read.require(item, items, where, "function")
            self.function(function, join(where, "function"))
            calls.append(read.plain(item, where))
        return tuple(calls)

    def function(self, node: Node, field: str) -> None:
        """A call's ``function``: a declared-looking name and its arguments as text."""
        read = self.reader
        if not isinstance(node, MappingNode):
            raise read.type_error(node, field, "a mapping with 'name' and 'arguments'")
        items = read.items(node, field)
        read.check_keys(items, field, ("name", "arguments"))
        self.tools.name(read.require(node, items, field, "name"), join(field, "name"))
        arguments = read.require(node, items, field, "arguments")
        read.text(arguments, join(field, "arguments"), "the arguments as JSON text (a string)")

    def check_pairing(self, messages: Sequence[Message], nodes: Sequence[Node], field: str) -> None:
        """Every tool call answered by a tool message before the next user or assistant one."""
        open_calls: dict[str, str] = {}
        for i, (message, node) in enumerate(zip(messages, nodes, strict=True)):
            where = f"{field}[{i}]"
            if message.role == "tool":
                call_id = message.tool_call_id or ""
                if call_id not in open_calls:
                    text = f"answers no open tool call '{call_id}'; it must follow the call"
                    raise self.reader.error(node, join(where, "tool_call_id"), text)
                del open_calls[call_id]
                continue
            if message.role in ("user", "assistant") and open_calls:
                raise self.unanswered(node, where, open_calls)
            for call in message.tool_calls or ():
                call_id = str(call["id"])
                if call_id in open_calls:
                    raise self.reader.error(node, where, f"tool call id '{call_id}' is used twice")
                open_calls[call_id] = where
        if open_calls:
            raise self.unanswered(nodes[-1], f"{field}[{len(nodes) - 1}]", open_calls)

    def unanswered(self, node: Node, field: str, open_calls: dict[str, str]) -> Exception:
        """The error for a tool call no tool message answered."""
        call_id, where = next(iter(open_calls.items()))
        message = (
            f"tool call '{call_id}' of {where} is not answered; add "
            f"{{role: tool, tool_call_id: {call_id}, content: ...}} right after it"
        )
        return self.reader.error(node, field, message)
