"""Variables and matrices: the ``{{name}}`` syntax, filling it in, and a matrix's ids.

Variables (``vars:``) are filled in at load time, so the specs, the requests
and their fingerprints hold the final text. :func:`fill` describes the syntax,
:func:`matrix_ids` how a matrix expands and names its conversations.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from runner.spec.model import MAX_ID_LENGTH
from runner.spec.nodes import NodeReader, join
from runner.spec.yamlsafe import NULL_TAG

MAX_MATRIX = 10_000
"""Most conversations one conversation's ``vars:`` matrix may expand to."""

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_VAR_NAME = re.compile(_NAME)
_REFERENCE = re.compile(rf"\\\{{\{{|\{{\{{(?:[ \t]*(?P<name>{_NAME})[ \t]*\}}\}})?")
_NOT_IN_IDS = re.compile(r"[^\w.+@-]+")


class Var(NamedTuple):
    """One variable: its value as text, or a matrix variable's values in order."""

    values: tuple[str, ...]
    matrix: bool
    node: Node
    field: str


class FillError(Exception):
    """A ``{{...}}`` that cannot be filled in; the message says why."""


def fill(text: str, values: Mapping[str, str] | None, used_by: str = "") -> str:
    """``text`` with every ``{{name}}`` replaced by its value (only checked when values is None).

    A reference is ``{{name}}``, spaces or tabs allowed inside the braces, where
    the name is letters, digits and _ and does not start with a digit. Any other
    ``{{`` is an error, so a typo is never sent as text; ``\\{{`` writes a
    literal ``{{`` (``}}`` needs no escape). Values are inserted as they are,
    never scanned for references. The loader fills in ``system``, message
    ``content`` strings and turns; ``expect``, ``model``, ``params`` and message
    names are taken as written.
    """

    def one(match: re.Match[str]) -> str:
        name = match.group("name")
        if match.group(0) == "\\{{":
            return "{{"
        if name is None:
            end = text.find("}}", match.start())
            end = end + 2 if 0 <= end < match.start() + 40 else match.start() + 12
            raise FillError(
                f"{text[match.start() : end]!r} is not a variable reference; "
                "write {{name}} (letters, digits and _) to use a var, or \\{{ for a literal {{"
            )
        if values is None:
            return match.group(0)
        if name in values:
            return values[name]
        close = difflib.get_close_matches(name, values, n=1)
        hint = f"did you mean '{close[0]}'?" if close else "define it under vars:"
        raise FillError(f"undefined variable '{name}'{used_by}; {hint}")

    return _REFERENCE.sub(one, text)


def matrix_ids(
    base: str, names: Sequence[str], combinations: Sequence[tuple[str, ...]]
) -> list[str]:
    """The ids of a matrix's conversations, in the order of ``combinations``.

    A variable whose value is a list makes a matrix: the conversation is
    repeated for every combination of the list variables' values, the first
    variable varying slowest, in the order the keys and values are written
    (``defaults:`` vars first; a conversation's own value for one of them keeps
    its place). Each copy's id is the conversation's id followed by
    ``--name=value`` for each list variable: ``trip--city=Paris--tone=formal``.
    In ids a value keeps its letters, digits and ``. _ + @ -``; any other run of
    characters becomes one ``_``, dropped at either end. When those ids would
    not be unique, or one would be longer than MAX_ID_LENGTH, every copy is
    numbered instead, from 1: ``trip--1``, ``trip--2``, ...
    """
    ids = [
        base
        + "".join(
            f"--{name}={_id_part(value)}" for name, value in zip(names, combination, strict=True)
        )
        for combination in combinations
    ]
    if len(set(ids)) < len(ids) or any(len(i) > MAX_ID_LENGTH for i in ids):
        return [f"{base}--{n}" for n in range(1, len(combinations) + 1)]
    return ids


def _id_part(value: str) -> str:
    """A variable's value as written in an id: no spaces, slashes, quotes or glob characters."""
    return _NOT_IN_IDS.sub("_", value).strip("_")


def braced_name(node: Node) -> str | None:
    """``x`` when the node is what YAML makes of an unquoted ``{{x}}``: a mapping in a mapping."""
    if isinstance(node, MappingNode) and len(node.value) == 1:
        inner, value = node.value[0]
        if isinstance(inner, MappingNode) and len(inner.value) == 1 and value.tag == NULL_TAG:
            key, inner_value = inner.value[0]
            if isinstance(key, ScalarNode) and inner_value.tag == NULL_TAG:
                return str(key.value)
    return None


class Variables:
    """The vars of the conversation being built: reading ``vars:``, filling them into text."""

    def __init__(self, reader: NodeReader) -> None:
        self.reader = reader
        self.values: Mapping[str, str] | None = None
        """The vars being filled in; None while only checking the ``{{...}}`` syntax."""
        self.user = ""
        """The conversation being built, named in errors about ``defaults:``."""

    def read(self, node: MappingNode, field: str) -> dict[str, Var]:
        """The ``vars:`` of a conversation or of ``defaults:`` (empty when it has none)."""
        items = self.reader.items(node, field)
        if "vars" not in items:
            return {}
        vars_node, field = items["vars"][1], join(field, "vars")
        if not isinstance(vars_node, MappingNode):
            raise self.reader.type_error(vars_node, field, "a mapping of variable names to values")
        variables: dict[str, Var] = {}
        for name, (key_node, value_node) in self.reader.items(vars_node, field).items():
            var_field = join(field, name)
            if not _VAR_NAME.fullmatch(name):
                message = (
                    "not a variable name; use letters, digits and _, not starting with a digit"
                )
                raise self.reader.error(key_node, var_field, message)
            variables[name] = self._var(value_node, var_field)
        return variables

    def _var(self, node: Node, field: str) -> Var:
        """One variable: a value, or a list of them (a matrix)."""
        if not isinstance(node, SequenceNode):
            return Var((self._value_text(node, field, "or a list of them"),), False, node, field)
        if not node.value:
            message = "empty list; give at least one value (a list makes a matrix)"
            raise self.reader.error(node, field, message)
        values = tuple(
            self._value_text(item, f"{field}[{i}]", "in a matrix list")
            for i, item in enumerate(node.value)
        )
        return Var(values, True, node, field)

    def _value_text(self, node: Node, field: str, hint: str) -> str:
        """A variable's value as the text it fills in: numbers as written, true or false."""
        if isinstance(node, ScalarNode) and node.tag != NULL_TAG:
            value = self.reader.plain(node, field)
            if isinstance(value, bool):
                return "true" if value else "false"
            return str(node.value)
        raise self.reader.type_error(node, field, f"a string, number or boolean {hint}")

    def combinations(self, variables: Mapping[str, Var]) -> tuple[list[str], list[tuple[str, ...]]]:
        """The matrix variables' names and every combination of their values, in order."""
        names = [name for name, var in variables.items() if var.matrix]
        sizes = [len(variables[name].values) for name in names]
        if math.prod(sizes) > MAX_MATRIX:
            last = variables[names[-1]]
            message = (
                f"the vars matrix{self.used_by(last.field)} makes {math.prod(sizes):,} "
                f"conversations ({' x '.join(map(str, sizes))}); at most {MAX_MATRIX:,} "
                "per conversation: split it into several conversations"
            )
            raise self.reader.error(last.node, last.field, message)
        return names, list(itertools.product(*(variables[name].values for name in names)))

    def filled(self, node: Node, field: str, empty: str, expected: str = "a string") -> str:
        """Text that may use vars: ``nonblank``, then every ``{{name}}`` filled in."""
        name = braced_name(node)
        if name is not None:
            hint = f'write "{{{{{name}}}}}" in quotes (bare {{{{...}}}} is a YAML mapping)'
            raise self.reader.error(node, field, f"expected {expected}; {hint}")
        text = self.reader.nonblank(node, field, empty, expected)
        try:
            value = fill(text, self.values, self.used_by(field))
        except FillError as exc:
            raise self.reader.error(node, field, str(exc)) from None
        if self.values is not None and not value.strip():
            raise self.reader.error(
                node, field, f"{empty} (it is blank once its vars are filled in)"
            )
        return value

    def used_by(self, field: str) -> str:
        """`` in conversations[2]`` when ``field`` is in ``defaults:``, shared by all."""
        return f" in {self.user}" if field.startswith("defaults") and self.user else ""
