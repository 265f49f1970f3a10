"""Conversation files with tools: tools, tool_results, tool-call messages and content parts."""

from __future__ import annotations

from pathlib import Path

import pytest
from loading import load_as

from runner.errors import InputError
from runner.spec.model import Conversation, Turn
from runner.spec.tools import DEFAULT_MAX_TOOL_STEPS, ToolSettings, scripted_result

DISPLAY = "conversations/a.yaml"

TOOLS = """\
tools:
  - type: function
    function:
      name: get_weather
      description: Current weather for a city
      parameters: {type: object, properties: {city: {type: string}}, required: [city]}
  - {type: function, function: {name: get_time}}
"""


def load(tmp_path: Path, text: str) -> list[Conversation]:
    path = tmp_path / "a.yaml"
    path.write_text(text, encoding="utf-8")
    return load_as(path)


def error_for(tmp_path: Path, text: str) -> str:
    path = tmp_path / "a.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_as(path, DISPLAY)
    return str(info.value).removeprefix(DISPLAY)


def one(tmp_path: Path, text: str) -> Conversation:
    (conversation,) = load(tmp_path, text)
    return conversation


# Valid files


def test_a_conversation_without_tools_has_empty_tool_settings(tmp_path: Path) -> None:
    conversation = one(tmp_path, "turns: [Hi]\n")
    assert conversation.turns == (Turn(content="Hi", line=1),)
    assert conversation.turns[0].tools == ToolSettings()
    assert conversation.max_tool_steps == DEFAULT_MAX_TOOL_STEPS
    assert conversation.reasoning == "tool_chain"


def test_tools_and_results_resolve_into_each_turn(tmp_path: Path) -> None:
    text = TOOLS + (
        "tool_results:\n"
        "  get_weather:\n"
        "    - when: {city: Paris}\n"
        "      result: {temp_c: 18, sky: cloudy}\n"
        "    - when_schema: {type: object, required: [city]}\n"
        "      result: unknown city\n"
        "    - result: no data\n"
        '  get_time: "10:00"\n'
        "unscripted_tool_result: not scripted\n"
        "max_tool_steps: 3\n"
        "reasoning: always\n"
        "turns: [Weather?]\n"
    )
    conversation = one(tmp_path, text)
    settings = conversation.turns[0].tools
    assert [t["function"]["name"] for t in settings.tools] == ["get_weather", "get_time"]
    assert settings.tools[1] == {"type": "function", "function": {"name": "get_time"}}
    assert scripted_result(settings, "get_weather", '{"city": "Paris"}', 0) == (
        '{"temp_c":18,"sky":"cloudy"}'
    )
    assert scripted_result(settings, "get_weather", '{"city": "Rome"}', 0) == "unknown city"
    assert scripted_result(settings, "get_weather", "{}", 0) == "no data"
    assert scripted_result(settings, "get_time", "{}", 5) == "10:00"
    assert scripted_result(settings, "other", "{}", 0) == "not scripted"
    assert (conversation.max_tool_steps, conversation.reasoning) == (3, "always")


def test_sequence_and_single_result(tmp_path: Path) -> None:
    text = TOOLS + (
        "tool_results:\n"
        "  get_weather: {sequence: [one, {n: 2}]}\n"
        "  get_time: {result: [1, 2]}\n"
        "turns: [Hi]\n"
    )
    settings = one(tmp_path, text).turns[0].tools
    calls = [scripted_result(settings, "get_weather", "{}", n) for n in range(3)]
    assert calls == ["one", '{"n":2}', None]
    assert scripted_result(settings, "get_time", "not json", 0) == "[1,2]"


def test_a_turns_tools_replace_and_its_results_win_by_name(tmp_path: Path) -> None:
    text = (
        "defaults:\n"
        "  tool_results: {get_time: from defaults, get_weather: sunny}\n"
        "  max_tool_steps: 4\n"
        "conversations:\n"
        "  - " + TOOLS.replace("\n", "\n    ").rstrip() + "\n"
        "    tool_results: {get_time: from the conversation}\n"
        "    turns:\n"
        "      - Hi\n"
        "      - content: Again\n"
        "        tool_results: {get_time: from the turn}\n"
        "      - content: No tools\n"
        "        tools: []\n"
    )
    conversation = one(tmp_path, text)
    first, second, third = (turn.tools for turn in conversation.turns)
    assert scripted_result(first, "get_time", "{}", 0) == "from the conversation"
    assert scripted_result(first, "get_weather", "{}", 0) == "sunny"
    assert scripted_result(second, "get_time", "{}", 0) == "from the turn"
    assert third == ToolSettings()
    assert conversation.max_tool_steps == 4


def test_the_defaults_results_need_only_one_conversation_declaring_the_tool(
    tmp_path: Path,
) -> None:
    text = (
        "defaults:\n  tool_results: {f: shared}\n"
        "conversations:\n"
        "  - {id: a, tools: [{type: function, function: {name: f}}], turns: [Hi]}\n"
        "  - {id: b, turns: [Hi]}\n"
    )
    a, b = load(tmp_path, text)
    assert scripted_result(a.turns[0].tools, "f", "{}", 0) == "shared"
    assert b.turns[0].tools == ToolSettings()
    message = error_for(tmp_path, text.replace("{f: shared}", "{g: shared}"))
    assert message == (
        ":2:18: defaults.tool_results.g: results for tool 'g', which no conversation of the "
        "file declares (declared: f); add it to 'tools'"
    )


def test_tool_call_messages_pass_through(tmp_path: Path) -> None:
    text = TOOLS + (
        "messages:\n"
        "  - {role: user, content: Weather in Rome?}\n"
        "  - role: assistant\n"
        "    content: null\n"
        "    tool_calls:\n"
        "      - id: c1\n"
        "        type: function\n"
        '        function: {name: get_weather, arguments: \'{"city":"Rome"}\'}\n'
        "      - {id: c2, type: function, function: {name: get_time, arguments: '{}'}}\n"
        "  - {role: tool, tool_call_id: c2, content: '10:00'}\n"
        "  - {role: tool, tool_call_id: c1, content: sunny}\n"
        "  - role: assistant\n"
        "    tool_calls: [{id: c3, type: function, function: {name: get_time, arguments: '{}'}}]\n"
        "  - {role: tool, tool_call_id: c3, content: '10:01'}\n"
        "turns: [Thanks]\n"
    )
    prefix = one(tmp_path, text).prefix()
    assert prefix[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
            },
            {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ],
    }
    assert prefix[2] == {"role": "tool", "content": "10:00", "tool_call_id": "c2"}
    assert prefix[4]["content"] is None


def test_content_parts_on_a_turn_fill_vars_in_text(tmp_path: Path) -> None:
    text = (
        "vars: {animal: cat}\n"
        "turns:\n"
        "  - content:\n"
        "      - {type: text, text: 'What is this {{animal}}?'}\n"
        "      - {type: image_url, image_url: {url: 'https://example.com/c.png', detail: low}}\n"
        "      - {type: input_audio, input_audio: {data: UklGR, format: wav}}\n"
    )
    assert one(tmp_path, text).turns[0].content == [
        {"type": "text", "text": "What is this cat?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/c.png", "detail": "low"}},
        {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}},
    ]


# Errors

FN = "  - {type: function, function: {name: f}}\n"

ERRORS = [
    (
        "tools: {a: 1}\nturns: [Hi]\n",
        ":1:8: tools: expected a list of tools ({type: function, ...})",
    ),
    (
        "tools:\n  - {type: code}\nturns: [Hi]\n",
        ":2:12: tools[0].type: only 'function' tools exist",
    ),
    (
        "tools:\n  - {type: function, function: {name: 'a b'}}\nturns: [Hi]\n",
        ":2:39: tools[0].function.name: invalid function name 'a b'; "
        "use 1 to 64 letters, digits, '_' or '-'",
    ),
    (
        "tools:\n  - {type: function, function: {name: f, parameter: {}}}\nturns: [Hi]\n",
        ":2:42: tools[0].function.parameter: unknown key; did you mean 'parameters'?",
    ),
    (
        "tools:\n  - {type: function, function: {name: f, parameters: {type: 5}}}\nturns: [Hi]\n",
        ":2:61: tools[0].function.parameters.type: invalid JSON Schema: "
        "5 is not valid under any of the given schemas",
    ),
    (
        "tools:\n  - {type: function, function: {name: f, parameters: {$ref: 'file:///etc/x'}}}\n"
        "turns: [Hi]\n",
        ":2:61: tools[0].function.parameters.$ref: '$ref: file:///etc/x' is refused; "
        "mtrun resolves references only inside the schema, never files or URLs: "
        "write '#' or '#/$defs/NAME'",
    ),
    (
        "tools:\n" + FN + FN + "turns: [Hi]\n",
        ":3:39: tools[1].function.name: tool 'f' is declared twice (first at tools[0])",
    ),
    (
        "tools:\n" + FN + "tool_results: {g: x}\nturns: [Hi]\n",
        ":3:16: tool_results.g: results for tool 'g', which the conversation does not declare "
        "(declared: f); add it to 'tools'",
    ),
    (
        "turns:\n  - {content: Hi, tool_results: {f: x}}\n",
        ":2:34: turns[0].tool_results.f: results for tool 'f', which this turn does not declare "
        "(no tools are declared); add it to 'tools'",
    ),
    (
        "tools:\n" + FN + "tool_results: {f: {temp: 3}}\nturns: [Hi]\n",
        ":3:19: tool_results.f: ambiguous: a mapping here must have 'result', 'when', "
        "'when_schema' or 'sequence'; to return this mapping, write it under 'result:'",
    ),
    (
        "tools:\n" + FN + "tool_results: {f: [{when: {a: 1}}]}\nturns: [Hi]\n",
        ":3:20: tool_results.f[0]: missing required key 'result'",
    ),
    (
        "tools:\n" + FN + "tool_results: {f: }\nturns: [Hi]\n",
        ':3:19: tool_results.f: the result is empty; write the tool\'s answer ("null" in quotes '
        "for null)",
    ),
    (
        "tools:\n" + FN + "tool_results: {f: {sequence: [], result: 1}}\nturns: [Hi]\n",
        ":3:34: tool_results.f.result: unknown key; expected one of: sequence",
    ),
    (
        "tools:\n" + FN + "tool_results: {f: [{when_schema: {pattern: '(a+)+'}, result: x}]}\n"
        "turns: [Hi]\n",
        ":3:44: tool_results.f[0].when_schema.pattern: the regular expression repeats a "
        "repetition, e.g. (a+)+, which can take for ever on some answers; make the inner part "
        "match one way only",
    ),
    (
        "turns:\n  - content: Hi\n    expect: {tool_sequence: {calls: [f], order: sorted}}\n",
        ":3:49: turns[0].expect.tool_sequence.order: unknown order 'sorted'; "
        "expected one of: exact, in_order, any",
    ),
    (
        "max_tool_steps: 0\nturns: [Hi]\n",
        ":1:17: max_tool_steps: expected a whole number from 1 to 100, got 0",
    ),
    (
        "max_tool_steps: x\nturns: [Hi]\n",
        ":1:17: max_tool_steps: expected a whole number from 1 to 100",
    ),
    (
        "reasoning: sometimes\nturns: [Hi]\n",
        ":1:12: reasoning: unknown policy 'sometimes'; use one of: never, tool_chain, always",
    ),
    (
        "unscripted_tool_result: [1]\nturns: [Hi]\n",
        ":1:25: unscripted_tool_result: expected a string or null",
    ),
    (
        "messages:\n  - {role: assistant, tool_calls: [{id: c1, type: function, "
        "function: {name: f, arguments: '{}'}}]}\nturns: [Hi]\n",
        ":2:5: messages[0]: tool call 'c1' of messages[0] is not answered; add "
        "{role: tool, tool_call_id: c1, content: ...} right after it",
    ),
    (
        "messages:\n  - {role: assistant, tool_calls: [{id: c1, type: function, "
        "function: {name: f, arguments: '{}'}}]}\n  - {role: user, content: Hi}\nturns: [Hi]\n",
        ":3:5: messages[1]: tool call 'c1' of messages[0] is not answered; add "
        "{role: tool, tool_call_id: c1, content: ...} right after it",
    ),
    (
        "messages:\n  - {role: tool, tool_call_id: c9, content: x}\nturns: [Hi]\n",
        ":2:5: messages[0].tool_call_id: answers no open tool call 'c9'; it must follow the call",
    ),
    (
        "messages:\n  - {role: tool, content: x}\nturns: [Hi]\n",
        ":2:5: messages[0]: missing required key 'tool_call_id'",
    ),
    (
        "messages:\n  - {role: user, content: x, tool_call_id: c}\nturns: [Hi]\n",
        ":2:30: messages[0].tool_call_id: only a 'role: tool' message has 'tool_call_id'",
    ),
    (
        "messages:\n  - {role: user, content: x, tool_calls: []}\nturns: [Hi]\n",
        ":2:30: messages[0].tool_calls: only an assistant message has 'tool_calls'",
    ),
    (
        "messages:\n  - {role: assistant, tool_calls: [{id: c, type: function, "
        "function: {name: f, arguments: {}}}]}\nturns: [Hi]\n",
        ":2:91: messages[0].tool_calls[0].function.arguments: expected the arguments as JSON "
        "text (a string)",
    ),
    (
        "turns:\n  - content: []\n",
        ":2:14: turns[0].content: must not be an empty list; add a content part",
    ),
    (
        "turns:\n  - content: [{type: video, video: x}]\n",
        ":2:22: turns[0].content[0].type: unknown content part type 'video'; "
        "use one of: text, image_url, input_audio",
    ),
    (
        "turns:\n  - content: [{type: text, txt: x}]\n",
        ":2:28: turns[0].content[0].txt: unknown key; did you mean 'text'?",
    ),
    (
        "turns:\n  - content: [{type: image_url, image_url: {url: x, detail: max}}]\n",
        ":2:61: turns[0].content[0].image_url.detail: unknown detail 'max'; "
        "use one of: auto, low, high",
    ),
    (
        "turns:\n  - content: [{type: input_audio, input_audio: {data: x}}]\n",
        ":2:48: turns[0].content[0].input_audio: missing required key 'format'",
    ),
]


@pytest.mark.parametrize(("text", "expected"), ERRORS)
def test_error_message(tmp_path: Path, text: str, expected: str) -> None:
    assert error_for(tmp_path, text) == expected
