"""``mtrun run`` (also plain ``mtrun FILES...``) and ``mtrun validate``."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from runner.cli.base import (
    EXIT_CHECKS_FAILED,
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    fail,
    main,
)
from runner.errors import ConfigError, InputError, RunnerError

if TYPE_CHECKING:
    from runner.run.engine import RunConfig
    from runner.run.events import RunResult
    from runner.spec.model import Conversation


RUN_HELP = f"""Replay conversation FILES (files, folders or globs) and write transcripts.

\b
The key is read from MTRUN_API_KEY, else ARCEE_API_KEY, else OPENAI_API_KEY
(or the variable named by --api-key-env); no option takes the key itself.
A loopback endpoint (a local vLLM, Ollama or llama.cpp) needs no key.

\b
Examples:
  mtrun --mock conversations/*.yaml
  mtrun --model arcee-ai/AFM-4.5B --param temperature=0 conversations/
  mtrun --base-url https://api.openai.com/v1 --model gpt-4o-mini conversations/
  mtrun --resume -o outputs/run.jsonl conversations/

{EXIT_CODES_HELP}"""


AUTO_CEILING = 32
AUTO_START = 16


# ParamType is generic only from click 8.5; subscripting it would break older click.
class _Concurrency(click.ParamType):  # type: ignore[type-arg]
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


def _parse_params(values: Sequence[str]) -> dict[str, Any]:
    """``--param key=value`` options, each value read as a YAML scalar."""
    import yaml

    params: dict[str, Any] = {}
    for raw in values:
        key, sep, text = raw.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--param {raw!r}: expected KEY=VALUE, e.g. --param temperature=0.2")
        if key in ("model", "messages", "stream"):
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


@main.command("run", help=RUN_HELP)
@click.argument("files", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Transcript file (JSONL). Default: a new file under outputs/.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue -o: skip completed conversations, continue cut-short ones.",
)
@click.option(
    "--mock", is_flag=True, help="Use the built-in offline backend (same as --base-url mock://)."
)
@click.option(
    "--base-url",
    envvar="MTRUN_BASE_URL",
    show_envvar=True,
    help="API root; requests go to BASE_URL/chat/completions. Default: https://api.arcee.ai/api/v1",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    help="Model for every conversation (default: the file's, else $MTRUN_MODEL, else "
    "arcee-ai/AFM-4.5B). Repeat it to run the batch once per model into one output "
    "(ids become ID@MODEL); compare them with 'mtrun diff --models A B'.",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Request parameter for every conversation, e.g. temperature=0 "
    "(repeatable; KEY=null removes it).",
)
@click.option(
    "--api-key-env",
    metavar="NAME",
    help="Environment variable holding the API key (default: MTRUN_API_KEY, "
    "ARCEE_API_KEY, OPENAI_API_KEY).",
)
@click.option(
    "-j",
    "--concurrency",
    type=_Concurrency(),
    default="auto",
    show_default=True,
    metavar="N|auto",
    help="Ceiling on requests in flight (a quarter more conversations run, ready to send); "
    "429s and timed-out answers lower the limit and clean rounds raise it back. "
    f"'auto': up to {AUTO_CEILING}, starting at {AUTO_START}.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=120.0,
    show_default=True,
    help="Seconds one request may take, from connecting to the whole answer. With --stream: "
    "the longest silence before the first data event and between two (a ': ping' comment "
    "is silence), so a long answer that keeps coming is never cut.",
)
@click.option(
    "--max-retries",
    type=click.IntRange(0, 100),
    default=6,
    show_default=True,
    help="Retries of a failed request (5xx, timeouts, dropped connections, ...); 429s get "
    "up to 40 retries of their own. 0 disables retrying.",
)
@click.option(
    "--max-retry-wait",
    type=click.FloatRange(min=0),
    default=120.0,
    show_default=True,
    help="Cap in seconds on a wait asked for by Retry-After, and on the hold it puts on "
    "every request to the endpoint; a longer wait waits the cap.",
)
@click.option(
    "--allow-insecure-key",
    is_flag=True,
    help="Allow sending the key over plain http to a non-loopback host.",
)
@click.option(
    "--record",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Record every answer into DIR (one JSON file per conversation, for committing).",
)
@click.option(
    "--replay",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Answer from DIR with no network; a request not recorded fails its conversation. "
    "With --record DIR too: replay what is recorded, record what is missing.",
)
@click.option(
    "--junit",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Also write a JUnit XML report (one testcase per conversation) for CI.",
)
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Also write the run's summary as JSON (counts, failures, exit code).",
)
@click.option(
    "--repeat",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="Run each conversation N times independently and report its pass rate.",
)
@click.option(
    "--min-pass-rate",
    type=click.FloatRange(0.0, 1.0),
    default=1.0,
    show_default=True,
    help="With --repeat: the pass rate a conversation needs for exit code 0.",
)
@click.option("--judge-model", metavar="NAME", help="Model for judge checks that name none.")
@click.option(
    "--judge-base-url",
    metavar="URL",
    help="Endpoint for judge checks (default: the same as the answers; same key).",
)
@click.option(
    "--rpm",
    type=click.FloatRange(min=0, min_open=True),
    metavar="N",
    help="Requests per minute to stay under, when you know your limit.",
)
@click.option(
    "--tpm",
    type=click.FloatRange(min=0, min_open=True),
    metavar="N",
    help="Tokens per minute to stay under (prompt + max_tokens booked ahead, corrected by usage).",
)
@click.option(
    "--stream",
    is_flag=True,
    help="Stream answers (server-sent events) and record time to first token and tokens/s.",
)
@click.option(
    "--budget-tokens",
    type=click.IntRange(min=1),
    metavar="N",
    help="Stop sending once the output has used N tokens, counting earlier runs it resumes; "
    "the output stays resumable.",
)
@click.option(
    "--shard",
    "shard_spec",
    metavar="K/N|auto",
    help="Run only shard K of N (split by a hash of the conversation id; each shard writes "
    "its own output, combine them with 'mtrun merge'). 'auto': from MTRUN_SHARD, a Slurm "
    "job array, or a Kubernetes Indexed Job (auto/N).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Validate and print the plan (requests, estimated prompt tokens); send nothing.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def run_command(
    files: tuple[str, ...],
    output: Path | None,
    resume: bool,
    mock: bool,
    base_url: str | None,
    models: tuple[str, ...],
    params: tuple[str, ...],
    api_key_env: str | None,
    concurrency: int | str,
    timeout: float,
    max_retries: int,
    max_retry_wait: float,
    allow_insecure_key: bool,
    record: Path | None,
    replay: Path | None,
    junit: Path | None,
    summary_json: Path | None,
    repeat: int,
    min_pass_rate: float,
    judge_model: str | None,
    judge_base_url: str | None,
    rpm: float | None,
    tpm: float | None,
    stream: bool,
    budget_tokens: int | None,
    shard_spec: str | None,
    dry_run: bool,
    quiet: bool,
) -> None:
    """Run conversations (see RUN_HELP)."""
    from runner.cli.progress import Progress, summary_lines
    from runner.http.client import DEFAULT_BASE_URL, KEY_ENV_VARS, MOCK_BASE_URL, find_api_key
    from runner.run.engine import RunConfig, RunControl, insecure_key_warning, run_batch
    from runner.send.retry import RetryPolicy
    from runner.spec.loader import load_conversations
    from runner.transcripts.store import default_output_path

    if resume and output is None:
        fail(ConfigError("--resume needs -o PATH: the output to continue"))
    models = _unique_models(models, quiet=quiet)
    try:
        overrides = _parse_params(params)
        conversations = load_conversations(files)
    except RunnerError as exc:
        fail(exc)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)  # nothing was sent or written yet

    shard = None
    if shard_spec is not None:
        from runner.run.shard import parse_shard

        try:
            shard = parse_shard(shard_spec, os.environ)
        except RunnerError as exc:
            fail(exc)
    if dry_run:
        mine = [c for c in conversations if shard is None or shard.holds(c.id)]
        _print_plan(mine, models, overrides, repeat)
        sys.exit(EXIT_OK)
    key_names = (api_key_env,) if api_key_env else KEY_ENV_VARS
    if api_key_env and not os.environ.get(api_key_env, "").strip():
        fail(ConfigError(f"--api-key-env {api_key_env}: that environment variable is not set"))
    try:
        api_key = None if mock else find_api_key(os.environ, key_names)
    except RunnerError as exc:
        fail(exc)
    config = RunConfig(
        output=output
        or default_output_path(
            Path("outputs"), suffix=f"-shard{shard.index}of{shard.count}" if shard else ""
        ),
        shard=shard,
        resume=resume,
        base_url=MOCK_BASE_URL if mock else (base_url or DEFAULT_BASE_URL),
        api_key=api_key,
        model=models[0] if len(models) == 1 else None,
        models=models if len(models) > 1 else (),
        env_model=os.environ.get("MTRUN_MODEL") or None,
        params=overrides,
        concurrency=AUTO_CEILING if concurrency == "auto" else int(concurrency),
        initial_limit=AUTO_START if concurrency == "auto" else None,
        timeout=timeout,
        retry=RetryPolicy(max_retries=max_retries, max_retry_after=max_retry_wait),
        allow_insecure_key=allow_insecure_key,
        record=record,
        replay=replay,
        judge_model=judge_model,
        judge_base_url=judge_base_url,
        repeat=repeat,
        budget_tokens=budget_tokens,
        stream=stream,
        rpm=rpm,
        tpm=tpm,
    )
    warning = insecure_key_warning(config)
    if warning:
        click.echo(f"mtrun: warning: {warning}", err=True)
    progress = Progress(sys.stderr, live=not quiet and sys.stderr.isatty())
    control = RunControl()

    async def go() -> Any:
        loop = asyncio.get_running_loop()

        def on_interrupt() -> None:
            if control.stopping and control.by_user:
                # Second Ctrl-C: leave now. Every line on disk is whole (writes
                # happen on this thread, between callbacks), and the journal
                # lets --resume continue what was in flight.
                progress.close()
                click.echo(
                    f"\nmtrun: stopped at once; continue with --resume -o {config.output}", err=True
                )
                os._exit(EXIT_INTERRUPTED)
            control.stop("interrupted by Ctrl-C", by_user=True)

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_interrupt)
        # The live line ticks on its own: a run held by a Retry-After must not look hung.
        ticker = asyncio.create_task(progress.ticking()) if progress.live else None
        try:
            return await run_batch(
                conversations, config, on_event=None if quiet else progress, control=control
            )
        finally:
            if ticker is not None:
                ticker.cancel()

    try:
        result = asyncio.run(go())
    except RunnerError as exc:
        progress.close()
        fail(exc)
    progress.close()
    code = exit_code(result, min_pass_rate)
    try:
        _write_reports(
            result, code, junit=junit, summary_json=summary_json, batch=(conversations, config)
        )
    except RunnerError as exc:
        click.echo(f"mtrun: error: {exc}", err=True)
        code = max(code, EXIT_FAILED) if code != EXIT_INTERRUPTED else code
    if not quiet:
        for line in summary_lines(result, min_pass_rate=min_pass_rate):
            click.echo(line, err=True)
        if result.interrupted or result.not_started or result.failed:
            click.echo(
                "to continue: run the same command with "
                f"--resume -o {shlex.quote(str(result.output))}",
                err=True,
            )
    if result.output_error:
        click.echo(f"mtrun: error: {result.output_error}", err=True)
    sys.exit(code)


def _unique_models(models: tuple[str, ...], *, quiet: bool) -> tuple[str, ...]:
    """``--model`` values, each once: a model named twice runs once, with a note."""
    unique = tuple(dict.fromkeys(models))
    if len(unique) < len(models) and not quiet:
        twice = sorted({m for m in models if models.count(m) > 1})
        named = ", ".join(twice)
        click.echo(f"mtrun: note: --model {named} given more than once; each runs once", err=True)
    return unique


def _print_plan(
    conversations: Sequence[Conversation],
    models: Sequence[str],
    params: dict[str, Any],
    repeat: int,
) -> None:
    """``--dry-run``: what the batch would send, estimated; nothing is sent or written."""
    from runner.run.plan import estimate_cost, plan_lines
    from runner.run.variants import Variants
    from runner.spec.model import plan_request

    env_model = os.environ.get("MTRUN_MODEL") or None
    override = models[0] if len(models) == 1 else None
    plans = [
        plan_request(c, model_override=override, env_model=env_model, param_overrides=params)
        for c in Variants(conversations, models, repeat)
    ]
    for line in plan_lines(estimate_cost(plans)):
        click.echo(line)


def exit_code(result: RunResult, min_pass_rate: float = 1.0) -> int:
    """The exit code for a run: 130 over 3 over 1 over 0 (see EXIT_CODES_HELP)."""
    if result.interrupted_by_user:
        return EXIT_INTERRUPTED
    if result.failed or result.interrupted or result.not_started or result.output_error:
        return EXIT_FAILED
    if result.pass_rates:
        flaky = any(rate.rate < min_pass_rate for rate in result.pass_rates)
        return EXIT_CHECKS_FAILED if flaky else EXIT_OK
    return EXIT_CHECKS_FAILED if result.checks_failed else EXIT_OK


def _write_reports(
    result: RunResult,
    code: int,
    *,
    junit: Path | None,
    summary_json: Path | None,
    batch: tuple[Sequence[Conversation], RunConfig],
) -> None:
    """The JUnit report (of the whole output file) and the JSON summary, when asked for.

    The JUnit report also lists the batch's conversations that have no
    record (never started: the run stopped first), expanded as the engine
    runs them: this shard's part, per model, per repetition.
    """
    if junit is not None:
        from runner.review.junit import write_junit
        from runner.run.variants import Variants
        from runner.transcripts.reader import read_transcript

        conversations, config = batch
        mine = [c for c in conversations if config.shard is None or config.shard.holds(c.id)]
        expected = [(c.id, c.source) for c in Variants(mine, config.models, config.repeat)]
        write_junit(
            junit,
            read_transcript(result.output),
            batch=expected,
            not_run_reason=result.stop_reason,
        )
    if summary_json is not None:
        from runner.transcripts.jsonio import write_json_atomic

        write_json_atomic(summary_json, {**result.as_dict(), "exit_code": code})


MAX_REPORTED_ERRORS = 50
"""Most errors ``mtrun validate`` prints; it says how many more there were."""


@main.command(
    "validate",
    help="Check conversation FILES without sending anything (exit 0 if valid, 2 if not).\n\n"
    "Every file is checked: each one with a problem gets a line naming its first problem "
    f"(at most {MAX_REPORTED_ERRORS} lines, then how many more).",
)
@click.argument("files", nargs=-1, required=True)
def validate_command(files: tuple[str, ...]) -> None:
    """Check conversation files, reporting every bad one (see the help above)."""
    from runner.spec.loader import check_files

    try:
        checked = check_files(files)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    for error in checked.errors[:MAX_REPORTED_ERRORS]:
        click.echo(f"mtrun: error: {error}", err=True)
    more = len(checked.errors) - MAX_REPORTED_ERRORS
    if more > 0:
        click.echo(f"mtrun: error: ... and {more} more ({len(checked.errors)} in all)", err=True)
    if checked.errors:
        sys.exit(EXIT_USAGE)
    conversations = checked.conversations
    turns = sum(len(c.turns) for c in conversations)
    click.echo(f"ok: {len(conversations)} conversations, {turns} turns in {checked.files} files")
