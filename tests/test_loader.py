from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from loading import load_as

from runner.errors import InputError
from runner.spec.loader import expand_paths, load_conversations
from runner.spec.model import Conversation, Message, Turn
from runner.spec.yamlsafe import MAX_FILE_BYTES, read_document

DATA = Path(__file__).parent / "data" / "loader"
DISPLAY = "conversations/a.yaml"


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def load_text(tmp_path: Path, text: str, name: str = "a.yaml") -> list[Conversation]:
    return load_as(write(tmp_path / name, text))


def error_of(path: Path, display: str | None = DISPLAY) -> str:
    with pytest.raises(InputError) as info:
        load_as(path, display)
    return str(info.value)


def error_for(tmp_path: Path, text: str | bytes) -> str:
    return error_of(write(tmp_path / "a.yaml", text))


# Valid files


def test_single_conversation_with_every_field() -> None:
    [conversation] = load_as(DATA / "valid" / "single.yaml", display="single.yaml")
    assert conversation == Conversation(
        id="trip-planning",
        source="single.yaml",
        model="arcee-ai/AFM-4.5B",
        system="You are a concise travel agent.",
        params={
            "temperature": 0.2,
            "max_tokens": 256,
            "stop": ["\n\n", "END"],
            "response_format": {"type": "text"},
            "not_before": "2024-05-01",  # a YAML timestamp stays the text written
        },
        messages=(
            Message(role="user", content="I am planning a trip."),
            Message(
                role="assistant", content=[{"type": "text", "text": "Where to?"}], name="agent"
            ),
        ),
        turns=(
            Turn(content="Lisbon, for three days.", line=22),
            Turn(content="Make it a list.", params={"temperature": 0.7, "seed": None}, line=23),
            Turn(content="Thanks.\nOne more thing: the budget is 500 EUR.\n", line=27),
        ),
        line=2,
    )


def test_params_are_plain_json_data() -> None:
    [conversation] = load_as(DATA / "valid" / "single.yaml")
    params = conversation.params
    assert type(params) is dict
    assert type(params["stop"]) is list
    assert type(params["response_format"]) is dict
    assert json.loads(json.dumps(params, allow_nan=False)) == params


def test_default_source_is_the_path_as_given() -> None:
    [conversation] = load_as(DATA / "valid" / "single.yaml")
    assert conversation.source == str(DATA / "valid" / "single.yaml")


def test_single_conversation_id_defaults_to_file_stem(tmp_path: Path) -> None:
    [conversation] = load_text(tmp_path, "turns: [Hi]\n", name="greeting.yml")
    assert conversation.id == "greeting"
    assert conversation.turns == (Turn(content="Hi", line=1),)
    assert (conversation.model, conversation.system, conversation.messages) == (None, None, ())
    assert conversation.params == {}


def test_top_level_list_numbers_default_ids() -> None:
    conversations = load_as(DATA / "valid" / "list.yaml", display="list.yaml")
    assert [c.id for c in conversations] == ["list-1", "custom", "list-3"]
    assert [c.line for c in conversations] == [2, 5, 8]
    assert conversations[1].model == "some/other-model"
    assert [t.line for t in conversations[0].turns] == [3, 4]


def test_list_of_one_uses_file_stem(tmp_path: Path) -> None:
    [listed] = load_text(tmp_path, "- turns: [Hi]\n", name="one.yaml")
    [nested] = load_text(tmp_path, "conversations:\n  - turns: [Hi]\n", name="two.yaml")
    assert (listed.id, nested.id) == ("one", "two")


def test_defaults_apply_and_conversations_override_them() -> None:
    inherits, overrides = load_as(DATA / "valid" / "defaults.yaml")
    assert inherits.id == "inherits"
    assert inherits.model == "base-model"
    assert inherits.system == "Be brief."
    assert inherits.params == {"temperature": 0.5, "max_tokens": 100}
    assert inherits.messages == (
        Message(role="user", content="Remember the number 7."),
        Message(role="assistant", content="Noted."),
    )
    assert overrides.model == "other-model"
    assert overrides.system == "Be verbose."
    assert overrides.messages == ()
    assert overrides.params == {"temperature": 1.0, "max_tokens": 100, "top_p": 0.9}


def test_conversation_null_param_removes_a_default(tmp_path: Path) -> None:
    text = (
        "defaults:\n  params: {seed: 1, n: 2}\n"
        "conversations:\n  - turns: [Hi]\n    params: {seed: null}\n"
    )
    [conversation] = load_text(tmp_path, text)
    assert conversation.params == {"n": 2}


def test_anchors_aliases_and_merge_keys() -> None:
    base, warm, same = load_as(DATA / "valid" / "anchors.yaml")
    assert (base.id, warm.id, same.id) == ("anchors-1", "warm", "same-turns")
    assert warm.model == "base-model"
    assert warm.params == {"temperature": 0.9, "stop": ["END"]}
    assert base.params == {"temperature": 0.1, "stop": ["END"]}
    assert [t.content for t in same.turns] == ["Say hello.", "Say goodbye."]


def test_schema_key_is_ignored_at_top_level(tmp_path: Path) -> None:
    [single] = load_text(tmp_path, "$schema: ./s.json\nturns: [Hi]\n", name="one.yaml")
    text = "$schema: ./s.json\nconversations:\n  - turns: [Hi]\n"
    [nested] = load_text(tmp_path, text, name="two.yaml")
    assert single.turns == (Turn(content="Hi", line=2),)
    assert nested.turns == (Turn(content="Hi", line=3),)


def test_utf8_bom_and_non_ascii_text(tmp_path: Path) -> None:
    [conversation] = load_text(tmp_path, "\ufeffturns:\n  - Grüß dich, 世界\n")
    assert conversation.turns == (Turn(content="Grüß dich, 世界", line=2),)


def test_scalars_that_resolve_to_other_types_stay_text_when_quoted(tmp_path: Path) -> None:
    text = "id: '42'\nturns: ['no', '2024-01-01', \"3.5\"]\nparams: {flag: yes, n: 0x10}\n"
    [conversation] = load_text(tmp_path, text)
    assert conversation.id == "42"
    assert [t.content for t in conversation.turns] == ["no", "2024-01-01", "3.5"]
    assert conversation.params == {"flag": True, "n": 16}


# Errors, each with its exact message


def test_turn_that_is_a_list() -> None:
    assert error_of(DATA / "invalid" / "turn_is_list.yaml") == (
        "conversations/a.yaml:7:5: turns[2]: expected a string or a mapping with 'content'"
    )


def test_unknown_key_suggests_the_closest() -> None:
    assert error_of(DATA / "invalid" / "unknown_key.yaml") == (
        "conversations/a.yaml:4:1: tutns: unknown key; did you mean 'turns'?"
    )


def test_python_tag_is_refused_without_running_it() -> None:
    assert error_of(DATA / "invalid" / "python_tag.yaml") == (
        "conversations/a.yaml:4:16: unsupported YAML tag '!!python/object/apply:os.system'"
    )


def test_alias_bomb_is_refused_before_expansion() -> None:
    assert error_of(DATA / "invalid" / "alias_bomb.yaml") == (
        "conversations/a.yaml:9:6: too many YAML nodes (alias expansion?)"
    )


def test_loading_leaves_no_reference_cycles(tmp_path: Path) -> None:
    """Cyclic garbage waits for a full collection, which a long batch rarely runs: none is made."""
    conversations = [{"id": f"c{i}", "turns": [f"Hello {i}.", "And then?"]} for i in range(50)]
    path = tmp_path / "batch.yaml"
    path.write_text(json.dumps({"defaults": {"model": "m"}, "conversations": conversations}))
    gc.collect()
    gc.disable()
    try:
        loaded = load_conversations([str(path)])
        assert gc.collect() == 0
    finally:
        gc.enable()
    assert len(loaded) == 50


def test_several_documents() -> None:
    assert error_of(DATA / "invalid" / "two_documents.yaml") == (
        "conversations/a.yaml:2:1: several YAML documents in one file; "
        "use a list or 'conversations:'"
    )


EMPTY = "file is empty; expected a conversation with 'turns'"
EXPECTED_CONVERSATION = "expected a conversation (a mapping with 'turns') or 'conversations:'"
QUOTE_42 = 'write "42" (in quotes) to use it as text'

ERROR_CASES = [
    # file shapes
    ("", f": {EMPTY}", "empty-file"),
    ("# nothing yet\n\n", f": {EMPTY}", "comments-only"),
    ("null\n", f": {EMPTY}", "null-document"),
    ("---\n", f": {EMPTY}", "document-marker-only"),
    ("id: greeting\nmodel: m\n", f":1:1: {EXPECTED_CONVERSATION}", "no-turns-or-conversations"),
    ("Hello there\n", f":1:1: {EXPECTED_CONVERSATION}", "top-level-scalar"),
    ("[]\n", ":1:1: no conversations; add at least one", "top-level-empty-list"),
    (
        "conversations: []\n",
        ":1:16: conversations: no conversations; add at least one",
        "conversations-empty",
    ),
    (
        "conversations:\n  turns: [Hi]\n",
        ":2:3: conversations: expected a list of conversations",
        "conversations-not-list",
    ),
    (
        "conversations:\n  - Hi\n",
        ":2:5: conversations[0]: expected a conversation (a mapping with 'turns')",
        "conversation-not-mapping",
    ),
    (
        "conversations:\n  - id: x\n    model: m\n",
        ":2:5: conversations[0]: missing required key 'turns'",
        "conversation-missing-turns",
    ),
    (
        "defaults: [model]\nconversations:\n  - turns: [Hi]\n",
        ":1:11: defaults: expected a mapping",
        "defaults-not-mapping",
    ),
    # unknown keys
    (
        "turns: [Hi]\ncolour: blue\n",
        ":2:1: colour: unknown key; expected one of: "
        "id, model, models, system, params, messages, expect, expect_final, vars, "
        "tools, tool_results, unscripted_tool_result, max_tool_steps, reasoning, turns, $schema",
        "unknown-key-no-match",
    ),
    (
        "- turns: [Hi]\n  modle: m\n",
        ":2:3: [0].modle: unknown key; did you mean 'model'?",
        "unknown-key-in-list-item",
    ),
    (
        "conversations:\n  - turns: [Hi]\n    $schema: x\n",
        ":3:5: conversations[0].$schema: unknown key; "
        "expected one of: id, model, models, system, params, messages, expect, expect_final, vars, "
        "tools, tool_results, unscripted_tool_result, max_tool_steps, reasoning, turns",
        "schema-key-inside-conversation",
    ),
    (
        "turns:\n  - contnet: Hi\n",
        ":2:5: turns[0].contnet: unknown key; did you mean 'content'?",
        "unknown-key-in-turn",
    ),
    (
        "messages:\n  - {role: user, content: Hi, nmae: bob}\nturns: [Hi]\n",
        ":2:31: messages[0].nmae: unknown key; did you mean 'name'?",
        "unknown-key-in-message",
    ),
    (
        "defaults:\n  turns: [Hi]\nconversations:\n  - turns: [Hi]\n",
        ":2:3: defaults.turns: unknown key; expected one of: "
        "model, models, system, params, messages, expect, expect_final, vars, "
        "tools, tool_results, unscripted_tool_result, max_tool_steps, reasoning",
        "unknown-key-in-defaults",
    ),
    (
        "model: m\nconversations:\n  - turns: [Hi]\n",
        ":1:1: model: not allowed beside 'conversations:'; move it under 'defaults:'",
        "settings-beside-conversations",
    ),
    (
        "conversations:\n  - turns: [Hi]\nturns: [Hi]\n",
        ":3:1: turns: unknown key; expected one of: conversations, defaults, $schema",
        "turns-beside-conversations",
    ),
    # YAML syntax and features
    (
        "turns:\n  - Hi\nmodel: a: b\n",
        ":3:9: YAML syntax error: mapping values are not allowed here",
        "syntax-error",
    ),
    (
        "turns: [Hi\n",
        ":2:1: YAML syntax error: expected ',' or ']', but got '<stream end>'",
        "unclosed-flow",
    ),
    (
        "turns:\n\t- Hi\n",
        ":2:1: YAML syntax error: found character '\\t' that cannot start any token",
        "tab-indent",
    ),
    (
        "turns: *missing\n",
        ":1:8: YAML syntax error: found undefined alias 'missing'",
        "undefined-alias",
    ),
    (
        "turns: &t [Hi]\nparams: &t {}\n",
        ":2:9: YAML syntax error: found duplicate anchor 't' (first at line 1)",
        "duplicate-anchor",
    ),
    ('turns: ["Hi\x07"]\n', ":1:12: character U+0007 is not allowed in YAML; remove it", "bell"),
    ("turns: [!shout Hi]\n", ":1:9: unsupported YAML tag '!shout'", "custom-tag"),
    (
        "turns: [Hi]\nparams:\n  blob: !!binary aGVsbG8=\n",
        ":3:9: unsupported YAML tag '!!binary'",
        "binary-tag",
    ),
    (
        "turns: [Hi]\nparams:\n  tags: !!set {a, b}\n",
        ":3:9: unsupported YAML tag '!!set'",
        "set-tag",
    ),
    (
        "turns: [Hi]\nparams:\n  <<: 5\n",
        ":3:7: params: '<<' merges a mapping or a list of mappings",
        "merge-scalar",
    ),
    (
        "turns: [Hi]\nparams:\n  loop: &loop [*loop]\n",
        ":3:9: an anchor is used inside itself",
        "recursive-alias",
    ),
    (
        "turns: [Hi]\nparams:\n  deep: " + "[" * 150 + "]" * 150 + "\n",
        ":3:108: nesting too deep (more than 100 levels)",
        "deep-nesting",
    ),
    (
        "turns: [Hi]\nparams:\n  deep: " + "[" * 1000 + "]" * 1000 + "\n",
        ":3:109: nesting too deep (more than 100 levels)",
        "nesting-beyond-python-recursion",
    ),
    # keys
    ("id: a\nturns: [Hi]\nid: b\n", ":3:1: duplicate key 'id' (first at line 1)", "duplicate-key"),
    (
        "turns: [Hi]\nparams:\n  temperature: 0.1\n  temperature: 0.2\n",
        ":4:3: params: duplicate key 'temperature' (first at line 3)",
        "duplicate-param",
    ),
    (
        "turns: [Hi]\n1: one\n",
        ':2:1: expected a string key; write "1" (in quotes) to use it as text',
        "non-string-key",
    ),
    (
        "turns: [Hi]\nparams:\n  logit_bias: {50256: -100}\n",
        ":3:16: params.logit_bias: expected a string key; "
        'write "50256" (in quotes) to use it as text',
        "non-string-nested-key",
    ),
    # id, model, system
    ("id: 42\nturns: [Hi]\n", f":1:5: id: expected a string; {QUOTE_42}", "int-id"),
    (
        "id: ''\nturns: [Hi]\n",
        ":1:5: id: must not be empty; name the conversation or remove 'id'",
        "empty-id",
    ),
    (
        "id: " + "x" * 201 + "\nturns: [Hi]\n",
        ":1:5: id: too long (201 characters; at most 200)",
        "long-id",
    ),
    (
        'id: "a\\tb"\nturns: [Hi]\n',
        ":1:5: id: contains a control character (U+0009)",
        "control-character-in-id",
    ),
    (
        "model: ' '\nturns: [Hi]\n",
        ":1:8: model: must not be empty; name a model or remove 'model'",
        "blank-model",
    ),
    ("model: [a, b]\nturns: [Hi]\n", ":1:8: model: expected a string", "model-list"),
    (
        'system: "  "\nturns: [Hi]\n',
        ":1:9: system: must not be empty; write a system prompt or remove 'system'",
        "blank-system",
    ),
    (
        "system:\nturns: [Hi]\n",
        ":1:8: system: expected a string; the value is empty",
        "null-system",
    ),
    # turns
    ("turns: []\n", ":1:8: turns: no turns; add at least one user turn", "turns-empty"),
    ("turns:\n", ":1:7: turns: expected a list of turns; the value is empty", "turns-null"),
    ("turns: Hello\n", ":1:8: turns: expected a list of turns", "turns-string"),
    (
        "turns:\n  - Hi\n  - ''\n",
        ":3:5: turns[1]: empty turn; write the user's message or remove the turn",
        "empty-turn",
    ),
    (
        "turns:\n  - '   '\n",
        ":2:5: turns[0]: empty turn; write the user's message or remove the turn",
        "blank-turn",
    ),
    (
        "turns:\n  - Hi\n  -\n",
        ":3:4: turns[1]: expected a string or a mapping with 'content'; the value is empty",
        "null-turn",
    ),
    (
        "turns:\n  - Shall we?\n  - no\n",
        ":3:5: turns[1]: expected a string or a mapping with 'content'; "
        'write "no" (in quotes) to use it as text',
        "boolean-turn",
    ),
    (
        "turns:\n  - 42\n",
        f":2:5: turns[0]: expected a string or a mapping with 'content'; {QUOTE_42}",
        "int-turn",
    ),
    (
        "turns:\n  - params: {seed: 1}\n",
        ":2:5: turns[0]: missing required key 'content'",
        "turn-missing-content",
    ),
    (
        "turns:\n  - content: ''\n",
        ":2:14: turns[0].content: empty turn; write the user's message or remove the turn",
        "turn-empty-content",
    ),
    (
        "turns:\n  - content: Hi\n    params: {stream: true}\n",
        ":3:14: turns[0].params.stream: streaming is not supported in params",
        "turn-params-stream",
    ),
    (
        "turns:\n  - content: Hi\n    params: [seed]\n",
        ":3:13: turns[0].params: expected a mapping of API parameters",
        "turn-params-not-mapping",
    ),
    (
        "- turns: [Hi]\n- turns: [Hi, [x]]\n",
        ":2:15: [1].turns[1]: expected a string or a mapping with 'content'",
        "turn-in-top-level-list",
    ),
    # params
    (
        "turns: [Hi]\nparams: 0.7\n",
        ":2:9: params: expected a mapping of API parameters",
        "params-not-mapping",
    ),
    (
        "turns: [Hi]\nparams:\n  model: gpt\n",
        ":3:3: params.model: set 'model' at the conversation level",
        "params-model",
    ),
    (
        "turns: [Hi]\nparams:\n  messages: []\n",
        ":3:3: params.messages: 'messages' cannot be a parameter; "
        "use the conversation's 'messages'",
        "params-messages",
    ),
    (
        "turns: [Hi]\nparams:\n  stream: false\n",
        ":3:3: params.stream: streaming is not supported in params",
        "params-stream",
    ),
    (
        "turns: [Hi]\nparams:\n  temperature: .inf\n",
        ":3:16: params.temperature: .inf is not representable in JSON; use a finite number",
        "params-inf",
    ),
    (
        "turns: [Hi]\nparams:\n  extra: [1, .NaN]\n",
        ":3:14: params.extra[1]: .NaN is not representable in JSON; use a finite number",
        "params-nan",
    ),
    (
        "turns: [Hi]\nparams:\n  x: 0b_\n",
        ":3:6: params.x: cannot read 0b_ as a number; put it in quotes to use it as text",
        "params-bad-int",
    ),
    (
        "conversations:\n  - turns: [Hi]\n  - turns: [Hi]\n    params: {temperature: .inf}\n",
        ":4:27: conversations[1].params.temperature: "
        ".inf is not representable in JSON; use a finite number",
        "param-in-conversations-list",
    ),
    # messages
    (
        "messages: {role: user}\nturns: [Hi]\n",
        ":1:11: messages: expected a list of messages",
        "messages-not-list",
    ),
    (
        "messages: [Hi]\nturns: [Hi]\n",
        ":1:12: messages[0]: expected a message (a mapping with 'role' and 'content')",
        "message-not-mapping",
    ),
    (
        "messages:\n  - content: Hi\nturns: [Hi]\n",
        ":2:5: messages[0]: missing required key 'role'",
        "message-missing-role",
    ),
    (
        "messages:\n  - role: usr\n    content: Hi\nturns: [Hi]\n",
        ":2:11: messages[0].role: unknown role 'usr'; "
        "use one of: system, developer, user, assistant, tool",
        "message-bad-role",
    ),
    (
        "messages:\n  - role: user\nturns: [Hi]\n",
        ":2:5: messages[0]: missing required key 'content'",
        "message-missing-content",
    ),
    (
        "messages:\n  - role: user\n    content: ''\nturns: [Hi]\n",
        ":3:14: messages[0].content: must not be empty",
        "message-empty-content",
    ),
    (
        "messages:\n  - role: user\n    content: []\nturns: [Hi]\n",
        ":3:14: messages[0].content: must not be an empty list; add a content part",
        "message-empty-parts",
    ),
    (
        "messages:\n  - role: user\n    content: [Hi]\nturns: [Hi]\n",
        ":3:15: messages[0].content[0]: expected a content part (a mapping)",
        "message-part-not-mapping",
    ),
    (
        "messages:\n  - {role: user, content: Hi, name: ''}\nturns: [Hi]\n",
        ":2:37: messages[0].name: must not be empty",
        "message-empty-name",
    ),
    # ids within one file
    (
        "- {id: x, turns: [Hi]}\n- {id: x, turns: [Hi]}\n",
        ":2:4: [1].id: duplicate conversation id 'x' "
        "(first defined at conversations/a.yaml:1:4); give each conversation a unique 'id'",
        "duplicate-id-in-file",
    ),
    (
        "- {id: a-2, turns: [Hi]}\n- {turns: [Hi]}\n",
        ":2:3: [1].id: duplicate conversation id 'a-2' "
        "(first defined at conversations/a.yaml:1:4); give each conversation a unique 'id'",
        "default-id-clashes",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [pytest.param(t, e, id=i) for t, e, i in ERROR_CASES]
)
def test_error_message(tmp_path: Path, text: str, expected: str) -> None:
    assert error_for(tmp_path, text) == DISPLAY + expected


def test_invalid_utf8_names_line_and_column_of_first_bad_byte(tmp_path: Path) -> None:
    data = "turns:\n  - Olá\n  - café ok\n".encode().replace("é".encode(), b"\xe9")
    assert error_for(tmp_path, data) == (
        "conversations/a.yaml:3:8: not valid UTF-8 (byte 0xe9); save the file as UTF-8"
    )


def read_error(path: Path, display: str) -> str:
    """The reader's error for a path no pattern would expand to (a race: gone, or swapped)."""
    with pytest.raises(InputError) as info:
        read_document(path, display)
    return str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    assert read_error(tmp_path / "nope.yaml", "nope.yaml") == (
        "nope.yaml: cannot read file: no such file or directory"
    )


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    assert read_error(tmp_path, "convs") == "convs: cannot read file: is a directory"


def test_file_too_large_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as stream:
        stream.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
    assert error_of(path, None) == f"{path}: file too large (over 50 MB)"


def test_display_defaults_to_the_path(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yaml", "turns: []\n")
    assert error_of(path, None) == f"{path}:1:8: turns: no turns; add at least one user turn"


# Batches


def test_duplicate_id_across_files_names_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(DATA)
    with pytest.raises(InputError) as info:
        load_conversations(["duplicate_ids"])
    assert str(info.value) == (
        f"{Path('duplicate_ids/b.yaml')}:4:5: conversations[1].id: duplicate conversation id "
        f"'greeting' (first defined at {Path('duplicate_ids/a.yaml')}:3:1); "
        "give each conversation a unique 'id'"
    )
    assert (info.value.line, info.value.field) == (4, "conversations[1].id")


def test_same_file_stem_in_two_folders_clashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "one" / "chat.yaml", "turns: [Hi]\n")
    write(tmp_path / "two" / "chat.yaml", "# second\nturns: [Hi]\n")
    with pytest.raises(InputError) as info:
        load_conversations(["one", "two"])
    assert str(info.value) == (
        f"{Path('two/chat.yaml')}:2:1: id: duplicate conversation id 'chat' "
        f"(first defined at {Path('one/chat.yaml')}:1:1); give each conversation a unique 'id'"
    )


def test_batch_loads_files_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "b.yaml", "turns: [B]\n")
    write(tmp_path / "a.yaml", "- turns: [A1]\n- turns: [A2]\n")
    conversations = load_conversations(["."])
    assert [(c.id, c.source) for c in conversations] == [
        ("a-1", "a.yaml"),
        ("a-2", "a.yaml"),
        ("b", "b.yaml"),
    ]


def test_batch_raises_the_first_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.yaml", "turns: [Hi]\n")
    write(tmp_path / "b.yaml", "turns: []\n")
    write(tmp_path / "c.yaml", "turns: [\n")
    with pytest.raises(InputError) as info:
        load_conversations(["c.yaml", "a.yaml", "b.yaml"])
    assert str(info.value).startswith("c.yaml:2:1: YAML syntax error")


# Expanding paths


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("convs/b.yaml", "convs/a.yml", "convs/sub/c.yaml", "convs/sub/d.YAML"):
        write(tmp_path / name, "turns: [Hi]\n")
    write(tmp_path / "convs" / "notes.txt", "not a conversation")
    return tmp_path


def as_posix(paths: list[Path]) -> list[str]:
    return [p.as_posix() for p in paths]


def test_folder_expands_recursively_to_sorted_yaml_files(tree: Path) -> None:
    assert as_posix(expand_paths(["convs"])) == [
        "convs/a.yml",
        "convs/b.yaml",
        "convs/sub/c.yaml",
        "convs/sub/d.YAML",
    ]


def test_glob_patterns_are_sorted_and_may_recurse(tree: Path) -> None:
    assert as_posix(expand_paths(["convs/*.y*ml"])) == ["convs/a.yml", "convs/b.yaml"]
    assert as_posix(expand_paths(["convs/**/*.yaml"])) == ["convs/b.yaml", "convs/sub/c.yaml"]


def test_glob_matching_a_folder_expands_it(tree: Path) -> None:
    assert as_posix(expand_paths(["con*"])) == as_posix(expand_paths(["convs"]))


def test_explicit_file_is_taken_whatever_its_extension(tree: Path) -> None:
    assert as_posix(expand_paths(["convs/notes.txt"])) == ["convs/notes.txt"]


def test_files_named_twice_are_kept_once_in_first_place(tree: Path) -> None:
    paths = expand_paths(["convs/sub/c.yaml", "convs", "./convs/b.yaml", str(tree / "convs")])
    assert as_posix(paths) == [
        "convs/sub/c.yaml",
        "convs/a.yml",
        "convs/b.yaml",
        "convs/sub/d.YAML",
    ]


@pytest.mark.parametrize("pattern", ["missing.yaml", "convs/*.json", "convs/**/nothing*"])
def test_pattern_matching_nothing(tree: Path, pattern: str) -> None:
    with pytest.raises(InputError) as info:
        expand_paths([pattern])
    assert str(info.value) == f"{pattern}: no conversation files match"


def test_folder_without_yaml_files(tree: Path) -> None:
    (tree / "empty").mkdir()
    with pytest.raises(InputError) as info:
        expand_paths(["convs", "empty"])
    assert str(info.value) == "empty: no conversation files match"


def test_literal_file_name_with_glob_characters(tree: Path) -> None:
    write(tree / "convs" / "[draft].yaml", "turns: [Hi]\n")
    assert as_posix(expand_paths(["convs/[draft].yaml"])) == ["convs/[draft].yaml"]


@pytest.mark.skipif(os.name != "posix", reason="symbolic links")
def test_unreadable_file(tmp_path: Path) -> None:
    # A symlink loop cannot be read even by root (file modes would not stop root).
    path = tmp_path / "loop.yaml"
    path.symlink_to(path)
    message = read_error(path, "loop.yaml")
    assert message.startswith("loop.yaml: cannot read file: ")
    assert "symbolic links" in message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are a POSIX feature")
@pytest.mark.parametrize("how", ["direct", "glob", "run"])
def test_a_fifo_is_refused_at_once(tmp_path: Path, how: str) -> None:
    """A FIFO would block a read forever: refused, by name, without opening it for real."""
    os.mkfifo(tmp_path / "pipe.yaml")
    (tmp_path / "good.yaml").write_text("turns: [hi]\n")
    args = {
        "direct": ["validate", "pipe.yaml"],
        "glob": ["validate", "*.yaml"],
        "run": ["--mock", "-o", "out.jsonl", "pipe.yaml"],
    }[how]
    proc = subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr == "mtrun: error: pipe.yaml: not a regular file (a FIFO); give a .yaml file\n"
    )
    assert not (tmp_path / "out.jsonl").exists()


def test_a_device_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_as(Path(os.devnull))
    assert caught.value.message == "not a regular file (a device or socket); give a .yaml file"


def test_conversations_without_params_or_tools_share_one_empty_value(tmp_path: Path) -> None:
    """100,000 conversations must not hold an empty dict and tool settings per turn."""
    convs = load_text(
        tmp_path,
        "- {id: a, turns: [hi, there]}\n"
        "- {id: b, turns: [hello], params: {temperature: 0}}\n"
        "- {id: c, turns: [{content: x, params: {seed: 1}}]}\n",
    )
    a, b, c = convs
    assert a.params is c.params and a.params == {}
    assert b.params == {"temperature": 0}
    assert a.turns[0].params is a.turns[1].params is b.turns[0].params
    assert c.turns[0].params == {"seed": 1}
    assert a.turns[0].tools is a.turns[1].tools is c.turns[0].tools
    assert a.turns[0].tools.results == {} and a.turns[0].tools.tools == ()
