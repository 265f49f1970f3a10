"""``tool_choice`` that forces a call applies to a turn's first request; later steps send ``auto``.

A model given ``tool_choice: required`` (or a named function) calls a tool
on every request that carries it, as OpenAI's do: sent again with the tool
results, it would call again until ``max_tool_steps``. So, as the OpenAI
Agents SDK does, once the model has called, the next steps let it decide.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import read_jsonl
from virtualtime import clock, run_virtual

from runner.run.engine import RunConfig, run_batch
from runner.spec.model import Conversation, Turn
from runner.spec.tools import ToolRule, ToolScript, ToolSettings

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
TOOLS = ToolSettings(
    tools=(WEATHER,), results={"get_weather": ToolScript(rules=(ToolRule("18 C"),))}
)


class ForcedModel:
    """Calls get_weather whenever tool_choice forces a call, else answers the tool's result."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        n = len(self.bodies)
        choice = body.get("tool_choice", "auto")
        forced = choice not in ("auto", "none")
        if "tools" in body and (forced or body["messages"][-1]["role"] == "user"):
            function = {"name": "get_weather", "arguments": "{}"}
            call = {"id": f"c{n}", "type": "function", "function": function}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
        else:
            message = {"role": "assistant", "content": "It is 18 C."}
        finish = "tool_calls" if "tool_calls" in message else "stop"
        choices = [{"index": 0, "message": message, "finish_reason": finish}]
        return httpx.Response(200, json={"id": f"r{n}", "choices": choices})


@pytest.mark.parametrize(
    "forced", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
def test_a_forced_call_is_forced_on_the_first_step_only(tmp_path: Path, forced: Any) -> None:
    turn = Turn("Weather?", tools=TOOLS, params={"tool_choice": forced})
    conversation = Conversation(id="f", source="f.yaml", turns=(turn, Turn("Thanks.")))
    model = ForcedModel()
    config = RunConfig(
        output=tmp_path / "out.jsonl", base_url="http://127.0.0.1:9/v1", transport=model.transport
    )
    run_virtual(run_batch([conversation], config, clock=clock))
    (record,) = read_jsonl(tmp_path / "out.jsonl")
    assert record["status"] == "completed", record.get("error")
    assert [b.get("tool_choice") for b in model.bodies] == [forced, "auto", None]
    assert record["messages"][-3]["content"] == "It is 18 C."
    assert record["params"] == {}  # the turn's own params are recorded as written
    assert record["turns"][0]["params"] == {"tool_choice": forced}
