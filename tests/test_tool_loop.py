"""A turn that calls tools: the exact bodies of each step, failures, reasoning, resume mid-chain.

The server here is strict like OpenAI's: every assistant message with
``tool_calls`` must be followed by one tool message per call id before
anything else (400 otherwise), and, as DeepSeek asks, an assistant message
with calls after the last user message must carry its ``reasoning_content``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import read_jsonl
from virtualtime import clock, run_virtual

from runner.checks.kinds import parse_expect
from runner.run.batch import request_settings
from runner.run.engine import RunConfig, RunControl, run_batch
from runner.run.events import RunResult, RunStarted
from runner.run.plan import estimate_cost, plan_lines
from runner.spec.model import Conversation, Turn, apply_overrides
from runner.spec.tools import ToolRule, ToolScript, ToolSettings
from runner.transcripts.fields import answer_index

LOCAL = "http://127.0.0.1:9/v1"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
TOOLS = ToolSettings(
    tools=(WEATHER, TIME),
    results={
        "get_weather": ToolScript(
            rules=(
                ToolRule(result='{"temp_c":18}', when={"city": "Paris"}),
                ToolRule(result="rain", when={"city": "Oslo"}),
            )
        ),
        "get_time": ToolScript(sequence=("10:00", "10:05", "10:10")),
    },
)


def call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


def calling(*calls: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": list(calls), **extra}


def text(content: str, **extra: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content, **extra}


class ToolServer:
    """Answers each request with the next planned message; strict about the history."""

    def __init__(
        self,
        *answers: dict[str, Any],
        deepseek: bool = False,
        stop_at: tuple[int, RunControl] | None = None,
    ) -> None:
        self.answers = list(answers)
        self.deepseek = deepseek
        self.stop_at = stop_at
        self.bodies: list[dict[str, Any]] = []
        self.transport = httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        if self.stop_at is not None and len(self.bodies) - 1 == self.stop_at[0]:
            self.stop_at[1].stop("stopped by the test")  # this request never gets its answer
            await asyncio.sleep(3600)
        problem = self.problem(body["messages"])
        if problem:
            return httpx.Response(400, json={"error": {"message": problem}})
        n = len(self.bodies) - 1
        message = self.answers[min(n, len(self.answers) - 1)]
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        usage = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
        return httpx.Response(
            200,
            json={
                "id": f"r{n}",
                "model": "m",
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage,
            },
        )

    def problem(self, messages: list[dict[str, Any]]) -> str | None:
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        for i, m in enumerate(messages):
            ids = [c["id"] for c in m.get("tool_calls") or []]
            if not ids:
                continue
            answered = [x.get("tool_call_id") for x in messages[i + 1 : i + 1 + len(ids)]]
            if answered != ids:
                return "tool_calls must be followed by tool messages answering each id"
            if self.deepseek and i > users[-1] and "reasoning_content" not in m:
                return "Missing reasoning_content"
        return None


def conv(*turns: str, **kw: Any) -> Conversation:
    return Conversation(
        id="w", source="w.yaml", turns=tuple(Turn(t, tools=TOOLS) for t in turns), **kw
    )


def run(conversation: Conversation, tmp_path: Path, server: ToolServer, **kw: Any) -> RunResult:
    control = kw.pop("control", None)
    on_event = kw.pop("on_event", None)
    tmp_path.mkdir(exist_ok=True)
    config = RunConfig(
        output=tmp_path / "out.jsonl", base_url=LOCAL, transport=server.transport, **kw
    )
    return run_virtual(
        run_batch([conversation], config, clock=clock, control=control, on_event=on_event)
    )


def user(content: str) -> dict[str, Any]:
    return {"role": "user", "content": content}


def tool(call_id: str, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def test_a_single_call_is_answered_and_the_turn_sends_again(tmp_path: Path) -> None:
    server = ToolServer(calling(call("c1", "get_weather", {"city": "Paris"})), text("18 C."))
    run(conv("Weather in Paris?"), tmp_path, server)

    first, second = server.bodies
    assert first == {
        "model": "arcee-ai/AFM-4.5B",
        "messages": [user("Weather in Paris?")],
        "tools": [WEATHER, TIME],
    }
    assert second == {
        "model": "arcee-ai/AFM-4.5B",
        "messages": [
            user("Weather in Paris?"),
            calling(call("c1", "get_weather", {"city": "Paris"})),
            tool("c1", '{"temp_c":18}'),
        ],
        "tools": [WEATHER, TIME],
    }
    (record,) = read_jsonl(tmp_path / "out.jsonl")
    assert record["status"] == "completed"
    assert record["messages"][-1] == {"role": "assistant", "content": "18 C."}
    (turn,) = record["turns"]
    assert answer_index(turn) == 3
    assert turn["usage"] == {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24}
    assert turn["finish_reason"] == "stop"
    assert turn["response_id"] == "r1"
    assert [a["step"] for a in turn["attempts"]] == [0, 1]
    assert [a["attempt"] for a in turn["attempts"]] == [1, 2]
    assert [
        {k: s[k] for k in ("step", "message_index", "finish_reason", "response_id")}
        for s in turn["steps"]
    ] == [
        {"step": 0, "message_index": 1, "finish_reason": "tool_calls", "response_id": "r0"},
        {"step": 1, "message_index": 3, "finish_reason": "stop", "response_id": "r1"},
    ]
    assert turn["steps"][0]["tool_results"] == [
        {"tool_call_id": "c1", "name": "get_weather", "scripted": True}
    ]
    assert "extra" not in turn


def test_parallel_calls_are_all_answered_in_order_before_the_next_step(tmp_path: Path) -> None:
    calls = (
        call("a", "get_weather", {"city": "Oslo"}),
        call("b", "get_time", {}),
        call("c", "get_weather", {"city": "Paris"}),
    )
    server = ToolServer(calling(*calls), text("Done."))
    run(conv("Both?"), tmp_path, server)

    assert server.bodies[1]["messages"] == [
        user("Both?"),
        calling(*calls),
        tool("a", "rain"),
        tool("b", "10:00"),
        tool("c", '{"temp_c":18}'),
    ]


def test_a_chain_of_three_steps_then_the_next_turn(tmp_path: Path) -> None:
    c1, c2 = call("t1", "get_time", {}), call("t2", "get_time", {})
    c3 = call("t3", "get_time", {})
    server = ToolServer(calling(c1), calling(c2), text("It is 10:05."), calling(c3), text("Ok."))
    run(conv("Time twice?", "And now?"), tmp_path, server)

    chain = [user("Time twice?"), calling(c1), tool("t1", "10:00"), calling(c2)]
    chain += [tool("t2", "10:05"), text("It is 10:05.")]
    assert server.bodies[2]["messages"] == chain[:-1]
    # The sequence goes on across turns: the third call of get_time gets the third result.
    assert server.bodies[4]["messages"] == [
        *chain,
        user("And now?"),
        calling(c3),
        tool("t3", "10:10"),
    ]
    (record,) = read_jsonl(tmp_path / "out.jsonl")
    first, second = record["turns"]
    assert [s["step"] for s in first["steps"]] == [0, 1, 2]
    assert answer_index(first) == 5
    assert second["message_index"] == 6
    assert record["totals"]["attempts"] == 5


def test_plain_answers_keep_todays_record_and_bodies(tmp_path: Path) -> None:
    server = ToolServer(text("No tools needed.", reasoning_content="easy"))
    run(conv("Hi"), tmp_path, server)

    (record,) = read_jsonl(tmp_path / "out.jsonl")
    (turn,) = record["turns"]
    assert "steps" not in turn
    assert turn["extra"] == {"reasoning_content": "easy"}
    assert all("step" not in a for a in turn["attempts"])
    assert record["messages"][-1] == {"role": "assistant", "content": "No tools needed."}


def test_an_unscripted_call_fails_the_conversation_naming_turn_tool_and_arguments(
    tmp_path: Path,
) -> None:
    server = ToolServer(calling(call("x", "get_weather", {"city": "Lima"})))
    run(conv("Lima?"), tmp_path, server)

    assert len(server.bodies) == 1
    (record,) = read_jsonl(tmp_path / "out.jsonl")
    assert record["status"] == "failed"
    assert record["error"] == {
        "turn": 0,
        "kind": "tool_unscripted",
        "status": None,
        "message": "turn 1: the model called 'get_weather' with arguments "
        '{"city": "Lima"} and the conversation scripts no result for that call; add a '
        "rule for it under tool_results: get_weather, or set unscripted_tool_result",
    }


def test_unscripted_tool_result_answers_a_call_no_rule_does(tmp_path: Path) -> None:
    settings = ToolSettings(tools=(WEATHER,), unscripted_result="no data")
    c = Conversation(id="w", source="w.yaml", turns=(Turn("Lima?", tools=settings),))
    server = ToolServer(calling(call("x", "get_weather", {"city": "Lima"})), text("Sorry."))
    run(c, tmp_path, server)
    assert server.bodies[1]["messages"][-1] == tool("x", "no data")
    (record,) = read_jsonl(tmp_path / "out.jsonl")
    assert record["turns"][0]["steps"][0]["tool_results"] == [
        {"tool_call_id": "x", "name": "get_weather", "scripted": False}
    ]


def test_a_model_that_never_stops_calling_fails_after_max_tool_steps(tmp_path: Path) -> None:
    server = ToolServer(calling(call("x", "get_weather", {"city": "Paris"})))
    run(conv("Loop?", max_tool_steps=3), tmp_path, server)

    assert len(server.bodies) == 3
    (record,) = read_jsonl(tmp_path / "out.jsonl")
    assert record["status"] == "failed"
    assert record["error"]["kind"] == "tool_steps"
    assert record["error"]["message"] == (
        "turn 1: the model was still calling tools after 3 requests (max_tool_steps); "
        "raise max_tool_steps or script results that let it answer"
    )
    assert [s["step"] for s in record["turns"][0]["steps"]] == [0, 1, 2]


def test_tool_chain_reasoning_is_echoed_inside_the_chain_only(tmp_path: Path) -> None:
    c1, c2 = call("t1", "get_time", {}), call("t2", "get_time", {})
    server = ToolServer(
        calling(c1, reasoning_content="need time"),
        text("10:00.", reasoning_content="got it"),
        calling(c2, reasoning_content="again"),
        text("10:05."),
        deepseek=True,
    )
    result = run(conv("Time?", "Again?"), tmp_path, server)

    assert result.failed == 0
    assert server.bodies[1]["messages"] == [
        user("Time?"),
        calling(c1, reasoning_content="need time"),
        tool("t1", "10:00"),
    ]
    # The earlier turn goes back without reasoning; the current chain with it.
    assert server.bodies[3]["messages"] == [
        user("Time?"),
        calling(c1),
        tool("t1", "10:00"),
        text("10:00."),
        user("Again?"),
        calling(c2, reasoning_content="again"),
        tool("t2", "10:05"),
    ]
    (record,) = read_jsonl(tmp_path / "out.jsonl")
    assert record["turns"][0]["steps"][0]["reasoning"] == {"reasoning_content": "need time"}
    assert "reasoning_content" not in json.dumps(record["messages"])


def test_never_and_always_policies(tmp_path: Path) -> None:
    c1 = call("t1", "get_time", {})
    answers = (calling(c1, reasoning={"r": 1}), text("a", reasoning="x"), text("b"))
    never = ToolServer(*answers)
    run(conv("One", "Two"), tmp_path / "n", never, reasoning="never")
    assert "reasoning" not in json.dumps(never.bodies)

    always = ToolServer(*answers)
    run(conv("One", "Two"), tmp_path / "a", always, reasoning="always")
    assert always.bodies[2]["messages"] == [
        user("One"),
        calling(c1, reasoning={"r": 1}),
        tool("t1", "10:00"),
        text("a", reasoning="x"),
        user("Two"),
    ]


def test_checks_see_every_call_of_the_turn_and_the_declared_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    c1, c2 = call("t1", "get_time", {}), call("t2", "get_weather", {"city": "Paris"})
    server = ToolServer(calling(c1), calling(c2), text("Fine."))
    expect = parse_expect({"contains": "Fine"}, field="expect", scope="turn")
    c = Conversation(id="w", source="w.yaml", turns=(Turn("Go", tools=TOOLS, expect=expect),))

    import runner.run.engine as engine

    original = engine.evaluate

    def spy(check: Any, observation: Any) -> Any:
        seen.append(observation)
        return original(check, observation)

    # The tool check kinds come with another layer: spy on what a check is given.
    monkeypatch.setattr(engine, "evaluate", spy)
    run(c, tmp_path, server)
    (observation,) = seen
    assert observation.content == "Fine."
    assert observation.tool_calls == (c1, c2)
    assert observation.tools == (WEATHER, TIME)


def test_a_stop_in_the_chain_resumes_without_resending_an_answered_step(
    tmp_path: Path,
) -> None:
    c1, c2 = call("t1", "get_time", {}), call("t2", "get_time", {})
    answers = (calling(c1), calling(c2), text("Done."), text("Bye."))
    control = RunControl()
    first = ToolServer(*answers, stop_at=(2, control))  # stopped with step 2 in flight
    run(conv("Go", "Then"), tmp_path, first, control=control)
    (interrupted,) = read_jsonl(tmp_path / "out.jsonl")
    assert interrupted["status"] == "interrupted"
    chain = [user("Go"), calling(c1), tool("t1", "10:00"), calling(c2), tool("t2", "10:05")]
    assert interrupted["messages"] == chain

    second = ToolServer(*answers[2:])
    run(conv("Go", "Then"), tmp_path, second, resume=True)
    assert second.bodies[0]["messages"] == chain
    assert len(second.bodies) == 2
    done = read_jsonl(tmp_path / "out.jsonl")[-1]
    assert done["status"] == "completed"
    assert done["messages"] == [*chain, text("Done."), user("Then"), text("Bye.")]
    turn = done["turns"][0]
    assert "error" not in turn
    assert [s["step"] for s in turn["steps"]] == [0, 1, 2]
    assert [(a["step"], a.get("resumed", False)) for a in turn["attempts"]] == [
        (0, False),
        (1, False),
        (2, False),
    ]


def test_fingerprints_without_tools_are_unchanged_and_with_tools_cover_the_script() -> None:
    plain = Conversation(id="p", source="p.yaml", turns=(Turn("Hi"),))
    settings = apply_overrides(plain)
    assert settings.fingerprint() == apply_overrides(plain, model_override=None).fingerprint()
    with_tools = conv("Hi")
    changed = Conversation(
        id="w",
        source="w.yaml",
        turns=(Turn("Hi", tools=ToolSettings(tools=(WEATHER, TIME))),),
    )
    base = apply_overrides(with_tools).fingerprint()
    assert base != apply_overrides(changed).fingerprint()
    assert base != apply_overrides(conv("Hi", max_tool_steps=2)).fingerprint()
    assert base != apply_overrides(conv("Hi", reasoning="always")).fingerprint()


def test_the_plan_says_it_assumes_one_request_per_turn_only_with_tools() -> None:
    plain = Conversation(id="p", source="p.yaml", turns=(Turn("Hi"),))
    lines = plan_lines(estimate_cost([apply_overrides(plain)]))
    assert not any("tool" in line for line in lines)
    lines = plan_lines(estimate_cost([apply_overrides(plain), apply_overrides(conv("Hi"))]))
    assert lines[-1] == (
        "tools: 1 conversation declares tools; the plan assumes one request per turn, "
        "tool calls add more"
    )


class CrashingServer(ToolServer):
    """Copies the output as it is on disk when request ``at`` arrives: a kill -9 then."""

    def __init__(self, *answers: dict[str, Any], at: int, output: Path, copy: Path) -> None:
        super().__init__(*answers)
        self.at, self.output, self.copy = at, output, copy

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        if len(self.bodies) == self.at:
            self.copy.mkdir()
            for path in self.output.parent.iterdir():
                shutil.copy(path, self.copy / path.name)
        return await super()._handle(request)


def crash_in_chain(tmp_path: Path, at: int) -> tuple[Path, list[dict[str, Any]]]:
    """Run a two-step chain, keeping the output as a crash at request ``at`` leaves it."""
    c1, c2 = call("t1", "get_time", {}), call("t2", "get_time", {})
    answers = [calling(c1), calling(c2), text("Done."), text("Bye.")]
    (tmp_path / "run").mkdir()
    server = CrashingServer(
        *answers, at=at, output=tmp_path / "run" / "out.jsonl", copy=tmp_path / "crash"
    )
    config = RunConfig(
        output=tmp_path / "run" / "out.jsonl", base_url=LOCAL, transport=server.transport
    )
    run_virtual(run_batch([conv("Go", "Then")], config, clock=clock))
    return tmp_path / "crash" / "out.jsonl", answers


def test_a_crash_mid_chain_loses_only_the_request_in_flight(tmp_path: Path) -> None:
    output, answers = crash_in_chain(tmp_path, at=2)
    assert output.read_text() == ""  # nothing but the journal was written
    lines = read_jsonl(output.with_name("out.jsonl.journal"))
    assert [(x["partial"], len(x["turn"]["steps"])) for x in lines] == [(True, 1), (True, 2)]

    resumed = ToolServer(*answers[2:])
    config = RunConfig(output=output, base_url=LOCAL, transport=resumed.transport, resume=True)
    run_virtual(run_batch([conv("Go", "Then")], config, clock=clock))
    c1, c2 = call("t1", "get_time", {}), call("t2", "get_time", {})
    chain = [user("Go"), calling(c1), tool("t1", "10:00"), calling(c2), tool("t2", "10:05")]
    assert [b["messages"] for b in resumed.bodies] == [
        chain,
        [*chain, text("Done."), user("Then")],
    ]
    (record,) = read_jsonl(output)
    assert record["status"] == "completed"
    assert [s["step"] for s in record["turns"][0]["steps"]] == [0, 1, 2]


def test_a_journaled_step_whose_tool_result_is_not_the_scripts_is_sent_again(
    tmp_path: Path,
) -> None:
    output, answers = crash_in_chain(tmp_path, at=2)
    journal = output.with_name("out.jsonl.journal")
    journal.write_text(journal.read_text().replace('"10:05"', '"11:00"'))

    resumed = ToolServer(*answers[1:])
    config = RunConfig(output=output, base_url=LOCAL, transport=resumed.transport, resume=True)
    events: list[Any] = []
    run_virtual(run_batch([conv("Go", "Then")], config, clock=clock, on_event=events.append))
    c1 = call("t1", "get_time", {})
    # Step 0 was answered as scripted and is kept; step 1 is sent again.
    assert resumed.bodies[0]["messages"] == [user("Go"), calling(c1), tool("t1", "10:00")]
    (record,) = read_jsonl(output)
    assert record["status"] == "completed"
    assert "11:00" not in json.dumps(record)
    (started,) = [e for e in events if isinstance(e, RunStarted)]
    assert started.discarded == (
        "'w': discarded 1 recorded step of turn 1 (out.jsonl.journal line 2): its tool "
        "calls are not answered with the scripted results; sending it again from step 1",
    )


def test_the_reasoning_option_overrides_the_conversations_setting(tmp_path: Path) -> None:
    c = conv("Hi", reasoning="always")
    assert request_settings(c, RunConfig(output=tmp_path / "o.jsonl")).reasoning == "always"
    config = RunConfig(output=tmp_path / "o.jsonl", reasoning="never")
    assert request_settings(c, config).reasoning == "never"


def test_a_recorded_chain_replays_every_step(tmp_path: Path) -> None:
    c1 = call("t1", "get_time", {})
    server = ToolServer(calling(c1), text("10:00."), text("Bye."))
    fixtures = tmp_path / "fixtures"
    run(conv("Time?", "Bye"), tmp_path / "rec", server, record=fixtures)
    recorded = json.loads((fixtures / "w.json").read_text())
    assert [e["turn"] for e in recorded["exchanges"]] == [0, 0, 1]

    offline = ToolServer(text("never asked"))
    result = run(conv("Time?", "Bye"), tmp_path / "rep", offline, replay=fixtures)
    assert offline.bodies == []
    assert result.failed == 0
    assert (
        read_jsonl(tmp_path / "rep" / "out.jsonl")[0]["messages"]
        == read_jsonl(tmp_path / "rec" / "out.jsonl")[0]["messages"]
    )


def test_a_journaled_tool_turn_is_trusted_whole_after_a_crash(tmp_path: Path) -> None:
    c1 = call("t1", "get_time", {})
    answers = [calling(c1), text("Done."), text("Bye.")]
    (tmp_path / "run").mkdir()
    output = tmp_path / "run" / "out.jsonl"
    server = CrashingServer(*answers, at=2, output=output, copy=tmp_path / "crash")
    config = RunConfig(output=output, base_url=LOCAL, transport=server.transport)
    run_virtual(run_batch([conv("Go", "Then")], config, clock=clock))
    copy = tmp_path / "crash" / "out.jsonl"
    step, whole = read_jsonl(copy.with_name("out.jsonl.journal"))
    assert step["partial"] is True
    assert "partial" not in whole
    assert whole["exchange"] == [user("Go"), calling(c1), tool("t1", "10:00"), text("Done.")]

    resumed = ToolServer(text("Bye."))
    config = RunConfig(output=copy, base_url=LOCAL, transport=resumed.transport, resume=True)
    run_virtual(run_batch([conv("Go", "Then")], config, clock=clock))
    assert [b["messages"] for b in resumed.bodies] == [[*whole["exchange"], user("Then")]]
    (record,) = read_jsonl(copy)
    assert record["turns"][1]["message_index"] == 4


def test_calls_in_a_turn_without_tools_fail_it_instead_of_breaking_the_history(
    tmp_path: Path,
) -> None:
    """Sent back without results, the calls would make a history every provider refuses."""
    c1 = call("t1", "get_time", {})
    server = ToolServer(calling(c1))
    c = Conversation(id="p", source="p.yaml", turns=(Turn("Hi"), Turn("Again")))
    run(c, tmp_path, server)
    (record,) = read_jsonl(tmp_path / "out.jsonl")
    assert record["status"] == "failed"
    assert record["error"]["kind"] == "tool_unscripted"
    assert "get_time" in record["error"]["message"]
    assert len(server.bodies) == 1  # nothing more was sent
    assert record["messages"][-1]["tool_calls"] == [c1]  # the calls, as the model made them


def test_a_step_that_fails_for_good_resumes_after_the_steps_answered(tmp_path: Path) -> None:
    c1 = call("t1", "get_time", {})

    class Failing(ToolServer):
        async def _handle(self, request: httpx.Request) -> httpx.Response:
            if len(self.bodies) == 1:
                self.bodies.append(json.loads(request.content))
                return httpx.Response(400, json={"error": {"message": "bad step"}})
            return await super()._handle(request)

    run(conv("Go"), tmp_path, Failing(calling(c1)))
    (failed,) = read_jsonl(tmp_path / "out.jsonl")
    assert failed["status"] == "failed"
    assert failed["messages"] == [user("Go"), calling(c1), tool("t1", "10:00")]
    assert [a["step"] for a in failed["turns"][0]["attempts"]] == [0, 1]

    resumed = ToolServer(text("Done."))
    run(conv("Go"), tmp_path, resumed, resume=True)
    assert [b["messages"] for b in resumed.bodies] == [failed["messages"]]
    record = read_jsonl(tmp_path / "out.jsonl")[-1]
    assert record["status"] == "completed"
    assert [(a["step"], a.get("resumed", False)) for a in record["turns"][0]["attempts"]] == [
        (0, False),
        (1, True),
        (1, False),
    ]


def test_hostile_journaled_steps_are_discarded_not_trusted(tmp_path: Path) -> None:
    output, answers = crash_in_chain(tmp_path, at=2)
    journal = output.with_name("out.jsonl.journal")
    lines = read_jsonl(journal)
    lines[1]["turn"]["steps"] = 5
    lines[0]["turn"]["steps"] = [{"step": 0, "message_index": "x"}]
    journal.write_text("".join(json.dumps(x) + "\n" for x in lines))

    resumed = ToolServer(*answers)
    config = RunConfig(output=output, base_url=LOCAL, transport=resumed.transport, resume=True)
    run_virtual(run_batch([conv("Go", "Then")], config, clock=clock))
    assert resumed.bodies[0]["messages"] == [user("Go")]
    assert read_jsonl(output)[0]["status"] == "completed"


@pytest.mark.parametrize(("steps", "said"), [(1, "1 request"), (2, "2 requests")])
def test_the_max_tool_steps_error_counts_one_request_in_the_singular(
    tmp_path: Path, steps: int, said: str
) -> None:
    server = ToolServer(calling(call("x", "get_weather", {"city": "Paris"})))
    run(conv("Loop?", max_tool_steps=steps), tmp_path, server)
    (record,) = read_jsonl(tmp_path / "out.jsonl")
    assert record["error"]["message"].startswith(
        f"turn 1: the model was still calling tools after {said} (max_tool_steps); "
    )


def test_the_plan_counts_conversations_with_tools_in_thousands() -> None:
    many = [apply_overrides(conv("Hi")) for _ in range(1_000)]
    two = plan_lines(estimate_cost(many[:2]))
    assert two[-1].startswith("tools: 2 conversations declare tools; ")
    assert plan_lines(estimate_cost(many))[-1].startswith(
        "tools: 1,000 conversations declare tools; "
    )
