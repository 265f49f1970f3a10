"""Hostile transcripts and journals through every reader: an answer or one line, never a crash.

Starts from a real output as a crash leaves it (a completed conversation, one
interrupted after a turn with its next turn journaled, one only journaled),
then truncates it at every offset, puts wrong types in every field, nests
lines deep, duplicates ids, adds another run's lines, NUL bytes and bad UTF-8
(seeded, and by hypothesis). Every reader (read_transcript, --resume through
run_batch, show, export, report, diff, merge) must end in success or one
OutputError line / a documented exit code. A resumed conversation that was
not already complete must end exactly as an uninterrupted run would have:
a turn is never taken as done unless it was sent.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import ChatServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.cli import main
from runner.errors import OutputError
from runner.run.engine import RunConfig, run_batch
from runner.spec.model import Conversation, Turn
from runner.transcripts.reader import read_transcript
from runner.transcripts.status import Status
from runner.transcripts.store import TranscriptStore

LOCAL = "http://127.0.0.1:9/v1"
BATCH = [
    Conversation(
        id=cid,
        source="batch.yaml",
        system="be brief" if cid == "a" else None,
        turns=tuple(Turn(f"{cid} question {i}") for i in range(n)),
    )
    for cid, n in (("a", 3), ("b", 3), ("c", 2))
]
WRONG: list[Any] = [None, True, -1, 2**70, 1e308, "x", "", [], {}, [1, "x"], {"k": [None]}]
DOCUMENTED_EXITS = {0, 1, 2, 3}
FUZZ = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def no_sleep_run(path: Path, *, resume: bool, server: ChatServer | None = None) -> Any:
    server = server or ChatServer()
    config = RunConfig(output=path, resume=resume, base_url=LOCAL, transport=server.transport)
    return asyncio.run(run_batch(BATCH, config))


def make_reference(folder: Path) -> dict[str, dict[str, Any]]:
    path = folder / "reference.jsonl"
    no_sleep_run(path, resume=False)
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def journal_line(record: dict[str, Any], turn: int) -> dict[str, Any]:
    t = record["turns"][turn]
    return {
        "run_id": record["run_id"],
        "id": record["id"],
        "source": record["source"],
        "fingerprint": record["fingerprint"],
        "started_at": record["started_at"],
        "turn": t,
        "exchange": record["messages"][t["message_index"] : t["message_index"] + 2],
    }


def crashed_output(ref: dict[str, dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    """(transcript values, journal values) as a kill -9 leaves them."""
    b = copy.deepcopy(ref["b"])
    b["status"] = "interrupted"
    b["turns"] = b["turns"][:1]
    b["messages"] = b["messages"][:2]
    b["error"] = {"kind": "interrupted", "message": "cancelled"}
    transcript = [ref["a"], b]
    journal = [journal_line(ref["b"], 1), journal_line(ref["c"], 0)]
    return transcript, journal


def lines(values: list[Any]) -> bytes:
    return b"".join(json.dumps(v).encode() + b"\n" for v in values)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return make_reference(tmp_path_factory.mktemp("reference"))


class Case:
    """One hostile output on disk: a transcript and maybe a journal."""

    counter = 0

    def __init__(self, folder: Path, transcript: bytes, journal: bytes | None) -> None:
        Case.counter += 1
        self.folder = folder / f"case{Case.counter}"
        self.folder.mkdir()
        self.path = self.folder / "out.jsonl"
        self.path.write_bytes(transcript)
        if journal is not None:
            self.path.with_name("out.jsonl.journal").write_bytes(journal)


def assert_one_line(exc: Exception) -> None:
    text = str(exc)
    assert "\n" not in text and text, text


def check_read_transcript(case: Case) -> dict[str, str] | None:
    """read_transcript gives records or one OutputError; returns the statuses it saw."""
    try:
        records = read_transcript(case.path)
    except OutputError as exc:
        assert_one_line(exc)
        assert str(exc).startswith(f"{case.path}:"), exc
        return None
    return {str(r["id"]): str(r.get("status")) for r in records}


def check_resume(case: Case, reference: dict[str, dict[str, Any]]) -> None:
    """--resume either refuses in one line before sending, or ends as a clean run would."""
    before = check_read_transcript(case) or {}
    server = ChatServer()
    try:
        result = no_sleep_run(case.path, resume=True, server=server)
    except OutputError as exc:
        assert_one_line(exc)
        assert server.bodies == []
        return
    assert result.failed == 0 and result.interrupted == 0 and result.output_error is None
    after = {str(r["id"]): r for r in map(json.loads, case.path.read_bytes().splitlines())}
    for cid, ref in reference.items():
        if before.get(cid) in Status.FINISHED:
            continue  # trusted as the file says: not what resume decides
        assert after[cid]["status"] == "completed", cid
        # What was asked is exactly the script; an answer is the file's to say (any content).
        assert asked(after[cid]["messages"]) == asked(ref["messages"]), cid
        assert [t["index"] for t in after[cid]["turns"]] == list(range(len(ref["turns"])))


def asked(messages: list[Any]) -> list[Any]:
    """The messages with each answer's content left out."""
    return [m if m.get("role") != "assistant" else {"role": "assistant"} for m in messages]


def check_review_commands(case: Case) -> None:
    """show, export, report, diff and merge: a documented exit code and no traceback."""
    out = case.folder
    commands = {
        "show": ["show", "--no-pager", str(case.path)],
        "export": ["export", str(case.path)],
        "report": ["report", str(case.path), "-o", str(out / "r.html")],
        "diff": ["diff", str(case.path), str(case.path)],
        "merge": ["merge", str(out / f"merged{Case.counter}.jsonl"), str(case.path)],
    }
    for name, args in commands.items():
        result = CliRunner().invoke(main, args)
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            name,
            result.exception,
        )
        assert result.exit_code in DOCUMENTED_EXITS, (name, result.exit_code)
        assert "Traceback" not in result.output
        if result.exit_code == 2:
            # One error line, after any warnings about the lines that were cut.
            *warnings, error = result.stderr.splitlines()
            assert error.startswith("mtrun: error: "), result.stderr
            assert all(line.startswith("mtrun: warning: ") for line in warnings), result.stderr


def check_every_reader(case: Case, reference: dict[str, dict[str, Any]]) -> None:
    check_read_transcript(case)
    check_review_commands(case)
    check_resume(case, reference)  # last: it rewrites the files


# -- truncation at every offset ---------------------------------------------------------


def test_the_crashed_output_itself_resumes_to_the_reference(
    tmp_path: Path, reference: dict[str, dict[str, Any]]
) -> None:
    transcript, journal = crashed_output(reference)
    check_every_reader(Case(tmp_path, lines(transcript), lines(journal)), reference)


def test_a_transcript_cut_at_every_offset(
    tmp_path: Path, reference: dict[str, dict[str, Any]]
) -> None:
    transcript, journal = crashed_output(reference)
    data = lines(transcript)
    case = Case(tmp_path, b"", lines(journal))
    for cut in range(len(data) + 1):
        case.path.write_bytes(data[:cut])
        check_read_transcript(case)
        if cut % 5:
            continue  # opening for resume fsyncs a cut: every fifth offset is enough
        try:
            TranscriptStore(case.path, resume=True).close(finished=False)
        except OutputError as exc:
            assert_one_line(exc)


def test_a_journal_cut_at_every_offset_resumes_to_the_reference(
    tmp_path: Path, reference: dict[str, dict[str, Any]]
) -> None:
    transcript, journal = crashed_output(reference)
    data = lines(journal)
    for cut in range(0, len(data) + 1, 7):
        check_resume(Case(tmp_path, lines(transcript), data[:cut]), reference)


# -- mutations ---------------------------------------------------------------------------


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a JSON value."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths_of(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths_of(item, (*prefix, index))
    return found


def set_at(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    changed = copy.deepcopy(value)
    target = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return changed


def deep(depth: int) -> bytes:
    return b'{"id": "b", "status": "failed", "x": ' + b"[" * depth + b"]" * depth + b"}"


MUTATIONS: dict[str, Callable[[random.Random, list[bytes], dict[str, Any]], list[bytes]]] = {
    "deep line": lambda rng, ls, ref: [*ls[:1], deep(rng.choice([129, 900, 100_000])), *ls[1:]],
    "garbage line": lambda rng, ls, ref: [*ls[:1], rng.randbytes(rng.randint(1, 60)), *ls[1:]],
    "nul bytes": lambda rng, ls, ref: [x.replace(b'"', b'"\x00', 1) for x in ls],
    "bad utf-8": lambda rng, ls, ref: [x.replace(b"question", b"qu\xffstion", 1) for x in ls],
    "duplicated": lambda rng, ls, ref: [*ls, *ls],
    "reversed": lambda rng, ls, ref: ls[::-1],
    "another run": lambda rng, ls, ref: [
        x.replace(ref["a"]["run_id"].encode(), b"20990101T000000Z-000000") for x in ls
    ],
    "huge line": lambda rng, ls, ref: [*ls, json.dumps({"id": "h", "s": "x" * 2**20}).encode()],
}


def wrong_field(rng: random.Random, values: list[Any]) -> list[Any]:
    """``values`` with one field somewhere set to a value of the wrong type."""
    which = rng.randrange(len(values))
    paths = paths_of(values[which])
    if not paths:
        return values
    changed = list(values)
    changed[which] = set_at(values[which], rng.choice(paths), rng.choice(WRONG))
    return changed


def mutated(rng: random.Random, reference: dict[str, dict[str, Any]]) -> tuple[bytes, bytes | None]:
    transcript, journal = crashed_output(reference)
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.5:
            target = rng.choice(["transcript", "journal"])
            if target == "transcript":
                transcript = wrong_field(rng, transcript)
            else:
                journal = wrong_field(rng, journal)
    raw = {"transcript": lines(transcript).splitlines(), "journal": lines(journal).splitlines()}
    for _ in range(rng.randint(0, 2)):
        name = rng.choice(sorted(MUTATIONS))
        target = rng.choice(["transcript", "journal"])
        raw[target] = MUTATIONS[name](rng, raw[target], reference)
    out = [b"\n".join(raw[t]) + b"\n" for t in ("transcript", "journal")]
    for i in range(2):
        if rng.random() < 0.2:
            out[i] = out[i][: rng.randint(0, len(out[i]))]
    return out[0], out[1] if rng.random() < 0.9 else None


@pytest.mark.parametrize("seed", range(40))
def test_seeded_mutations_through_every_reader(
    tmp_path: Path, reference: dict[str, dict[str, Any]], seed: int
) -> None:
    transcript, journal = mutated(random.Random(seed), reference)
    check_every_reader(Case(tmp_path, transcript, journal), reference)


@pytest.mark.parametrize("field", ["transcript", "journal"])
def test_wrong_types_in_every_field_resume_cleanly(
    tmp_path: Path, reference: dict[str, dict[str, Any]], field: str
) -> None:
    transcript, journal = crashed_output(reference)
    values = transcript if field == "transcript" else journal
    for which, value in enumerate(values):
        for path in paths_of(value):
            for wrong in (None, "x", [1], 2**70):
                changed = list(values)
                changed[which] = set_at(value, path, wrong)
                pair = (changed, journal) if field == "transcript" else (transcript, changed)
                case = Case(tmp_path, lines(pair[0]), lines(pair[1]))
                check_read_transcript(case)
                check_resume(case, reference)


@FUZZ
@given(seed=st.integers(0, 2**32 - 1))
def test_hypothesis_mutations_through_every_reader(
    tmp_path: Path, reference: dict[str, dict[str, Any]], seed: int
) -> None:
    transcript, journal = mutated(random.Random(seed), reference)
    check_every_reader(Case(tmp_path, transcript, journal), reference)


# -- lone surrogates: kept by the reader, for every writer to escape ------------------------

SURROGATE_COMMANDS = {
    "show": ["show", "--no-pager", "{t}"],
    "export": ["export", "{t}"],
    "export-file": ["export", "{t}", "-o", "{d}/t.md"],
    "report": ["report", "{t}", "-o", "{d}/t.html"],
    "diff": ["diff", "{t}", "{t}"],
    "diff-json": ["diff", "--json", "{t}", "{t}"],
    "merge": ["merge", "{d}/merged.jsonl", "{t}"],
}


@pytest.mark.parametrize("args", SURROGATE_COMMANDS.values(), ids=SURROGATE_COMMANDS.keys())
def test_lone_surrogates_are_read_and_every_command_copes(
    tmp_path: Path, reference: dict[str, dict[str, Any]], args: list[str]
) -> None:
    record = copy.deepcopy(reference["a"])
    record["id"] = "a\ud800"
    record["messages"][-1]["content"] = "answer \udfff"
    path = tmp_path / "t.jsonl"
    path.write_bytes(lines([record]))  # json.dumps writes them as \\udXXX escapes
    assert read_transcript(path)[0]["id"] == "a\ud800"
    result = CliRunner().invoke(main, [a.format(t=path, d=tmp_path) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 0, result.output
