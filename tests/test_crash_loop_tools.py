"""kill -9 and Ctrl-C mid tool chain, resumed every time: no broken history sent, nothing lost.

Like ``test_crash_loop.py``, but every conversation's turns make tool calls
over several steps (parallel calls, a chain of three requests, a sequence
scripted call by call across turns), against the strict loopback server in
DeepSeek's mode: a request whose history breaks OpenAI's pairing rule (a
call without its result, a result without its call) or brings a tool chain
back without its reasoning is refused with a 400, which would fail the
conversation. So after every kill and resume: no request is ever refused,
every conversation ends with exactly the history a run without kills gives,
and a request is sent again only when it was in flight at a stop.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from helpers import read_jsonl, start_mtrun, wait_for_requests
from toolserver import ToolServer, calls, text, tool_call

COUNT, JOBS = 40, 8
KILLS, INTERRUPTS = 8, 2
TIMES = ["10:00", "10:05", "10:10", "10:15"]
TURNS = ["Weather and time in {city}?", "And the time now?", "Thanks!"]
CITIES = ["Paris", "Oslo", "Lima"]


def first_line(i: int) -> str:
    return f"conversation {i}: " + TURNS[0].format(city=CITIES[i % len(CITIES)])


def write_batch(folder: Path) -> Path:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        },
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
    ]
    results = {
        "get_weather": [{"when": {"city": "Paris"}, "result": {"temp_c": 18}}, {"result": "rain"}],
        "get_time": {"sequence": TIMES},
    }
    items = [{"id": f"t{i:03d}", "turns": [first_line(i), *TURNS[1:]]} for i in range(COUNT)]
    batch = {"defaults": {"tools": tools, "tool_results": results}, "conversations": items}
    path = folder / "batch.yaml"
    path.write_text(json.dumps(batch), encoding="utf-8")
    return path


def position(messages: list[dict[str, Any]]) -> tuple[int, int]:
    """The turn a request is for, and its step: what the model answers depends on nothing else."""
    users = [k for k, m in enumerate(messages) if m["role"] == "user"]
    steps = sum(1 for m in messages[users[-1] :] if m["role"] == "assistant")
    return len(users) - 1, steps


def model_reply(i: int, turn: int, step: int) -> dict[str, Any]:
    """Conversation i's answer at (turn, step): a three-step chain, a two-step one, a text."""
    call = lambda name, args, k: tool_call(name, args, f"call_{i}_{turn}_{step}_{k}")  # noqa: E731
    city = CITIES[i % len(CITIES)]
    if (turn, step) == (0, 0):
        reply = calls(call("get_weather", {"city": city}, 0), call("get_time", {}, 1))
    elif (turn, step) == (0, 1):
        reply = calls(call("get_weather", {"city": "Rome"}, 0))
    elif (turn, step) == (1, 0):
        reply = calls(call("get_time", {}, 0))
    else:
        reply = text(f"Answer {i}.{turn}.{step}.")
    return {**reply, "reasoning_content": f"Thinking about {i}, turn {turn}, step {step}."}


def script(body: dict[str, Any], n: int) -> dict[str, Any]:
    messages = body["messages"]
    i = int(str(messages[0]["content"]).split(":")[0].split()[-1])
    return model_reply(i, *position(messages))


def reference_messages(i: int) -> list[dict[str, Any]]:
    """What conversation i must hold: the replies above, each call answered as scripted."""
    messages: list[dict[str, Any]] = []
    times = iter(TIMES)
    for turn, content in enumerate([first_line(i), *TURNS[1:]]):
        messages.append({"role": "user", "content": content})
        for step in range(4):
            reply = model_reply(i, turn, step)
            if "tool_calls" not in reply:
                messages.append({"role": "assistant", "content": reply["content"]})
                break
            messages.append(
                {"role": "assistant", "content": None, "tool_calls": reply["tool_calls"]}
            )
            for c in reply["tool_calls"]:
                name, args = c["function"]["name"], json.loads(c["function"]["arguments"])
                if name == "get_time":
                    result = next(times)
                else:
                    result = '{"temp_c":18}' if args["city"] == "Paris" else "rain"
                messages.append({"role": "tool", "tool_call_id": c["id"], "content": result})
    return messages


def kill_and_resume(server: ToolServer, args: list[str], cwd: Path) -> tuple[int, int]:
    """Kill -9 (and now and then Ctrl-C) runs at random moments until one finishes."""

    def seen() -> int:
        return len(server.requests)

    rng = random.Random(20261201)
    kills = interrupts = 0
    for cycle in range(KILLS + INTERRUPTS):
        stream = ["--stream"] if cycle % 2 else []  # streamed or not, the same transcript
        proc = start_mtrun([*args, *stream, "--resume"], cwd)
        if cycle % 5 == 4 and interrupts < INTERRUPTS:
            alive = wait_for_requests(seen, rng.randint(1, 25), proc, within_s=30)
            if alive:
                proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == (130 if alive else 0), err
            assert "Traceback" not in err
            if not alive:
                return kills, interrupts
            interrupts += 1
            continue
        if rng.random() < 0.25:
            time.sleep(rng.uniform(0.0, 0.15))  # any moment, even while starting up
        elif not wait_for_requests(seen, rng.randint(1, 40), proc, within_s=30):
            return kills, interrupts
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        kills += 1
    proc = start_mtrun([*args, "--resume"], cwd)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    return kills, interrupts


def test_kill_9_mid_tool_chains_never_sends_a_broken_history_or_loses_a_step(
    tmp_path: Path,
) -> None:
    batch = write_batch(tmp_path)
    out = tmp_path / "tools.jsonl"
    with ToolServer(script, mode="deepseek", latency=(0.005, 0.02)) as server:
        args = ["--base-url", server.base_url, "-j", str(JOBS), "-q", "-o", str(out), str(batch)]
        kills, interrupts = kill_and_resume(server, args, tmp_path)
    assert kills >= 3, (kills, interrupts)  # the run may finish before every planned kill

    # Not one request had a call without its result, or a chain without its reasoning.
    assert server.refusals == []
    records = read_jsonl(out)
    assert sorted(r["id"] for r in records) == [f"t{i:03d}" for i in range(COUNT)]
    assert not out.with_name(out.name + ".journal").exists()
    for record in records:
        assert record["status"] == "completed", record.get("error")
        i = int(record["id"][1:])
        assert record["messages"] == reference_messages(i), record["id"]
        turns = record["turns"]
        assert [len(t.get("steps") or [None]) for t in turns] == [3, 2, 1]
        assert [s["step"] for s in turns[0]["steps"]] == [0, 1, 2]
        reasoning = [s.get("reasoning") for t in turns for s in t.get("steps") or []]
        assert all(r and "reasoning_content" in r for r in reasoning)
    # Each request is the history of one step; one is sent again only if it was in
    # flight at a kill or a Ctrl-C: at most JOBS per stop.
    sent = Counter(json.dumps(b["messages"], sort_keys=True) for b in server.requests)
    assert len(sent) == COUNT * 6
    repeats = sum(n - 1 for n in sent.values())
    assert repeats <= (kills + interrupts) * JOBS, repeats
