"""Terminal rendering of a run: live progress on stderr and the closing summary.

On a terminal, one status line is redrawn in place, on every event and, via
:meth:`ProgressPrinter.ticking`, every second even when nothing happens (a run held
by a Retry-After must not look hung); elsewhere (CI logs, a pipe) each event
is one plain line. Model output never reaches the terminal
from here, only ids, counts and error messages, with control characters
escaped so that nothing from a file or an API can drive the terminal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TextIO

from runner.review.view import visible as safe
from runner.run.events import (
    ConversationFinished,
    Event,
    RetryScheduled,
    RunResult,
    RunStarted,
    RunStopping,
    SendsHeld,
    TurnCompleted,
)
from runner.transcripts.status import Status
from runner.words import plural

MAX_FAILURES_SHOWN = 20
TICK_S = 1.0
"""How often the live status line is redrawn when nothing happens."""


class ProgressPrinter:
    """Turns engine events into progress output on a stream."""

    def __init__(
        self,
        stream: TextIO,
        *,
        live: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.live = live
        self.clock = clock
        self.started = clock()
        self.total = 0
        self.done = 0
        self.failed = 0
        self.turns = 0
        self.retries = 0
        self._last_draw = 0.0
        self._drawn = False
        self._held_until = 0.0

    def __call__(self, event: Event) -> None:
        """Handle one engine event."""
        if isinstance(event, RunStarted):
            self.total = event.total - event.already_completed
            self._line(self._started_text(event))
            for note in event.discarded:
                self._line(f"resume: {safe(note)}")
        elif isinstance(event, TurnCompleted):
            self.turns += 1
        elif isinstance(event, RetryScheduled):
            self.retries += 1
            wait = f", retrying in {event.wait_s:.1f}s" if event.wait_s is not None else ""
            self._line(
                f"retry  {safe(event.conversation_id)} turn {event.index + 1} "
                f"attempt {event.number}: {safe(event.message or event.outcome)}{wait}",
                quiet_when_live=True,
            )
        elif isinstance(event, ConversationFinished):
            self.done += 1
            self.failed += event.status == Status.FAILED
            if event.status == Status.FAILED or not self.live:
                detail = (
                    f": {safe(event.error)}"
                    if event.error and event.status != Status.COMPLETED
                    else ""
                )
                self._line(
                    f"{event.status:<11} {safe(event.conversation_id)} "
                    f"({event.completed_turns:,}/{plural(event.turns, 'turn')}){detail}"
                )
        elif isinstance(event, SendsHeld):
            self._held_until = self.clock() + event.seconds
            self._line(
                f"held   every request waits {event.seconds:.1f}s (Retry-After): "
                f"{safe(event.reason)}",
                quiet_when_live=True,
            )
        elif isinstance(event, RunStopping):
            self._line(f"stopping: {safe(event.reason)}")
        self._draw()

    def tick(self) -> None:
        """Redraw the live status line (its clock and any hold) though nothing happened."""
        self._draw(force=True)

    async def ticking(
        self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, every: float = TICK_S
    ) -> None:
        """Tick every ``every`` seconds until cancelled: run it beside the run, on a terminal."""
        while True:
            await sleep(every)
            self.tick()

    def _started_text(self, event: RunStarted) -> str:
        parts = [f"run {event.run_id}: {plural(event.total, 'conversation')} -> {event.output}"]
        if event.already_completed or event.to_continue:
            parts.append(
                f"resuming: {event.already_completed} already completed, "
                f"{event.to_continue} to continue"
            )
        if event.torn_bytes:
            torn = plural(event.torn_bytes, "byte")
            parts.append(f"cut an incomplete last line ({torn}) left by a crash")
        return "; ".join(parts)

    def _line(self, text: str, *, quiet_when_live: bool = False) -> None:
        if self.live and quiet_when_live:
            return
        self._clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def _status(self) -> str:
        now = self.clock()
        held = self._held_until - now
        return (
            f"[{self.done:,}/{plural(self.total, 'conversation')} | {plural(self.turns, 'turn')} | "
            f"{self.failed:,} failed | {plural(self.retries, 'retry', 'retries')} | "
            f"{_clock(now - self.started)}"
            + (f" | sends held by Retry-After, {_clock(held + 0.999)} left" if held > 0 else "")
            + "]"
        )

    def _draw(self, *, force: bool = False) -> None:
        if not self.live:
            return
        now = self.clock()
        if now - self._last_draw < 0.1 and not force:
            return
        self._last_draw = now
        self.stream.write("\r\x1b[2K" + self._status())
        self.stream.flush()
        self._drawn = True

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[2K")
            self._drawn = False

    def close(self) -> None:
        """Draw the final status and end the line so the summary starts on its own."""
        if self._drawn:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def summary_lines(result: RunResult, *, min_pass_rate: float = 1.0) -> list[str]:
    """The end-of-run summary, one string a line."""
    counts = [f"{result.completed} completed"]
    if result.already_completed:
        counts[0] += f" ({result.already_completed} before this run)"
    if result.checks_failed:
        counts.append(Status.counted(result.checks_failed, Status.CHECKS_FAILED))
    counts.append(f"{result.failed} failed")
    if result.interrupted:
        counts.append(f"{result.interrupted} interrupted")
    if result.not_started:
        counts.append(f"{result.not_started} not started")
    lines = [
        f"{plural(result.total, 'conversation')}: {', '.join(counts)}",
        f"{plural(result.turns, 'turn')}, {plural(result.total_tokens, 'token')} "
        f"({result.prompt_tokens:,} prompt + {result.completion_tokens:,} completion), "
        f"{plural(result.retries, 'retry', 'retries')}, {result.wall_seconds:.1f}s",
    ]
    for failure in result.failures[:MAX_FAILURES_SHOWN]:
        lines.append(
            f"  failed: {safe(failure.conversation_id)} ({safe(failure.source)}) "
            f"turn {failure.turn + 1}: {safe(failure.message)}"
        )
    if len(result.failures) > MAX_FAILURES_SHOWN:
        lines.append(f"  ... and {len(result.failures) - MAX_FAILURES_SHOWN} more failed")
    for check in result.check_failures[:MAX_FAILURES_SHOWN]:
        lines.append(
            f"  check failed: {safe(check.conversation_id)} ({safe(check.source)}) "
            f"turn {check.turn + 1}: {check.kind}: {safe(check.message)}"
        )
        lines.append(f"    expected: {safe(check.expected)}")
        lines.append(f"    seen:     {safe(check.seen)}")
    if len(result.check_failures) > MAX_FAILURES_SHOWN:
        more = len(result.check_failures) - MAX_FAILURES_SHOWN
        lines.append(f"  ... and {plural(more, 'more failed check')}")
    for rate in result.pass_rates:
        verdict = "ok" if rate.rate >= min_pass_rate else f"below {min_pass_rate:.0%}"
        lines.append(
            f"  pass rate: {safe(rate.conversation_id)} {rate.passed}/{rate.runs} "
            f"({rate.rate:.0%}) {verdict}"
        )
    if result.rate_limited or result.limit_changes:
        limits = " -> ".join(str(change.limit) for change in result.limit_changes)
        lines.append(
            f"rate limits: {plural(result.rate_limited, 'request')} answered 429, "
            f"sends held {result.rate_limit_wait_s:.1f}s (Retry-After, pacing)"
            + (f"; concurrency {limits}" if limits else "")
        )
    if result.stop_reason:
        lines.append(f"stopped early: {safe(result.stop_reason)}")
    lines.append(f"transcripts: {result.output}")
    return lines


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
