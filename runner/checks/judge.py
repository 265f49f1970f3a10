"""LLM-graded checks, the pure half: the ``judge`` kind, the judge's prompt and its verdict.

The judge is asked for one JSON object, ``{"pass": true|false, "reason":
"..."}``. Sending the request (through the same responder as answers, so it is
retried, recorded and replayed like any other) is the run layer's job:
``runner/run/judging.py``. The offline backend (``runner/http/mock.py``)
answers judge requests too, reading the prompt by the constants below, so
judged conversations can be tested without a network.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.checks.base import Kind, Observation, Outcome, excerpt, read_options, read_text

if TYPE_CHECKING:
    from runner.checks.kinds import Check

JUDGE_MARKER = "You are mtrun's judge."
"""How every judge request's system prompt starts (the offline backend looks for it)."""

JUDGE_SYSTEM = (
    f"{JUDGE_MARKER} You grade one assistant answer in a conversation against a rubric. "
    "Read the conversation and the rubric, then reply with only a JSON object and nothing "
    'else: {"pass": true or false, "reason": "one short sentence"}.'
)

CONVERSATION_HEADING = "Conversation:"
"""The judge prompt's first line; the messages follow, each under :func:`message_heading`."""
RUBRIC_HEADING = "Rubric for the last assistant answer:"
"""The line after the messages; the rubric follows on the next line."""
REPLY_INSTRUCTION = 'Reply with only {"pass": true or false, "reason": "..."}.'
"""The judge prompt's last paragraph, after the rubric."""

_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def message_heading(role: str) -> str:
    """The line above each message in the judge prompt: ``[user]``, ``[assistant]``."""
    return f"[{role}]"


@dataclass(frozen=True, slots=True)
class Rubric:
    """Argument of ``judge``: the rubric, and the judge model when the file names one."""

    text: str
    model: str | None = None


def rubric_of(check: Check) -> tuple[str, str | None]:
    """The rubric and the model named by a judge check (None: the default model)."""
    arg = check.arg
    if not isinstance(arg, Rubric):
        raise TypeError(f"not a judge check: {check.kind}")
    return arg.text, arg.model


def judge_body(rubric: str, messages: list[dict[str, Any]], model: str) -> dict[str, Any]:
    """The chat request that asks the judge for a verdict on the last answer."""
    lines = [f"{message_heading(m.get('role', '?'))}\n{_judge_text(m)}" for m in messages]
    prompt = (
        f"{CONVERSATION_HEADING}\n\n"
        + "\n\n".join(lines)
        + f"\n\n{RUBRIC_HEADING}\n{rubric}\n\n{REPLY_INSTRUCTION}"
    )
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": prompt},
        ],
        "temperature": 0,
    }


def _judge_text(message: dict[str, Any]) -> str:
    """A message as the judge reads it: its content, and any tool calls it made or answered."""
    content = message.get("content")
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls and content is None:
        content = ""
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    if isinstance(calls, list):
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                name, arguments = function.get("name"), function.get("arguments")
                text += f"\n(calls the tool {name} with {arguments})"
    if message.get("role") == "tool":
        text = f"(the result of tool call {message.get('tool_call_id')})\n{text}"
    return text.lstrip("\n")


def parse_verdict(content: Any) -> tuple[bool, str] | None:
    """``(passed, reason)`` from the judge's reply, or None when it gave no verdict."""
    if not isinstance(content, str):
        return None
    found = _OBJECT.search(content)
    if found is None:
        return None
    try:
        data = json.loads(found.group(0))
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    verdict = data.get("pass", data.get("passed", data.get("verdict")))
    if isinstance(verdict, str) and verdict.strip().lower() in ("pass", "fail", "true", "false"):
        verdict = verdict.strip().lower() in ("pass", "true")
    if not isinstance(verdict, bool):
        return None
    reason = data.get("reason", "")
    return verdict, reason if isinstance(reason, str) else json.dumps(reason)


# The judge kind: parsed and described like any other, graded by the run layer.


def _parse_judge(value: Any, field: str) -> Rubric:
    if not isinstance(value, Mapping):
        return Rubric(read_text(value, field, "a rubric (a string) or a mapping with 'rubric'"))
    read_options(value, field, ("rubric", "model"), "rubric")
    model = value.get("model")
    return Rubric(
        read_text(value["rubric"], f"{field}.rubric"),
        None if model is None else read_text(model, f"{field}.model"),
    )


def _describe_judge(arg: Rubric) -> str:
    model = f" (model {arg.model})" if arg.model else ""
    return f"judge: {excerpt(arg.text, 120)}{model}"


def _unevaluated(_arg: Any, _text: str, _: Observation) -> Outcome:
    raise ValueError("judge checks are evaluated by the engine")


KINDS: dict[str, Kind] = {"judge": Kind(_parse_judge, _describe_judge, _unevaluated)}
"""The judge kind."""
