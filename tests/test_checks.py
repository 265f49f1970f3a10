"""Expectation specs: how they are parsed, described, evaluated and reported."""

from __future__ import annotations

from typing import Any, cast

import pytest

from runner.checks.judge import Rubric
from runner.checks.kinds import (
    KINDS,
    Check,
    CheckResult,
    CheckSpecError,
    Observation,
    evaluate,
    excerpt,
    parse_expect,
)


def parse_one(value: Any, scope: str = "turn") -> Check:
    """The single check of an ``expect`` value."""
    (check,) = parse_expect(value, field="expect", scope=scope)
    return check


def run(
    value: Any,
    content: Any = "",
    *,
    finish_reason: str | None = "stop",
    latency_ms: float | None = 100.0,
    completion_tokens: int | None = 10,
) -> CheckResult:
    """Parse one check and evaluate it on one answer."""
    observation = Observation(content, finish_reason, latency_ms, completion_tokens)
    return evaluate(parse_one(value), observation)


def spec_error(value: Any) -> tuple[str, str]:
    """The field and message of the error an ``expect`` value raises."""
    with pytest.raises(CheckSpecError) as caught:
        parse_expect(value, field="turns[2].expect", scope="turn")
    assert str(caught.value) == f"{caught.value.field}: {caught.value.message}"
    return caught.value.field, caught.value.message


def failure(result: CheckResult) -> str:
    """The message of a failed result (asserting that it failed)."""
    assert not result.passed
    return result.message


def passes(result: CheckResult) -> bool:
    """Whether a result passed, with an empty message as passing requires."""
    assert (result.message == "") is result.passed
    return result.passed


def test_kinds_are_listed_in_spec_order() -> None:
    assert KINDS == (
        "contains",
        "not_contains",
        "matches",
        "not_matches",
        "equals",
        "is_json",
        "json_schema",
        "min_chars",
        "max_chars",
        "finish_reason",
        "max_latency_ms",
        "max_tokens",
        "tool_called",
        "no_tool_called",
        "tool_sequence",
        "tool_args_valid",
        "judge",
    )


# contains / not_contains -----------------------------------------------------


def test_contains_a_string() -> None:
    assert passes(run({"contains": "4"}, "2 + 2 = 4"))
    result = run({"contains": "4"}, "five")
    assert result.expected == "contains '4'"
    assert failure(result) == "missing '4'"
    assert result.seen == "five"


def test_contains_a_list_needs_all_of_them() -> None:
    result = run({"contains": ["4", "four", "IV"]}, "4 is four")
    assert result.expected == "contains all of: '4', 'four', 'IV'"
    assert failure(result) == "missing 'IV'"
    assert failure(run({"contains": ["4", "four"]}, "none")) == "missing '4', 'four'"
    assert passes(run({"contains": ["4", "four"]}, "four (4)"))


def test_contains_any() -> None:
    spec = {"contains": {"any": ["4", "four"]}}
    assert parse_one(spec).describe() == "contains any of: '4', 'four'"
    assert passes(run(spec, "it is four"))
    assert failure(run(spec, "it is five")) == "none of '4', 'four' appears"


def test_contains_all_mapping_and_case_insensitive() -> None:
    spec = {"contains": {"all": ["4", "four"], "case_insensitive": True}}
    assert parse_one(spec).describe() == "contains all of: '4', 'four' (case-insensitive)"
    assert passes(run(spec, "FOUR, or 4"))
    assert failure(run({"contains": {"all": ["4", "four"]}}, "FOUR, or 4")) == "missing 'four'"


def test_contains_one_string_under_any_is_described_plainly() -> None:
    check = parse_one({"contains": {"any": "Paris", "case_insensitive": True}})
    assert check.describe() == "contains 'Paris' (case-insensitive)"
    assert passes(evaluate(check, Observation("PARIS", None, None, None)))


def test_not_contains_a_string() -> None:
    spec = {"not_contains": "As an AI"}
    assert parse_one(spec).describe() == "does not contain 'As an AI'"
    assert passes(run(spec, "Sure, here it is."))
    assert failure(run(spec, "As an AI, I cannot")) == "matched forbidden 'As an AI'"
    assert passes(run(spec, "as an ai, I cannot"))


def test_not_contains_a_list_forbids_each_one() -> None:
    spec = {"not_contains": ["sorry", "apologise", "As an AI"]}
    assert parse_one(spec).describe() == "contains none of: 'sorry', 'apologise', 'As an AI'"
    assert passes(run(spec, "Here you go."))
    result = run(spec, "I apologise, I am sorry")
    assert failure(result) == "matched forbidden 'sorry', 'apologise'"


def test_not_contains_any_case_insensitive() -> None:
    spec = {"not_contains": {"any": ["as an ai"], "case_insensitive": True}}
    assert parse_one(spec).describe() == "does not contain 'as an ai' (case-insensitive)"
    assert failure(run(spec, "AS AN AI, no.")) == "matched forbidden 'as an ai'"


def test_not_contains_all_fails_only_when_all_appear() -> None:
    spec = {"not_contains": {"all": ["foo", "bar"]}}
    assert parse_one(spec).describe() == "does not contain all of: 'foo', 'bar'"
    assert passes(run(spec, "foo only"))
    assert passes(run(spec, "bar only"))
    assert failure(run(spec, "foo and bar")) == "matched forbidden 'foo', 'bar'"


def test_not_contains_failure_shows_the_region_of_the_match() -> None:
    answer = "x " * 300 + "As an AI I cannot" + " y" * 300
    result = run({"not_contains": "As an AI"}, answer)
    assert result.seen.startswith("…x x")
    assert "As an AI I cannot" in result.seen
    assert result.seen.endswith("y y…")
    assert len(result.seen) <= 200


# matches / not_matches --------------------------------------------------------


def test_matches_searches_anywhere() -> None:
    spec = {"matches": r"\d+"}
    assert parse_one(spec).describe() == r"matches /\d+/"
    assert passes(run(spec, "the answer is 42."))
    assert failure(run(spec, "no digits")) == r"no match for /\d+/"


def test_matches_case_insensitive_flag() -> None:
    spec = {"matches": {"pattern": "^paris$", "case_insensitive": True}}
    assert parse_one(spec).describe() == "matches /^paris$/i"
    assert passes(run(spec, "Paris"))
    assert failure(run({"matches": {"pattern": "^paris$"}}, "Paris")) == "no match for /^paris$/"


def test_not_matches_names_what_matched() -> None:
    spec = {"not_matches": {"pattern": r"as an (ai|llm)", "case_insensitive": True}}
    assert parse_one(spec).describe() == "does not match /as an (ai|llm)/i"
    assert passes(run(spec, "Here you go"))
    assert failure(run(spec, "Well, as an LLM I...")) == "matched forbidden 'as an LLM'"


# equals -----------------------------------------------------------------------


def test_equals_ignores_surrounding_whitespace() -> None:
    spec = {"equals": " Paris "}
    assert parse_one(spec).describe() == "equals ' Paris '"
    assert passes(run(spec, "\nParis\n"))
    assert failure(run(spec, "paris")) == "differs from 'Paris'"
    assert failure(run(spec, "Paris.")) == "differs from 'Paris'"


def test_equals_case_insensitive() -> None:
    spec = {"equals": {"value": "Paris", "case_insensitive": True}}
    assert parse_one(spec).describe() == "equals 'Paris' (case-insensitive)"
    assert passes(run(spec, "  PARIS"))


def test_equals_an_empty_answer() -> None:
    assert passes(run({"equals": ""}, None))
    assert failure(run({"equals": ""}, "hi")) == "differs from ''"


# is_json / json_schema: where the answer's JSON is found --------------------------


def finds(text: str, value: Any) -> bool:
    """Whether the checks read exactly ``value`` as the JSON of answer ``text``."""
    return passes(run({"is_json": True}, text)) and passes(
        run({"json_schema": {"const": value}}, text)
    )


def finds_none(text: str) -> bool:
    """Whether the checks find no JSON in answer ``text``."""
    return failure(run({"is_json": True}, text)).startswith("no JSON found: ")


def test_json_is_read_from_the_whole_answer_first() -> None:
    assert finds(' {"a": [1, 2]} ', {"a": [1, 2]})
    assert finds("42", 42)


def test_json_falls_back_to_the_first_fenced_block() -> None:
    text = 'Here it is:\n```json\n{"a": 1}\n```\nand\n```\n{"b": 2}\n```'
    assert finds(text, {"a": 1})
    assert finds('Sure:\n```\n["x"]\n```', ["x"])
    assert finds("```python\nprint(1)\n```\n```json\n[1]\n```", [1])
    assert finds("Sure:\r\n```JSON\r\n[2]\r\n```\r\n", [2])
    assert finds("Sure:\n  ```\n  [3]\n  ```", [3])


def test_no_json_in_prose() -> None:
    assert finds_none("I think the answer is yes.")
    assert finds_none("```json\n{broken\n```")
    assert finds_none("```json\n[1]")


def test_is_json() -> None:
    assert parse_one({"is_json": True}).describe() == "is JSON"
    assert passes(run({"is_json": True}, '{"ok": true}'))
    assert passes(run({"is_json": True}, 'Result:\n```json\n{"ok": true}\n```'))
    prose = run({"is_json": True}, "Hello there")
    assert (
        failure(prose)
        == "no JSON found: the answer is not JSON (Expecting value at line 1, column 1)"
    )
    assert prose.seen == "Hello there"
    broken = run({"is_json": True}, 'Result:\n```json\n{"ok": tru}\n```')
    assert failure(broken) == (
        "no JSON found: the first code block is not JSON (Expecting value at line 1, column 8)"
    )


SCHEMA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "items": {
            "type": "array",
            "items": {"type": "object", "properties": {"price": {"type": "number"}}},
        },
    },
}


DRAFT7 = "http://json-schema.org/draft-07/schema#"


def test_json_schema_passes() -> None:
    check = parse_one({"json_schema": SCHEMA})
    assert check.describe().startswith('matches JSON Schema {"type": "object", "required"')
    assert len(check.describe()) <= len("matches JSON Schema ") + 120
    answer = '```json\n{"name": "a", "items": [{"price": 1.5}]}\n```'
    assert passes(evaluate(check, Observation(answer, "stop", 1.0, 1)))


def test_json_schema_names_the_path_of_the_error() -> None:
    result = run({"json_schema": SCHEMA}, '{"name": "a", "items": [{"price": "cheap"}]}')
    assert failure(result) == (
        "does not match the schema at $.items[0].price: 'cheap' is not of type 'number'"
    )
    missing = run({"json_schema": SCHEMA}, '{"items": []}')
    assert failure(missing) == "does not match the schema at $: 'name' is a required property"


def test_json_schema_without_json() -> None:
    result = run({"json_schema": SCHEMA}, "no json here")
    assert (
        failure(result)
        == "no JSON found: the answer is not JSON (Expecting value at line 1, column 1)"
    )


def test_json_schema_honours_its_schema_keyword() -> None:
    # Draft 4 spells an exclusive maximum as a boolean; 2020-12 rejects that.
    draft4 = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "maximum": 10,
        "exclusiveMaximum": True,
    }
    assert passes(run({"json_schema": draft4}, "9"))
    assert failure(run({"json_schema": draft4}, "10")) == (
        "does not match the schema at $: 10 is greater than or equal to the maximum of 10"
    )
    assert spec_error({"json_schema": {k: v for k, v in draft4.items() if k != "$schema"}}) == (
        "turns[2].expect.json_schema.exclusiveMaximum",
        "invalid JSON Schema: True is not of type 'number'",
    )


def test_json_schema_with_a_ref_that_does_not_resolve_is_a_spec_error() -> None:
    schema = {"properties": {"a": {"$ref": "#/$defs/missing"}}}
    assert spec_error({"json_schema": schema}) == (
        "turns[2].expect.json_schema.properties.a.$ref",
        "'$ref: #/$defs/missing' points at nothing in the schema",
    )


OUTSIDE = (
    "is refused; mtrun resolves references only inside the schema, never files or URLs: "
    "write '#' or '#/$defs/NAME'"
)
LOOPS = (
    "this '$ref' leads back to where it is used without going into the answer, so checking "
    "would never end; refer to a part of it (e.g. under 'properties' or 'items') or to a "
    "schema under '$defs'"
)


@pytest.mark.parametrize(
    ("schema", "field", "message"),
    [
        ({"$ref": "file:///etc/passwd"}, "$ref", f"'$ref: file:///etc/passwd' {OUTSIDE}"),
        (
            {"properties": {"a": {"$ref": "http://127.0.0.1/s.json#/x"}}},
            "properties.a.$ref",
            f"'$ref: http://127.0.0.1/s.json#/x' {OUTSIDE}",
        ),
        ({"items": {"$ref": "other.json"}}, "items.$ref", f"'$ref: other.json' {OUTSIDE}"),
        ({"$ref": "#anchor"}, "$ref", f"'$ref: #anchor' {OUTSIDE}"),
        (
            {"$id": "http://127.0.0.1/", "$ref": "#"},
            "$id",
            "mtrun resolves references only inside the schema; remove '$id'",
        ),
        (
            {"$schema": "http://json-schema.org/draft-04/schema#", "id": "file:///etc/"},
            "id",
            "mtrun resolves references only inside the schema; remove 'id'",
        ),
        (
            {"$dynamicRef": "#meta"},
            "$dynamicRef",
            "dynamic references are not supported; use '$ref' to '#/$defs/...'",
        ),
        (
            {"properties": {"a": {"$schema": "http://json-schema.org/draft-07/schema#"}}},
            "properties.a.$schema",
            "only the schema's top level may name a metaschema",
        ),
        (
            {"required": ["a"], "$ref": "#/required"},
            "$ref",
            "'$ref: #/required' does not point at a schema",
        ),
        ({"$ref": "#"}, "$ref", LOOPS),
        ({"$ref": ""}, "$ref", f"'$ref: ' {OUTSIDE}"),
        (
            {"properties": {"a": {"allOf": [{"$ref": "#/properties/a"}]}}},
            "properties.a.allOf[0].$ref",
            LOOPS,
        ),
        (
            {"$defs": {"a": {"not": {"$ref": "#/$defs/b"}}, "b": {"$ref": "#/$defs/a"}}},
            "$defs.b.$ref",
            LOOPS,
        ),
        (
            {
                "$defs": {
                    f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 2} for i in range(30)
                }
                | {"d30": {}},
                "$ref": "#/$defs/d0",
            },
            "$defs.d18.anyOf[1]",
            "the schema applies more than 10,000 subschemas to one value "
            "(through '$ref', 'allOf', 'anyOf', ...); simplify it",
        ),
        (
            {"properties": {"a": {"pattern": "^(a+)+$"}}},
            "properties.a.pattern",
            "the regular expression repeats a repetition, e.g. (a+)+, which can take for ever "
            "on some answers; make the inner part match one way only",
        ),
        (
            {"pattern": "a{99999999999}"},
            "pattern",
            "invalid regular expression: the repetition number is too large",
        ),
        (
            {"pattern": "a" * 1001},
            "pattern",
            "the regular expression is 1,001 characters; at most 1,000",
        ),
    ],
)
def test_json_schema_may_only_refer_inside_itself_and_must_end(
    schema: dict[str, Any], field: str, message: str
) -> None:
    assert spec_error({"json_schema": schema}) == (f"turns[2].expect.json_schema.{field}", message)


@pytest.mark.parametrize(
    "schema",
    [
        {"$defs": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/n"}}},
        {"type": "object", "properties": {"child": {"$ref": "#"}}},
        {"items": [{"$ref": "#/items/1"}, {"type": "integer"}], "$schema": DRAFT7},
        {
            "pattern": r"^\d+(\.\d+)*$",
            "$defs": {"a~b/c": {}},
            "allOf": [{"$ref": "#/$defs/a~0b~1c"}],
        },
    ],
)
def test_json_schema_refs_inside_the_schema_work(schema: dict[str, Any]) -> None:
    assert parse_one({"json_schema": schema}).kind == "json_schema"


def test_json_schema_refs_resolve_inside_the_schema() -> None:
    schema = {"$defs": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/n"}}}
    assert passes(run({"json_schema": schema}, '{"a": 1}'))
    assert failure(run({"json_schema": schema}, '{"a": "x"}')) == (
        "does not match the schema at $.a: 'x' is not of type 'integer'"
    )


class Broken:
    """A validator with a bug: it raises whatever it is asked."""

    def iter_errors(self, instance: Any) -> Any:
        raise ZeroDivisionError("division by zero")


def broken_check() -> Check:
    """A json_schema check whose validator raises, built by hand past the loader."""
    from runner.checks.structured import Schema

    return Check("json_schema", Schema({}, cast(Any, Broken())), "turn")


def test_a_check_that_raises_fails_with_its_error_and_keeps_the_answer() -> None:
    result = evaluate(broken_check(), Observation('{"a": 1}', "stop", 1.0, 1))
    assert not result.passed
    assert result.message == (
        "the check could not run (ZeroDivisionError: division by zero); "
        "this is a bug in mtrun, please report it"
    )
    assert result.seen == '{"a": 1}'
    assert result.details == {"error": "ZeroDivisionError: division by zero"}


def test_a_long_chain_of_refs_is_refused_at_load() -> None:
    chain = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(3000)} | {"d3000": {}}
    assert spec_error({"json_schema": {"$defs": chain, "$ref": "#/$defs/d0"}}) == (
        "turns[2].expect.json_schema.$defs.d99.$ref",
        "subschemas apply to one value through more than 100 '$ref', 'allOf', ... in a chain; "
        "simplify the schema",
    )
    short = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(50)} | {"d50": {}}
    assert passes(run({"json_schema": {"$defs": short, "$ref": "#/$defs/d0"}}, "1"))


def test_draft3_schemas_in_type_cannot_loop() -> None:
    draft3 = {
        "$schema": "http://json-schema.org/draft-03/schema#",
        "type": ["string", {"$ref": "#"}],
    }
    assert spec_error({"json_schema": draft3}) == (
        "turns[2].expect.json_schema.type[1].$ref",
        LOOPS,
    )


def test_an_answer_nested_deeper_than_a_recursive_schema_can_check() -> None:
    schema = {"type": "array", "items": {"$ref": "#"}}
    deep = "[" * 900 + "]" * 900
    assert failure(run({"json_schema": schema}, deep)) == (
        "the answer's JSON is nested too deeply to check against the schema"
    )
    assert passes(run({"json_schema": schema}, "[[[]], []]"))


def test_json_nested_too_deeply_is_not_json() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    assert failure(run({"is_json": True}, deep)) == (
        "no JSON found: the answer is not JSON (nested too deeply to read)"
    )


@pytest.mark.parametrize("pattern", ["(a+)+$", "(\\w+\\s*)+x", "(?:a*)*", "((ab)*c?)+"])
def test_a_regex_that_could_backtrack_for_ever_is_refused(pattern: str) -> None:
    field, message = spec_error({"matches": pattern})
    assert field == "turns[2].expect.matches"
    assert message.startswith("the regular expression repeats a repetition, e.g. (a+)+")


@pytest.mark.parametrize("pattern", ["\\d+(\\.\\d+)*", "(ab)+", "a{2,5}b+", "(x|y)+z*"])
def test_ordinary_repeats_are_allowed(pattern: str) -> None:
    assert parse_one({"matches": pattern}).kind == "matches"


# numbers and reported facts ----------------------------------------------------


def test_min_and_max_chars() -> None:
    assert parse_one({"min_chars": 20}).describe() == "at least 20 characters"
    assert parse_one({"max_chars": 1}).describe() == "at most 1 character"
    assert passes(run({"max_chars": 5}, "hello"))
    assert failure(run({"max_chars": 200}, "x" * 412)) == "412 characters, at most 200 allowed"
    assert failure(run({"min_chars": 20}, "short")) == "5 characters, at least 20 required"
    assert failure(run({"min_chars": 2}, "a")) == "1 character, at least 2 required"
    assert passes(run({"min_chars": 0}, None))


def test_non_text_content_is_checked_as_its_json() -> None:
    parts = [{"type": "text", "text": "hi"}]
    result = run({"contains": '"text": "hi"'}, parts)
    assert passes(result)
    assert result.seen == '[{"type": "text", "text": "hi"}]'


def test_finish_reason() -> None:
    assert parse_one({"finish_reason": "stop"}).describe() == "finish_reason 'stop'"
    spec = {"finish_reason": ["stop", "tool_calls"]}
    assert parse_one(spec).describe() == "finish_reason one of: 'stop', 'tool_calls'"
    ok = run(spec, "x", finish_reason="tool_calls")
    assert passes(ok)
    assert ok.seen == "finish_reason 'tool_calls'"
    cut = run(spec, "x", finish_reason="length")
    assert failure(cut) == "finish_reason was 'length'"
    assert cut.seen == "finish_reason 'length'"
    unknown = run(spec, "x", finish_reason=None)
    assert failure(unknown) == "the API reported no finish_reason"
    assert unknown.seen == "no finish_reason"


def test_max_latency_ms() -> None:
    assert parse_one({"max_latency_ms": 500}).describe() == "latency at most 500 ms"
    assert parse_one({"max_latency_ms": 2.5}).describe() == "latency at most 2.5 ms"
    ok = run({"max_latency_ms": 500}, latency_ms=500.0)
    assert passes(ok)
    assert ok.seen == "latency 500 ms"
    slow = run({"max_latency_ms": 500}, latency_ms=812.4)
    assert failure(slow) == "took 812.4 ms, at most 500 allowed"
    assert slow.seen == "latency 812.4 ms"
    unknown = run({"max_latency_ms": 500}, latency_ms=None)
    assert failure(unknown) == "no latency was recorded"
    assert unknown.seen == "latency unknown"


def test_max_tokens() -> None:
    assert parse_one({"max_tokens": 100}).describe() == "at most 100 completion tokens"
    ok = run({"max_tokens": 100}, completion_tokens=100)
    assert passes(ok)
    assert ok.seen == "100 completion tokens"
    long = run({"max_tokens": 100}, completion_tokens=150)
    assert failure(long) == "150 completion tokens, at most 100 allowed"
    assert failure(run({"max_tokens": 0}, completion_tokens=1)) == (
        "1 completion token, at most 0 allowed"
    )
    unknown = run({"max_tokens": 100}, completion_tokens=None)
    assert failure(unknown) == "the API reported no completion tokens"
    assert unknown.seen == "no usage reported"


# judge ----------------------------------------------------------------------------


def test_judge_parse_forms() -> None:
    plain = parse_one({"judge": "The answer is polite."}, scope="final")
    assert plain == Check("judge", Rubric("The answer is polite."), "final")
    assert plain.describe() == "judge: The answer is polite."
    named = parse_one({"judge": {"rubric": "Polite  and\nshort.", "model": "m-1"}})
    assert named.arg == Rubric("Polite  and\nshort.", "m-1")
    assert named.describe() == "judge: Polite and short. (model m-1)"
    long = parse_one({"judge": "word " * 100})
    assert long.describe() == "judge: " + excerpt("word " * 100, 120)
    assert long.describe().endswith("…")


def test_judge_checks_are_not_evaluated_here() -> None:
    check = parse_one({"judge": "Be nice."})
    with pytest.raises(ValueError) as caught:
        evaluate(check, Observation("hi", "stop", 1.0, 1))
    assert str(caught.value) == "judge checks are evaluated by the engine"


# the expect value as a whole ------------------------------------------------------


def test_mapping_form_keeps_the_written_order_and_scope() -> None:
    checks = parse_expect({"max_chars": 10, "contains": "a"}, field="expect", scope="every_turn")
    assert [(c.kind, c.scope) for c in checks] == [
        ("max_chars", "every_turn"),
        ("contains", "every_turn"),
    ]


def test_list_form_lets_a_kind_repeat() -> None:
    checks = parse_expect(
        [{"contains": "a"}, {"contains": "b", "max_chars": 5}, {"matches": "c"}],
        field="expect_final",
        scope="final",
    )
    assert [c.describe() for c in checks] == [
        "contains 'a'",
        "contains 'b'",
        "at most 5 characters",
        "matches /c/",
    ]
    results = [evaluate(c, Observation("ab", "stop", 1.0, 1)) for c in checks]
    assert [r.passed for r in results] == [True, True, True, False]


def test_as_dict_shape() -> None:
    result = run({"contains": "4"}, "five")
    assert result.as_dict() == {
        "kind": "contains",
        "scope": "turn",
        "passed": False,
        "expected": "contains '4'",
        "seen": "five",
        "message": "missing '4'",
    }
    judged = CheckResult("judge", "final", True, "judge: x", "hi", "", {"verdict": "pass"})
    assert judged.as_dict()["details"] == {"verdict": "pass"}
    assert list(judged.as_dict()) == [
        "kind",
        "scope",
        "passed",
        "expected",
        "seen",
        "message",
        "details",
    ]


def test_excerpt() -> None:
    assert excerpt("  a\n\n b\tc  ") == "a b c"
    assert excerpt("x" * 10, 10) == "x" * 10
    assert excerpt("x" * 11, 10) == "x" * 9 + "…"
    assert excerpt("abc def ghi jkl", 8, around=12) == "…ghi jkl"
    assert excerpt("a" * 50 + "NEEDLE" + "b" * 50, 20, around=50) == "…aaaaaNEEDLEbbbbbbb…"


def test_unknown_scope_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="scope must be one of"):
        parse_expect({"contains": "a"}, field="expect", scope="conversation")


# spec errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        ({}, "turns[2].expect", "must not be empty; add a check such as 'contains: ...'"),
        ([], "turns[2].expect", "must not be empty; add a check such as 'contains: ...'"),
        (
            [{"contains": "a"}, {}],
            "turns[2].expect[1]",
            "must not be empty; add a check such as 'contains: ...'",
        ),
        (
            "contains 4",
            "turns[2].expect",
            "expected a mapping of checks or a list of mappings, got a string",
        ),
        (
            [{"contains": "a"}, "matches: x"],
            "turns[2].expect[1]",
            "expected a mapping of checks such as 'contains: ...', got a string",
        ),
        (
            {"contians": "4"},
            "turns[2].expect.contians",
            "unknown check; did you mean 'contains'?",
        ),
        (
            [{"contains": "a"}, {"max_token": 5}],
            "turns[2].expect[1].max_token",
            "unknown check; did you mean 'max_tokens'?",
        ),
        (
            {"sparkles": 1},
            "turns[2].expect.sparkles",
            "unknown check; expected one of: " + ", ".join(KINDS),
        ),
    ],
)
def test_expect_value_errors(value: Any, field: str, message: str) -> None:
    assert spec_error(value) == (field, message)


PHRASES = "a string, a list of strings, or a mapping with 'any' or 'all'"


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        ({"contains": 4}, "turns[2].expect.contains", f"expected {PHRASES}, got 4"),
        (
            {"not_contains": None},
            "turns[2].expect.not_contains",
            f"expected {PHRASES}, got an empty value",
        ),
        ({"contains": ""}, "turns[2].expect.contains", "must not be empty"),
        ({"contains": []}, "turns[2].expect.contains", "must not be an empty list"),
        ({"contains": ["a", 3]}, "turns[2].expect.contains[1]", "expected a string, got 3"),
        (
            {"contains": {"case_insensitive": True}},
            "turns[2].expect.contains",
            "give exactly one of 'any' or 'all'",
        ),
        (
            {"contains": {"any": "a", "all": "b"}},
            "turns[2].expect.contains",
            "give exactly one of 'any' or 'all'",
        ),
        ({"contains": {"any": []}}, "turns[2].expect.contains.any", "must not be an empty list"),
        (
            {"contains": {"any": {"x": 1}}},
            "turns[2].expect.contains.any",
            "expected a string or a list of strings, got a mapping",
        ),
        (
            {"contains": {"al": ["a"]}},
            "turns[2].expect.contains.al",
            "unknown key; did you mean 'all'?",
        ),
        (
            {"contains": {"any": "a", "case_insensitive": "yes"}},
            "turns[2].expect.contains.case_insensitive",
            "expected true or false, got a string",
        ),
    ],
)
def test_contains_spec_errors(value: Any, field: str, message: str) -> None:
    assert spec_error(value) == (field, message)


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        (
            {"matches": "(unclosed"},
            "turns[2].expect.matches",
            "invalid regular expression: missing ), unterminated subpattern at position 0",
        ),
        (
            {"not_matches": {"pattern": "a[b"}},
            "turns[2].expect.not_matches.pattern",
            "invalid regular expression: unterminated character set at position 1",
        ),
        (
            {"matches": {"case_insensitive": True}},
            "turns[2].expect.matches",
            "missing required key 'pattern'",
        ),
        (
            {"matches": ["a"]},
            "turns[2].expect.matches",
            "expected a regular expression (a string) or a mapping with 'pattern', got a list",
        ),
        ({"matches": ""}, "turns[2].expect.matches", "must not be empty"),
        (
            {"matches": {"pattern": "a", "flags": "i"}},
            "turns[2].expect.matches.flags",
            "unknown key; expected one of: pattern, case_insensitive",
        ),
        (
            {"equals": 4},
            "turns[2].expect.equals",
            "expected a string or a mapping with 'value', got 4",
        ),
        (
            {"equals": {"case_insensitive": True}},
            "turns[2].expect.equals",
            "missing required key 'value'",
        ),
        (
            {"equals": {"value": False}},
            "turns[2].expect.equals.value",
            "expected a string, got false",
        ),
    ],
)
def test_matches_and_equals_spec_errors(value: Any, field: str, message: str) -> None:
    assert spec_error(value) == (field, message)


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        ({"is_json": False}, "turns[2].expect.is_json", "false checks nothing; remove it instead"),
        ({"is_json": "yes"}, "turns[2].expect.is_json", "expected true, got a string"),
        ({"is_json": 1}, "turns[2].expect.is_json", "expected true, got 1"),
        (
            {"json_schema": True},
            "turns[2].expect.json_schema",
            "expected a mapping (a JSON Schema), got true",
        ),
        (
            {"json_schema": {"type": "strin"}},
            "turns[2].expect.json_schema.type",
            "invalid JSON Schema: 'strin' is not valid under any of the given schemas",
        ),
        (
            {"json_schema": {"properties": {"tags": {"minItems": -1}}}},
            "turns[2].expect.json_schema.properties.tags.minItems",
            "invalid JSON Schema: -1 is less than the minimum of 0",
        ),
        (
            {"json_schema": {"$schema": "https://example.com/my-schema"}},
            "turns[2].expect.json_schema.$schema",
            "unknown metaschema 'https://example.com/my-schema'; "
            "use 'https://json-schema.org/draft/2020-12/schema' or remove '$schema'",
        ),
        (
            {"json_schema": {"$schema": 7}},
            "turns[2].expect.json_schema.$schema",
            "expected a metaschema URI (a string), got 7",
        ),
    ],
)
def test_json_spec_errors(value: Any, field: str, message: str) -> None:
    assert spec_error(value) == (field, message)


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        ({"min_chars": -1}, "turns[2].expect.min_chars", "must be 0 or more, got -1"),
        (
            {"max_chars": True},
            "turns[2].expect.max_chars",
            "expected a whole number (0 or more), got true",
        ),
        (
            {"max_chars": 2.5},
            "turns[2].expect.max_chars",
            "expected a whole number (0 or more), got 2.5",
        ),
        (
            {"max_tokens": False},
            "turns[2].expect.max_tokens",
            "expected a whole number (0 or more), got false",
        ),
        (
            {"max_tokens": "100"},
            "turns[2].expect.max_tokens",
            "expected a whole number (0 or more), got a string",
        ),
        ({"max_tokens": -5}, "turns[2].expect.max_tokens", "must be 0 or more, got -5"),
        ({"max_latency_ms": 0}, "turns[2].expect.max_latency_ms", "must be more than 0, got 0"),
        (
            {"max_latency_ms": -1.5},
            "turns[2].expect.max_latency_ms",
            "must be more than 0, got -1.5",
        ),
        (
            {"max_latency_ms": True},
            "turns[2].expect.max_latency_ms",
            "expected a number of milliseconds, got true",
        ),
        (
            {"max_latency_ms": float("inf")},
            "turns[2].expect.max_latency_ms",
            "expected a number of milliseconds, got inf",
        ),
        (
            {"finish_reason": 1},
            "turns[2].expect.finish_reason",
            "expected a string or a list of strings, got 1",
        ),
        ({"finish_reason": []}, "turns[2].expect.finish_reason", "must not be an empty list"),
        ({"finish_reason": ["stop", ""]}, "turns[2].expect.finish_reason[1]", "must not be empty"),
    ],
)
def test_number_and_fact_spec_errors(value: Any, field: str, message: str) -> None:
    assert spec_error(value) == (field, message)


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        ({"judge": ""}, "turns[2].expect.judge", "must not be empty"),
        (
            {"judge": ["be nice"]},
            "turns[2].expect.judge",
            "expected a rubric (a string) or a mapping with 'rubric', got a list",
        ),
        ({"judge": {"model": "m"}}, "turns[2].expect.judge", "missing required key 'rubric'"),
        ({"judge": {"rubric": "  "}}, "turns[2].expect.judge.rubric", "must not be empty"),
        (
            {"judge": {"rubric": "x", "model": 3}},
            "turns[2].expect.judge.model",
            "expected a string, got 3",
        ),
        (
            {"judge": {"rubric": "x", "modle": "m"}},
            "turns[2].expect.judge.modle",
            "unknown key; did you mean 'model'?",
        ),
    ],
)
def test_judge_spec_errors(value: Any, field: str, message: str) -> None:
    assert spec_error(value) == (field, message)


def test_an_error_in_a_later_list_item_names_its_index() -> None:
    value = [{"contains": "a"}, {"matches": "ok", "max_chars": -3}]
    assert spec_error(value) == ("turns[2].expect[1].max_chars", "must be 0 or more, got -3")
