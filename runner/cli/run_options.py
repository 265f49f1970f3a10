"""``mtrun run``'s options: parsed by click, gathered in :class:`RunOptions`, made a config.

The command line's only rules here are about its own spelling (``--param
KEY=VALUE``, ``-j N|auto``, ``--mock``, the environment variables); what a
run with those settings does, and its defaults, is :class:`RunConfig`'s.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from runner.errors import ConfigError, InputError

if TYPE_CHECKING:
    from runner.http.apikey import ApiKey
    from runner.run.config import RunConfig
    from runner.run.shard import Shard


# ParamType is generic only from click 8.5; subscripting it would break older click.
class Concurrency(click.ParamType):  # type: ignore[type-arg]
    """``-j``: a whole number from 1 to 10,000, or ``auto``."""

    name = "concurrency"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int) or value == "auto":
            return value
        try:
            number = int(value)
        except ValueError:
            self.fail(f"{value!r} is not a whole number or 'auto'", param, ctx)
        if not 1 <= number <= 10_000:
            self.fail(f"{number} is not between 1 and 10,000", param, ctx)
        return number


@dataclass(frozen=True)
class RunOptions:
    """Every option of ``mtrun run``, as click parsed it (one field per option)."""

    files: tuple[str, ...]
    output: Path | None
    resume: bool
    mock: bool
    base_url: str | None
    models: tuple[str, ...]
    params: tuple[str, ...]
    api_key_env: str | None
    concurrency: int | str
    timeout: float
    max_retries: int
    max_retry_wait: float
    allow_insecure_key: bool
    record: Path | None
    replay: Path | None
    junit: Path | None
    summary_json: Path | None
    repeat: int
    min_pass_rate: float
    judge_model: str | None
    judge_base_url: str | None
    rpm: float | None
    tpm: float | None
    stream: bool
    reasoning: str | None
    budget_tokens: int | None
    shard_spec: str | None
    dry_run: bool
    annotations: str
    quiet: bool


def parse_params(values: Sequence[str]) -> dict[str, Any]:
    """``--param key=value`` options, each value read as a YAML scalar."""
    import yaml

    from runner.spec.loader import RESERVED_PARAMS

    params: dict[str, Any] = {}
    for raw in values:
        key, sep, text = raw.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--param {raw!r}: expected KEY=VALUE, e.g. --param temperature=0.2")
        if key in RESERVED_PARAMS:
            raise InputError(
                f"--param {key}: not a passthrough parameter; use --{key} if it exists"
            )
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            raise InputError(
                f"--param {key}: value {text!r} is not a valid YAML value; quote it"
            ) from None
        try:
            json.dumps(value, allow_nan=False)
        except TypeError:  # a YAML date or time: send the text as written
            value = text.strip()
        except ValueError:
            raise InputError(
                f"--param {key}: {text.strip()} is not representable in JSON; use a finite number"
            ) from None
        params[key] = value
    return params


def unique_models(models: tuple[str, ...], *, quiet: bool) -> tuple[str, ...]:
    """``--model`` values, each once: a model named twice runs once, with a note."""
    unique = tuple(dict.fromkeys(models))
    if len(unique) < len(models) and not quiet:
        twice = sorted({m for m in models if models.count(m) > 1})
        named = ", ".join(twice)
        click.echo(f"mtrun: note: --model {named} given more than once; each runs once", err=True)
    return unique


def find_key(options: RunOptions, environ: Mapping[str, str]) -> ApiKey | None:
    """The API key the options ask for (none with ``--mock``)."""
    from runner.http.client import KEY_ENV_VARS, find_api_key

    name = options.api_key_env
    if name and not environ.get(name, "").strip():
        raise ConfigError(f"--api-key-env {name}: that environment variable is not set")
    return None if options.mock else find_api_key(environ, (name,) if name else KEY_ENV_VARS)


def build_config(
    options: RunOptions,
    *,
    models: tuple[str, ...],
    params: dict[str, Any],
    shard: Shard | None,
    api_key: ApiKey | None,
    environ: Mapping[str, str] = os.environ,
) -> RunConfig:
    """The :class:`RunConfig` the options describe."""
    from runner.http.client import DEFAULT_BASE_URL, MOCK_BASE_URL
    from runner.run.config import AUTO, RunConfig
    from runner.send.retry import RetryPolicy
    from runner.transcripts.store import default_output_path

    suffix = f"-shard{shard.index}of{shard.count}" if shard else ""
    return RunConfig(
        output=options.output or default_output_path(Path("outputs"), suffix=suffix),
        shard=shard,
        resume=options.resume,
        base_url=MOCK_BASE_URL if options.mock else (options.base_url or DEFAULT_BASE_URL),
        api_key=api_key,
        model=models[0] if len(models) == 1 else None,
        models=models if len(models) > 1 else (),
        env_model=environ.get("MTRUN_MODEL") or None,
        params=params,
        concurrency=AUTO if options.concurrency == AUTO else int(options.concurrency),
        timeout=options.timeout,
        retry=RetryPolicy(max_retries=options.max_retries, max_retry_after=options.max_retry_wait),
        allow_insecure_key=options.allow_insecure_key,
        record=options.record,
        replay=options.replay,
        judge_model=options.judge_model,
        judge_base_url=options.judge_base_url,
        repeat=options.repeat,
        budget_tokens=options.budget_tokens,
        stream=options.stream,
        reasoning=options.reasoning,
        rpm=options.rpm,
        tpm=options.tpm,
    )
