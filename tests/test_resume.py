"""--resume trusts nothing it reads: recorded turns must continue the conversation, the output
must be this batch's, and the token budget holds for the output across reruns."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from helpers import ChatServer, read_jsonl

from runner.cli import main
from runner.errors import OutputError
from runner.http.mock import answer
from runner.run.engine import RunConfig, run_batch
from runner.run.events import Event, RunResult, RunStarted
from runner.run.shard import Shard
from runner.spec.model import Conversation, Turn

LOCAL = "http://127.0.0.1:9/v1"


def conv(cid: str, n: int, source: str = "batch.yaml", **kw: Any) -> Conversation:
    turns = tuple(Turn(f"{cid} question {i}") for i in range(n))
    return Conversation(id=cid, source=source, turns=turns, **kw)


BATCH = [conv("a", 3), conv("b", 3, system="be brief"), conv("c", 2)]


class Run:
    """One run of a batch into ``path``, remembering what was sent and reported."""

    def __init__(self, path: Path, batch: list[Conversation] = BATCH, **options: Any) -> None:
        self.server = ChatServer()
        self.events: list[Event] = []
        config = RunConfig(output=path, base_url=LOCAL, transport=self.server.transport, **options)
        self.result: RunResult = asyncio.run(run_batch(batch, config, on_event=self.events.append))

    @property
    def sent(self) -> list[str]:
        return sorted(b["messages"][-1]["content"] for b in self.server.bodies)

    @property
    def discarded(self) -> tuple[str, ...]:
        started = next(e for e in self.events if isinstance(e, RunStarted))
        return started.discarded


@pytest.fixture
def reference(tmp_path: Path) -> dict[str, dict[str, Any]]:
    path = tmp_path / "reference.jsonl"
    Run(path)
    return {r["id"]: r for r in read_jsonl(path)}


def journal_line(record: dict[str, Any], turn: int, **changes: Any) -> dict[str, Any]:
    """The journal line mtrun writes for ``turn`` of a finished reference record."""
    t = record["turns"][turn]
    line = {
        "run_id": record["run_id"],
        "id": record["id"],
        "source": record["source"],
        "fingerprint": record["fingerprint"],
        "started_at": record["started_at"],
        "turn": t,
        "exchange": record["messages"][t["message_index"] : t["message_index"] + 2],
    }
    line.update(changes)
    return line


def write_output(
    path: Path, records: list[dict[str, Any]], journal: list[dict[str, Any]] = ()
) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    if journal:
        journal_path = path.with_name(path.name + ".journal")
        journal_path.write_text("".join(json.dumps(x) + "\n" for x in journal))


def assert_as_reference(path: Path, reference: dict[str, dict[str, Any]]) -> None:
    records = {r["id"]: r for r in read_jsonl(path)}
    assert sorted(records) == sorted(reference)
    for cid, record in records.items():
        assert record["status"] == "completed"
        assert record["messages"] == reference[cid]["messages"], cid
        assert [t["index"] for t in record["turns"]] == list(range(len(reference[cid]["turns"])))


# -- recorded turns must continue the conversation ----------------------------------------


def test_a_journaled_turn_whose_user_message_is_not_the_turn_is_sent_again(
    tmp_path: Path, reference: dict[str, dict[str, Any]]
) -> None:
    path = tmp_path / "out.jsonl"
    b = reference["b"]
    wrong = [{"role": "user", "content": "something never asked"}, b["messages"][2]]
    journal = [journal_line(b, 0), journal_line(b, 1, exchange=wrong)]
    write_output(path, [reference["a"], reference["c"]], journal)
    run = Run(path, resume=True)
    assert run.sent == ["b question 1", "b question 2"]
    assert run.discarded == (
        "'b': discarded 1 recorded turn from turn 2 (out.jsonl.journal line 2): "
        "its user message is not the turn's content; continuing after turn 1",
    )
    assert_as_reference(path, reference)


def test_an_empty_exchange_is_not_a_turn_done(
    tmp_path: Path, reference: dict[str, dict[str, Any]]
) -> None:
    path = tmp_path / "out.jsonl"
    write_output(
        path, [reference["a"], reference["c"]], [journal_line(reference["b"], 0, exchange=[])]
    )
    run = Run(path, resume=True)
    assert run.sent == ["b question 0", "b question 1", "b question 2"]
    assert run.discarded == (
        "journal line 1 ('b' turn 1): its exchange is not a user message and an answer",
    )
    assert_as_reference(path, reference)


def test_another_runs_journal_is_not_trusted(
    tmp_path: Path, reference: dict[str, dict[str, Any]]
) -> None:
    path = tmp_path / "out.jsonl"
    theirs = [journal_line(reference["b"], t, run_id="20260101T000000Z-other") for t in (0, 1)]
    write_output(path, [reference["a"], reference["c"]], theirs)
    run = Run(path, resume=True)
    assert run.sent == ["b question 0", "b question 1", "b question 2"]
    run_id = reference["a"]["run_id"]
    assert run.discarded == (
        f"discarded 2 journal lines of another run ('20260101T000000Z-other'; "
        f"this output is run {run_id!r})",
    )
    assert_as_reference(path, reference)


def interrupted(record: dict[str, Any], turns: int) -> dict[str, Any]:
    """``record`` as if interrupted after ``turns`` completed turns."""
    cut = dict(record, status="interrupted", turns=record["turns"][:turns])
    end = record["turns"][turns - 1]["message_index"] + 2 if turns else 0
    cut["messages"] = record["messages"][:end] if turns else record["messages"][:1]
    return cut


def test_a_cut_short_record_must_match_the_conversation_too(
    tmp_path: Path, reference: dict[str, dict[str, Any]]
) -> None:
    path = tmp_path / "out.jsonl"
    b = interrupted(reference["b"], 2)
    b["messages"] = [dict(m) for m in b["messages"]]
    b["messages"][0]["content"] = "another system prompt"  # same fingerprint, other history
    a = interrupted(reference["a"], 2)
    a["messages"] = [dict(m) for m in a["messages"]]
    a["messages"][2]["content"] = "a question that was not scripted"
    write_output(path, [a, b, reference["c"]])
    run = Run(path, resume=True)
    assert run.sent == [
        "a question 1",
        "a question 2",
        "b question 0",
        "b question 1",
        "b question 2",
    ]
    assert run.discarded == (
        "'a': discarded 1 recorded turn from turn 2 (out.jsonl line 1): "
        "its user message is not the turn's content; continuing after turn 1",
        "'b': discarded 2 recorded turns from turn 1 (out.jsonl line 2): the history before "
        "its first turn is not the file's system prompt and messages; starting it afresh",
    )
    assert_as_reference(path, reference)


def test_recorded_turns_with_wrong_types_are_sent_again_not_a_crash(
    tmp_path: Path, reference: dict[str, dict[str, Any]]
) -> None:
    path = tmp_path / "out.jsonl"
    bad_turns = [
        {"attempts": "not a list"},
        {"checks": [1, 2]},
        {"usage": [1]},
        {"index": 7},
        {"message_index": -4},
    ]
    records = []
    for i, change in enumerate(bad_turns):
        cid = f"x{i}"
        base = dict(reference["a"], id=cid)
        record = interrupted(base, 1)
        record["turns"] = [dict(record["turns"][0], **change)]
        records.append(record)
    batch = [
        Conversation(id=f"x{i}", source="batch.yaml", turns=BATCH[0].turns)
        for i in range(len(bad_turns))
    ]
    write_output(path, records)
    run = Run(path, batch=batch, resume=True)
    assert run.result.completed == len(bad_turns)
    assert len(run.discarded) == len(bad_turns)
    assert all("starting it afresh" in note for note in run.discarded)
    assert run.sent.count("a question 0") == len(bad_turns)


def test_failed_attempts_of_a_discarded_turn_are_not_carried(
    tmp_path: Path, reference: dict[str, dict[str, Any]]
) -> None:
    path = tmp_path / "out.jsonl"
    c = interrupted(reference["c"], 1)
    c["status"] = "failed"
    c["turns"].append({"index": 1, "message_index": 2, "attempts": [5, "x"], "error": {}})
    write_output(path, [reference["a"], reference["b"], c])
    run = Run(path, resume=True)
    assert run.sent == ["c question 1"]
    record = next(r for r in read_jsonl(path) if r["id"] == "c")
    assert [a["attempt"] for a in record["turns"][1]["attempts"]] == [1]


def test_the_discards_are_reported_when_the_run_starts(
    tmp_path: Path, reference: dict[str, dict[str, Any]]
) -> None:
    (tmp_path / "c.yaml").write_text("conversations: [{id: b, system: be brief, turns: [x, y]}]\n")
    out = tmp_path / "out.jsonl"
    first = CliRunner().invoke(main, ["--mock", "-o", str(out), str(tmp_path / "c.yaml")])
    assert first.exit_code == 0
    record = read_jsonl(out)[0]
    out.write_text(json.dumps(dict(interrupted(record, 1), messages=[])) + "\n")
    result = CliRunner().invoke(
        main, ["--mock", "--resume", "-o", str(out), str(tmp_path / "c.yaml")]
    )
    assert result.exit_code == 0, result.stderr
    assert (
        "resume: 'b': discarded 1 recorded turn from turn 1 (out.jsonl line 1): "
        "the history before its first turn is not the file's system prompt and messages; "
        "starting it afresh\n"
    ) in result.stderr


# -- the output must be this batch's --------------------------------------------------------


def test_resuming_another_batchs_output_is_refused_naming_what_differs(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    Run(path, batch=[conv("a", 1, source="old.yaml"), conv("z", 1, source="old.yaml")])
    before = path.read_bytes()
    other = ChatServer()
    config = RunConfig(output=path, resume=True, base_url=LOCAL, transport=other.transport)
    with pytest.raises(OutputError) as caught:
        asyncio.run(run_batch([conv("a", 1, source="old.yaml"), conv("b", 1)], config))
    assert str(caught.value) == (
        f"{path} holds 1 conversation that is not in this batch (e.g. 'z' from old.yaml): "
        "it is the output of another batch or other options (files, --model, --repeat, "
        "--shard); resume it with the same ones, or write to a new output with -o"
    )
    with pytest.raises(OutputError) as caught:
        asyncio.run(run_batch([conv("a", 2, source="new.yaml"), conv("z", 1, "old.yaml")], config))
    assert str(caught.value).startswith(
        f"{path} is the output of another batch: it holds conversation 'a' from old.yaml, "
        "this batch has another one of that id from new.yaml;"
    )
    assert other.bodies == [] and path.read_bytes() == before


def test_the_cli_refuses_it_with_exit_2_before_sending(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text("conversations: [{id: x, turns: [hi]}]\n")
    (tmp_path / "two.yaml").write_text("conversations: [{id: y, turns: [hi]}]\n")
    out = tmp_path / "out.jsonl"
    assert (
        CliRunner().invoke(main, ["--mock", "-o", str(out), str(tmp_path / "one.yaml")]).exit_code
        == 0
    )
    result = CliRunner().invoke(
        main, ["--mock", "--resume", "-o", str(out), str(tmp_path / "two.yaml")]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith(f"mtrun: error: {out} holds 1 conversation that is not in")
    assert result.stderr.count("\n") == 1
    assert [r["id"] for r in read_jsonl(out)] == ["x"]


@pytest.mark.parametrize(
    "options",
    [
        {"shard": Shard(2, 3)},
        {"repeat": 3},
        {"models": ("m1", "m2")},
        {"models": ("m1", "m2"), "repeat": 2, "shard": Shard(1, 2)},
    ],
    ids=["shard", "repeat", "models", "all"],
)
def test_the_same_batch_with_its_options_still_resumes(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    path = tmp_path / "out.jsonl"
    batch = [conv(f"k{i}", 2) for i in range(6)]
    first = Run(path, batch=batch, **options)
    records = read_jsonl(path)
    assert records
    path.write_text("".join(json.dumps(interrupted(r, 1)) + "\n" for r in records))
    again = Run(path, batch=batch, resume=True, **options)
    assert again.result.completed == first.result.completed and again.discarded == ()
    assert len(again.server.bodies) == len(records)  # only the second turns


# -- the token budget holds for the output ------------------------------------------------


def budget_run(path: Path, budget: int, *, resume: bool) -> tuple[RunResult, int]:
    """A run of five two-turn conversations whose every answer costs 100 tokens."""
    sent = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal sent
        sent += 1
        data = answer(json.loads(request.content))
        data["usage"] = {"prompt_tokens": 60, "completion_tokens": 40, "total_tokens": 100}
        return httpx.Response(200, json=data)

    config = RunConfig(
        output=path,
        resume=resume,
        base_url=LOCAL,
        concurrency=1,
        transport=httpx.MockTransport(handler),
        budget_tokens=budget,
    )
    result = asyncio.run(run_batch([conv(f"k{i}", 2) for i in range(5)], config))
    return result, sent


def test_rerunning_the_same_command_never_spends_the_budget_again(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    first, sent = budget_run(path, 250, resume=True)
    assert sent == 3 and first.completed == 1 and first.interrupted == 1
    for _ in range(4):
        again, sent = budget_run(path, 250, resume=True)
        assert sent == 0
        assert (
            again.stop_reason
            == first.stop_reason
            == (
                "the token budget is spent (300 of 250 tokens used); "
                "continue with --resume and a larger --budget-tokens"
            )
        )
        assert again.not_started == 4 and again.interrupted == 0
    assert [r["status"] for r in read_jsonl(path)] == ["completed", "interrupted"]
    larger, sent = budget_run(path, 450, resume=True)
    assert sent == 2  # 300 already used: 400 after the first, 500 after the second
    assert larger.stop_reason is not None and "(500 of 450 tokens used)" in larger.stop_reason


def test_an_output_already_complete_is_not_stopped_by_its_budget(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    budget_run(path, 10_000, resume=False)
    result, sent = budget_run(path, 100, resume=True)
    assert sent == 0 and result.stop_reason is None and result.already_completed == 5


@pytest.mark.parametrize(("count", "said"), [(1, "1 journal line"), (1_000, "1,000 journal lines")])
def test_another_runs_journal_lines_are_counted_in_the_singular_for_one(
    tmp_path: Path, reference: dict[str, dict[str, Any]], count: int, said: str
) -> None:
    path = tmp_path / "out.jsonl"
    theirs = [journal_line(reference["b"], 0, run_id="20260101T000000Z-other")] * count
    write_output(path, [reference["a"], reference["c"]], theirs)
    run = Run(path, resume=True)
    assert run.discarded == (
        f"discarded {said} of another run ('20260101T000000Z-other'; "
        f"this output is run {reference['a']['run_id']!r})",
    )


@pytest.mark.parametrize(("recorded", "said"), [(1, "1 recorded turn"), (2, "2 recorded turns")])
def test_a_journal_line_past_the_recorded_turns_counts_them_in_the_singular_for_one(
    tmp_path: Path, reference: dict[str, dict[str, Any]], recorded: int, said: str
) -> None:
    path = tmp_path / "out.jsonl"
    b = reference["b"]
    ahead = journal_line(b, recorded)
    ahead["turn"] = dict(ahead["turn"], index=recorded + 1)  # a turn past the next one
    write_output(
        path,
        [reference["a"], reference["c"]],
        [*(journal_line(b, t) for t in range(recorded)), ahead],
    )
    run = Run(path, resume=True)
    assert run.discarded[0] == (
        f"journal line {recorded + 1} ('b' turn {recorded + 2}) does not follow its {said}"
    )


@pytest.mark.parametrize(
    ("count", "said"), [(2, "2 conversations that are"), (1_000, "1,000 conversations that are")]
)
def test_the_conversations_of_another_batch_are_counted_with_thousands_separators(
    tmp_path: Path, reference: dict[str, dict[str, Any]], count: int, said: str
) -> None:
    path = tmp_path / "out.jsonl"
    write_output(path, [dict(reference["c"], id=f"z{i}") for i in range(count)])
    with pytest.raises(OutputError) as caught:
        Run(path, resume=True)
    assert str(caught.value).startswith(f"{path} holds {said} not in this batch (e.g. 'z0' ")
