"""What a run is asked to do: :class:`RunConfig`, its defaults and its validation.

The command line builds one ``RunConfig`` from its options, and a Python
caller builds the same one: the defaults here (``concurrency="auto"``, the
timeout, the retry policy) are the command line's defaults, so both run alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from runner.errors import ConfigError
from runner.http.endpoint import (
    DEFAULT_BASE_URL,
    MOCK_BASE_URL,
    check_base_url,
    is_loopback,
    public_base_url,
)

if TYPE_CHECKING:  # imported when used: `mtrun --help` reads AUTO_CEILING from here
    import httpx

    from runner.http.apikey import ApiKey
    from runner.run.shard import Shard
    from runner.send.retry import RetryPolicy

AUTO: Final = "auto"
"""``concurrency=AUTO`` (``-j auto``, the default): start at :data:`AUTO_START` requests in
flight, let clean rounds raise the limit up to :data:`AUTO_CEILING` while the answers show no
queue (``runner.send.queueing``)."""
AUTO_CEILING = 32
"""The most requests in flight ``-j auto`` allows."""
AUTO_START = 4
"""Requests in flight ``-j auto`` starts with: few, so that a server that serves one at a time
(llama.cpp) never queues more than a few of them before the first answers show its queue."""

DEFAULT_TIMEOUT = 120.0


def conversations_in_flight(concurrency: int) -> int:
    """How many conversations run at once for ``concurrency`` requests in flight.

    A conversation between two turns (recording the answer, checking it)
    sends nothing; a quarter more conversations than request slots means
    another one is always waiting to take a freed slot at once, so the
    server never idles on our turnaround. Below 4 there is no headroom:
    ``-j 1`` replays one conversation after another. (A conversation whose
    last request is on its way gives its seat to the next one: ``seats.py``.)
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
    concurrency: int | Literal["auto"] = AUTO
    """The ceiling for requests in flight (a quarter more conversations run at once), or
    :data:`AUTO`: up to :data:`AUTO_CEILING`, starting at :data:`AUTO_START`."""
    initial_limit: int | None = None
    """Requests in flight to start with (default: the ceiling, or :data:`AUTO_START` for
    ``auto``); overload (timeouts, 503s, with ``auto`` a queue) lowers it, clean rounds raise
    it again up to the ceiling."""
    timeout: float = DEFAULT_TIMEOUT
    """Seconds one request may take."""
    retry: RetryPolicy = field(default_factory=lambda: _default_retry())
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
    reasoning: str | None = None
    """Which reasoning goes back into the history, over every conversation's (``--reasoning``)."""
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

    @property
    def ceiling(self) -> int:
        """The most requests in flight: ``concurrency`` as a number."""
        return AUTO_CEILING if self.concurrency == AUTO else int(self.concurrency)

    @property
    def starting_limit(self) -> int | None:
        """Requests in flight to start with; None starts at the ceiling."""
        if self.initial_limit is None and self.concurrency == AUTO:
            return AUTO_START
        return self.initial_limit

    @property
    def asked_models(self) -> tuple[str, ...]:
        """The ``--model`` values: one, several, or none."""
        return self.models or ((self.model,) if self.model else ())


def check_config(config: RunConfig) -> str:
    """Validate the endpoint settings; return the normalised base URL."""
    base_url = check_base_url(config.base_url)
    try:
        json.dumps(dict(config.params), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"request parameters must be plain JSON values: {exc}") from None
    if config.concurrency != AUTO and (
        isinstance(config.concurrency, str) or config.concurrency < 1
    ):
        raise ConfigError("--concurrency must be at least 1, or 'auto'")
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


def _default_retry() -> RetryPolicy:
    """The command line's retry defaults (``--max-retries 6 --max-retry-wait 120``)."""
    from runner.send.retry import RetryPolicy

    return RetryPolicy()
