"""--resume of a conversation whose tool chain failed: retry what failed, resend nothing answered.

A ``tool_unscripted`` failure is an answered request whose calls the script
does not answer. Resuming keeps that answer and applies the script to its
calls again: the same conversation file fails the same way without sending
anything (a changed script is a changed conversation, which resume refuses);
calls the script does answer (a record whose results were cut off) get them
and the chain goes on from there, with no answered step sent again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers import read_jsonl
from test_tool_loop import (
    RunControl,
    ToolServer,
    call,
    calling,
    conv,
    run,
    text,
    tool,
    user,
)

from runner.run.events import RunStarted

LIMA = call("x", "get_weather", {"city": "Lima"})


def started(events: list[Any]) -> RunStarted:
    (event,) = [e for e in events if isinstance(e, RunStarted)]
    return event


def test_an_unscripted_call_at_a_later_step_is_not_sent_again(tmp_path: Path) -> None:
    c1 = call("t1", "get_time", {})
    first = ToolServer(calling(c1), calling(LIMA), text("never"))
    run(conv("Go"), tmp_path, first)
    (failed,) = read_jsonl(tmp_path / "out.jsonl")
    assert len(first.bodies) == 2
    assert failed["error"]["kind"] == "tool_unscripted"
    assert failed["messages"] == [user("Go"), calling(c1), tool("t1", "10:00"), calling(LIMA)]

    again, events = ToolServer(text("never")), []
    run(conv("Go"), tmp_path, again, resume=True, on_event=events.append)
    assert again.bodies == []  # the answered step is kept, not sent again
    assert started(events).discarded == ()
    resumed = read_jsonl(tmp_path / "out.jsonl")[-1]
    assert resumed["status"] == "failed"
    assert resumed["error"] == failed["error"]
    assert resumed["messages"] == failed["messages"]
    assert resumed["turns"] == failed["turns"]  # same steps, attempts not counted twice


def test_an_unscripted_first_call_is_not_sent_again(tmp_path: Path) -> None:
    run(conv("Lima?", "Then"), tmp_path, ToolServer(calling(LIMA)))
    (failed,) = read_jsonl(tmp_path / "out.jsonl")
    assert failed["turns"][0]["steps"][0]["message_index"] == 1

    again = ToolServer(text("never"))
    run(conv("Lima?", "Then"), tmp_path, again, resume=True)
    assert again.bodies == []
    resumed = read_jsonl(tmp_path / "out.jsonl")[-1]
    assert (resumed["status"], resumed["error"]) == ("failed", failed["error"])
    assert resumed["totals"]["attempts"] == failed["totals"]["attempts"] == 1


def test_owed_calls_the_script_answers_get_their_results_and_the_chain_goes_on(
    tmp_path: Path,
) -> None:
    """A record whose last tool results were cut off: the script answers, nothing is resent."""
    c1, c2 = call("t1", "get_time", {}), call("t2", "get_time", {})
    control = RunControl()
    first = ToolServer(calling(c1), calling(c2), text("Done."), stop_at=(2, control))
    run(conv("Go"), tmp_path, first, control=control)
    (interrupted,) = read_jsonl(tmp_path / "out.jsonl")
    assert interrupted["messages"][-1] == tool("t2", "10:05")
    cut = dict(interrupted, messages=interrupted["messages"][:-1])
    (tmp_path / "out.jsonl").write_text(json.dumps(cut) + "\n", encoding="utf-8")

    again = ToolServer(text("Done."))  # strict: the calls must be answered before this request
    run(conv("Go"), tmp_path, again, resume=True)
    chain = [user("Go"), calling(c1), tool("t1", "10:00"), calling(c2), tool("t2", "10:05")]
    assert [b["messages"] for b in again.bodies] == [chain]
    done = read_jsonl(tmp_path / "out.jsonl")[-1]
    assert done["status"] == "completed"
    assert done["messages"] == [*chain, text("Done.")]
    assert done["turns"][0]["steps"][1]["tool_results"] == [
        {"tool_call_id": "t2", "name": "get_time", "scripted": True}
    ]


def test_a_chain_over_its_bound_fails_again_without_a_request(tmp_path: Path) -> None:
    loop = calling(call("p", "get_weather", {"city": "Paris"}))
    run(conv("Loop?", max_tool_steps=2), tmp_path, ToolServer(loop))
    (failed,) = read_jsonl(tmp_path / "out.jsonl")
    assert failed["error"]["kind"] == "tool_steps"

    again = ToolServer(loop)
    run(conv("Loop?", max_tool_steps=2), tmp_path, again, resume=True)
    assert again.bodies == []
    resumed = read_jsonl(tmp_path / "out.jsonl")[-1]
    assert (resumed["status"], resumed["messages"]) == ("failed", failed["messages"])
