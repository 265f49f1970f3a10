"""The replay engine: runs a batch of conversations, turn by turn, many at once.

Each conversation is a strict sequence: send the history, append the
assistant message exactly as returned, append the next user turn, send again.
Up to ``concurrency`` requests are in flight at once (and a quarter more
conversations are running, see ``conversations_in_flight``), on one event
loop and one shared HTTP connection pool. Histories, records and answers
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
import contextlib
import dataclasses
import json
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from runner.checks.kinds import Check, Observation, evaluate
from runner.errors import APIError, ConfigError, OutputError, QuotaExhaustedError
from runner.http.client import (
    DEFAULT_BASE_URL,
    MOCK_BASE_URL,
    ApiKey,
    ChatClient,
    Completion,
    check_base_url,
    is_loopback,
    public_base_url,
)
from runner.http.streaming import STREAM_FIELDS
from runner.run.events import (
    CheckFailure,
    ConversationFinished,
    Event,
    Failure,
    PassRate,
    RetryScheduled,
    RunResult,
    RunStarted,
    RunStopping,
    SendsHeld,
    TurnCompleted,
)
from runner.run.judging import Judge
from runner.run.shard import Shard
from runner.run.variants import Variants
from runner.send.dispatch import Dispatcher, Slot
from runner.send.fixtures import FixtureFolder
from runner.send.responder import Responder, by_purpose, live
from runner.send.retry import AttemptRecord, GaveUp, RetryPolicy, call_with_retries
from runner.spec.model import Conversation, RequestPlan, plan_request
from runner.transcripts.records import ConversationRecord, TurnRecord, new_run_id, utc_now
from runner.transcripts.store import TranscriptStore

DEFAULT_CONCURRENCY = 8
DEFAULT_TIMEOUT = 120.0


def conversations_in_flight(concurrency: int) -> int:
    """How many conversations run at once for ``concurrency`` requests in flight.

    A conversation between two turns (recording the answer, checking it)
    sends nothing; a quarter more conversations than request slots means
    another one is always waiting to take a freed slot at once, so the
    server never idles on our turnaround. Below 4 there is no headroom:
    ``-j 1`` replays one conversation after another.
    """
    return concurrency + concurrency // 4


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs besides the conversations."""

    output: Path
    """The transcript file (JSON Lines)."""
    resume: bool = False
    """Continue an existing output instead of refusing to touch it."""
    base_url: str = DEFAULT_BASE_URL
    """Endpoint root; requests go to ``{base_url}/chat/completions``. ``mock://`` is offline."""
    api_key: ApiKey | None = None
    """Sent as a bearer token; required unless the endpoint is loopback or offline."""
    model: str | None = None
    """``--model``: overrides every conversation's model."""
    models: tuple[str, ...] = ()
    """Several ``--model``: the batch runs once per model (ids become ``ID@MODEL``)."""
    env_model: str | None = None
    """``MTRUN_MODEL``: used where a conversation names no model."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """``--param`` overrides; a None value removes that parameter."""
    concurrency: int = DEFAULT_CONCURRENCY
    """The ceiling for requests in flight (a quarter more conversations run at once)."""
    initial_limit: int | None = None
    """Requests in flight to start with (default: the ceiling); 429s lower it, clean rounds
    raise it again up to the ceiling."""
    timeout: float = DEFAULT_TIMEOUT
    """Seconds one request may take."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """How failed requests are retried."""
    transport: httpx.AsyncBaseTransport | None = None
    """HTTP transport seam: None for the real network (or the offline backend for mock://)."""
    allow_insecure_key: bool = False
    """Allow sending the key over plain http to a host that is not this machine."""
    record: Path | None = None
    """Fixture folder to record every answer into (``--record``)."""
    replay: Path | None = None
    """Fixture folder to answer from with no network (``--replay``); a miss fails the turn."""
    judge_model: str | None = None
    """Model for ``judge`` checks that name none (default: the conversation's model)."""
    judge_base_url: str | None = None
    """Endpoint for judge requests (default: the same endpoint as the answers)."""
    repeat: int = 1
    """Run each conversation this many times, independently (ids get ``#1``, ``#2``, ...)."""
    stream: bool = False
    """Ask for streamed answers (server-sent events); records time to first token."""
    budget_tokens: int | None = None
    """Stop sending once the output has used this many tokens (prompt + completion),
    counting what the runs it resumes used."""
    shard: Shard | None = None
    """Run only this shard's part of the batch (``--shard K/N``)."""
    rpm: float | None = None
    """Requests per minute to stay under (``--rpm``)."""
    tpm: float | None = None
    """Tokens per minute to stay under (``--tpm``): prompt plus max_tokens, booked ahead."""


class RunControl:
    """Lets the caller (a signal handler, a test) stop a run cleanly."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.by_user = False
        self._on_stop: Callable[[str], None] | None = None

    @property
    def stopping(self) -> bool:
        """Whether a stop was asked for."""
        return self.reason is not None

    def stop(self, reason: str, *, by_user: bool = False) -> None:
        """Send nothing more; record in-flight conversations as interrupted."""
        if self.reason is not None:
            return
        self.reason = reason
        self.by_user = by_user
        if self._on_stop is not None:
            self._on_stop(reason)


def check_config(config: RunConfig) -> str:
    """Validate the endpoint settings; return the normalised base URL."""
    base_url = check_base_url(config.base_url)
    try:
        json.dumps(dict(config.params), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"request parameters must be plain JSON values: {exc}") from None
    if config.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    if config.model is not None and config.models:
        raise ConfigError("give one model, or several models, not both")
    if config.repeat < 1:
        raise ConfigError("--repeat must be at least 1")
    if config.budget_tokens is not None and config.budget_tokens < 1:
        raise ConfigError("--budget-tokens must be at least 1")
    if config.judge_base_url is not None:
        check_base_url(config.judge_base_url)
    if config.timeout <= 0:
        raise ConfigError("--timeout must be more than 0 seconds")
    if config.record and config.replay and config.record != config.replay:
        raise ConfigError(
            "--record and --replay name different folders; give them the same folder to "
            "replay what is recorded and record only what is missing"
        )
    offline = config.replay is not None and config.record is None
    if offline and config.replay is not None and not config.replay.is_dir():
        raise ConfigError(f"--replay {config.replay}: no such folder; record one with --record")
    if base_url == MOCK_BASE_URL or config.transport is not None or offline:
        return base_url
    if config.api_key is None and not is_loopback(base_url):
        raise ConfigError(
            f"no API key for {public_base_url(base_url)}: set MTRUN_API_KEY (or ARCEE_API_KEY / "
            "OPENAI_API_KEY), or pick a variable with --api-key-env; use --mock to run offline"
        )
    if (
        config.api_key is not None
        and base_url.startswith("http://")
        and not is_loopback(base_url)
        and not config.allow_insecure_key
    ):
        raise ConfigError(
            f"refusing to send the API key over plain http to {public_base_url(base_url)}; "
            "use https, or pass --allow-insecure-key if this network is trusted"
        )
    return base_url


def insecure_key_warning(config: RunConfig) -> str | None:
    """What to tell the user when ``--allow-insecure-key`` lets the key go over plain http."""
    sends = config.replay is None or config.record is not None
    if not (config.allow_insecure_key and config.api_key is not None and sends):
        return None
    if not config.base_url.startswith("http://") or is_loopback(config.base_url):
        return None
    return (
        f"the API key goes over plain http to {public_base_url(config.base_url)} "
        "(--allow-insecure-key): anyone on the network path can read it"
    )


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
        if config.shard is not None:
            conversations = [c for c in conversations if config.shard.holds(c.id)]
        asked = config.models or ((config.model,) if config.model else ())
        self.conversations = Variants(conversations, asked, config.repeat)
        self.config = config
        self.base_url = base_url
        self.store = store
        self.emit = on_event or (lambda _event: None)
        self.control = control or RunControl()
        self.sleep = sleep
        self.clock = clock
        self.rng = rng or random.Random()
        self.run_id = store.run_id or new_run_id()
        self.workers: list[asyncio.Task[None]] = []
        self.counts = dict.fromkeys(
            ("completed", "checks_failed", "failed", "interrupted", "turns", "retries"), 0
        )
        self.check_failures: list[CheckFailure] = []
        self.statuses: dict[str, str] = {}
        self.failures: list[Failure] = []
        self.started = 0
        self.output_error: OutputError | None = None

    def plan(self, conversation: Conversation) -> RequestPlan:
        return plan_request(
            conversation,
            model_override=self.config.model,
            env_model=self.config.env_model,
            param_overrides=self.config.params,
        )

    async def run(self) -> RunResult:
        started = self.clock()
        already = 0
        if self.config.resume:
            for conv in self.conversations:
                plan = self.plan(conv)
                self.store.check_resumable(conv, plan.fingerprint())
                if self.store.is_completed(conv.id):
                    already += 1
                    status = self.store.status(conv.id) or "completed"
                    self.statuses[conv.id] = status
                    self.counts[status] += 1
            self.store.check_same_batch()
        self.emit(
            RunStarted(
                self.run_id,
                self.config.output,
                len(self.conversations),
                already,
                self.store.resume_report,
            )
        )
        # Longest first: a long chain of turns started last would set the batch's end.
        # Indices, not conversations: variants are made as they start (see variants.py).
        batch = self.conversations
        by_length = sorted(range(len(batch)), key=batch.turn_count, reverse=True)
        pending = (
            c for c in map(batch.__getitem__, by_length) if not self.store.is_completed(c.id)
        )
        transport = self.config.transport
        if transport is None and self.base_url == MOCK_BASE_URL:
            from runner.http.mock import OfflineBackend

            transport = OfflineBackend()
        client = ChatClient(
            self.base_url,
            api_key=self.config.api_key,
            timeout=self.config.timeout,
            max_connections=self.config.concurrency,
            transport=transport,
        )
        judge_client = None
        if self.config.judge_base_url is not None:
            judge_client = ChatClient(
                self.config.judge_base_url,
                api_key=self.config.api_key,
                timeout=self.config.timeout,
                max_connections=self.config.concurrency,
                transport=transport,
            )
        upstream = live(client.complete)
        if judge_client is not None:
            upstream = by_purpose(upstream, live(judge_client.complete))
        # One responder for both, so one fixture folder owns each conversation's file.
        respond = self._fixtures(upstream)
        self.dispatch = Dispatcher(
            respond,
            base_url=self.base_url,
            control=self.control,
            ceiling=self.config.concurrency,
            initial_limit=self.config.initial_limit,
            rpm=self.config.rpm,
            tpm=self.config.tpm,
            budget_tokens=self.config.budget_tokens,
            sleep=self.sleep,
            clock=self.clock,
            max_hold=self.config.retry.max_retry_after,
            timeout=self.config.timeout,
            on_hold=lambda seconds, why: self.emit(SendsHeld(seconds, why)),
            spent_before=self.store.tokens_used(),
        )
        # On the answers' endpoint, judge requests share its limits (slots, pacing,
        # Retry-After holds, the token budget); another endpoint has limits of its own.
        self.judge = Judge(
            respond=respond if judge_client is not None else self.dispatch.ask_judge,
            policy=self.config.retry,
            sleep=self.sleep,
            clock=self.clock,
            rng=self.rng,
            model=self.config.judge_model,
        )
        self.control._on_stop = self._stop
        if already < len(self.conversations):
            self.dispatch.check_budget()  # spent by earlier runs: send nothing
        async with client, judge_client or contextlib.nullcontext():
            self.workers = [
                asyncio.create_task(self._worker(pending))
                for _ in range(conversations_in_flight(self.config.concurrency))
            ]
            try:
                outcomes = await asyncio.gather(*self.workers, return_exceptions=True)
            except BaseException:
                # The run itself was cancelled: let every conversation record
                # itself as interrupted before the store is closed.
                self.control.stop("cancelled")
                await asyncio.gather(*self.workers, return_exceptions=True)
                raise
            for outcome in outcomes:
                # A worker cancelled by a stop (perhaps before it started) is fine;
                # anything else is a bug in mtrun and must not pass silently.
                if isinstance(outcome, BaseException) and not (
                    isinstance(outcome, asyncio.CancelledError) and self.control.stopping
                ):
                    raise outcome
        self.control._on_stop = None
        return self._result(already, self.clock() - started)

    def _fixtures(self, upstream: Responder) -> Responder:
        """``upstream`` behind the fixture folder, when recording or replaying."""
        folder = self.config.replay or self.config.record
        if folder is None:
            return upstream
        return FixtureFolder(
            folder,
            replay=self.config.replay is not None,
            record=self.config.record is not None,
            upstream=upstream,
        )

    def _stop(self, reason: str) -> None:
        self.emit(RunStopping(reason))
        current = asyncio.current_task()
        for task in self.workers:
            if task is not current:
                task.cancel()

    async def _worker(self, pending: Iterator[Conversation]) -> None:
        try:
            await self._work(pending)
        except Exception:
            # A bug: stop the others cleanly (they record themselves as
            # interrupted), then let run() raise it.
            self.control.stop("stopped by an internal error")
            raise

    async def _work(self, pending: Iterator[Conversation]) -> None:
        while not self.control.stopping:
            conversation = next(pending, None)
            if conversation is None:
                return
            self.started += 1
            try:
                await self._replay(conversation)
            except asyncio.CancelledError:
                if not self.control.stopping:
                    raise
            except OutputError as exc:
                self.output_error = exc
                self.control.stop(str(exc))
                return

    async def _replay(self, conversation: Conversation) -> None:
        plan = self.plan(conversation)
        record = ConversationRecord(
            run_id=self.run_id,
            id=conversation.id,
            source=conversation.source,
            model=plan.model,
            base_url=public_base_url(self.base_url),
            params=dict(plan.params),
            fingerprint=plan.fingerprint(),
            started_at=utc_now(),
            messages=conversation.prefix(),
        )
        earlier_attempts: list[dict[str, Any]] = []
        progress = self.store.progress(conversation.id)
        if progress is not None:
            record.started_at = progress.started_at or record.started_at
            record.turns = list(progress.turns)
            record.messages.extend(progress.exchanges)
            earlier_attempts = progress.failed_attempts
        try:
            for index in range(len(record.turns), len(conversation.turns)):
                await self._turn(plan, record, index, earlier_attempts)
                earlier_attempts = []
                if record.status == "failed":
                    break
            else:
                failed_checks = any(
                    not c.get("passed") for t in record.turns for c in t.checks or ()
                )
                record.status = "checks_failed" if failed_checks else "completed"
        except asyncio.CancelledError:
            if record.finished_at is None:
                record.status = "interrupted"
                record.error = {
                    "kind": "interrupted",
                    "message": self.control.reason or "cancelled",
                }
                await asyncio.shield(self._finish(record, conversation))
            raise
        await self._finish(record, conversation)

    async def _turn(
        self,
        plan: RequestPlan,
        record: ConversationRecord,
        index: int,
        earlier_attempts: list[dict[str, Any]],
    ) -> None:
        conversation = plan.conversation
        turn_spec = conversation.turns[index]
        record.messages.append({"role": "user", "content": turn_spec.content})
        # A snapshot: the history grows after this request, recorders keep the body.
        body = {"model": plan.model, "messages": list(record.messages), **plan.turn_params(index)}
        if self.config.stream:
            body.update(STREAM_FIELDS)

        def on_retry(attempt: AttemptRecord) -> None:
            self.counts["retries"] += 1
            self.emit(RetryScheduled(conversation.id, index, attempt))

        turn = TurnRecord(
            index=index,
            message_index=len(record.messages) - 1,
            attempts=[],
            params=dict(turn_spec.params) or None,
        )

        slot = Slot()

        async def prepare() -> None:
            await self.dispatch.wait_to_send(body, slot, continuing=index > 0)

        async def attempt() -> Completion:
            return await self.dispatch.send(body, slot, conversation_id=conversation.id, turn=index)

        try:
            completion, attempts = await call_with_retries(
                attempt,
                self.config.retry,
                sleep=self.sleep,
                clock=self.clock,
                rng=self.rng,
                on_retry=on_retry,
                prepare=prepare,
                back_off=self.dispatch.back_off,
            )
        except GaveUp as gave_up:
            turn.attempts = _number(earlier_attempts, gave_up.attempts)
            self._fail(record, turn, gave_up.error)
            return
        except asyncio.CancelledError:
            record.messages.pop()
            raise
        turn.attempts = _number(earlier_attempts, attempts)
        self._complete_turn(record, turn, completion, attempts[-1].latency_ms)
        checks = conversation.checks_for(index)
        if checks:
            turn.checks = await self._check(plan, record, turn, completion, checks)
        self.counts["turns"] += 1
        if index + 1 < len(conversation.turns):
            await self.store.record_turn(record, turn)
        self.emit(TurnCompleted(conversation.id, index, len(conversation.turns), turn.latency_ms))

    async def _check(
        self,
        plan: RequestPlan,
        record: ConversationRecord,
        turn: TurnRecord,
        completion: Completion,
        checks: tuple[Check, ...],
    ) -> list[dict[str, Any]]:
        """Evaluate the expectations on one answer; judge checks ask the judge model."""
        usage = completion.usage or {}
        tokens = usage.get("completion_tokens")
        observation = Observation(
            content=completion.content,
            finish_reason=completion.finish_reason,
            latency_ms=turn.latency_ms,
            completion_tokens=tokens if isinstance(tokens, int) else None,
        )
        results = []
        for check in checks:
            if check.kind == "judge":
                result = await self.judge.grade(
                    check,
                    list(record.messages),
                    answer_model=plan.model,
                    conversation_id=record.id,
                    turn=turn.index,
                )
            else:
                result = evaluate(check, observation)
            results.append(result)
            if not result.passed:
                self.check_failures.append(
                    CheckFailure(
                        record.id,
                        record.source,
                        turn.index,
                        result.kind,
                        result.expected,
                        result.seen,
                        result.message,
                    )
                )
        return [r.as_dict() for r in results]

    def _complete_turn(
        self,
        record: ConversationRecord,
        turn: TurnRecord,
        completion: Completion,
        latency_ms: float | None,
    ) -> None:
        record.messages.append({"role": "assistant", "content": completion.content})
        extra = {
            k: v
            for k, v in completion.message.items()
            if k not in ("role", "content") and v not in (None, [], {}, "")
        }
        turn.latency_ms = latency_ms
        turn.first_token_ms = completion.first_token_ms
        tokens = (completion.usage or {}).get("completion_tokens")
        if completion.first_token_ms is not None and latency_ms and isinstance(tokens, int):
            generating = (latency_ms - completion.first_token_ms) / 1000.0
            turn.tokens_per_s = round(tokens / generating, 1) if generating > 0 else None
        turn.usage = completion.usage
        turn.finish_reason = completion.finish_reason
        turn.response_id = completion.response_id
        turn.model = completion.model
        turn.extra = extra or None
        record.turns.append(turn)
        self.dispatch.count_tokens(completion)

    def _fail(self, record: ConversationRecord, turn: TurnRecord, error: APIError) -> None:
        turn.error = {"kind": error.kind, "status": error.status, "message": error.message}
        record.turns.append(turn)
        record.status = "failed"
        record.error = {"turn": turn.index, **turn.error}
        if isinstance(error, QuotaExhaustedError):
            self.control.stop(
                f"the API says the quota or billing is exhausted ({error.message}); "
                "fix the account, then run again with --resume"
            )

    async def _finish(self, record: ConversationRecord, conversation: Conversation) -> None:
        record.finished_at = utc_now()
        record.group = conversation.group
        record.repeat = conversation.repeat
        record.variant_of = conversation.variant_of
        if self.config.shard is not None:
            record.shard = {"index": self.config.shard.index, "count": self.config.shard.count}
        self.store.append_conversation(record)
        self.counts[record.status] += 1
        self.statuses[record.id] = record.status
        error = None
        if record.error is not None:
            error = str(record.error.get("message"))
        if record.status == "failed":
            turn = int(record.error["turn"]) if record.error else 0
            self.failures.append(
                Failure(conversation.id, conversation.source, turn, error or "failed")
            )
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

    def _pass_rates(self) -> tuple[PassRate, ...]:
        """Per repeated conversation: repetitions that completed with every check passing."""
        rates: dict[str, list[int]] = {}
        for conv in self.conversations:
            if conv.group is None or conv.id not in self.statuses:
                continue
            tally = rates.setdefault(conv.group, [0, 0])
            tally[0] += self.statuses[conv.id] == "completed"
            tally[1] += 1
        return tuple(PassRate(group, passed, runs) for group, (passed, runs) in rates.items())

    def _result(self, already: int, wall: float) -> RunResult:
        total = len(self.conversations)
        return RunResult(
            run_id=self.run_id,
            output=self.config.output,
            total=total,
            completed=self.counts["completed"],
            checks_failed=self.counts["checks_failed"],
            failed=self.counts["failed"],
            interrupted=self.counts["interrupted"],
            not_started=total - already - self.started,
            already_completed=already,
            turns=self.counts["turns"],
            prompt_tokens=self.dispatch.tokens[0],
            completion_tokens=self.dispatch.tokens[1],
            retries=self.counts["retries"],
            wall_seconds=wall,
            stop_reason=self.control.reason,
            interrupted_by_user=self.control.by_user,
            failures=tuple(self.failures),
            check_failures=tuple(self.check_failures),
            pass_rates=self._pass_rates(),
            rate_limited=self.dispatch.rate_limited,
            rate_limit_wait_s=round(self.dispatch.waited_s, 3),
            limit_changes=tuple(self.dispatch.limiter.changes),
            output_error=None if self.output_error is None else str(self.output_error),
        )


def _number(earlier: list[dict[str, Any]], attempts: list[AttemptRecord]) -> list[dict[str, Any]]:
    """Attempt records for a turn, numbered after attempts made before a resume."""
    out = [dict(a, resumed=True) for a in earlier]
    for attempt in attempts:
        data = attempt.as_dict()
        data["attempt"] = len(out) + 1
        out.append(data)
    return out
