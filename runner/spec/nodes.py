"""Reading YAML nodes as typed values, every problem pointed at its line, column and field.

``yamlsafe.py`` makes the nodes; the loader's parts read them through a
:class:`NodeReader`, so every message is ``path:line:column: field: what is wrong``.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from typing import Any, cast

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from runner.errors import InputError
from runner.spec.yamlsafe import MERGE_TAG, NULL_TAG, SCALARS, TEXT_TAGS, error_at

Items = dict[str, tuple[Node, Node]]
"""A mapping's entries by key: the key's node and the value's node."""


def join(field: str, key: str) -> str:
    """The field path of ``key`` below ``field``: ``turns[0].content``."""
    return f"{field}.{key}" if field else key


def locate(node: Node, path: str) -> Node:
    """The node at a field path such as ``.contains.any[1]`` below ``node`` (best effort)."""
    for key, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        if key and isinstance(node, MappingNode):
            found = [v for k, v in node.value if isinstance(k, ScalarNode) and k.value == key]
            if not found:
                break
            node = found[0]
        elif index and isinstance(node, SequenceNode) and int(index) < len(node.value):
            node = node.value[int(index)]
        else:
            break
    return node


class NodeReader:
    """Reads the nodes of one file; its errors name the file as the user gave it."""

    def __init__(self, display: str) -> None:
        self.display = display

    def error(self, node: Node, field: str, message: str) -> InputError:
        """``message`` at the node's position and ``field``."""
        return error_at(self.display, node.start_mark, message, field)

    def type_error(self, node: Node, field: str, expected: str) -> InputError:
        """``expected ...``, with a hint when the value is null or a scalar meant as text."""
        message = f"expected {expected}"
        if isinstance(node, ScalarNode) and node.tag == NULL_TAG:
            message += "; the value is empty"
        elif isinstance(node, ScalarNode) and "string" in expected:
            message += f'; write "{node.value}" (in quotes) to use it as text'
        return self.error(node, field, message)

    def items(self, node: MappingNode, field: str) -> Items:
        """The mapping's entries by key, ``<<`` merges applied; keys must be unique strings."""
        items: Items = {}
        merged: list[MappingNode] = []
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                if not all(isinstance(source, MappingNode) for source in sources):
                    message = "'<<' merges a mapping or a list of mappings"
                    raise self.error(value_node, field, message)
                merged.extend(sources)
                continue
            key = self.text(key_node, field, "a string key")
            if key in items:
                first = items[key][0].start_mark.line + 1
                raise self.error(key_node, field, f"duplicate key '{key}' (first at line {first})")
            items[key] = (key_node, value_node)
        for source in merged:  # explicit keys win, then earlier merges
            for key, item in self.items(source, field).items():
                items.setdefault(key, item)
        return items

    def check_keys(self, items: Items, field: str, allowed: Sequence[str]) -> None:
        """Refuse the first key not in ``allowed``, suggesting the closest one."""
        for key, (key_node, _) in items.items():
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = (
                    f"did you mean '{close[0]}'?"
                    if close
                    else f"expected one of: {', '.join(allowed)}"
                )
                raise self.error(key_node, join(field, key), f"unknown key; {hint}")

    def require(self, node: Node, items: Items, field: str, key: str) -> Node:
        """The value of ``key``, which must be there."""
        if key not in items:
            raise self.error(node, field, f"missing required key '{key}'")
        return items[key][1]

    def text(self, node: Node, field: str, expected: str = "a string") -> str:
        """A string (any scalar YAML reads as text)."""
        if isinstance(node, ScalarNode) and node.tag in TEXT_TAGS:
            return str(node.value)
        raise self.type_error(node, field, expected)

    def nonblank(self, node: Node, field: str, empty: str, expected: str = "a string") -> str:
        """A string that is not blank; ``empty`` says what to do when it is."""
        value = self.text(node, field, expected)
        if not value.strip():
            raise self.error(node, field, empty)
        return value

    def plain(self, node: Node, field: str) -> Any:
        """The node as plain JSON-compatible data: dict, list, str, int, float, bool, None."""
        if isinstance(node, MappingNode):
            items = self.items(node, field)
            return {key: self.plain(value, join(field, key)) for key, (_, value) in items.items()}
        if isinstance(node, SequenceNode):
            return [self.plain(item, f"{field}[{i}]") for i, item in enumerate(node.value)]
        if node.tag in TEXT_TAGS:
            return str(node.value)
        try:
            value = SCALARS[node.tag](cast(ScalarNode, node))
        except (ValueError, OverflowError):  # e.g. '0b_', which YAML resolves as an int
            message = f"cannot read {node.value} as a number; put it in quotes to use it as text"
            raise self.error(node, field, message) from None
        if isinstance(value, float) and not math.isfinite(value):
            message = f"{node.value} is not representable in JSON; use a finite number"
            raise self.error(node, field, message)
        return value
