"""Record and replay: hermetic runs from committed fixture files."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from helpers import ChatServer, read_jsonl

from runner.errors import ConfigError
from runner.run.engine import RunConfig, run_batch
from runner.run.events import RunResult
from runner.send.fixtures import fixture_name, request_key
from runner.spec.model import Conversation, Turn

LOCAL = "http://127.0.0.1:9/v1"


def conv(cid: str, *turns: str, system: str | None = None) -> Conversation:
    return Conversation(id=cid, source="f.yaml", turns=tuple(Turn(t) for t in turns), system=system)


BATCH = [conv("greeting", "Hello", "How are you?"), conv("maths", "2+2?", "Times 3?", "Minus 1?")]


def run(
    tmp_path: Path,
    name: str,
    server: ChatServer | None,
    batch: list[Conversation] = BATCH,
    **kw: Any,
) -> RunResult:
    config = RunConfig(
        output=tmp_path / name,
        base_url=LOCAL if server else "https://api.example.com/v1",
        transport=server.transport if server else None,
        **kw,
    )
    return asyncio.run(run_batch(batch, config))


def comparable(path: Path) -> dict[str, Any]:
    """Transcript content that must be identical between a recording and its replay."""
    out = {}
    for r in read_jsonl(path):
        turns = [
            {k: v for k, v in t.items() if k not in ("latency_ms", "queued_ms", "attempts")}
            for t in r["turns"]
        ]
        out[r["id"]] = (r["status"], r["messages"], turns, r["totals"]["total_tokens"])
    return out


def test_record_then_replay_gives_identical_transcripts(tmp_path: Path) -> None:
    fixtures = tmp_path / "fixtures"
    server = ChatServer()
    assert run(tmp_path, "recorded.jsonl", server, record=fixtures).completed == 2
    assert sorted(p.name for p in fixtures.iterdir()) == ["greeting.json", "maths.json"]

    replayed = run(tmp_path, "replayed.jsonl", None, replay=fixtures)  # no network, no key
    assert replayed.completed == 2
    assert comparable(tmp_path / "replayed.jsonl") == comparable(tmp_path / "recorded.jsonl")


def test_fixture_files_are_reviewable_and_hold_no_key(tmp_path: Path) -> None:
    from runner.http.client import ApiKey

    fixtures = tmp_path / "fixtures"
    server = ChatServer()
    run(tmp_path, "r.jsonl", server, record=fixtures, api_key=ApiKey("sk-SECRET-xyz", "K"))
    text = (fixtures / "maths.json").read_text()
    assert "sk-SECRET-xyz" not in text
    data = json.loads(text)
    assert data["conversation"] == "maths" and data["schema"] == "mtrun.fixtures/1"
    assert [e["turn"] for e in data["exchanges"]] == [0, 1, 2]
    for exchange, body in zip(data["exchanges"], server.bodies_for("2+2?"), strict=True):
        assert exchange["request"] == body
        assert exchange["key"] == request_key(body)
    assert text.count("\n") > 20  # indented, one field a line: friendly to code review


def test_a_replay_miss_fails_naming_the_conversation_and_turn(tmp_path: Path) -> None:
    fixtures = tmp_path / "fixtures"
    run(tmp_path, "r.jsonl", ChatServer(), record=fixtures)
    changed = [BATCH[0], conv("maths", "2+2?", "Times 4?", "Minus 1?")]
    result = run(tmp_path, "p.jsonl", None, batch=changed, replay=fixtures)
    assert result.completed == 1 and result.failed == 1
    (failure,) = result.failures
    assert failure.conversation_id == "maths" and failure.turn == 1
    assert failure.message == (
        f"no recorded answer in {fixtures / 'maths.json'} for this answer request (turn 2); "
        "the history, model or params differ from the recording: "
        f"record again with --record {fixtures}"
    )
    record = next(r for r in read_jsonl(tmp_path / "p.jsonl") if r["id"] == "maths")
    assert record["error"]["kind"] == "replay_miss"
    assert len(record["turns"][1]["attempts"]) == 1  # a miss is not retried


def test_replay_and_record_together_record_only_what_changed(tmp_path: Path) -> None:
    fixtures = tmp_path / "fixtures"
    run(tmp_path, "r.jsonl", ChatServer(), record=fixtures)
    greeting_before = (fixtures / "greeting.json").read_bytes()
    changed = [BATCH[0], conv("maths", "2+2?", "Times 4?", "Minus 1?")]
    server = ChatServer()
    result = run(tmp_path, "u.jsonl", server, batch=changed, replay=fixtures, record=fixtures)
    assert result.completed == 2
    # Only maths from turn 2 on went to the API.
    assert [b["messages"][-1]["content"] for b in server.bodies] == ["Times 4?", "Minus 1?"]
    assert (fixtures / "greeting.json").read_bytes() == greeting_before
    exchanges = json.loads((fixtures / "maths.json").read_text())["exchanges"]
    assert [e["request"]["messages"][-1]["content"] for e in exchanges] == [
        "2+2?",
        "Times 4?",
        "Minus 1?",
    ]
    again = run(tmp_path, "again.jsonl", None, batch=changed, replay=fixtures)
    assert again.completed == 2


def test_replay_needs_an_existing_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such folder"):
        run(tmp_path, "x.jsonl", None, replay=tmp_path / "missing")


@pytest.mark.parametrize(
    "conversation_id",
    ["../../etc/passwd", "/abs/path", "a/b", "con\x00trol", "..", "x" * 300, "ok-id_1.2"],
)
def test_fixture_names_never_leave_the_folder(conversation_id: str) -> None:
    name = fixture_name(conversation_id)
    assert "/" not in name and "\x00" not in name and not name.startswith(".")
    assert name.endswith(".json") and len(name) < 100
    assert (name == "ok-id_1.2.json") == (conversation_id == "ok-id_1.2")


def test_distinct_ids_get_distinct_fixture_files() -> None:
    assert fixture_name("a/b") != fixture_name("a_b")
    assert fixture_name("a b") != fixture_name("a_b")
