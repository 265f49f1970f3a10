"""Tool kinds: ``tool_called``, ``no_tool_called``, ``tool_sequence`` and ``tool_args_valid``.

They look at every tool call the model made in the turn
(``Observation.tool_calls``, in order) and the tools declared to it
(``Observation.tools``); a failure shows the calls that were made.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runner.checks.base import (
    CheckSpecError,
    Kind,
    Observation,
    Outcome,
    excerpt,
    hint,
    read_count,
    read_text,
    wrong,
)
from runner.checks.structured import Schema, parse_schema
from runner.words import plural

ORDERS = ("exact", "in_order", "any")
"""How ``tool_sequence`` compares: the calls are exactly these; these appear among them
in this order; or each of these is called (as many times as listed), in any order."""
_CALLED_KEYS = ("name", "args", "args_schema", "count")
_SEQUENCE_KEYS = ("calls", "order")


@dataclass(frozen=True, slots=True)
class ToolCalled:
    """Argument of ``tool_called``: which calls count, and how many are expected."""

    name: str
    args: Mapping[str, Any] | None = None
    """A subset the call's parsed arguments must contain."""
    args_schema: Schema | None = None
    """A JSON Schema the call's parsed arguments must validate against."""
    count: int | None = None
    """Exactly this many matching calls; None: at least one."""


@dataclass(frozen=True, slots=True)
class ToolSequence:
    """Argument of ``tool_sequence``: the tool names expected, and how they are compared."""

    calls: tuple[str, ...]
    order: str = "exact"


def call_name(call: Mapping[str, Any]) -> str:
    """The function name of a tool call ("" when it has none)."""
    function = call.get("function")
    name = function.get("name") if isinstance(function, Mapping) else None
    return name if isinstance(name, str) else ""


def call_arguments(call: Mapping[str, Any]) -> str:
    """The raw argument text of a tool call ("" when it has none)."""
    function = call.get("function")
    arguments = function.get("arguments") if isinstance(function, Mapping) else None
    return arguments if isinstance(arguments, str) else ""


def calls_seen(calls: tuple[Mapping[str, Any], ...]) -> str:
    """The calls made, for a result's ``seen``: ``get_weather({"city":"Paris"}), ...``."""
    if not calls:
        return "no tool calls"
    return excerpt(", ".join(f"{call_name(c)}({call_arguments(c)})" for c in calls), 300)


# tool_called -----------------------------------------------------------------


def _parse_called(value: Any, field: str) -> ToolCalled:
    if isinstance(value, str):
        return ToolCalled(read_text(value, field, "a tool name or a mapping with 'name'"))
    if not isinstance(value, Mapping):
        raise wrong(field, "a tool name or a mapping with 'name'", value)
    for key in value:
        if key not in _CALLED_KEYS:
            raise CheckSpecError(f"{field}.{key}", f"unknown key; {hint(str(key), _CALLED_KEYS)}")
    if "name" not in value:
        raise CheckSpecError(field, "missing required key 'name'")
    args = value.get("args")
    if args is not None and not isinstance(args, Mapping):
        raise wrong(f"{field}.args", "a mapping of argument names to values", args)
    schema = None
    if "args_schema" in value:
        schema = parse_schema(value["args_schema"], f"{field}.args_schema")
    count = None
    if "count" in value:
        count = read_count(value["count"], f"{field}.count")
    return ToolCalled(read_text(value["name"], f"{field}.name"), args, schema, count)


def _describe_called(arg: ToolCalled) -> str:
    words = f"calls tool {arg.name!r}"
    if arg.args is not None:
        words += f" with arguments containing {json.dumps(arg.args, ensure_ascii=False)}"
    if arg.args_schema is not None:
        words += f" with arguments matching {excerpt(json.dumps(arg.args_schema.schema), 80)}"
    if arg.count is not None:
        words += f" exactly {plural(arg.count, 'time')}"
    return words


def is_subset(expected: Any, actual: Any) -> bool:
    """Whether ``expected`` is contained in ``actual``: mappings key by key, else equal."""
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(
            key in actual and is_subset(value, actual[key]) for key, value in expected.items()
        )
    # true is not 1 here, unlike in Python: JSON tells them apart.
    return isinstance(expected, bool) == isinstance(actual, bool) and bool(expected == actual)


def _matches(arg: ToolCalled, call: Mapping[str, Any]) -> bool:
    if call_name(call) != arg.name:
        return False
    if arg.args is None and arg.args_schema is None:
        return True
    try:
        arguments = json.loads(call_arguments(call))
    except (ValueError, RecursionError):
        return False
    if arg.args is not None and not is_subset(arg.args, arguments):
        return False
    try:
        return arg.args_schema is None or bool(arg.args_schema.validator.is_valid(arguments))
    except RecursionError:
        return False


def _tool_called(arg: ToolCalled, _text: str, observation: Observation) -> Outcome:
    calls = observation.tool_calls
    seen = calls_seen(calls)
    found = sum(1 for call in calls if _matches(arg, call))
    if arg.count is None and found == 0:
        named = sum(1 for call in calls if call_name(call) == arg.name)
        if named:
            return Outcome(f"'{arg.name}' was called, but never with matching arguments", seen)
        return Outcome(f"'{arg.name}' was not called", seen)
    if arg.count is not None and found != arg.count:
        expected = plural(arg.count, "matching call")
        return Outcome(f"expected {expected} to '{arg.name}', got {found}", seen)
    return Outcome("", seen)


# no_tool_called --------------------------------------------------------------


def _parse_true(value: Any, field: str) -> bool:
    if value is False:
        raise CheckSpecError(field, "false checks nothing; remove it instead")
    if value is not True:
        raise wrong(field, "true", value)
    return True


def _no_tool_called(_arg: bool, _text: str, observation: Observation) -> Outcome:
    calls = observation.tool_calls
    if calls:
        return Outcome(f"the model made {plural(len(calls), 'tool call')}", calls_seen(calls))
    return Outcome("", calls_seen(calls))


# tool_sequence ---------------------------------------------------------------


def _parse_sequence(value: Any, field: str) -> ToolSequence:
    if isinstance(value, list):
        return ToolSequence(_names(value, field))
    if not isinstance(value, Mapping):
        raise wrong(field, "a list of tool names or a mapping with 'calls'", value)
    for key in value:
        if key not in _SEQUENCE_KEYS:
            message = f"unknown key; {hint(str(key), _SEQUENCE_KEYS)}"
            raise CheckSpecError(f"{field}.{key}", message)
    if "calls" not in value:
        raise CheckSpecError(field, "missing required key 'calls'")
    order = value.get("order", "exact")
    if order not in ORDERS:
        shown = order if isinstance(order, str) else json.dumps(order)
        raise CheckSpecError(f"{field}.order", f"unknown order '{shown}'; {hint(shown, ORDERS)}")
    return ToolSequence(_names(value["calls"], f"{field}.calls"), order)


def _names(value: Any, field: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise wrong(field, "a list of tool names", value)
    if not value:
        raise CheckSpecError(field, "must not be an empty list; use 'no_tool_called: true'")
    return tuple(read_text(item, f"{field}[{i}]") for i, item in enumerate(value))


def _describe_sequence(arg: ToolSequence) -> str:
    names = ", ".join(arg.calls)
    if arg.order == "exact":
        return f"calls exactly these tools, in order: {names}"
    if arg.order == "in_order":
        return f"calls these tools in this order (others may come between): {names}"
    return f"calls these tools, in any order: {names}"


def _is_subsequence(wanted: tuple[str, ...], made: list[str]) -> bool:
    rest = iter(made)
    return all(name in rest for name in wanted)


def _tool_sequence(arg: ToolSequence, _text: str, observation: Observation) -> Outcome:
    made = [call_name(call) for call in observation.tool_calls]
    seen = calls_seen(observation.tool_calls)
    if arg.order == "exact":
        passed = tuple(made) == arg.calls
    elif arg.order == "in_order":
        passed = _is_subsequence(arg.calls, made)
    else:
        passed = not Counter(arg.calls) - Counter(made)
    if passed:
        return Outcome("", seen)
    got = ", ".join(made) if made else "no tool calls"
    return Outcome(f"the tools called were: {got}", seen)


# tool_args_valid -------------------------------------------------------------


def _call_problem(call: Mapping[str, Any], declared: Mapping[str, Mapping[str, Any]]) -> str:
    """Why one call's arguments are not valid for its declared tool ("" when they are)."""
    from jsonschema.exceptions import best_match

    name = call_name(call)
    if name not in declared:
        return f"'{name}' is not a declared tool"
    try:
        arguments = json.loads(call_arguments(call))
    except (ValueError, RecursionError):
        return f"the arguments of '{name}' are not JSON"
    parameters = declared[name].get("parameters")
    if parameters is None:
        return ""
    try:
        schema = parse_schema(parameters, "parameters")
        error = best_match(schema.validator.iter_errors(arguments))
    except (CheckSpecError, RecursionError) as exc:
        return f"the arguments of '{name}' could not be checked ({exc})"
    if error is None:
        return ""
    where = error.json_path
    return f"the arguments of '{name}' do not match its parameters at {where}: {error.message}"


def _tool_args_valid(_arg: bool, _text: str, observation: Observation) -> Outcome:
    declared: dict[str, Mapping[str, Any]] = {}
    for tool in observation.tools:
        function = tool.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            declared[function["name"]] = function
    for call in observation.tool_calls:
        problem = _call_problem(call, declared)
        if problem:
            return Outcome(excerpt(problem, 200), calls_seen(observation.tool_calls))
    return Outcome("", calls_seen(observation.tool_calls))


KINDS: dict[str, Kind] = {
    "tool_called": Kind(_parse_called, _describe_called, _tool_called),
    "no_tool_called": Kind(_parse_true, lambda _: "calls no tool", _no_tool_called),
    "tool_sequence": Kind(_parse_sequence, _describe_sequence, _tool_sequence),
    "tool_args_valid": Kind(
        _parse_true, lambda _: "every tool call's arguments match its tool", _tool_args_valid
    ),
}
"""The tool kinds, in the order the spec lists them."""
