"""Reading the tool parts of a conversation: ``tools:``, ``tool_results:`` and their limits.

``tools.py`` holds the types; this module builds them from nodes, every
problem pointed at its value like any other load error. ``tools:`` are OpenAI
function definitions whose ``parameters`` are checked like a ``json_schema``
expectation; ``tool_results:`` scripts what each call gets back (rules, a
scalar for every call, a ``sequence``, or one ``{result: ...}``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from runner.checks.base import CheckSpecError
from runner.checks.structured import Schema, parse_schema
from runner.spec.nodes import NodeReader, join, locate
from runner.spec.tools import (
    NO_TOOLS,
    REASONING_POLICIES,
    ToolRule,
    ToolScript,
    ToolSettings,
    result_text,
)
from runner.spec.yamlsafe import NULL_TAG

TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
"""A function name the OpenAI API accepts."""
TOOL_KEYS = ("type", "function")
FUNCTION_KEYS = ("name", "description", "parameters", "strict")
RULE_KEYS = ("when", "when_schema", "result")
MAX_TOOL_STEPS_LIMIT = 100
"""Largest ``max_tool_steps`` a file may set."""

ToolSet = tuple[Mapping[str, Any], ...]
"""OpenAI function definitions, as written."""
ScriptedResults = dict[str, tuple[ToolScript, Node, str]]
"""Scripted results by tool name, with the key node and field they were written at."""


class ToolReader:
    """Reads the tool parts of one file's conversations."""

    def __init__(self, reader: NodeReader) -> None:
        self.reader = reader

    def resolve(
        self,
        tools: ToolSet | None,
        results: ScriptedResults | None,
        own: ScriptedResults | None,
        unscripted: str | None,
    ) -> ToolSettings:
        """A turn's tool settings: the results of its declared tools (``own`` must all be)."""
        declared = tool_names(tools or ())
        for name, (_, key_node, where) in (own or {}).items():
            if name not in declared:
                raise self.reader.error(
                    key_node, where, undeclared(name, declared, "this turn does not declare")
                )
        if not tools and unscripted is None:
            return NO_TOOLS
        scripts = {name: item[0] for name, item in (results or {}).items() if name in declared}
        return ToolSettings(tools or (), scripts, unscripted)

    def name(self, node: Node, field: str) -> str:
        """A function name: letters, digits, ``_`` and ``-``, at most 64."""
        name = self.reader.text(node, field, "a function name (a string)")
        if TOOL_NAME.fullmatch(name) is None:
            message = f"invalid function name {name!r}; use 1 to 64 letters, digits, '_' or '-'"
            raise self.reader.error(node, field, message)
        return name

    def schema(self, node: Node, field: str) -> Schema:
        """A JSON Schema checked like a ``json_schema`` expectation's."""
        try:
            return parse_schema(self.reader.plain(node, field), field)
        except CheckSpecError as exc:
            where = locate(node, exc.field[len(field) :])
            raise self.reader.error(where, exc.field, exc.message) from None

    def tools(self, node: Node, field: str) -> tuple[Mapping[str, Any], ...]:
        """``tools:``: function definitions, each name once (an empty list declares none)."""
        if not isinstance(node, SequenceNode):
            raise self.reader.type_error(node, field, "a list of tools ({type: function, ...})")
        seen: dict[str, int] = {}
        tools = []
        for i, item in enumerate(node.value):
            tool, name_node = self.tool(item, f"{field}[{i}]")
            name = tool["function"]["name"]
            if name in seen:
                message = f"tool '{name}' is declared twice (first at {field}[{seen[name]}])"
                raise self.reader.error(name_node, f"{field}[{i}].function.name", message)
            seen[name] = i
            tools.append(tool)
        return tuple(tools)

    def tool(self, node: Node, field: str) -> tuple[dict[str, Any], Node]:
        """One ``{type: function, function: {name, description?, parameters?, strict?}}``."""
        read = self.reader
        if not isinstance(node, MappingNode):
            raise read.type_error(node, field, "a tool (a mapping with 'type' and 'function')")
        items = read.items(node, field)
        read.check_keys(items, field, TOOL_KEYS)
        type_node = read.require(node, items, field, "type")
        if read.text(type_node, join(field, "type")) != "function":
            raise read.error(type_node, join(field, "type"), "only 'function' tools exist")
        function = read.require(node, items, field, "function")
        where = join(field, "function")
        if not isinstance(function, MappingNode):
            raise read.type_error(function, where, "a mapping with 'name'")
        fields = read.items(function, where)
        read.check_keys(fields, where, FUNCTION_KEYS)
        name_node = read.require(function, fields, where, "name")
        self.name(name_node, join(where, "name"))
        if "description" in fields:
            read.text(fields["description"][1], join(where, "description"))
        if "parameters" in fields:
            parameters = fields["parameters"][1]
            if not isinstance(parameters, MappingNode):
                raise read.type_error(parameters, join(where, "parameters"), "a JSON Schema")
            self.schema(parameters, join(where, "parameters"))
        if "strict" in fields:
            strict = read.plain(fields["strict"][1], join(where, "strict"))
            if not isinstance(strict, bool):
                raise read.type_error(fields["strict"][1], join(where, "strict"), "true or false")
        return read.plain(node, field), name_node

    def results(self, node: Node, field: str) -> ScriptedResults:
        """``tool_results:``: a script for each tool name."""
        if not isinstance(node, MappingNode):
            raise self.reader.type_error(node, field, "a mapping of tool names to results")
        scripts: ScriptedResults = {}
        for name, (key_node, value_node) in self.reader.items(node, field).items():
            self.name(key_node, join(field, name))
            where = join(field, name)
            scripts[name] = (self.script(value_node, where), key_node, where)
        return scripts

    def script(self, node: Node, field: str) -> ToolScript:
        """A tool's script: rules, a scalar, a ``sequence`` or one rule."""
        read = self.reader
        if isinstance(node, SequenceNode):
            if not node.value:
                raise read.error(node, field, "no rules; add one such as 'result: ...'")
            return ToolScript(
                rules=tuple(self.rule(r, f"{field}[{i}]") for i, r in enumerate(node.value))
            )
        if isinstance(node, MappingNode):
            items = read.items(node, field)
            if "sequence" in items:
                read.check_keys(items, field, ("sequence",))
                return ToolScript(
                    sequence=self.sequence(items["sequence"][1], join(field, "sequence"))
                )
            if not any(key in items for key in RULE_KEYS):
                message = (
                    "ambiguous: a mapping here must have 'result', 'when', 'when_schema' or "
                    "'sequence'; to return this mapping, write it under 'result:'"
                )
                raise read.error(node, field, message)
            return ToolScript(rules=(self.rule(node, field),))
        return ToolScript(rules=(ToolRule(self.result(node, field)),))

    def rule(self, node: Node, field: str) -> ToolRule:
        """``{when?, when_schema?, result}``."""
        read = self.reader
        if not isinstance(node, MappingNode):
            raise read.type_error(node, field, "a rule (a mapping with 'result')")
        items = read.items(node, field)
        read.check_keys(items, field, RULE_KEYS)
        result = self.result(read.require(node, items, field, "result"), join(field, "result"))
        when = when_schema = None
        if "when" in items:
            when_node = items["when"][1]
            if not isinstance(when_node, MappingNode):
                expected = "a mapping of argument names to values"
                raise read.type_error(when_node, join(field, "when"), expected)
            when = read.plain(when_node, join(field, "when"))
        if "when_schema" in items:
            when_schema = self.schema(items["when_schema"][1], join(field, "when_schema"))
        return ToolRule(result, when, when_schema)

    def sequence(self, node: Node, field: str) -> tuple[str, ...]:
        """``sequence:``: one result per call, in order."""
        if not isinstance(node, SequenceNode) or not node.value:
            raise self.reader.type_error(node, field, "a non-empty list of results")
        return tuple(self.result(item, f"{field}[{i}]") for i, item in enumerate(node.value))

    def result(self, node: Node, field: str) -> str:
        """A result: a string as written, any other value as compact JSON; never empty."""
        if isinstance(node, ScalarNode) and node.tag == NULL_TAG:
            message = 'the result is empty; write the tool\'s answer ("null" in quotes for null)'
            raise self.reader.error(node, field, message)
        return result_text(self.reader.plain(node, field))

    def unscripted(self, node: Node, field: str) -> str | None:
        """``unscripted_tool_result:``: a string, or null to fail on an unscripted call."""
        if isinstance(node, ScalarNode) and node.tag == NULL_TAG:
            return None
        return self.reader.text(node, field, "a string or null")

    def max_steps(self, node: Node, field: str) -> int:
        """``max_tool_steps:``: a whole number from 1 to :data:`MAX_TOOL_STEPS_LIMIT`."""
        value = self.reader.plain(node, field)
        expected = f"a whole number from 1 to {MAX_TOOL_STEPS_LIMIT}"
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.reader.type_error(node, field, expected)
        if not 1 <= value <= MAX_TOOL_STEPS_LIMIT:
            raise self.reader.error(node, field, f"expected {expected}, got {value}")
        return value

    def reasoning(self, node: Node, field: str) -> str:
        """``reasoning:``: one of :data:`~runner.spec.tools.REASONING_POLICIES`."""
        value = self.reader.text(node, field)
        if value not in REASONING_POLICIES:
            message = f"unknown policy '{value}'; use one of: {', '.join(REASONING_POLICIES)}"
            raise self.reader.error(node, field, message)
        return value


def tool_names(tools: ToolSet) -> list[str]:
    """The names of declared tools, in order."""
    return [str(tool["function"]["name"]) for tool in tools]


def undeclared(name: str, declared: list[str], who: str) -> str:
    """The message for results scripted for a tool that is not declared (``who``: by whom)."""
    known = f"declared: {', '.join(declared)}" if declared else "no tools are declared"
    return f"results for tool '{name}', which {who} ({known}); add it to 'tools'"
