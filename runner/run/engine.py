"""The replay engine: runs a batch of conversations, turn by turn, many at once.

Each conversation is a strict sequence: send the history, append the
assistant message exactly as returned, append the next user turn, send again.
A turn whose answers call tools is several requests, its steps (``steps.py``).
Up to ``concurrency`` requests are in flight at once (and a quarter more
conversations are running, see ``conversations_in_flight`` and ``seats.py``),
on one event loop and one shared HTTP connection pool. Histories, records and answers
exist only for the conversations in flight: each finished conversation is
written out and dropped. The batch's specs and a status per conversation
stay in memory (about 1 KB for a two-turn conversation), because the
longest conversations go first and a run's summary covers them all.

A turn that fails for good ends its conversation (recorded ``failed`` with
its completed turns and the error, which never enters the history); the
others carry on. ``RunControl.stop`` (Ctrl-C, a quota error) stops sending:
in-flight requests are cancelled and their conversations recorded
``interrupted``, so the output stays valid and resumable.

The engine never prints: it reports :data:`Event` objects to a callback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from runner.checks.kinds import Check, evaluate
from runner.errors import APIError, OutputError, QuotaExhaustedError
from runner.http.client import Completion, public_base_url
from runner.http.streaming import STREAM_FIELDS
from runner.run.batch import expand_batch, longest_first, request_settings
from runner.run.config import RunConfig, check_config, conversations_in_flight
from runner.run.control import RunControl
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
from runner.run.judging import Judge
from runner.run.seats import Seat, Seats
from runner.run.steps import StepChain, reasoning_by_message, step_body
from runner.run.tally import Tally, run_result
from runner.run.turns import (
    answered_status,
    continue_record,
    mark_failed,
    mark_finished,
    mark_interrupted,
    new_record,
    numbered_attempts,
)
from runner.run.wiring import send_path
from runner.send.dispatch import Slot
from runner.send.retry import AttemptRecord, GaveUp, call_with_retries
from runner.spec.model import Conversation, RequestSettings
from runner.transcripts.history import with_reasoning
from runner.transcripts.records import ConversationRecord, TurnRecord, new_run_id
from runner.transcripts.status import Status
from runner.transcripts.store import TranscriptStore

__all__ = ["RunConfig", "RunControl", "run_batch"]


async def run_batch(
    conversations: Sequence[Conversation],
    config: RunConfig,
    *,
    on_event: Callable[[Event], None] | None = None,
    control: RunControl | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> RunResult:
    """Replay every conversation into ``config.output`` and say how it went.

    Raises :class:`~runner.errors.ConfigError` or
    :class:`~runner.errors.OutputError` before any request is sent when the
    run cannot start; API failures never raise, they are recorded.
    """
    base_url = check_config(config)
    store = TranscriptStore(config.output, resume=config.resume)
    try:
        batch = _Batch(conversations, config, base_url, store, on_event, control, sleep, clock, rng)
        result = await batch.run()
    except BaseException:
        store.close(finished=False)
        raise
    try:
        store.close(finished=True)
    except OutputError as exc:  # the final compaction: the run happened, say how it went
        earlier = f"{result.output_error}; " if result.output_error else ""
        return dataclasses.replace(result, output_error=earlier + str(exc))
    return result


class _Batch:
    """One run of the engine over a batch (internal)."""

    def __init__(
        self,
        conversations: Sequence[Conversation],
        config: RunConfig,
        base_url: str,
        store: TranscriptStore,
        on_event: Callable[[Event], None] | None,
        control: RunControl | None,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
        rng: random.Random | None,
    ) -> None:
        self.conversations = expand_batch(conversations, config)
        self.config = config
        self.base_url = base_url
        self.store = store
        self.emit = on_event or (lambda _event: None)
        self.control = control or RunControl()
        self.sleep = sleep
        self.clock = clock
        self.rng = rng or random.Random()
        self.run_id = store.run_id or new_run_id()
        self.tally = Tally()
        self.output_error: OutputError | None = None
        self.pending: Iterator[Conversation] = iter(())
        """The conversations no worker has taken yet, longest first."""
        self.seats = Seats(conversations_in_flight(config.ceiling), self._worker)

    async def run(self) -> RunResult:
        """Replay the batch through its send path, conversations in flight at once."""
        started = self.clock()
        already = self._count_resumed() if self.config.resume else 0
        report = self.store.resume_report
        self.emit(
            RunStarted(
                self.run_id,
                self.config.output,
                len(self.conversations),
                already,
                to_continue=report.to_continue,
                torn_bytes=report.torn_bytes,
                discarded=report.discarded,
            )
        )
        wiring = send_path(
            self.config,
            self.base_url,
            control=self.control,
            sleep=self.sleep,
            clock=self.clock,
            on_hold=lambda seconds, why: self.emit(SendsHeld(seconds, why)),
            spent_before=self.store.tokens_used(),
        )
        async with wiring as path:
            self.dispatch = path.dispatch
            self.judge = Judge(
                respond=path.judge,
                policy=self.config.retry,
                sleep=self.sleep,
                clock=self.clock,
                rng=self.rng,
                model=self.config.judge_model,
            )
            with self.control.on_stop(self._stop):  # a stop cancels the workers
                if already < len(self.conversations):
                    self.dispatch.check_budget()  # spent by earlier runs: send nothing
                await self._run_workers()
        return run_result(
            self.tally,
            self.conversations,
            run_id=self.run_id,
            output=self.config.output,
            already=already,
            wall=self.clock() - started,
            dispatch=self.dispatch,
            control=self.control,
            output_error=self.output_error,
        )

    def _count_resumed(self) -> int:
        """Check the output can be resumed with this batch; count what it already finished."""
        already = 0
        for conv in self.conversations:
            self.store.check_resumable(conv, request_settings(conv, self.config).fingerprint())
            if self.store.is_completed(conv.id):
                already += 1
                self.tally.count_finished(conv.id, self.store.status(conv.id) or Status.COMPLETED)
        self.store.check_same_batch()
        return already

    async def _run_workers(self) -> None:
        """Run the conversations still to run on workers; raise what no stop explains."""
        self.pending = longest_first(self.conversations, skip=self.store.is_completed)
        try:
            failures = await self.seats.run()
        except BaseException:
            # The run itself was cancelled: let every conversation record
            # itself as interrupted before the store is closed.
            self.control.stop("cancelled")
            await asyncio.gather(*self.seats.tasks, return_exceptions=True)
            raise
        for failure in failures:
            # A worker cancelled by a stop (perhaps before it started) is fine;
            # anything else is a bug in mtrun and must not pass silently.
            if not (isinstance(failure, asyncio.CancelledError) and self.control.stopping):
                raise failure

    def _stop(self, reason: str) -> None:
        self.emit(RunStopping(reason))
        self.seats.stopped = True
        current = asyncio.current_task()
        for task in self.seats.tasks:
            if task is not current:
                task.cancel()

    async def _worker(self, seat: Seat) -> None:
        try:
            await self._work(seat)
        except Exception:
            # A bug: stop the others cleanly (they record themselves as
            # interrupted), then let run() raise it.
            self.control.stop("stopped by an internal error")
            raise

    async def _work(self, seat: Seat) -> None:
        while not self.control.stopping and not seat.handed:
            conversation = next(self.pending, None)
            if conversation is None:
                return
            self.tally.started += 1
            try:
                await self._replay(conversation, seat)
            except asyncio.CancelledError:
                if not self.control.stopping:
                    raise
            except OutputError as exc:
                self.output_error = exc
                self.control.stop(str(exc))
                return

    async def _replay(self, conversation: Conversation, seat: Seat) -> None:
        settings = request_settings(conversation, self.config)
        record = new_record(conversation, settings, self.run_id, public_base_url(self.base_url))
        earlier_attempts, partial = continue_record(record, self.store.progress(conversation.id))
        try:
            for index in range(len(record.turns), len(conversation.turns)):
                await self._turn(settings, record, index, earlier_attempts, partial, seat)
                earlier_attempts, partial = [], None
                if record.status == Status.FAILED:
                    break
            else:
                record.status = answered_status(record)
        except asyncio.CancelledError:
            if record.finished_at is None:
                mark_interrupted(record, self.control.reason or "cancelled")
                await asyncio.shield(self._finish(record, conversation))
            raise
        await self._finish(record, conversation)

    async def _turn(
        self,
        settings: RequestSettings,
        record: ConversationRecord,
        index: int,
        earlier_attempts: list[dict[str, Any]],
        partial: TurnRecord | None,
        seat: Seat,
    ) -> None:
        conversation = settings.conversation
        turn_spec = conversation.turns[index]
        if partial is None:
            record.messages.append({"role": "user", "content": turn_spec.content})
            partial = TurnRecord(
                index=index,
                message_index=len(record.messages) - 1,
                attempts=[],
                params=dict(turn_spec.params) or None,
            )
        chain = StepChain(partial, record, conversation.max_tool_steps)
        turn = chain.turn
        while True:
            limit = chain.ready(turn_spec.tools)  # a resumed chain may be at its end
            if limit is not None:
                mark_failed(record, chain.ended(), limit)
                return
            try:
                completion, attempts = await self._send(settings, record, index, chain, seat)
            except GaveUp as gave_up:
                chain.add_attempts(numbered_attempts(earlier_attempts, gave_up.attempts))
                self._fail(record, chain.ended(), gave_up.error)
                return
            except asyncio.CancelledError:
                chain.interrupted(self.control.reason or "cancelled")
                raise
            chain.add_attempts(numbered_attempts(earlier_attempts, attempts))
            earlier_attempts = []
            self.dispatch.count_tokens(completion)
            last = attempts[-1]
            problem = chain.answered(completion, last.latency_ms, turn_spec.tools, last.queued_ms)
            if problem is not None:
                mark_failed(record, chain.ended(), problem)
                return
            if chain.finished:
                break
            await self.store.record_step(record, turn)
        record.turns.append(turn)
        checks = conversation.checks_for(index)
        if checks:
            turn.checks = await self._check(settings, record, turn, chain, checks)
        self.tally.turns += 1
        if index + 1 < len(conversation.turns):
            await self.store.record_turn(record, turn)
        self.emit(TurnCompleted(conversation.id, index, len(conversation.turns), turn.latency_ms))

    async def _send(
        self,
        settings: RequestSettings,
        record: ConversationRecord,
        index: int,
        chain: StepChain,
        seat: Seat,
    ) -> tuple[Completion, list[AttemptRecord]]:
        """Send turn ``index``'s next step with the history so far, retried; raises GaveUp."""
        conversation_id = settings.conversation.id
        step = chain.step
        # A snapshot: the history grows after this request, recorders keep the body.
        reasoning = reasoning_by_message(record, chain.steps)
        messages = with_reasoning(record.messages, reasoning, settings.reasoning)
        body = step_body(settings.turn_body(index, messages), step)
        if self.config.stream:
            body.update(STREAM_FIELDS)

        def on_retry(attempt: AttemptRecord) -> None:
            self.tally.retries += 1
            self.emit(
                RetryScheduled(
                    conversation_id,
                    index,
                    attempt.number,
                    attempt.outcome,
                    attempt.message,
                    attempt.wait_s,
                )
            )

        slot = Slot()
        turns_left = len(settings.conversation.turns) - index

        async def prepare() -> None:
            await self.dispatch.wait_to_send(
                body, slot, continuing=index > 0 or step > 0, remaining=turns_left
            )
            if turns_left == 1 and not settings.conversation.turns[index].tools.tools:
                seat.hand_on()  # the last request has its slot (seats.py); with tools, maybe not

        async def attempt() -> Completion:
            return await self.dispatch.send(body, slot, conversation_id=conversation_id, turn=index)

        return await call_with_retries(
            attempt,
            self.config.retry,
            sleep=self.sleep,
            clock=self.clock,
            rng=self.rng,
            on_retry=on_retry,
            prepare=prepare,
            back_off=self.dispatch.back_off,
        )

    async def _check(
        self,
        settings: RequestSettings,
        record: ConversationRecord,
        turn: TurnRecord,
        chain: StepChain,
        checks: tuple[Check, ...],
    ) -> list[dict[str, Any]]:
        """Evaluate the expectations on one answer; judge checks ask the judge model."""
        observation = chain.observation(settings.conversation.turns[turn.index].tools)
        results = []
        for check in checks:
            if check.kind == "judge":
                result = await self.judge.grade(
                    check,
                    list(record.messages),
                    answer_model=settings.model,
                    conversation_id=record.id,
                    turn=turn.index,
                )
            else:
                result = evaluate(check, observation)
            results.append(result)
            self.tally.count_check(record, turn.index, result)
        return [r.as_dict() for r in results]

    def _fail(self, record: ConversationRecord, turn: TurnRecord, error: APIError) -> None:
        mark_failed(record, turn, error)
        if isinstance(error, QuotaExhaustedError):
            self.control.stop(
                f"the API says the quota or billing is exhausted ({error.message}); "
                "fix the account, then run again with --resume"
            )

    async def _finish(self, record: ConversationRecord, conversation: Conversation) -> None:
        mark_finished(record, conversation, self.config.shard)
        self.store.append_conversation(record)
        self.tally.count_finished(record.id, record.status)
        error = None
        if record.error is not None:
            error = str(record.error.get("message"))
        if record.status == Status.FAILED:
            self.tally.count_failure(record, error)
        self.emit(
            ConversationFinished(
                conversation.id,
                conversation.source,
                record.status,
                record.completed_turns,
                len(conversation.turns),
                error,
            )
        )
        # Counted and reported above even if a stop cancels this wait: the
        # line is written; the fsync it waits for goes on regardless.
        await self.store.flush()
