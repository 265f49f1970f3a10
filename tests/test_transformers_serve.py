"""mtrun against a real queueing inference server: Hugging Face ``transformers serve``.

The server is the real one from PyPI (``realserve.py`` starts it, with a tiny
model built offline), and mtrun is its real command line, as a user runs it.
It proves on the real thing what ``sim_queue.py`` and the bench server show
on our own: the history each turn sends is the whole conversation so far,
streamed and plain answers are recorded alike (usage, ``first_token_ms`` on
the client's clock), a refusal in FastAPI's shape fails at once with its
reason, and ``-j auto`` finds that the server serves one request at a time
(it queues the rest and never says 429) and stays near that, where a fixed
``-j`` leaves the queue in the server, inside every ``latency_ms``. Against
the same server with continuous batching, ``-j auto`` rises instead.

The model is greedy and never stops early, so an answer is exactly
``max_tokens`` long and the same history always gets the same answer: the
server, asked again directly with a recorded history, must give the recorded
answer. Nothing here is timed against a threshold: counts, the limit's
changes and orderings only.

Without the server's virtualenv the tests skip, saying how to make it; under
``CI`` they fail instead (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from realserve import (
    CONTINUOUS_BATCHING,
    ServerError,
    TransformersServe,
    build_model,
    server_venv,
    serving,
)

from runner.run.config import AUTO_START

SHORT = 8
"""Tokens of an answer where only its content matters."""
LONG = 192
"""Tokens of an answer in the batches: a few tenths of a second of the server's time,
so a wait behind one is well past the queue detector's noise floor (``NOISE_S``)..."""
STREAMED = 128
"""...and streamed, where each token costs the server more (a chunk each)."""
BATCH = 5
"""Two-turn conversations in a batch: more than ``AUTO_START`` requests at once."""


def unavailable(reason: str) -> None:
    """Skip with the reason; under CI, fail: CI must run these."""
    if os.environ.get("CI"):
        pytest.fail(f"the transformers serve tests must run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The server's virtualenv and the tiny model, built once for both servers."""
    venv, why = server_venv()
    if venv is None:
        unavailable(why)
    assert venv is not None
    try:
        return venv, build_model(venv, tmp_path_factory.mktemp("tserve-model"))
    except ServerError as error:
        pytest.fail(str(error))  # installed, yet it does not work: that is a failure


@pytest.fixture(scope="module")
def servers(
    model: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TransformersServe, TransformersServe]]:
    """The server as it starts by default, and with continuous batching, started together."""
    folder = tmp_path_factory.mktemp("tserve")
    plain = TransformersServe(*model, folder / "serve.log")
    batching = TransformersServe(*model, folder / "serve-cb.log", *CONTINUOUS_BATCHING)
    try:
        with serving(plain, batching):
            yield plain, batching
    except ServerError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def server(servers: tuple[TransformersServe, TransformersServe]) -> TransformersServe:
    """One generation at a time, the rest queued."""
    return servers[0]


@pytest.fixture(scope="module")
def batching_server(servers: tuple[TransformersServe, TransformersServe]) -> TransformersServe:
    """Every request generated at once."""
    return servers[1]


def write_conversations(
    path: Path, conversations: list[tuple[str, list[str]]], tokens: int
) -> Path:
    """A conversation file: ``(id, user turns)`` each, ``max_tokens`` for all."""
    lines = ["defaults:", "  system: w1 w2 w3", "  params:", f"    max_tokens: {tokens}"]
    lines.append("conversations:")
    for name, turns in conversations:
        lines += [f"  - id: {name}", "    turns:", *(f"      - {turn}" for turn in turns)]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_mtrun(
    server: TransformersServe,
    folder: Path,
    spec: Path,
    *options: str,
    model: str | None = None,
    exit_code: int = 0,
) -> dict[str, Any]:
    """``mtrun`` against the server; the summary JSON with the records under ``records``."""
    folder.mkdir(parents=True, exist_ok=True)
    out, summary = folder / "out.jsonl", folder / "summary.json"
    command = [sys.executable, "-m", "runner", "--base-url", server.base_url]
    command += ["--model", model or server.model, "-q", "-o", str(out)]
    command += ["--summary-json", str(summary)]
    done = subprocess.run(
        [*command, *options, str(spec)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == exit_code, f"{done.stderr}\nserver log:\n{server.log_tail()}"
    result: dict[str, Any] = json.loads(summary.read_text())
    records = [json.loads(line) for line in out.read_text().splitlines()]
    result["records"] = {r["id"]: r for r in records if r.get("schema") == "mtrun.transcript/1"}
    return result


THREE_TURNS = [("history", ["w5 w6 w7", "w8 w9", "w10"])]


@pytest.fixture(scope="module")
def plain_run(
    server: TransformersServe, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("plain")
    spec = write_conversations(folder / "history.yaml", THREE_TURNS, SHORT)
    return run_mtrun(server, folder / "run", spec)


def test_each_turn_sends_the_whole_history_and_the_server_answers_it(
    server: TransformersServe, plain_run: dict[str, Any]
) -> None:
    """Asked again with the recorded history before each answer, the server gives that answer:
    the history mtrun sent held every earlier answer exactly as the server wrote it."""
    record = plain_run["records"]["history"]
    assert record["status"] == "completed"
    messages = record["messages"]
    roles = ["system"] + ["user", "assistant"] * 3
    assert [m["role"] for m in messages] == roles
    assert [m["content"] for m in messages[1::2]] == THREE_TURNS[0][1]
    for turn in record["turns"]:
        k = turn["message_index"] + 1  # the answer follows its user message
        again = server.chat(messages[:k], max_tokens=SHORT)
        assert again["choices"][0]["message"]["content"] == messages[k]["content"]
        assert again["usage"]["prompt_tokens"] == turn["usage"]["prompt_tokens"]
    prompts = [turn["usage"]["prompt_tokens"] for turn in record["turns"]]
    assert prompts == sorted(prompts) and len(set(prompts)) == 3  # the history grows


def test_max_tokens_is_honoured_and_recorded_with_usage(plain_run: dict[str, Any]) -> None:
    turns = plain_run["records"]["history"]["turns"]
    assert [t["usage"]["completion_tokens"] for t in turns] == [SHORT] * 3
    assert [t["finish_reason"] for t in turns] == ["length"] * 3
    assert [len(t["attempts"]) for t in turns] == [1, 1, 1]
    assert plain_run["completion_tokens"] == 3 * SHORT
    assert all("first_token_ms" not in t for t in turns)  # only a stream shows a first token


def test_a_stream_without_done_is_recorded_like_the_plain_answer(
    server: TransformersServe, plain_run: dict[str, Any], tmp_path: Path
) -> None:
    """The server ends a stream with a usage chunk and no ``[DONE]``: each turn is whole at
    the first try, with the same answers as without streaming, its usage, and a first token
    no later than the whole answer."""
    spec = write_conversations(tmp_path / "history.yaml", THREE_TURNS, SHORT)
    streamed = run_mtrun(server, tmp_path / "run", spec, "--stream")
    record = streamed["records"]["history"]
    assert record["messages"] == plain_run["records"]["history"]["messages"]
    for turn, plain in zip(record["turns"], plain_run["records"]["history"]["turns"], strict=True):
        assert len(turn["attempts"]) == 1
        assert turn["usage"] == plain["usage"]
        assert turn["finish_reason"] == "length"
        assert 0 < turn["first_token_ms"] <= turn["latency_ms"]


def test_the_server_s_refusal_fails_the_conversation_at_once_with_its_reason(
    server: TransformersServe, tmp_path: Path
) -> None:
    """Pinned to its model, the server answers another name with a 400 in FastAPI's shape
    (``{"detail": ...}``, not OpenAI's ``error`` object): no retry, and its reason shown."""
    spec = write_conversations(tmp_path / "history.yaml", THREE_TURNS, SHORT)
    result = run_mtrun(server, tmp_path / "run", spec, model="another-model", exit_code=3)
    assert (result["failed"], result["retries"], result["turns"]) == (1, 0, 0)
    [failure] = result["failures"]
    assert failure["turn"] == 0
    assert failure["message"].startswith("HTTP 400: Server is pinned to ")
    assert failure["message"].endswith("requested 'another-model'.")


def batch(folder: Path, tokens: int) -> Path:
    conversations = [(f"c{i}", [f"w{i} w{i + 1}", f"w{i + 2}"]) for i in range(BATCH)]
    return write_conversations(folder / "batch.yaml", conversations, tokens)


def run_batch(server: TransformersServe, folder: Path, *options: str) -> dict[str, Any]:
    """The batch through ``mtrun OPTIONS``: every conversation completes, every answer whole."""
    tokens = STREAMED if "--stream" in options else LONG
    result = run_mtrun(server, folder / "run", batch(folder, tokens), *options)
    assert (result["completed"], result["failed"], result["retries"]) == (BATCH, 0, 0)
    assert [t["usage"]["completion_tokens"] for t in turns(result)] == [tokens] * 2 * BATCH
    return result


def turns(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [turn for record in run["records"].values() for turn in record["turns"]]


def figures(run: dict[str, Any], field: str) -> list[float]:
    return [turn[field] for turn in turns(run)]


@pytest.fixture(scope="module")
def auto_plain(
    server: TransformersServe, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    return run_batch(server, tmp_path_factory.mktemp("auto-plain"), "-j", "auto")


@pytest.fixture(scope="module")
def auto_stream(
    server: TransformersServe, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    return run_batch(server, tmp_path_factory.mktemp("auto-stream"), "-j", "auto", "--stream")


@pytest.mark.parametrize("run", ["auto_plain", "auto_stream"])
def test_j_auto_finds_the_one_slot_and_stays_near_it(
    run: str, request: pytest.FixtureRequest
) -> None:
    """The opening round of four queued one behind another: the limit is cut for the queue
    and never climbs past two again (between K and 2K for the server's one slot), far below
    the ceiling of 32 it climbs to against a server without a queue (below)."""
    result: dict[str, Any] = request.getfixturevalue(run)
    changes = result["limit_changes"]
    assert changes, "the limit never changed: the queue went unseen"
    assert changes[0]["reason"].startswith("queueing")
    assert changes[0]["limit"] < AUTO_START
    assert all(change["limit"] <= 2 for change in changes)
    assert sum(figures(result, "queued_ms")) > 0  # the rest waited in mtrun, not the server


def test_a_queued_stream_s_first_token_comes_after_the_answers_ahead_of_it(
    auto_stream: dict[str, Any],
) -> None:
    """A queued stream gets its headers and a role-only chunk at once, its first token only
    once the answers ahead of it are done: the opening round's last first token comes later
    than the quickest whole answer (timed from the role chunk, every one would be early)."""
    assert all(0 < t["first_token_ms"] <= t["latency_ms"] for t in turns(auto_stream))
    assert max(figures(auto_stream, "first_token_ms")) > min(figures(auto_stream, "latency_ms"))


def test_a_fixed_j_leaves_the_queue_in_the_server(
    server: TransformersServe, auto_plain: dict[str, Any], tmp_path: Path
) -> None:
    """The same batch at ``-j 5``: the limit never changes and every request is sent at once
    to wait in the server's queue, inside its ``latency_ms``; under ``-j auto`` most waited
    in mtrun instead (``queued_ms``), sent one at a time once the queue was seen. (Their
    latencies are not compared: two runs on a shared machine, and half of a batch this
    small is the opening round, queued in the server under both.)"""
    fixed = run_batch(server, tmp_path, "-j", str(BATCH))
    assert fixed["limit_changes"] == []  # -j N does not look for a queue
    # A slot each: no request waited in mtrun anything like a service time.
    assert max(figures(fixed, "queued_ms")) < min(figures(fixed, "latency_ms"))
    waited = [queued for queued in figures(auto_plain, "queued_ms") if queued >= 1.0]
    assert len(waited) >= BATCH  # the fifth first turn, and every second turn behind the cut


def test_j_auto_goes_past_the_start_against_a_server_that_batches(
    batching_server: TransformersServe, tmp_path: Path
) -> None:
    """With continuous batching the opening round comes back together: no queue, so the
    limit first rises past the start of four instead of being cut (the contrast that shows
    the cut above is the server's one slot, not a slow machine). Later cuts may come: on a
    CPU each step of a bigger batch is slower, which looks like a queue, and is one."""
    result = run_batch(batching_server, tmp_path, "-j", "auto")
    changes = result["limit_changes"]
    assert changes and changes[0]["limit"] > AUTO_START
    assert max(change["limit"] for change in changes) > 2 * AUTO_START
