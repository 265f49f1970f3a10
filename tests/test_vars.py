"""``vars:``: {{name}} references filled in at load time, and matrices of conversations."""

from __future__ import annotations

from pathlib import Path

import pytest
from loading import load_as

from runner.errors import InputError
from runner.spec import loader
from runner.spec.loader import (
    MAX_FILE_CONVERSATIONS,
    MAX_ID_LENGTH,
    MAX_MATRIX,
    load_conversations,
)
from runner.spec.model import Message, apply_overrides

VARS = Path(__file__).parent / "data" / "loader" / "vars"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str) -> str:
    with pytest.raises(InputError) as info:
        load_as(write(tmp_path / "a.yaml", text), "a.yaml")
    return str(info.value)


def turns_of(tmp_path: Path, text: str) -> list[str]:
    [conversation] = load_as(write(tmp_path / "a.yaml", text))
    return [turn.content for turn in conversation.turns]


# Filling in


def test_vars_fill_system_messages_and_turns() -> None:
    inherits, _ = load_as(VARS / "everywhere.yaml")
    assert inherits.system == "You plan trips to Lisbon. Strict budget? true."
    assert inherits.messages == (
        Message(role="user", content="I am going to Lisbon."),
        Message(
            role="assistant",
            content=[{"type": "text", "text": "{{city}} stays as written in content parts"}],
        ),
        Message(role="assistant", content="For 3 days?", name="{{city}}"),
    )
    assert [t.content for t in inherits.turns] == [
        "Plan 3 days on 500.50 EUR.",
        "Anything else in Lisbon? true",
    ]


def test_expect_model_and_params_are_taken_as_written(tmp_path: Path) -> None:
    [inherits, _] = load_as(VARS / "everywhere.yaml")
    assert inherits.turns[1].expect[0].describe() == "contains '{{city}}'"
    text = "vars: {m: x}\nmodel: '{{m}}'\nparams: {stop: ['{{m}}']}\nturns: [Hi]\n"
    [conversation] = load_as(write(tmp_path / "a.yaml", text))
    assert (conversation.model, conversation.params) == ("{{m}}", {"stop": ["{{m}}"]})


def test_conversation_vars_override_defaults_key_by_key() -> None:
    _, overrides = load_as(VARS / "everywhere.yaml")
    assert overrides.system == "You plan trips to Porto. Strict budget? true."
    assert [t.content for t in overrides.turns] == ["Porto, 3 days, false."]


def test_spaces_and_tabs_inside_the_braces(tmp_path: Path) -> None:
    text = "vars: {x: A}\nturns: ['{{x}} {{ x }} {{\tx  }}']\n"
    assert turns_of(tmp_path, text) == ["A A A"]


@pytest.mark.parametrize(
    ("value", "filled"),
    [
        ("7", "7"),
        ("-0.50", "-0.50"),
        ("1e3", "1e3"),
        ("0x1F", "0x1F"),
        ("true", "true"),
        ("False", "false"),
        ("yes", "true"),  # YAML 1.1 reads yes as a boolean; quote it to keep the word
        ("'yes'", "yes"),
        ("'007'", "007"),
        ("2024-05-01", "2024-05-01"),
        ("''", ""),
    ],
)
def test_values_are_filled_in_as_written(tmp_path: Path, value: str, filled: str) -> None:
    assert turns_of(tmp_path, f"vars: {{v: {value}}}\nturns: ['[{{{{v}}}}]']\n") == [f"[{filled}]"]


def test_values_are_not_scanned_for_references(tmp_path: Path) -> None:
    text = "vars: {a: '{{b}}', b: B}\nturns: ['{{a}} {{b}}']\n"
    assert turns_of(tmp_path, text) == ["{{b}} B"]


def test_unused_vars_and_files_without_references_are_fine(tmp_path: Path) -> None:
    assert turns_of(tmp_path, "vars: {unused: 1}\nturns: ['a } b }} c { d']\n") == [
        "a } b }} c { d"
    ]


def test_backslash_braces_write_literal_braces(tmp_path: Path) -> None:
    text = (
        "vars: {x: A}\n"
        "turns:\n"
        "  - Render \\{{x}} as {{x}}.\n"
        '  - "Double quotes need \\\\{{ twice: \\\\{{ name }}"\n'
        "  - '\\{{{{x}}}}'\n"
    )
    assert turns_of(tmp_path, text) == [
        "Render {{x}} as A.",
        "Double quotes need {{ twice: {{ name }}",
        "{{A}}",
    ]


def test_fingerprint_reflects_the_values(tmp_path: Path) -> None:
    one, two = load_as(write(tmp_path / "a.yaml", "vars: {x: [1, 2]}\nturns: ['{{x}}']\n"))
    assert apply_overrides(one).fingerprint() != apply_overrides(two).fingerprint()


# Errors


def test_undefined_variable_points_at_the_string_and_suggests() -> None:
    with pytest.raises(InputError) as info:
        load_as(VARS / "invalid" / "undefined.yaml", "undefined.yaml")
    assert str(info.value) == (
        "undefined.yaml:6:5: turns[1]: undefined variable 'cty'; did you mean 'city'?"
    )
    assert (info.value.line, info.value.column, info.value.field) == (6, 5, "turns[1]")


def test_undefined_variable_in_defaults_names_the_conversation() -> None:
    with pytest.raises(InputError) as info:
        load_as(VARS / "invalid" / "defaults_undefined.yaml", "d.yaml")
    assert str(info.value) == (
        "d.yaml:2:11: defaults.system: undefined variable 'tone' in conversations[1]; "
        "define it under vars:"
    )


ERROR_CASES = [
    (
        "turns: ['{{city}}']\n",
        "a.yaml:1:9: turns[0]: undefined variable 'city'; define it under vars:",
        "no-vars-at-all",
    ),
    (
        "vars: {city: x}\nsystem: Hi\nmessages:\n  - role: user\n    content: '{{town}}'\n"
        "turns: [Hi]\n",
        "a.yaml:5:14: messages[0].content: undefined variable 'town'; define it under vars:",
        "undefined-in-message",
    ),
    (
        "vars: {city: x}\nsystem: 'Go to {{cities}}'\nturns: [Hi]\n",
        "a.yaml:2:9: system: undefined variable 'cities'; did you mean 'city'?",
        "undefined-in-system",
    ),
    (
        "vars: {x: 1}\nturns:\n  - content: '{{ user.name }}'\n",
        "a.yaml:3:14: turns[0].content: '{{ user.name }}' is not a variable reference; "
        "write {{name}} (letters, digits and _) to use a var, or \\{{ for a literal {{",
        "not-a-reference",
    ),
    (
        "turns: ['{{x']\n",
        "a.yaml:1:9: turns[0]: '{{x' is not a variable reference; "
        "write {{name}} (letters, digits and _) to use a var, or \\{{ for a literal {{",
        "unclosed-reference",
    ),
    (
        "vars: {x: 1}\nturns:\n  - {{x}}\n",
        "a.yaml:3:5: turns[0]: expected a string or a mapping with 'content'; write \"{{x}}\" "
        "in quotes (bare {{...}} is a YAML mapping)",
        "unquoted-reference",
    ),
    (
        "vars: {x: 1}\nsystem: {{ x }}\nturns: [Hi]\n",
        'a.yaml:2:9: system: expected a string; write "{{x}}" in quotes '
        "(bare {{...}} is a YAML mapping)",
        "unquoted-reference-in-system",
    ),
    (
        "vars: {x: ' '}\nturns: ['{{x}}']\n",
        "a.yaml:2:9: turns[0]: empty turn; write the user's message or remove the turn "
        "(it is blank once its vars are filled in)",
        "blank-once-filled",
    ),
    (
        "vars: {x: {a: 1}}\nturns: [Hi]\n",
        "a.yaml:1:11: vars.x: expected a string, number or boolean or a list of them",
        "mapping-value",
    ),
    (
        "vars: {x: null}\nturns: [Hi]\n",
        "a.yaml:1:11: vars.x: expected a string, number or boolean or a list of them; "
        "the value is empty",
        "null-value",
    ),
    (
        "vars: {x: [a, [b]]}\nturns: [Hi]\n",
        "a.yaml:1:15: vars.x[1]: expected a string, number or boolean in a matrix list",
        "nested-list",
    ),
    (
        "vars: {x: []}\nturns: [Hi]\n",
        "a.yaml:1:11: vars.x: empty list; give at least one value (a list makes a matrix)",
        "empty-matrix",
    ),
    (
        "vars: {2x: a}\nturns: [Hi]\n",
        "a.yaml:1:8: vars.2x: not a variable name; use letters, digits and _, "
        "not starting with a digit",
        "bad-name",
    ),
    (
        "vars: [x]\nturns: [Hi]\n",
        "a.yaml:1:7: vars: expected a mapping of variable names to values",
        "vars-not-mapping",
    ),
    (
        "vars: {x: .nan}\nturns: [Hi]\n",
        "a.yaml:1:11: vars.x: .nan is not representable in JSON; use a finite number",
        "nan",
    ),
    (
        "vars: {x: 1}\nconversations:\n  - turns: [Hi]\n",
        "a.yaml:1:1: vars: not allowed beside 'conversations:'; move it under 'defaults:'",
        "vars-beside-conversations",
    ),
    (
        "defaults: {vars: {x: [1, 2]}}\nconversations:\n  - turns: [Hi]\n"
        "    vars: {y: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}\n    id: "
        + "x" * (MAX_ID_LENGTH - 3)
        + "\n",
        "a.yaml:5:5: conversations[0].id: too long to name the 20 conversations of its vars "
        f"matrix ('{'x' * 16}--20' is {MAX_ID_LENGTH + 1} characters; at most {MAX_ID_LENGTH})",
        "id-too-long-for-numbers",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[:2] for c in ERROR_CASES], ids=[c[2] for c in ERROR_CASES]
)
def test_error_message(tmp_path: Path, text: str, expected: str) -> None:
    assert error_for(tmp_path, text) == expected


# Matrices


def test_matrix_makes_one_conversation_per_combination_in_written_order() -> None:
    conversations = load_as(VARS / "matrix.yaml")
    assert [c.id for c in conversations] == [
        "trip--city=Paris--tone=formal",
        "trip--city=Paris--tone=casual",
        "trip--city=Rome--tone=formal",
        "trip--city=Rome--tone=casual",
        "trip--city=New_York--tone=formal",
        "trip--city=New_York--tone=casual",
    ]
    assert [(c.system, c.turns[0].content) for c in conversations[3:5]] == [
        ("Answer in a casual tone.", "Plan 2 days in Rome."),
        ("Answer in a formal tone.", "Plan 2 days in New York."),
    ]
    assert {(c.line, c.turns[0].line) for c in conversations} == {(1, 8)}


def test_matrix_in_defaults_applies_to_every_conversation(tmp_path: Path) -> None:
    text = (
        "defaults:\n  vars: {model: [a, b], n: 1}\n  system: 'Model {{model}}'\n"
        "conversations:\n"
        "  - turns: ['{{n}}']\n"
        "  - vars: {model: c}\n    turns: ['{{n}}']\n"
        "  - id: more\n    vars: {n: [1, 2]}\n    turns: ['{{n}}']\n"
    )
    conversations = load_as(write(tmp_path / "chat.yaml", text))
    assert [(c.id, c.system, c.turns[0].content) for c in conversations] == [
        ("chat-1--model=a", "Model a", "1"),
        ("chat-1--model=b", "Model b", "1"),
        ("chat-2", "Model c", "1"),
        ("more--model=a--n=1", "Model a", "1"),
        ("more--model=a--n=2", "Model a", "2"),
        ("more--model=b--n=1", "Model b", "1"),
        ("more--model=b--n=2", "Model b", "2"),
    ]


def test_list_of_one_value_still_names_the_variable(tmp_path: Path) -> None:
    [conversation] = load_as(write(tmp_path / "one.yaml", "vars: {x: [A]}\nturns: [Hi]\n"))
    assert conversation.id == "one--x=A"


@pytest.mark.parametrize(
    ("values", "ids"),
    [
        (
            "['a/b', 'c d', ' e ', 'Zürich', 'gpt-4o@2024', 1.5, true]",
            ["a_b", "c_d", "e", "Zürich", "gpt-4o@2024", "1.5", "true"],
        ),
        ("['*', '?', '[x]', '#1']", ["", "", "x", "1"]),
    ],
)
def test_values_in_ids_keep_only_file_name_friendly_characters(
    tmp_path: Path, values: str, ids: list[str]
) -> None:
    conversations = load_as(write(tmp_path / "a.yaml", f"vars: {{v: {values}}}\nturns: [Hi]\n"))
    if len(set(ids)) == len(ids):
        assert [c.id for c in conversations] == [f"a--v={i}" for i in ids]
    else:  # the friendly ids would clash: numbered instead
        assert [c.id for c in conversations] == [f"a--{n}" for n in range(1, len(ids) + 1)]


def test_too_long_ids_are_numbered(tmp_path: Path) -> None:
    long = "w" * MAX_ID_LENGTH
    text = f"id: trip\nvars: {{persona: [short, {long}]}}\nturns: ['{{{{persona}}}}']\n"
    conversations = load_as(write(tmp_path / "a.yaml", text))
    assert [c.id for c in conversations] == ["trip--1", "trip--2"]
    assert conversations[1].turns[0].content == long


def test_matrix_ids_are_unique_within_a_file(tmp_path: Path) -> None:
    text = (
        "- id: trip\n  vars: {city: [Paris, Rome]}\n  turns: [Hi]\n"
        "- id: trip--city=Rome\n  turns: [Hi]\n"
    )
    assert error_for(tmp_path, text) == (
        "a.yaml:4:3: [1].id: duplicate conversation id 'trip--city=Rome' "
        "(first defined at a.yaml:1:3); give each conversation a unique 'id'"
    )


def test_matrix_ids_are_unique_across_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(VARS)
    with pytest.raises(InputError) as info:
        load_conversations(["clash_a.yaml", "clash_b.yaml"])
    assert str(info.value) == (
        "clash_b.yaml:4:5: conversations[1].id: duplicate conversation id 'trip--city=Rome' "
        "(first defined at clash_a.yaml:1:1); give each conversation a unique 'id'"
    )


def test_matrix_of_the_largest_size_loads(tmp_path: Path) -> None:
    values = ", ".join(str(i) for i in range(100))
    text = f"vars: {{a: [{values}], b: [{values}]}}\nturns: ['{{{{a}}}}.{{{{b}}}}']\n"
    conversations = load_as(write(tmp_path / "a.yaml", text))
    assert len(conversations) == MAX_MATRIX == 100 * 100
    assert (conversations[-1].id, conversations[-1].turns[0].content) == ("a--a=99--b=99", "99.99")


def test_oversized_matrix_is_refused_before_expanding(tmp_path: Path) -> None:
    values = ", ".join(str(i) for i in range(1000))
    text = (
        f"defaults:\n  vars: {{a: [{values}], b: [{values}]}}\n"
        "conversations:\n  - vars: {c: [x, y]}\n    turns: [Hi]\n"
    )
    assert error_for(tmp_path, text) == (
        "a.yaml:4:15: conversations[0].vars.c: the vars matrix makes 2,000,000 conversations "
        "(1000 x 1000 x 2); at most 10,000 per conversation: split it into several conversations"
    )


def test_oversized_matrix_from_defaults_names_the_conversation(tmp_path: Path) -> None:
    values = ", ".join(str(i) for i in range(200))
    line = f"  vars: {{a: [{values}], b: [{values}]}}"
    column = line.index("[", line.index("b:")) + 1
    text = f"defaults:\n{line}\nconversations:\n  - turns: [Hi]\n"
    assert error_for(tmp_path, text) == (
        f"a.yaml:2:{column}: defaults.vars.b: the vars matrix in conversations[0] makes "
        "40,000 conversations (200 x 200); at most 10,000 per conversation: "
        "split it into several conversations"
    )


def test_file_expanding_to_too_many_conversations_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "MAX_FILE_CONVERSATIONS", 5)  # the real cap takes seconds
    text = "defaults:\n  vars: {a: [1, 2]}\nconversations:\n" + "  - turns: [Hi]\n" * 3
    assert error_for(tmp_path, text) == (
        "a.yaml:6:5: conversations[2]: the file makes more than 5 conversations "
        "once its vars matrices are expanded; split it into several files"
    )
    assert loader.MAX_FILE_CONVERSATIONS < MAX_FILE_CONVERSATIONS == 10 * MAX_MATRIX


def test_models_runs_a_conversation_once_per_model(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "defaults:\n  models: [small, large]\n"
        "conversations:\n  - id: hi\n    turns: [Hello]\n"
        "  - id: solo\n    model: only\n    models: null\n    turns: [Yo]\n"
    )
    with pytest.raises(InputError, match="give 'model' or 'models', not both"):
        load_as(path)
    path.write_text(
        "defaults:\n  models: [small, large]\n"
        "conversations:\n  - id: hi\n    vars: {x: [1, 2]}\n    turns: ['n={{x}}']\n"
    )
    convs = load_as(path)
    assert [(c.id, c.model, c.variant_of) for c in convs] == [
        ("hi--x=1@small", "small", "hi--x=1"),
        ("hi--x=1@large", "large", "hi--x=1"),
        ("hi--x=2@small", "small", "hi--x=2"),
        ("hi--x=2@large", "large", "hi--x=2"),
    ]
    path.write_text("models: [a, a]\nturns: [Hi]\n")
    with pytest.raises(InputError, match=r"models\[1\]: model 'a' is listed twice"):
        load_as(path)


def test_a_conversations_own_model_wins_over_default_models(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "defaults:\n  models: [small, large]\n"
        "conversations:\n  - id: solo\n    model: only\n    turns: [Yo]\n"
        "  - id: both\n    turns: [Hi]\n"
    )
    assert [(c.id, c.model) for c in load_as(path)] == [
        ("solo", "only"),
        ("both@small", "small"),
        ("both@large", "large"),
    ]
