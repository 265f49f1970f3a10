"""Progress and summary rendering."""

from __future__ import annotations

import io
from pathlib import Path

from runner.events import (
    ConversationFinished,
    Failure,
    RetryScheduled,
    RunResult,
    RunStarted,
    RunStopping,
    TurnCompleted,
)
from runner.progress import Progress, safe, summary_lines
from runner.retry import AttemptRecord
from runner.store import ResumeReport


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def started(total: int = 3, already: int = 0) -> RunStarted:
    return RunStarted("RUN", Path("out.jsonl"), total, already, ResumeReport(already, 1, 12))


def test_plain_lines_for_logs() -> None:
    out = io.StringIO()
    progress = Progress(out, live=False)
    progress(started(3, 1))
    progress(TurnCompleted("a", 0, 2, 10.0))
    attempt = AttemptRecord(1, "http_429", 429, 5.0, "HTTP 429: slow down", 2.0, 2.5)
    progress(RetryScheduled("a", 1, attempt))
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
    clock = Clock()
    progress = Progress(out, live=True, clock=clock)
    progress(started(2))
    clock.now = 1.0
    progress(ConversationFinished("a", "a.yaml", "completed", 1, 1, None))
    progress(ConversationFinished("b", "b.yaml", "completed", 1, 1, None))  # within 0.1 s
    progress.close()
    text = out.getvalue()
    assert "completed   a" not in text  # a terminal gets counts, not a line per conversation
    assert text.endswith("\r\x1b[2K[2/2 conversations | 0 turns | 0 failed | 0 retries | 00:01]\n")


def test_control_characters_from_outside_are_made_visible() -> None:
    assert safe("red \x1b[31mtext\x1b[0m\r\n") == "red \\x1b[31mtext\\x1b[0m\\r\\n"
    out = io.StringIO()
    Progress(out, live=False)(ConversationFinished("\x1b]0;x\x07", "s", "failed", 0, 1, "e\x1b[2J"))
    assert "\x1b" not in out.getvalue()


def test_summary_names_failures_and_the_output() -> None:
    result = RunResult(
        run_id="RUN",
        output=Path("outputs/x.jsonl"),
        total=5,
        completed=3,
        failed=1,
        interrupted=1,
        not_started=0,
        already_completed=1,
        checks_failed=0,
        turns=7,
        prompt_tokens=1000,
        completion_tokens=234,
        retries=2,
        wall_seconds=3.25,
        stop_reason=None,
        interrupted_by_user=False,
        failures=(Failure("conv-1", "a.yaml", 1, "HTTP 400: too long"),),
    )
    assert summary_lines(result) == [
        "5 conversations: 3 completed (1 before this run), 1 failed, 1 interrupted",
        "7 turns, 1,234 tokens (1,000 prompt + 234 completion), 2 retries, 3.2s",
        "  failed: conv-1 (a.yaml) turn 2: HTTP 400: too long",
        "transcripts: outputs/x.jsonl",
    ]
