"""The send path a run is wired from: HTTP clients, fixtures and the dispatcher.

One client per endpoint (the answers', and the judge's when
``--judge-base-url`` names another), both behind one fixture folder when
recording or replaying (so one folder owns each conversation's file), then
the :class:`~runner.send.dispatch.Dispatcher` that holds, paces and limits
every request. On the answers' endpoint, judge requests share its limits
(slots, pacing, Retry-After holds, the token budget); another endpoint has
limits of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx

from runner.http.client import MOCK_BASE_URL, ChatClient
from runner.run.config import AUTO, RunConfig
from runner.run.control import RunControl
from runner.send.dispatch import Dispatcher
from runner.send.fixtures import FixtureFolder
from runner.send.responder import Responder, by_purpose, live


@dataclass(frozen=True)
class SendPath:
    """What the engine sends through: answers via ``dispatch``, judge requests via ``judge``."""

    dispatch: Dispatcher
    """Holds, paces and limits the answers' requests (and the judge's on the same endpoint)."""
    judge: Responder
    """Where judge requests go."""


@contextlib.asynccontextmanager
async def send_path(
    config: RunConfig,
    base_url: str,
    *,
    control: RunControl,
    sleep: Callable[[float], Awaitable[None]],
    clock: Callable[[], float],
    on_hold: Callable[[float, str], None],
    spent_before: int,
) -> AsyncIterator[SendPath]:
    """The send path for ``config``, its HTTP clients open while the block runs."""
    transport = _transport(config, base_url)
    client = _client(config, base_url, transport, clock)
    judge_client = None
    if config.judge_base_url is not None:
        judge_client = _client(config, config.judge_base_url, transport, clock)
    upstream = live(client.complete)
    if judge_client is not None:
        upstream = by_purpose(upstream, live(judge_client.complete))
    respond = _fixtures(config, upstream)
    dispatch = Dispatcher(
        respond,
        base_url=base_url,
        control=control,
        ceiling=config.ceiling,
        initial_limit=config.starting_limit,
        rpm=config.rpm,
        tpm=config.tpm,
        budget_tokens=config.budget_tokens,
        sleep=sleep,
        clock=clock,
        max_hold=config.retry.max_retry_after,
        timeout=config.timeout,
        watch_queue=config.concurrency == AUTO,
        on_hold=on_hold,
        spent_before=spent_before,
    )
    judge = respond if judge_client is not None else dispatch.ask_judge
    async with client, judge_client or contextlib.nullcontext():
        yield SendPath(dispatch, judge)


def _transport(config: RunConfig, base_url: str) -> httpx.AsyncBaseTransport | None:
    """The configured transport; the offline backend for ``mock://``; None for the network."""
    if config.transport is None and base_url == MOCK_BASE_URL:
        from runner.http.mock import OfflineBackend

        return OfflineBackend()
    return config.transport


def _client(
    config: RunConfig,
    base_url: str,
    transport: httpx.AsyncBaseTransport | None,
    clock: Callable[[], float],
) -> ChatClient:
    return ChatClient(
        base_url,
        api_key=config.api_key,
        timeout=config.timeout,
        max_connections=config.ceiling,
        transport=transport,
        clock=clock,
    )


def _fixtures(config: RunConfig, upstream: Responder) -> Responder:
    """``upstream`` behind the fixture folder, when recording or replaying."""
    folder = config.replay or config.record
    if folder is None:
        return upstream
    return FixtureFolder(
        folder,
        replay=config.replay is not None,
        record=config.record is not None,
        upstream=upstream,
    )
