"""JSON kinds: ``is_json`` and ``json_schema``, and how JSON is found in an answer.

The answer counts as JSON when it parses as a whole, or else when its first
fenced code block marked ``json`` (or not marked at all) does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from runner.checks.base import CheckSpecError, Kind, Observation, Outcome, excerpt, read_text, wrong
from runner.checks.safeschema import UnsafeSchema, checked_validator

if TYPE_CHECKING:
    from jsonschema.protocols import Validator
# jsonschema itself is imported where a json_schema check needs it: it is a
# fifth of mtrun's start-up time, and most runs have no such check.

_FENCE = re.compile(r"^[ \t]*```([^\n`]*)$", re.MULTILINE)
"""A fence line: three backticks at the start of a line, and the block's info string."""


@dataclass(frozen=True, slots=True)
class Schema:
    """Argument of ``json_schema``: the schema and its checked validator."""

    schema: dict[str, Any]
    validator: Validator = field(compare=False, repr=False)


def _find_json(text: str) -> tuple[bool, Any, str]:
    """``(found, value, problem)``: the answer's JSON, or why none was found."""
    try:
        return True, json.loads(text), ""
    except (ValueError, RecursionError) as exc:
        problem = _json_problem(exc)
    block = _first_json_block(text)
    if block is None:
        return False, None, f"no JSON found: the answer is not JSON ({problem})"
    try:
        return True, json.loads(block), ""
    except (ValueError, RecursionError) as exc:
        problem = _json_problem(exc)
    return False, None, f"no JSON found: the first code block is not JSON ({problem})"


def _first_json_block(text: str) -> str | None:
    """The body of the first fenced block marked ``json`` or not marked at all."""
    fences = list(_FENCE.finditer(text))
    # strict=False: a last, unclosed fence opens no block.
    for opening, closing in zip(fences[::2], fences[1::2], strict=False):
        if opening.group(1).strip().lower() in ("", "json"):
            return text[opening.end() + 1 : closing.start()]
    return None


def _json_problem(exc: ValueError | RecursionError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
    if isinstance(exc, RecursionError):
        return "nested too deeply to read"
    return str(exc)


# is_json ---------------------------------------------------------------------


def _parse_is_json(value: Any, field: str) -> bool:
    if value is False:
        raise CheckSpecError(field, "false checks nothing; remove it instead")
    if value is not True:
        raise wrong(field, "true", value)
    return True


def _is_json(_arg: bool, text: str, _: Observation) -> Outcome:
    return Outcome(_find_json(text)[2])


# json_schema -----------------------------------------------------------------


def parse_schema(value: Any, field: str) -> Schema:
    """A checked JSON Schema (see ``safeschema``) from spec data; raises CheckSpecError."""
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import Draft202012Validator, validator_for

    if not isinstance(value, Mapping):
        raise wrong(field, "a mapping (a JSON Schema)", value)
    cls: type[Validator] = Draft202012Validator
    if "$schema" in value:
        uri = read_text(value["$schema"], f"{field}.$schema", "a metaschema URI (a string)")
        try:
            found = validator_for(value, default=cast(Any, None))
        except ValueError:  # not a URI at all, e.g. "http://["
            found = None
        if found is None:
            hint = f"use '{Draft202012Validator.META_SCHEMA['$id']}' or remove '$schema'"
            raise CheckSpecError(f"{field}.$schema", f"unknown metaschema '{uri}'; {hint}")
        cls = found
    schema = dict(value)
    try:
        validator = checked_validator(schema, cls)
    except SchemaError as exc:
        where = _field_path(field, exc.path)
        raise CheckSpecError(where, f"invalid JSON Schema: {excerpt(exc.message, 160)}") from None
    except UnsafeSchema as exc:
        raise CheckSpecError(_field_path(field, exc.path), exc.message) from None
    return Schema(schema, validator)


def _field_path(field: str, path: Iterable[str | int]) -> str:
    """``field`` followed by a schema path: ``.properties.a``, ``[0]``."""
    return field + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _json_schema(arg: Schema, text: str, _: Observation) -> Outcome:
    from jsonschema.exceptions import best_match
    from referencing.exceptions import Unresolvable

    found, value, problem = _find_json(text)
    if not found:
        return Outcome(problem)
    try:
        error = best_match(arg.validator.iter_errors(value))
    except Unresolvable as exc:
        return Outcome(f"the schema has a $ref that cannot be resolved: {excerpt(str(exc), 120)}")
    except RecursionError:  # a recursive schema and an answer nested deeper than Python goes
        return Outcome("the answer's JSON is nested too deeply to check against the schema")
    if error is None:
        return Outcome()
    return Outcome(f"does not match the schema at {error.json_path}: {excerpt(error.message, 120)}")


KINDS: dict[str, Kind] = {
    "is_json": Kind(_parse_is_json, lambda _: "is JSON", _is_json),
    "json_schema": Kind(
        parse_schema,
        lambda arg: f"matches JSON Schema {excerpt(json.dumps(arg.schema), 120)}",
        _json_schema,
    ),
}
"""The JSON kinds, in the order the spec lists them."""
