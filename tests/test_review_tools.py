"""The review commands on tool-call conversations (issue 13): show, Markdown, diff and JUnit.

Transcripts are built by hand following docs/design/tool-calls.md: assistant
messages with ``tool_calls`` (content null), ``role: tool`` messages, and a
turn's ``steps`` with per-step ``message_index``, ``tool_results`` and
``reasoning``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tool_records import tool_record

from runner.cli import main
from runner.review.diff import diff_runs, render_json, should_fail
from runner.review.diff_model import ToolCall, ToolChange
from runner.review.diff_text import render_text
from runner.review.junit import junit_xml
from runner.review.markdown import render_markdown
from runner.review.show import render_records
from runner.review.view import answer_index, view_of

SHOWN = """\
━━ weather · completed · model m
   1 turn answered · 15 tokens · {retries}

▌ user · turn 1
    Weather in Paris?

▌ reasoning · reasoning_content
    I should look it up.

▌ assistant · step 1 · 2 tool calls
  → get_weather (call_1)
    {{
      "city": "Paris"
    }}
  → get_time (call_2)
    now?

▌ tool · get_weather (call_1)
    {{"temp_c":18}}

▌ tool · get_time (call_2)
    10:00

▌ reasoning · reasoning_content
    Now answer.

▌ assistant
    It is 18 C in Paris.
  » latency 20 ms · tokens 10 prompt / 5 completion · no retries · finish stop
  ✓ PASS tool_called: get_weather"""


def shown(record: dict[str, Any]) -> str:
    return "\n".join(render_records([record], color=False))


def test_answer_index_follows_the_last_step() -> None:
    record = tool_record()
    assert answer_index(record["turns"][0]) == 4
    assert answer_index({"message_index": 2}) == 3
    assert answer_index({"message_index": 2, "steps": "nonsense"}) == 3
    assert answer_index({"steps": [{"message_index": "4"}]}) is None
    assert answer_index({}) is None


def test_show_prints_each_step_then_the_answer() -> None:
    text = shown(tool_record())
    header_retries = text.splitlines()[1].rsplit("· ", 1)[1]  # counted by transcripts.totals
    assert text == SHOWN.format(retries=header_retries)


def test_show_dims_reasoning() -> None:
    text = "\n".join(render_records([tool_record()], color=True))
    assert "\x1b[2m▌ reasoning · reasoning_content\x1b[0m" in text
    assert "\x1b[2m    I should look it up.\x1b[0m" in text


def test_tool_text_is_data() -> None:
    record = tool_record()
    record["messages"][1]["tool_calls"][0]["function"]["name"] = "evil\x1b[2J"
    record["messages"][2]["content"] = "```\n# hi <script>x</script>\x1b]8;;"
    record["turns"][0]["steps"][0]["reasoning"] = {"reasoning": "````\n<b>\u202e"}
    text = shown(record)
    assert "\x1b" not in text and "\u202e" not in text
    assert "evil\\x1b[2J (call_1)" in text
    md = render_markdown([record])
    assert "\x1b" not in md and "<b>" not in md.replace("`````reasoning\n````\n<b>", "")
    assert "`````reasoning\n````\n<b>\\u202e\n`````" in md
    assert "````text\n```\n# hi <script>x</script>\\x1b]8;;\n````" in md


def test_markdown_shows_calls_results_and_reasoning() -> None:
    md = render_markdown([tool_record()])
    expected = """\
**User** · turn 1

```text
Weather in Paris?
```

*Reasoning* (`reasoning_content`)

```reasoning
I should look it up.
```

**Assistant** · step 1 · 2 tool calls

- call `get_weather` (`call_1`)

  ```json
  {
    "city": "Paris"
  }
  ```

- call `get_time` (`call_2`)

  ```text
  now?
  ```

**Tool** · result of `get_weather` (`call_1`)

```text
{"temp_c":18}
```

**Tool** · result of `get_time` (`call_2`)

```text
10:00
```

*Reasoning* (`reasoning_content`)

```reasoning
Now answer.
```

**Assistant**

```text
It is 18 C in Paris.
```
"""
    assert expected in md
    assert "<details" not in md


def test_failed_chain_still_shows_its_calls() -> None:
    record = tool_record()
    record["status"] = "failed"
    record["messages"] = record["messages"][:2]
    turn = record["turns"][0]
    turn["steps"] = turn["steps"][:1]
    turn["error"] = {"kind": "tool_unscripted", "message": "turn 1: get_weather {'city': 'Paris'}"}
    record["error"] = dict(turn["error"], turn=0)
    text = shown(record)
    assert "→ get_weather (call_1)" in text and "▌ assistant\n" not in text
    assert "turn 1 failed: tool_unscripted: turn 1: get_weather" in text
    assert "- call `get_weather` (`call_1`)" in render_markdown([record])


def test_calls_without_steps_are_shown_too() -> None:
    record = tool_record()
    del record["turns"][0]["steps"]
    turns = view_of(record)[1]
    assert [c.name for c in turns[0].steps[0].calls] == ["get_weather", "get_time"]
    assert turns[0].answer is None  # message_index + 1 holds the calls, not an answer


def test_wrong_types_in_tool_fields_render() -> None:
    record = tool_record()
    record["messages"][1]["tool_calls"] = [
        "x",
        None,
        {"function": "nope"},
        {"id": 5, "function": {"name": ["a"], "arguments": {"k": 1}}},
    ]
    record["turns"][0]["steps"] = [
        {"message_index": 1},
        7,
        {"message_index": 4, "reasoning": "r"},
    ]
    text = shown(record)
    assert "→ ?" in text and "→ ['a'] (5)" in text
    render_markdown([record])
    record["turns"][0]["steps"] = {"a": 1}
    shown(record)
    render_markdown([copy.deepcopy(record)])


def test_diff_reports_the_first_step_whose_calls_differ() -> None:
    base, new = tool_record(), tool_record(city="Lyon")
    diff = diff_runs([base], [new])
    (conversation,) = diff.conversations
    assert conversation.outcome == "changed" and conversation.first_divergence is None
    change = conversation.turns[0].tools
    assert change == ToolChange(
        step=0,
        base_steps=1,
        new_steps=1,
        base_calls=(
            ToolCall("call_1", "get_weather", '{"city": "Paris"}'),
            ToolCall("call_2", "get_time", "now?"),
        ),
        new_calls=(
            ToolCall("call_1", "get_weather", '{"city": "Lyon"}'),
            ToolCall("call_2", "get_time", "now?"),
        ),
    )
    text = render_text(diff)
    assert (
        "  turn 1 step 1: tool calls changed\n"
        '    base: get_weather {"city": "Paris"}\n'
        "    base: get_time now?\n"
        '    new: get_weather {"city": "Lyon"}\n'
        "    new: get_time now?\n"
    ) in text
    document = json.loads(json.dumps(render_json(diff)))
    assert document["conversations"][0]["turns"][0]["tools"] == {
        "step": 0,
        "base_steps": 1,
        "new_steps": 1,
        "base_calls": [
            {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
            {"id": "call_2", "name": "get_time", "arguments": "now?"},
        ],
        "new_calls": [
            {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Lyon"}'},
            {"id": "call_2", "name": "get_time", "arguments": "now?"},
        ],
    }


def test_diff_ignores_call_ids_spacing_and_key_order() -> None:
    new = tool_record()
    calls = new["messages"][1]["tool_calls"]
    calls[0]["id"] = "call_9"
    calls[0]["function"]["arguments"] = '{ "city":"Paris" }'
    diff = diff_runs([tool_record()], [new])
    assert diff.conversations[0].outcome == "same"
    assert "tools" not in render_json(diff)["conversations"][0]["turns"][0]


def test_diff_reports_a_different_number_of_steps() -> None:
    new = tool_record()
    new["messages"] = [new["messages"][0], {"role": "assistant", "content": "It is 18 C in Paris."}]
    new["turns"][0]["steps"] = []
    change = diff_runs([tool_record()], [new]).conversations[0].turns[0].tools
    assert change is not None and (change.step, change.base_steps, change.new_steps) == (0, 1, 0)
    assert change.new_calls is None
    assert "    new: (no such step)" in render_text(diff_runs([tool_record()], [new]))


def test_diff_without_tools_has_no_tools_key() -> None:
    plain = {
        "id": "a",
        "status": "completed",
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
        "turns": [{"index": 0, "message_index": 0}],
    }
    turn = render_json(diff_runs([plain], [plain]))["conversations"][0]["turns"][0]
    assert list(turn) == ["index", "prompt", "answer", "tokens", "latency_ms"]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("tool_called", "get_weather"),
        ("no_tool_called", True),
        ("tool_sequence", ["get_weather", "get_time"]),
        ("tool_args_valid", True),
    ],
)
def test_a_tool_check_that_flips_to_failing_is_a_regression(kind: str, expected: Any) -> None:
    base, new = tool_record(), tool_record()
    for record, passed in ((base, True), (new, False)):
        record["turns"][0]["checks"] = [
            {"kind": kind, "scope": "turn", "expected": expected, "passed": passed, "message": "no"}
        ]
        record["status"] = "completed" if passed else "checks_failed"
    diff = diff_runs([base], [new])
    assert diff.conversations[0].outcome == "regressed"
    assert [(c.kind, c.change) for c in diff.conversations[0].checks] == [(kind, "regressed")]
    assert should_fail(diff, "regressed")
    assert f"  check pass -> fail: turn 1 {kind} (turn), expected " in render_text(diff)


def test_junit_system_out_shows_each_steps_calls_and_results() -> None:
    root = ET.fromstring(junit_xml([tool_record()]))
    out = root.find("testsuite/testcase/system-out")
    assert out is not None
    assert out.text == (
        "conversation weather, model m, status completed\n"
        "user: Weather in Paris?\n"
        "assistant (step 1): (no content)\n"
        '    calls get_weather {"city": "Paris"} [call_1]\n'
        "    calls get_time now? [call_2]\n"
        'tool get_weather [call_1]: {"temp_c":18}\n'
        "tool get_time [call_2]: 10:00\n"
        "assistant: It is 18 C in Paris."
    )


def test_the_commands_show_the_steps(tmp_path: Path) -> None:
    base, new = tmp_path / "base.jsonl", tmp_path / "new.jsonl"
    base.write_text(json.dumps(tool_record()) + "\n")
    new.write_text(json.dumps(tool_record(city="Lyon")) + "\n")
    runner = CliRunner()
    shown = runner.invoke(main, ["show", "--no-color", str(base)])
    assert shown.exit_code == 0 and "  → get_weather (call_1)\n" in shown.output
    md = runner.invoke(main, ["export", "--format", "md", str(base)])
    assert md.exit_code == 0 and "- call `get_time` (`call_2`)" in md.output
    diff = runner.invoke(main, ["diff", "--json", str(base), str(new)])
    assert json.loads(diff.output)["conversations"][0]["turns"][0]["tools"]["step"] == 0
    report = runner.invoke(main, ["report", str(base), "-o", str(tmp_path / "r.html")])
    assert report.exit_code == 0 and "get_weather" in (tmp_path / "r.html").read_text()


def test_reasoning_also_in_extra_is_shown_once() -> None:
    record = tool_record()
    record["turns"][0]["extra"] = {"reasoning_content": "Now answer."}
    assert shown(record).count("Now answer.") == 1
    assert render_markdown([record]).count("Now answer.") == 1


def test_each_steps_answered_attempt_is_no_retry() -> None:
    """A two-step turn answered at once made two requests and no retry."""
    from runner.transcripts.totals import totals

    record = tool_record()
    assert totals(record).retries == 0 and totals(record).attempts == 2
    record["turns"][0]["attempts"].insert(0, {"attempt": 1, "outcome": "http_503", "step": 0})
    assert totals(record).retries == 1


@pytest.mark.parametrize(
    ("base_steps", "new_steps", "said"),
    [(2, 1, "2 -> 1 step"), (1, 2, "1 -> 2 steps"), (1, 1_000, "1 -> 1,000 steps")],
)
def test_diff_counts_the_steps_with_calls_in_the_singular_for_one(
    base_steps: int, new_steps: int, said: str
) -> None:
    diff = diff_runs([tool_record()], [tool_record(city="Lyon")])
    (conversation,) = diff.conversations
    (turn,) = conversation.turns
    assert turn.tools is not None
    tools = dataclasses.replace(turn.tools, base_steps=base_steps, new_steps=new_steps)
    turns = (dataclasses.replace(turn, tools=tools),)
    changed = dataclasses.replace(
        diff, conversations=(dataclasses.replace(conversation, turns=turns),)
    )
    assert f"  turn 1 step 1: tool calls changed ({said} with calls)\n" in render_text(changed)
