"""What a ``json_schema`` check may do: refer only inside itself, fetch nothing, always end.

Conversation files come from pull requests, so a schema in one is hostile
input. JSON Schema can reach outside itself (``$ref`` to ``file:`` or
``http:`` URLs, ``$id`` rebasing where relative references land,
``$dynamicRef``), can send validation round in circles (``$ref: '#'``, or
two ``$defs`` referring to each other without going into the answer), and can
hold a regular expression that backtracks for ever. Everything here runs at
load time, so such a schema is a load error naming its field, and a check
that loaded can only pass or fail:

- ``$ref`` must be ``#`` or a JSON pointer ``#/...`` to a schema in the same
  document; ``$id`` (``id`` in drafts 3 and 4), ``$dynamicRef``,
  ``$recursiveRef`` and a ``$schema`` below the top level are refused.
- The subschemas applied in place to one value (``$ref``, ``allOf``,
  ``anyOf``, ``oneOf``, ``not``, ``if``/``then``/``else``, dependencies) must
  not loop, nor add up to more than :data:`MAX_IN_PLACE`, nor chain
  deeper than :data:`MAX_IN_PLACE_DEPTH`.
- ``pattern`` and ``patternProperties`` regexes pass :func:`pattern_problem`.

The validator is also given a registry that retrieves nothing, so a reference
missed here still cannot read a file or the network.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

if TYPE_CHECKING:
    from jsonschema.protocols import Validator
    from referencing import Registry

MAX_PATTERN_CHARS = 1000
"""Longest regular expression a check or a schema may hold."""
MAX_IN_PLACE = 10_000
"""Most subschemas a schema may apply to one value (through refs, allOf, ...)."""
MAX_IN_PLACE_DEPTH = 100
"""Longest chain of subschemas applied to one value (refs to refs to ...)."""

_SINGLE = (
    "additionalItems",
    "additionalProperties",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
    "not",
    "if",
    "then",
    "else",
    "items",
    "extends",
)
_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems", "items", "extends", "type", "disallow")
_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_IN_PLACE = frozenset(
    "allOf anyOf oneOf not if then else dependentSchemas dependencies extends type disallow".split()
)
"""Keywords whose subschemas apply to the same value, not to a part of it (draft 3's
``type`` and ``disallow`` lists may hold schemas)."""
_REFUSED = {
    "$dynamicRef": "dynamic references are not supported; use '$ref' to '#/$defs/...'",
    "$recursiveRef": "recursive references are not supported; use '$ref' to '#/$defs/...'",
    "$id": "mtrun resolves references only inside the schema; remove '$id'",
}
_OUTSIDE = (
    "mtrun resolves references only inside the schema, never files or URLs: "
    "write '#' or '#/$defs/NAME'"
)

Path = tuple[str | int, ...]


class UnsafeSchema(Exception):
    """A schema that could reach outside itself or never end; ``path`` is where."""

    def __init__(self, path: Path, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(message)


def checked_validator(schema: dict[str, Any], cls: type[Validator]) -> Validator:
    """A validator for a valid ``schema`` that stays inside it and ends (see the module docstring).

    Raises UnsafeSchema, or jsonschema's SchemaError for a schema its metaschema refuses.
    """
    keywords = list(_keywords(schema, ()))
    for path, key, value in keywords:
        _check_pattern(path, key, value)
    cls.check_schema(schema)  # a SchemaError names what is invalid
    old_ids = cls.META_SCHEMA.get("$schema", "") in _OLD_DRAFTS
    for path, key, value in keywords:
        _check_reference(schema, path, key, value, old_ids=old_ids)
    _check_in_place(schema)
    return cls(schema, registry=_no_retrieval())


def pattern_problem(source: str) -> str | None:
    """Why a regular expression is refused (too long, invalid, may never end), or None."""
    if len(source) > MAX_PATTERN_CHARS:
        return (
            f"the regular expression is {len(source):,} characters; at most {MAX_PATTERN_CHARS:,}"
        )
    try:
        parsed = _parser.parse(source)
    except re.error as exc:
        at = f" at position {exc.pos}" if exc.pos is not None else ""
        return f"invalid regular expression: {exc.msg}{at}"
    except (OverflowError, RecursionError) as exc:
        return f"invalid regular expression: {exc}"
    if _nested_repeat(parsed, outer=False):
        return (
            "the regular expression repeats a repetition, e.g. (a+)+, which can take "
            "for ever on some answers; make the inner part match one way only"
        )
    return None


_OLD_DRAFTS = frozenset(
    (
        "http://json-schema.org/draft-03/schema#",
        "http://json-schema.org/draft-04/schema#",
    )
)

# The regex parser is private but stable; typeshed knows it only as sre_parse,
# which warns on import from Python 3.11 on.
if sys.version_info >= (3, 11):
    _constants: Any = importlib.import_module("re._constants")
    _parser: Any = importlib.import_module("re._parser")
else:  # pragma: no cover - Python 3.10
    _constants = importlib.import_module("sre_constants")
    _parser = importlib.import_module("sre_parse")

_REPEATS = frozenset(
    getattr(_constants, name)
    for name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")
    if hasattr(_constants, name)
)


def _nested_repeat(items: Any, *, outer: bool) -> bool:
    """Whether a repetition's body is itself only repetitions (``(a+b*)+``): catastrophic."""
    for op, av in items:
        if op in _REPEATS:
            _, high, body = av
            many = high > 1
            if many and _only_repeats(body):
                return True
            if _nested_repeat(body, outer=outer or many):
                return True
        else:
            for sub in _subpatterns(op, av):
                if _nested_repeat(sub, outer=outer):
                    return True
    return False


def _only_repeats(items: Any) -> bool:
    """Whether a sequence can be split among repetitions in many ways: all repeats or optional."""
    flat = list(_unwrapped(items))
    return any(op in _REPEATS and av[1] > 1 for op, av in flat) and all(
        op in _REPEATS for op, _ in flat
    )


def _unwrapped(items: Any) -> Iterator[tuple[Any, Any]]:
    """The items of a sequence, groups opened."""
    for op, av in items:
        if op == _constants.SUBPATTERN:
            yield from _unwrapped(av[-1])
        else:
            yield op, av


def _subpatterns(op: Any, av: Any) -> list[Any]:
    """The nested sequences of one parsed item."""
    if op == _constants.SUBPATTERN:
        return [av[-1]]
    if op == _constants.BRANCH:
        return list(av[1])
    if op in (_constants.ASSERT, _constants.ASSERT_NOT):
        return [av[1]]
    if op == getattr(_constants, "ATOMIC_GROUP", None):
        return [av]
    if op == _constants.GROUPREF_EXISTS:
        return [branch for branch in av[1:] if branch is not None]
    return []


def _no_retrieval() -> Registry:
    """A registry that refuses to retrieve any URI: no file, no network."""
    from referencing import Registry
    from referencing.exceptions import NoSuchResource

    def refuse(uri: str) -> Any:
        raise NoSuchResource(ref=uri)  # type: ignore[call-arg]

    return Registry(retrieve=refuse)  # type: ignore[call-arg]  # attrs field, unseen by mypy


def _keywords(node: Any, path: Path) -> Iterator[tuple[Path, str, Any]]:
    """Every key of every mapping in the schema, data included, with its path."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield path, str(key), value
            yield from _keywords(value, (*path, str(key)))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _keywords(item, (*path, i))


def _check_pattern(path: Path, key: str, value: Any) -> None:
    """Refuse a ``pattern`` or ``patternProperties`` regex that :func:`pattern_problem` refuses."""
    source = value if key == "pattern" and isinstance(value, str) else None
    if path and path[-1] == "patternProperties":
        source = key
    problem = None if source is None else pattern_problem(source)
    if problem:
        raise UnsafeSchema((*path, key), problem)


def _check_reference(root: Any, path: Path, key: str, value: Any, *, old_ids: bool) -> None:
    """Refuse a reference, identifier or metaschema that could lead outside the schema."""
    if not isinstance(value, str):
        return
    where = (*path, key)
    if key in _REFUSED or (key == "id" and old_ids):
        raise UnsafeSchema(where, _REFUSED.get(key, _REFUSED["$id"].replace("$id", "id")))
    if key == "$schema" and path:
        raise UnsafeSchema(where, "only the schema's top level may name a metaschema")
    if key == "$ref":
        _target(root, value, where)


def _target(root: Any, ref: str, where: Path) -> Path:
    """The path a ``$ref`` points at inside ``root``, or UnsafeSchema."""
    if not ref.startswith("#") or (len(ref) > 1 and not ref.startswith("#/")):
        raise UnsafeSchema(where, f"'$ref: {ref[:80]}' is refused; {_OUTSIDE}")
    node: Any = root
    target: list[str | int] = []
    for raw in unquote(ref[1:]).split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
            target.append(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            target.append(int(part))
        else:
            raise UnsafeSchema(where, f"'$ref: {ref[:80]}' points at nothing in the schema")
    if not isinstance(node, (Mapping, bool)):
        raise UnsafeSchema(where, f"'$ref: {ref[:80]}' does not point at a schema")
    return tuple(target)


def _check_in_place(root: Any) -> None:
    """Refuse in-place loops and blow-ups (see the module docstring)."""
    costs: dict[Path, int] = {}
    visiting: set[Path] = set()

    def node_at(path: Path) -> Any:
        node = root
        for step in path:
            node = node[step]
        return node

    def cost(path: Path, via: Path, depth: int = 0) -> int:
        if path in costs:
            return costs[path]
        if depth > MAX_IN_PLACE_DEPTH:
            raise UnsafeSchema(
                via,
                f"subschemas apply to one value through more than {MAX_IN_PLACE_DEPTH} "
                "'$ref', 'allOf', ... in a chain; simplify the schema",
            )
        if path in visiting:
            raise UnsafeSchema(
                via,
                "this '$ref' leads back to where it is used without going into the answer, "
                "so checking would never end; refer to a part of it (e.g. under "
                "'properties' or 'items') or to a schema under '$defs'",
            )
        visiting.add(path)
        total = 1
        for child, child_via in _in_place_children(root, node_at(path), path):
            total += cost(child, child_via, depth + 1)
            if total > MAX_IN_PLACE:
                raise UnsafeSchema(
                    child_via,
                    f"the schema applies more than {MAX_IN_PLACE:,} subschemas to one value "
                    "(through '$ref', 'allOf', 'anyOf', ...); simplify it",
                )
        visiting.discard(path)
        costs[path] = total
        return total

    for path in _schema_paths(root, ()):
        cost(path, path)


def _in_place_children(root: Any, node: Any, path: Path) -> Iterator[tuple[Path, Path]]:
    """``(subschema, where it is named)`` for each subschema applied to the same value."""
    if not isinstance(node, Mapping):
        return
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str):
            yield _target(root, value, (*path, key)), (*path, key)
        elif key in _IN_PLACE and isinstance(value, list):
            yield from (
                ((*path, key, i), (*path, key, i))
                for i, sub in enumerate(value)
                if isinstance(sub, (Mapping, bool))
            )
        elif key in _IN_PLACE and isinstance(value, Mapping) and key in _PER_NAME:
            yield from (
                ((*path, key, name), (*path, key, name))
                for name, sub in value.items()
                if isinstance(sub, (Mapping, bool))
            )
        elif key in _IN_PLACE and isinstance(value, (Mapping, bool)):
            yield (*path, key), (*path, key)


_PER_NAME = frozenset(("dependentSchemas", "dependencies"))


def _schema_paths(node: Any, path: Path) -> Iterator[Path]:
    """The path of every subschema, following only schema-valued keywords."""
    if not isinstance(node, Mapping):
        return
    yield path
    for key, value in node.items():
        if key in _SINGLE and isinstance(value, Mapping):
            yield from _schema_paths(value, (*path, key))
        if key in _LISTS and isinstance(value, list):
            for i, item in enumerate(value):
                yield from _schema_paths(item, (*path, key, i))
        if key in (*_MAPS, "dependencies") and isinstance(value, Mapping):
            for name, item in value.items():
                yield from _schema_paths(item, (*path, key, name))
