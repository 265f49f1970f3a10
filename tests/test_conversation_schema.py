"""Keep the editor schema (runner/schemas/conversation.schema.json) in step with the loader."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from loading import load_as

from runner.checks.kinds import KINDS
from runner.errors import InputError
from runner.spec.content import AUDIO_FORMATS, IMAGE_DETAILS, PART_TYPES, TOOL_CALL_KEYS
from runner.spec.loader import (
    CONVERSATION_KEYS,
    DEFAULTS_KEYS,
    FILE_KEYS,
    MAX_ID_LENGTH,
    MESSAGE_KEYS,
    RESERVED_PARAMS,
    SCHEMA_KEY,
    TURN_KEYS,
)
from runner.spec.model import MESSAGE_ROLES
from runner.spec.tools import REASONING_POLICIES
from runner.spec.toolspec import (
    FUNCTION_KEYS,
    MAX_TOOL_STEPS_LIMIT,
    RULE_KEYS,
    TOOL_KEYS,
    TOOL_NAME,
)

ROOT = Path(__file__).parent.parent
SCHEMA: dict[str, Any] = json.loads(
    (ROOT / "runner" / "schemas" / "conversation.schema.json").read_text(encoding="utf-8")
)
VALIDATOR = Draft202012Validator(SCHEMA)
DEFS: dict[str, Any] = SCHEMA["$defs"]
DATA = Path(__file__).parent / "data" / "loader"
VALID_FIXTURES = sorted([*(DATA / "valid").glob("*.yaml"), *(DATA / "vars").glob("*.yaml")])


def schema_accepts(document: object) -> bool:
    return VALIDATOR.is_valid(document)


def loader_accepts(text: str) -> tuple[bool, str]:
    """Whether the loader accepts ``text`` as a file, and its error message if not."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "case.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_as(path)
        except InputError as exc:
            return False, str(exc)
    return True, ""


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_every_level_allows_exactly_the_loaders_keys() -> None:
    closed = {
        name: set(definition["properties"])
        for name, definition in DEFS.items()
        if "properties" in definition
    }
    assert closed == {
        "single_conversation_file": {*CONVERSATION_KEYS, SCHEMA_KEY},
        "conversations_file": {*FILE_KEYS, SCHEMA_KEY},
        "conversation": set(CONVERSATION_KEYS),
        "defaults": set(DEFAULTS_KEYS),
        "turn": set(TURN_KEYS),
        "message": set(MESSAGE_KEYS),
        "expect_map": set(KINDS),
        "tool": set(TOOL_KEYS),
        "function": set(FUNCTION_KEYS),
        "tool_rule": set(RULE_KEYS),
        "tool_sequence": {"sequence"},
        "tool_call": set(TOOL_CALL_KEYS),
        "text_part": {"type", "text"},
        "image_part": {"type", "image_url"},
        "audio_part": {"type", "input_audio"},
    }
    for name in closed:
        assert DEFS[name]["additionalProperties"] is False, name


def test_required_keys_match_the_loader() -> None:
    assert DEFS["single_conversation_file"]["required"] == ["turns"]
    assert DEFS["conversation"]["required"] == ["turns"]
    assert DEFS["conversations_file"]["required"] == ["conversations"]
    assert DEFS["turn"]["required"] == ["content"]
    assert DEFS["message"]["required"] == ["role"]  # content: unless it has tool_calls
    assert DEFS["tool"]["required"] == ["type", "function"]
    assert DEFS["function"]["required"] == ["name"]
    assert DEFS["tool_rule"]["required"] == ["result"]


def test_enumerations_and_limits_match_the_loader() -> None:
    assert tuple(DEFS["message"]["properties"]["role"]["enum"]) == MESSAGE_ROLES
    assert set(DEFS["params"]["propertyNames"]["not"]["enum"]) == set(RESERVED_PARAMS)
    assert DEFS["id"]["allOf"][1]["maxLength"] == MAX_ID_LENGTH
    assert DEFS["tool_name"]["pattern"] == f"^{TOOL_NAME.pattern}$"
    assert tuple(DEFS["reasoning"]["enum"]) == REASONING_POLICIES
    assert DEFS["max_tool_steps"]["maximum"] == MAX_TOOL_STEPS_LIMIT
    parts = [DEFS[ref["$ref"].rsplit("/", 1)[1]] for ref in DEFS["content_parts"]["items"]["anyOf"]]
    assert tuple(part["properties"]["type"]["const"] for part in parts) == PART_TYPES
    assert tuple(parts[1]["properties"]["image_url"]["properties"]["detail"]["enum"]) == (
        IMAGE_DETAILS
    )
    assert tuple(parts[2]["properties"]["input_audio"]["properties"]["format"]["enum"]) == (
        AUDIO_FORMATS
    )


def test_every_field_is_documented() -> None:
    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.get("properties", {}).items():
                target = DEFS[value["$ref"].rsplit("/", 1)[1]] if "$ref" in value else value
                assert value.get("description") or target.get("description"), f"{where}.{key}"
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(SCHEMA, "schema")
    assert SCHEMA["description"]


@pytest.mark.parametrize("path", VALID_FIXTURES, ids=lambda p: p.name)
def test_valid_fixtures_pass_both(path: Path) -> None:
    assert VALIDATOR.is_valid(yaml.safe_load(path.read_text(encoding="utf-8")))
    assert load_as(path)


STRUCTURAL_ERRORS = [
    "id: greeting\n",
    "Hello\n",
    "[]\n",
    "- Hello\n",
    "conversations: []\n",
    "conversations: {turns: [Hi]}\n",
    "conversations:\n  - turns: [Hi]\nturns: [Hi]\n",
    "model: m\nconversations:\n  - turns: [Hi]\n",
    "defaults: {turns: [Hi]}\nconversations:\n  - turns: [Hi]\n",
    "defaults: [m]\nconversations:\n  - turns: [Hi]\n",
    "conversations:\n  - {id: x}\n",
    "conversations:\n  - {turns: [Hi], $schema: x}\n",
    "turns: [Hi]\ntutns: [Hi]\n",
    "turns: []\n",
    "turns: Hello\n",
    "turns: ['']\n",
    "turns: ['  ']\n",
    "turns: [[Hi]]\n",
    "turns: [42]\n",
    "turns: [null]\n",
    "turns: [{params: {seed: 1}}]\n",
    "turns: [{content: ''}]\n",
    "turns: [{content: Hi, extra: 1}]\n",
    "turns: [{content: Hi, params: [seed]}]\n",
    "turns: [{content: Hi, params: {stream: true}}]\n",
    "id: 42\nturns: [Hi]\n",
    "id: ''\nturns: [Hi]\n",
    f"id: {'x' * (MAX_ID_LENGTH + 1)}\nturns: [Hi]\n",
    'id: "a\\u0001b"\nturns: [Hi]\n',
    "model: ''\nturns: [Hi]\n",
    "model: [a]\nturns: [Hi]\n",
    "system: ' '\nturns: [Hi]\n",
    "system: null\nturns: [Hi]\n",
    "params: [temperature]\nturns: [Hi]\n",
    "params: {model: x}\nturns: [Hi]\n",
    "params: {messages: []}\nturns: [Hi]\n",
    "params: {stream: false}\nturns: [Hi]\n",
    "messages: {role: user}\nturns: [Hi]\n",
    "messages: [Hi]\nturns: [Hi]\n",
    "messages: [{content: Hi}]\nturns: [Hi]\n",
    "messages: [{role: user}]\nturns: [Hi]\n",
    "messages: [{role: usr, content: Hi}]\nturns: [Hi]\n",
    "messages: [{role: user, content: ''}]\nturns: [Hi]\n",
    "messages: [{role: user, content: []}]\nturns: [Hi]\n",
    "messages: [{role: user, content: [Hi]}]\nturns: [Hi]\n",
    "messages: [{role: user, content: Hi, name: ''}]\nturns: [Hi]\n",
    "messages: [{role: user, content: Hi, nmae: x}]\nturns: [Hi]\n",
    "vars: [x]\nturns: [Hi]\n",
    "vars: {2x: a}\nturns: [Hi]\n",
    "vars: {a-b: a}\nturns: [Hi]\n",
    "vars: {x: null}\nturns: [Hi]\n",
    "vars: {x: {a: 1}}\nturns: [Hi]\n",
    "vars: {x: []}\nturns: [Hi]\n",
    "vars: {x: [a, [b]]}\nturns: [Hi]\n",
    "vars: {x: [a, null]}\nturns: [Hi]\n",
    "vars: {x: 1}\nconversations:\n  - turns: [Hi]\n",
    "defaults: {vars: [x]}\nconversations:\n  - turns: [Hi]\n",
    "tools: {f: 1}\nturns: [Hi]\n",
    "tools: [{type: function, function: {name: 'a b'}}]\nturns: [Hi]\n",
    "tools: [{type: function, function: {description: x}}]\nturns: [Hi]\n",
    "tools: [{type: function, function: {name: f}, extra: 1}]\nturns: [Hi]\n",
    "max_tool_steps: 0\nturns: [Hi]\n",
    "max_tool_steps: 101\nturns: [Hi]\n",
    "reasoning: sometimes\nturns: [Hi]\n",
    "unscripted_tool_result: [x]\nturns: [Hi]\n",
    "tools: [{type: function, function: {name: f}}]\ntool_results: {f: null}\nturns: [Hi]\n",
    "tools: [{type: function, function: {name: f}}]\ntool_results: {f: {a: 1}}\nturns: [Hi]\n",
    "tools: [{type: function, function: {name: f}}]\ntool_results: {f: []}\nturns: [Hi]\n",
    "messages: [{role: tool, content: x}]\nturns: [Hi]\n",
    "messages: [{role: user, content: x, tool_call_id: c}]\nturns: [Hi]\n",
    "messages: [{role: user, content: null}]\nturns: [Hi]\n",
    "messages: [{role: user, content: x, tool_calls: [{id: c, type: function, "
    "function: {name: f, arguments: '{}'}}]}]\nturns: [Hi]\n",
    "turns: [{content: []}]\n",
    "turns: [{content: [{type: video}]}]\n",
    "turns: [{content: [{type: image_url, image_url: {url: u, detail: max}}]}]\n",
    "turns: [{content: [{type: input_audio, input_audio: {data: d}}]}]\n",
    "turns: [{content: Hi, expect: {tool_sequence: {calls: [f], order: sorted}}}]\n",
    "turns: [{content: Hi, expect: {no_tool_called: false}}]\n",
]


VALID_EDGE_CASES = [
    "turns: [Hi]\n",
    "$schema: ./schema.json\nturns: [Hi]\n",
    "$schema: ./schema.json\nconversations: [{turns: [Hi]}]\n",
    "- turns: [Hi]\n",
    "defaults: {}\nconversations: [{turns: [Hi]}, {turns: [Hi]}]\n",
    f"id: {'x' * MAX_ID_LENGTH}\nturns: [Hi]\n",
    "id: ' a b '\nturns: [Hi]\n",
    'turns: ["a\\u0007b", " x"]\n',
    "messages: []\nturns: [Hi]\n",
    "params: {}\nturns: [Hi]\n",
    "params: {seed: null, stop: [a, {b: null}], extra: {model: x, stream: true}}\nturns: [Hi]\n",
    "turns: [{content: Hi, params: {seed: null}}, {content: Hi, params: {}}]\n",
    "messages: [{role: developer, content: [{type: text, text: Hi}], name: bob}]\nturns: [Hi]\n",
    "vars: {}\nturns: [Hi]\n",
    "vars: {_a1: x, B: 1.5, c: true, d: '', e: [a, 2, false]}\nturns: [Hi]\n",
    "defaults: {vars: {x: [a, b]}}\nconversations: [{vars: {x: c}, turns: ['{{x}}']}]\n",
    "tools: [{type: function, function: {name: f, parameters: {type: object}, strict: true}}]\n"
    "tool_results: {f: [{when: {a: 1}, result: {b: 2}}, {result: x}]}\n"
    "unscripted_tool_result: null\nmax_tool_steps: 100\nreasoning: never\nturns: [Hi]\n",
    "tools: [{type: function, function: {name: f}}]\ntool_results: {f: {sequence: [a, 1]}}\n"
    "turns: [{content: Hi, tools: []}, {content: Hi, tool_results: {f: {result: ''}}}]\n",
    "defaults: {tools: [], max_tool_steps: 1, reasoning: always}\nconversations: [{turns: [Hi]}]\n",
    "messages:\n  - {role: assistant, content: null, tool_calls: [{id: c, type: function, "
    "function: {name: f, arguments: '{}'}}]}\n  - {role: tool, tool_call_id: c, content: x}\n"
    "turns: [Hi]\n",
    "turns: [{content: [{type: text, text: Hi}, {type: image_url, image_url: {url: u}}, "
    "{type: input_audio, input_audio: {data: d, format: mp3}}]}]\n",
    "turns: [{content: Hi, expect: [{tool_called: {name: f, args: {a: 1}, count: 0}}, "
    "{no_tool_called: true, tool_sequence: {calls: [f], order: any}, tool_args_valid: true}]}]\n",
]


@pytest.mark.parametrize("text", VALID_EDGE_CASES)
def test_valid_edge_cases_pass_both(text: str) -> None:
    assert schema_accepts(yaml.safe_load(text))
    assert loader_accepts(text) == (True, "")


@pytest.mark.parametrize("text", STRUCTURAL_ERRORS)
def test_structural_errors_fail_both(text: str) -> None:
    assert not schema_accepts(yaml.safe_load(text))
    accepted, _ = loader_accepts(text)
    assert not accepted


# Random documents built from the file format's own vocabulary: each part is
# usually valid and sometimes a near miss, so whole documents come out both
# ways. The schema and the loader must agree on every one. Keys are strings and
# numbers finite, as an editor sees them.


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` about nine draws in ten, else ``bad``."""
    return st.integers(0, 9).flatmap(lambda n: good if n else bad)


junk: st.SearchStrategy[Any] = st.one_of(
    st.integers(-2, 2), st.booleans(), st.none(), st.just([]), st.just({})
)
blank = st.sampled_from(["", " ", "\t"])
text = mostly(st.sampled_from(["Hi", "é", "a\x07b"]), blank | junk)
json_values = st.recursive(
    st.one_of(st.sampled_from(["Hi", ""]), st.integers(-2, 2), st.booleans(), st.none()),
    lambda inner: (
        st.lists(inner, max_size=2)
        | st.dictionaries(st.sampled_from(["a", "model", "stream"]), inner, max_size=2)
    ),
    max_leaves=4,
)
params = mostly(
    st.dictionaries(st.sampled_from(["temperature", "seed", "stop"]), json_values, max_size=2),
    st.dictionaries(st.sampled_from(sorted(RESERVED_PARAMS)), json_values, min_size=1) | junk,
)
content_parts = st.lists(
    st.dictionaries(st.sampled_from(["type", "text"]), json_values), min_size=1
)
message = mostly(
    st.fixed_dictionaries(
        {"role": st.sampled_from(MESSAGE_ROLES), "content": text | content_parts},
        optional={"name": text},
    ),
    st.sampled_from(
        [
            {"role": "usr", "content": "Hi"},
            {"content": "Hi"},
            {"role": "user"},
            {"role": "user", "content": "Hi", "nmae": "x"},
            {"role": "user", "content": []},
            {"role": "user", "content": ["Hi"]},
        ]
    )
    | junk,
)
tool = mostly(
    st.fixed_dictionaries(
        {
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {"name": st.sampled_from(["f", "get_weather"])},
                optional={"description": text, "strict": st.booleans()},
            ),
        }
    ),
    st.sampled_from(
        [
            {"type": "code", "function": {"name": "f"}},
            {"type": "function", "function": {"name": "a b"}},
            {"type": "function", "function": {"description": "x"}},
            {"type": "function"},
        ]
    )
    | junk,
)
tools = mostly(st.lists(tool, max_size=1), junk)
part = mostly(
    st.sampled_from(
        [
            {"type": "text", "text": "Hi"},
            {"type": "image_url", "image_url": {"url": "u", "detail": "low"}},
            {"type": "input_audio", "input_audio": {"data": "d", "format": "wav"}},
        ]
    ),
    st.sampled_from(
        [
            {"type": "text", "text": ""},
            {"type": "video"},
            {"type": "image_url", "image_url": {"detail": "low"}},
            {"type": "input_audio", "input_audio": {"data": "d", "format": "ogg"}},
        ]
    )
    | junk,
)
turn = mostly(
    text
    | st.fixed_dictionaries(
        {"content": text | st.lists(part, max_size=2)}, optional={"params": params, "tools": tools}
    ),
    st.sampled_from([{"contnet": "Hi"}, {"content": "Hi", "seed": 1}, {}]) | junk,
)
var_value = mostly(st.sampled_from(["Paris", "", 1, 2.5, True]), st.none() | st.just({}))
variables = mostly(
    st.dictionaries(
        st.sampled_from(["city", "_n2"]),
        var_value | mostly(st.lists(var_value, min_size=1, max_size=2), st.just([])),
        max_size=2,
    ),
    st.dictionaries(st.sampled_from(["2x", "a-b", ""]), var_value, min_size=1) | junk,
)
settings_fields = {
    "vars": variables,
    "model": text,
    "system": text,
    "params": params,
    "messages": mostly(st.lists(message, max_size=2), junk),
    "tools": tools,
    "max_tool_steps": mostly(st.integers(1, 100), st.sampled_from([0, 101, "3", 2.5])),
    "reasoning": mostly(st.sampled_from(["never", "tool_chain", "always"]), text),
    "unscripted_tool_result": mostly(st.sampled_from(["none", "", None]), junk),
}
ids = mostly(
    st.sampled_from(["a", "b", "c", "x" * MAX_ID_LENGTH]),
    st.sampled_from(["", " ", "a\tb", "a\x85b", "y" * (MAX_ID_LENGTH + 1)]) | junk,
)
turns = mostly(st.lists(turn, min_size=1, max_size=3), junk)
conversation_fields = {**settings_fields, "id": ids}
conversation = mostly(
    st.fixed_dictionaries({"turns": turns}, optional=conversation_fields),
    st.one_of(
        st.fixed_dictionaries({"tutns": turns}, optional=conversation_fields),
        st.fixed_dictionaries({"turns": turns, SCHEMA_KEY: st.just("x")}),
        st.fixed_dictionaries({}, optional=conversation_fields),
        junk,
    ),
)
conversations = mostly(st.lists(conversation, min_size=1, max_size=3), junk)
schema_key = {SCHEMA_KEY: st.just("./schema.json")}
documents = st.one_of(
    st.fixed_dictionaries({"turns": turns}, optional={**conversation_fields, **schema_key}),
    conversations,
    st.fixed_dictionaries(
        {"conversations": conversations},
        optional={
            "defaults": mostly(
                st.fixed_dictionaries({}, optional=settings_fields),
                st.fixed_dictionaries({}, optional={"turns": turns, "id": ids}) | junk,
            ),
            **schema_key,
        },
    ),
    st.fixed_dictionaries(
        {"conversations": st.lists(conversation, max_size=1)},
        optional={"model": text, "turns": turns},
    ),
    st.fixed_dictionaries({}, optional=conversation_fields),
)


@settings(max_examples=300, database=None, derandomize=True, deadline=None)
@given(documents)
def test_schema_and_loader_agree_on_random_documents(document: object) -> None:
    text = yaml.safe_dump(document, allow_unicode=True)
    accepted, message = loader_accepts(text)
    if not accepted and "duplicate conversation id" in message:
        return  # uniqueness across conversations is beyond JSON Schema
    if not accepted and "too long to name the" in message:
        return  # so is the length of the ids a vars matrix derives
    assert schema_accepts(document) == accepted, message or "loader accepted it"


def test_regex_limits_match_the_checks() -> None:
    from runner.checks.safeschema import MAX_PATTERN_CHARS

    kinds = DEFS["expect_map"]["properties"]
    for kind in ("matches", "not_matches"):
        text, mapping = kinds[kind]["anyOf"]
        assert text["maxLength"] == MAX_PATTERN_CHARS
        assert mapping["properties"]["pattern"]["maxLength"] == MAX_PATTERN_CHARS
