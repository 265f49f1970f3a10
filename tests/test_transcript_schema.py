"""The shipped transcript schema describes the lines the engine really writes."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from virtualtime import clock, run_virtual

from runner.http.mock import answer
from runner.run.engine import RunConfig, RunControl, run_batch
from runner.spec.model import Conversation, Message, Turn
from runner.transcripts.records import SCHEMA
from runner.transcripts.status import Status

LOCAL = "http://127.0.0.1:9/v1"


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    text = (resources.files("runner") / "schemas" / "transcript.schema.json").read_text("utf-8")
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def conversation(cid: str, *turns: Turn | str, **fields: Any) -> Conversation:
    specs = tuple(t if isinstance(t, Turn) else Turn(t) for t in turns)
    return Conversation(id=cid, source=f"conversations/{cid}.yaml", turns=specs, **fields)


def user_turns(request: httpx.Request) -> int:
    """How many user messages a request carries: the 1-based number of its turn."""
    body = json.loads(request.content)
    return sum(1 for m in body["messages"] if m["role"] == "user")


def replay(
    tmp_path: Path,
    conversations: list[Conversation],
    handler: Callable[[httpx.Request], Any] | None = None,
    control: RunControl | None = None,
) -> list[dict[str, Any]]:
    """Run a batch (offline, or against ``handler``) and return the transcript lines."""
    output = tmp_path / "out.jsonl"
    if handler is None:
        config = RunConfig(output=output, base_url="mock://")
    else:
        config = RunConfig(output=output, base_url=LOCAL, transport=httpx.MockTransport(handler))
    run_virtual(run_batch(conversations, config, sleep=asyncio.sleep, clock=clock, control=control))
    with output.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def assert_valid(validator: Draft202012Validator, record: dict[str, Any]) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(record)]
    assert errors == []


def test_schema_names_the_format_and_statuses_the_code_uses(
    validator: Draft202012Validator,
) -> None:
    props = validator.schema["properties"]
    assert props["schema"]["const"] == SCHEMA
    assert tuple(props["status"]["enum"]) == Status.ALL


def test_completed_conversation_with_history_and_turn_params(
    tmp_path: Path, validator: Draft202012Validator
) -> None:
    conv = conversation(
        "support",
        "My parcel is late.",
        Turn("The order number is NW-48213.", params={"temperature": 0, "max_tokens": None}),
        "Thanks!",
        model="test-model",
        system="You are a support agent.",
        messages=(
            Message("user", "Hello"),
            Message("assistant", "Hi! How can I help?", name="agent"),
        ),
        params={"temperature": 0.3, "max_tokens": 300, "seed": 42},
    )
    (record,) = replay(tmp_path, [conv])

    assert_valid(validator, record)
    assert record["status"] == "completed" and "error" not in record
    assert [t["message_index"] for t in record["turns"]] == [3, 5, 7]
    assert record["turns"][1]["params"] == {"temperature": 0, "max_tokens": None}
    assert "params" not in record["turns"][0]


def test_failed_conversation_and_retried_turn(
    tmp_path: Path, validator: Draft202012Validator
) -> None:
    served: dict[str, int] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        first = body["messages"][0]["content"]
        served[first] = served.get(first, 0) + 1
        if first == "Fails?" and user_turns(request) == 2:
            return httpx.Response(400, json={"error": {"message": "bad request", "type": "x"}})
        if first == "Retried?" and served[first] == 1:
            return httpx.Response(503, json={"error": "overloaded"}, headers={"Retry-After": "2"})
        return httpx.Response(200, json=answer(body))

    convs = [conversation("fails", "Fails?", "Second"), conversation("retried", "Retried?", "Next")]
    records = {r["id"]: r for r in replay(tmp_path, convs, handler)}

    failed, retried = records["fails"], records["retried"]
    for record in (failed, retried):
        assert_valid(validator, record)
    assert failed["status"] == "failed"
    assert failed["error"] == {
        "turn": 1,
        "kind": "http_400",
        "status": 400,
        "message": "HTTP 400: bad request",
    }
    assert failed["turns"][1]["latency_ms"] is None
    assert retried["status"] == "completed"
    assert [a["outcome"] for a in retried["turns"][0]["attempts"]] == ["http_503", "ok"]
    assert retried["turns"][0]["attempts"][0]["retry_after_s"] == 2.0
    assert retried["totals"]["retries"] == 1


def test_interrupted_conversation(tmp_path: Path, validator: Draft202012Validator) -> None:
    control = RunControl()

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if user_turns(request) == 2:
            # Like Ctrl-C: the stop comes from outside the worker, then the request hangs.
            asyncio.get_running_loop().call_soon(control.stop, "interrupted by Ctrl-C")
            await asyncio.Event().wait()
        return httpx.Response(200, json=answer(body))

    (record,) = replay(tmp_path, [conversation("cut", "One", "Two", "Three")], handler, control)

    assert_valid(validator, record)
    assert record["status"] == "interrupted"
    assert record["error"] == {"kind": "interrupted", "message": "interrupted by Ctrl-C"}


def _set_status_bogus(record: dict[str, Any]) -> None:
    record["status"] = "bogus"


def _drop_messages(record: dict[str, Any]) -> None:
    del record["messages"]


def _add_error_to_completed(record: dict[str, Any]) -> None:
    record["error"] = {"kind": "interrupted", "message": "stopped"}


def _drop_attempts(record: dict[str, Any]) -> None:
    record["turns"][0]["attempts"] = []


def _stringify_latency(record: dict[str, Any]) -> None:
    record["turns"][0]["latency_ms"] = "12 ms"


def _misspell_attempt_field(record: dict[str, Any]) -> None:
    record["turns"][0]["attempts"][0]["wait"] = 1.0


@pytest.mark.parametrize(
    "breaks",
    [
        _set_status_bogus,
        _drop_messages,
        _add_error_to_completed,
        _drop_attempts,
        _stringify_latency,
        _misspell_attempt_field,
    ],
)
def test_schema_rejects_broken_records(
    tmp_path: Path, validator: Draft202012Validator, breaks: Callable[[dict[str, Any]], None]
) -> None:
    (record,) = replay(tmp_path, [conversation("c", "Hi", "Bye")])
    assert_valid(validator, record)
    broken = copy.deepcopy(record)
    breaks(broken)
    assert not validator.is_valid(broken)


def test_unknown_fields_are_allowed_for_later_versions(
    tmp_path: Path, validator: Draft202012Validator
) -> None:
    (record,) = replay(tmp_path, [conversation("c", "Hi")])
    record["checks"] = [{"name": "contains", "passed": True}]
    record["turns"][0]["checks"] = []
    assert_valid(validator, record)


def test_turns_that_called_tools_with_steps_and_a_failed_chain(
    tmp_path: Path, validator: Draft202012Validator
) -> None:
    from runner.spec.tools import ToolRule, ToolScript, ToolSettings

    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    tools = ToolSettings(
        tools=(weather,), results={"get_weather": ToolScript(rules=(ToolRule("18 C"),))}
    )

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        last = body["messages"][-1]
        if last["role"] == "tool" or last["content"] == "Unscripted?":
            message = {"role": "assistant", "content": "Mild.", "reasoning_content": "ok"}
            if last["content"] == "Unscripted?":
                message = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "u",
                            "type": "function",
                            "function": {"name": "nope", "arguments": "{}"},
                        }
                    ],
                }
            return httpx.Response(200, json={"choices": [{"message": message}]})
        call = {
            "id": "c1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": "{}"},
        }
        message = {"role": "assistant", "content": None, "tool_calls": [call], "reasoning": "x"}
        choice = {"message": message, "finish_reason": "tool_calls"}
        return httpx.Response(
            200, json={"id": "r", "choices": [choice], "usage": {"total_tokens": 3}}
        )

    lines = replay(
        tmp_path,
        [
            conversation("w", Turn("Weather?", tools=tools), Turn("Unscripted?", tools=tools)),
        ],
        handler,
    )
    (line,) = lines
    assert not list(validator.iter_errors(line))
    first, second = line["turns"]
    assert [s["step"] for s in first["steps"]] == [0, 1]
    assert second["error"]["kind"] == "tool_unscripted"
    assert line["status"] == "failed"
