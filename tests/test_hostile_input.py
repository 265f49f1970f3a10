"""Hostile input never gets past a one-line error: YAML files, Retry-After headers, transcripts.

Every conversation file either loads or raises one :class:`InputError` naming
the file; the CLI says it in one ``mtrun: error:`` line with exit code 2. The
corpus under ``tests/data/hostile/`` holds the classic attacks; hypothesis
adds random bytes, mutated example files and wrong types everywhere.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import record
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from loading import load_as

from runner.cli import main
from runner.errors import InputError, OutputError
from runner.http.headers import parse_duration, parse_retry_after
from runner.spec.loader import load_conversations
from runner.transcripts.reader import read_transcript
from runner.transcripts.store import TranscriptStore

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = Path(__file__).resolve().parent / "data" / "hostile"
EXAMPLES = sorted((ROOT / "conversations").glob("*.yaml"))
CORPUS = sorted(HOSTILE.iterdir())
FAST = settings(
    max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def load_or_input_error(path: Path, display: str = "conv.yaml") -> str | None:
    """Load a file; None if it loaded, else the InputError's text (checked to be one line)."""
    try:
        load_as(path, display)
    except InputError as exc:
        text = str(exc)
        assert "\n" not in text and text.startswith(display), text
        return text
    return None


def run_validate(path: Path) -> Any:
    return CliRunner().invoke(main, ["validate", str(path)], catch_exceptions=False)


# -- the corpus ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_every_hostile_file_is_one_input_error(path: Path) -> None:
    tracemalloc.start()
    started = time.monotonic()
    try:
        text = load_or_input_error(path, str(path))
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert text is not None, f"{path.name} loaded"
    assert time.monotonic() - started < 2 and peak < 64 * 2**20
    result = run_validate(path)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"mtrun: error: {path}")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_errors_point_at_the_line() -> None:
    cases = {
        "invalid_utf8.yaml": ":3:",
        "python_tag.yaml": ":1:",
        "duplicate_keys.yaml": ":2:",
        "alias_bomb.yaml": ":",
        "several_documents.yaml": ":2:",
        "wrong_turn_item.yaml": ":2:",
    }
    for name, where in cases.items():
        text = load_or_input_error(HOSTILE / name, "f.yaml")
        assert text is not None and text.startswith(f"f.yaml{where}"), text


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_deeply_nested_flow_yaml_is_refused_not_a_crash(tmp_path: Path) -> None:
    """libyaml composes recursively in C: 50,000 open brackets must not crash mtrun."""
    cases = {
        "deep.yaml": "[" * 50_000,
        "deep_map.yaml": "{a: " * 50_000,
        "deep_compact_seq.yaml": "- " * 50_000 + "x\n",  # block nesting on one line
        "deep_complex_keys.yaml": "? " * 50_000 + "x\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        done = cli(["validate", name], tmp_path)
        assert done.returncode == 2, f"{name}: exit {done.returncode} (negative: a signal)"
        assert done.stderr.startswith(f"mtrun: error: {name}")
        assert done.stderr.count("\n") == 1


def test_deep_nesting_below_the_crash_is_refused_in_process(tmp_path: Path) -> None:
    for text in (
        "[" * 5000,
        "[" * 2000 + "]" * 2000,
        "".join("  " * i + "-\n" for i in range(300)),
    ):
        (tmp_path / "deep.yaml").write_text(text)
        message = load_or_input_error(tmp_path / "deep.yaml")
        assert message is not None and "nesting too deep" in message


def test_a_huge_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    with open(huge, "wb") as fh:  # sparse: 60 MB on paper, nothing on disk
        fh.write(b"turns: [a]\n# ")
        fh.truncate(60 * 2**20)
    message = load_or_input_error(huge)
    assert message == "conv.yaml: file too large (over 50 MB)"
    done = cli(["validate", "huge.yaml"], tmp_path)
    assert done.returncode == 2
    assert done.stderr == "mtrun: error: huge.yaml: file too large (over 50 MB)\n"


def test_huge_strings_load_or_fail_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    long_turn = "x" * (8 * 2**20)
    path.write_text(json.dumps({"id": "big", "turns": [long_turn, "short"]}))
    started = time.monotonic()
    (conversation,) = load_as(path)
    assert conversation.turns[0].content == long_turn
    path.write_text(json.dumps({"id": "y" * 100_000, "turns": ["a"]}))
    message = load_or_input_error(path)
    assert message is not None and "too long" in message
    assert time.monotonic() - started < 10


# -- hypothesis: random and mutated files -------------------------------------------------


@FAST
@given(data=st.binary(max_size=2000))
@example(data=b"\xff\xfe\x00")
@example(data=b"&a [*a]")
@example(data=b"- !!python/name:os.system\n")
def test_random_bytes_load_or_input_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "random.yaml"
    path.write_bytes(data)
    load_or_input_error(path)


@st.composite
def mutated_example(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(EXAMPLES)).read_bytes())
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            del data[at : at + draw(st.integers(1, 16))]
    return bytes(data)


@FAST
@given(data=mutated_example())
def test_mutated_examples_load_or_input_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "mutated.yaml"
    path.write_bytes(data)
    load_or_input_error(path)


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["turns", "content", "role", "user", "params", "expect", "contains"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["id", "turns", "content", "params", "expect", "messages", "role", "x"]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)
FIELDS = st.sampled_from(
    ["id", "model", "system", "params", "messages", "expect", "expect_final", "turns", "zzz"]
)


@FAST
@given(
    conversation=st.dictionaries(FIELDS, JSONISH, max_size=6),
    wrapped=st.sampled_from(["plain", "list", "conversations", "defaults"]),
)
def test_wrong_types_everywhere_load_or_input_error(
    tmp_path: Path, conversation: dict[str, Any], wrapped: str
) -> None:
    document: Any = conversation
    if wrapped == "list":
        document = [conversation, conversation]
    elif wrapped == "conversations":
        document = {"conversations": [conversation]}
    elif wrapped == "defaults":
        document = {"defaults": conversation, "conversations": [{"turns": ["a"]}]}
    path = tmp_path / "types.yaml"
    path.write_text(json.dumps(document))  # JSON is YAML; NaN and Infinity included
    load_or_input_error(path)
    try:
        load_conversations([str(path)])
    except InputError:
        pass


# -- Retry-After and rate-limit durations -------------------------------------------------

HEADER_TEXT = st.text(max_size=40) | st.sampled_from(
    [
        "1e400",
        "-1",
        "nan",
        "inf",
        "0x10",
        " 3 ",
        "Wed, 21 Oct 2015 07:28:00 GMT",
        "Fri, 31 Dec 9999 23:59:59 GMT",
        "Mon, 99 Foo 2020 99:99:99 GMT",
        "1_000",
        "١٢",
    ]
)


@FAST
@given(
    headers=st.dictionaries(
        st.sampled_from(["Retry-After", "retry-after", "RETRY-AFTER-MS", "retry-after-ms", "x"]),
        HEADER_TEXT,
    )
)
def test_parse_retry_after_is_none_or_a_finite_wait(headers: dict[str, str]) -> None:
    seconds = parse_retry_after(headers)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)


@FAST
@given(raw=st.none() | HEADER_TEXT | st.from_regex(r"\A(\d{1,400}(\.\d{1,3})?(ms|h|m|s)){1,3}\Z"))
@example(raw="9" * 400 + "s")
def test_parse_duration_is_none_or_a_finite_duration(raw: str | None) -> None:
    seconds = parse_duration(raw)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0), seconds


# -- transcripts with torn and corrupted lines --------------------------------------------


LINES = [json.dumps(record(i, s)).encode() + b"\n" for i, s in enumerate(["completed", "failed"])]
LAST = json.dumps(record(2, "interrupted")).encode() + b"\n"


def open_for_resume(path: Path) -> TranscriptStore:
    store = TranscriptStore(path, resume=True)
    store.close(finished=False)
    return store


@FAST
@given(cut=st.integers(0, len(LAST) - 1))
def test_a_torn_last_line_is_tolerated(tmp_path: Path, cut: int) -> None:
    path = tmp_path / f"torn-{cut}.jsonl"
    path.write_bytes(b"".join(LINES) + LAST[:cut])
    ids = [r["id"] for r in read_transcript(path)]
    whole = cut == len(LAST) - 1  # only the newline is missing
    assert ids == (["c0", "c1", "c2"] if whole else ["c0", "c1"])
    store = open_for_resume(path)
    assert store.status("c0") == "completed"
    assert (store.status("c2") is not None) == whole
    assert store.resume_report.torn_bytes == (0 if whole or cut == 0 else cut)
    assert path.read_bytes() == b"".join(LINES) + (LAST if whole else b"")


@FAST
@given(cut=st.integers(1, len(LINES[1]) - 2))
def test_a_corrupted_middle_line_names_the_line(tmp_path: Path, cut: int) -> None:
    path = tmp_path / f"corrupt-{cut}.jsonl"
    path.write_bytes(LINES[0] + LINES[1][:cut] + b"\n" + LAST)
    with pytest.raises(OutputError, match=rf"^{path}:2: "):
        read_transcript(path)
    with pytest.raises(OutputError, match=rf"^{path}:2: "):
        open_for_resume(path)


NUMBERS = itertools.count()
CHANGED = st.dictionaries(
    st.sampled_from(["turns", "messages", "params", "status", "run_id", "id", "started_at"]),
    JSONISH | st.lists(st.dictionaries(st.sampled_from(["index", "message_index"]), JSONISH)),
    max_size=3,
)


@FAST
@given(changes=CHANGED, garbage=st.binary(max_size=40))
@example(changes={"turns": [{"index": math.inf, "message_index": 0}]}, garbage=b"")
@example(changes={"turns": [{"index": 1e300, "message_index": 1e400}]}, garbage=b"")
@example(changes={}, garbage=b"[" * 100_000)  # RecursionError in json.loads: a corrupt line
@example(changes={"params": [[[[[[[]]]]]]] * 2}, garbage=b'{"id": "\xc3\x28"}')
def test_any_middle_line_is_read_or_named_nothing_else_escapes(
    tmp_path: Path, changes: dict[str, Any], garbage: bytes
) -> None:
    path = tmp_path / f"any-{next(NUMBERS)}.jsonl"
    middle = json.dumps({**record(1, "failed"), **changes}).encode() + b"\n"
    path.write_bytes(LINES[0] + middle + garbage.replace(b"\n", b" ") + b"\n" + LAST)
    for read in (read_transcript, open_for_resume):
        try:
            read(path)
        except OutputError as exc:
            assert str(exc).startswith(f"{path}:"), exc
    os.unlink(path)


def test_a_refused_resume_leaves_the_output_unlocked(tmp_path: Path) -> None:
    """After "fix or remove the line", resuming again from the same process must work."""
    path = tmp_path / "out.jsonl"
    path.write_bytes(LINES[0] + b"{broken\n" + LAST)
    with pytest.raises(OutputError, match=":2: not a valid transcript line"):
        TranscriptStore(path, resume=True)
    path.write_bytes(LINES[0] + LAST)  # the user fixed the file
    store = TranscriptStore(path, resume=True)
    store.close(finished=False)
    assert store.status("c2") == "interrupted"
