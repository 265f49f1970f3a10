"""Progress and summary rendering."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest
from virtualtime import RecordedSleep, clock, run_virtual

from runner.cli.progress import ProgressPrinter as Progress  # renamed: the CLI's printer
from runner.cli.progress import safe, summary_lines
from runner.run.events import (
    ConversationFinished,
    Failure,
    RetryScheduled,
    RunResult,
    RunStarted,
    RunStopping,
    SendsHeld,
    TurnCompleted,
)


def started(total: int = 3, already: int = 0) -> RunStarted:
    return RunStarted("RUN", Path("out.jsonl"), total, already, to_continue=1, torn_bytes=12)


def result(**counts: Any) -> RunResult:
    """A run's result: nothing counted but what ``counts`` says."""
    nothing: dict[str, Any] = {
        "run_id": "RUN", "output": Path("x.jsonl"), "total": 0, "completed": 0, "failed": 0,
        "interrupted": 0, "not_started": 0, "already_completed": 0, "checks_failed": 0,
        "turns": 0, "prompt_tokens": 0, "completion_tokens": 0, "retries": 0,
        "wall_seconds": 1.0, "stop_reason": None, "interrupted_by_user": False, "failures": (),
    }  # fmt: skip
    return RunResult(**{**nothing, **counts})


def test_plain_lines_for_logs() -> None:
    out = io.StringIO()
    progress = Progress(out, live=False)
    progress(started(3, 1))
    progress(TurnCompleted("a", 0, 2, 10.0))
    progress(RetryScheduled("a", 1, 1, "http_429", "HTTP 429: slow down", 2.5))
    progress(ConversationFinished("a", "a.yaml", "completed", 2, 2, None))
    progress(ConversationFinished("b", "b.yaml", "failed", 1, 3, "HTTP 400: bad"))
    progress(RunStopping("interrupted by Ctrl-C"))
    progress.close()
    assert out.getvalue().splitlines() == [
        "run RUN: 3 conversations -> out.jsonl; resuming: 1 already completed, 1 to continue; "
        "cut an incomplete last line (12 bytes) left by a crash",
        "retry  a turn 2 attempt 1: HTTP 429: slow down, retrying in 2.5s",
        "completed   a (2/2 turns)",
        "failed      b (1/3 turns): HTTP 400: bad",
        "stopping: interrupted by Ctrl-C",
    ]


def test_live_status_line_is_redrawn_and_ends_with_the_final_counts() -> None:
    out = io.StringIO()

    async def go() -> None:
        progress = Progress(out, live=True, clock=clock)
        progress(started(2))
        await asyncio.sleep(1.0)
        progress(ConversationFinished("a", "a.yaml", "completed", 1, 1, None))
        progress(ConversationFinished("b", "b.yaml", "completed", 1, 1, None))  # within 0.1 s
        progress.close()

    run_virtual(go())
    text = out.getvalue()
    assert "completed   a" not in text  # a terminal gets counts, not a line per conversation
    assert text.endswith("\r\x1b[2K[2/2 conversations | 0 turns | 0 failed | 0 retries | 00:01]\n")


def test_control_characters_from_outside_are_made_visible() -> None:
    assert safe("red \x1b[31mtext\x1b[0m\r\n") == "red \\x1b[31mtext\\x1b[0m\\r\\n"
    out = io.StringIO()
    Progress(out, live=False)(ConversationFinished("\x1b]0;x\x07", "s", "failed", 0, 1, "e\x1b[2J"))
    assert "\x1b" not in out.getvalue()


def test_summary_names_failures_and_the_output() -> None:
    failure = Failure("conv-1", "a.yaml", 1, "HTTP 400: too long")
    run = result(
        output=Path("outputs/x.jsonl"), total=5, completed=3, failed=1, interrupted=1,
        already_completed=1, turns=7, prompt_tokens=1000, completion_tokens=234, retries=2,
        wall_seconds=3.25, failures=(failure,),
    )  # fmt: skip
    assert summary_lines(run) == [
        "5 conversations: 3 completed (1 before this run), 1 failed, 1 interrupted",
        "7 turns, 1,234 tokens (1,000 prompt + 234 completion), 2 retries, 3.2s",
        "  failed: conv-1 (a.yaml) turn 2: HTTP 400: too long",
        "transcripts: outputs/x.jsonl",
    ]


def test_the_live_line_ticks_on_its_own_and_says_until_when_sends_are_held() -> None:
    out = io.StringIO()
    sleeps = RecordedSleep()

    async def go() -> None:
        progress = Progress(out, live=True, clock=clock)
        progress(started(2))
        progress(SendsHeld(30.0, "HTTP 429: slow down"))
        ticker = asyncio.ensure_future(progress.ticking(sleep=sleeps))
        await asyncio.sleep(32.5)
        ticker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await ticker

    run_virtual(go())
    assert sleeps.waits == [1.0] * 33  # the ticker's only wait; cancelled in the 33rd
    frames = out.getvalue().split("\r\x1b[2K")
    base = "[0/2 conversations | 0 turns | 0 failed | 0 retries | "
    assert len(frames) == 2 + 32  # the first line and its status, then a frame a second
    assert frames[1] == base + "00:00]"
    assert frames[2] == base + "00:01 | sends held by Retry-After, 00:29 left]"
    assert frames[3] == base + "00:02 | sends held by Retry-After, 00:28 left]"
    assert frames[30] == base + "00:29 | sends held by Retry-After, 00:01 left]"
    assert frames[31] == base + "00:30]"  # the hold is over
    assert frames[-1] == base + "00:32]"
    assert "HTTP 429" not in out.getvalue()  # a terminal gets the status line, not a line each


def test_a_hold_is_one_plain_line_in_logs() -> None:
    out = io.StringIO()
    progress = Progress(out, live=False)
    progress(SendsHeld(12.5, "HTTP 429: slow down"))
    progress.tick()  # nothing to redraw in a log
    assert out.getvalue().splitlines() == [
        "held   every request waits 12.5s (Retry-After): HTTP 429: slow down"
    ]


def test_one_of_a_kind_is_said_in_the_singular() -> None:
    out = io.StringIO()
    progress = Progress(out, live=False)
    progress(RunStarted("RUN", Path("out.jsonl"), 1, 0, to_continue=0, torn_bytes=0))
    progress.close()
    assert out.getvalue().splitlines() == ["run RUN: 1 conversation -> out.jsonl"]
    run = result(total=1, completed=1, checks_failed=1, turns=1, prompt_tokens=10,
                 completion_tokens=5, retries=1)  # fmt: skip
    assert summary_lines(run)[:2] == [
        "1 conversation: 1 completed, 1 with failed checks, 0 failed",
        "1 turn, 15 tokens (10 prompt + 5 completion), 1 retry, 1.0s",
    ]


def result_of(count: int) -> RunResult:
    """A run of ``count`` conversations, each count of the result ``count`` too."""
    return result(
        total=count, completed=count, turns=count, prompt_tokens=count, retries=count,
        rate_limited=count, rate_limit_wait_s=2.0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("count", "tokens", "requests"),
    [
        (1, "1 token", "1 request"),
        (2, "2 tokens", "2 requests"),
        (1_000, "1,000 tokens", "1,000 requests"),
    ],
)
def test_the_summary_counts_tokens_and_refused_requests_in_the_singular_for_one(
    count: int, tokens: str, requests: str
) -> None:
    lines = summary_lines(result_of(count))
    assert lines[1].split(", ")[1].startswith(f"{tokens} (")
    assert f"rate limits: {requests} answered 429, sends held 2.0s (Retry-After, pacing)" in lines


@pytest.mark.parametrize(
    ("count", "said"),
    [
        (1, ("1/1 turn", "1 byte")),
        (2, ("2/2 turns", "2 bytes")),
        (1_000, ("1,000/1,000 turns", "1,000 bytes")),
    ],
)
def test_the_lines_of_a_log_count_one_in_the_singular(count: int, said: tuple[str, str]) -> None:
    out = io.StringIO()
    progress = Progress(out, live=False)
    progress(RunStarted("RUN", Path("out.jsonl"), 1, 0, to_continue=0, torn_bytes=count))
    progress(ConversationFinished("a", "a.yaml", "completed", count, count, None))
    assert out.getvalue().splitlines() == [
        "run RUN: 1 conversation -> out.jsonl; "
        f"cut an incomplete last line ({said[1]}) left by a crash",
        f"completed   a ({said[0]})",
    ]


@pytest.mark.parametrize(
    ("count", "said"),
    [
        (1, "[1/1 conversation | 1 turn | 0 failed | 1 retry | 00:00]"),
        (2, "[2/2 conversations | 2 turns | 0 failed | 2 retries | 00:00]"),
        (1_000, "[1,000/1,000 conversations | 1,000 turns | 0 failed | 1,000 retries | 00:00]"),
    ],
)
def test_the_live_status_line_counts_one_in_the_singular(count: int, said: str) -> None:
    out = io.StringIO()

    async def go() -> None:
        progress = Progress(out, live=True, clock=clock)
        progress(started(count))
        for i in range(count):
            progress(TurnCompleted(f"c{i}", 0, 1, 10.0))
            progress(RetryScheduled(f"c{i}", 0, 1, "http_429", "HTTP 429: slow down", 0.0))
            progress(ConversationFinished(f"c{i}", "a.yaml", "completed", 1, 1, None))
        progress.close()

    run_virtual(go())
    assert out.getvalue().endswith(f"\r\x1b[2K{said}\n")
