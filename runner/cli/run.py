"""``mtrun run`` (also plain ``mtrun FILES...``) and ``mtrun validate``.

``run`` gathers its options (``run_options.py``), loads the conversations,
and hands the batch to the run layer (:func:`~runner.run.engine.run_batch`,
or :func:`~runner.run.plan.estimate_batch` for ``--dry-run``); what stays
here is the terminal: signals, progress, the summary, reports, exit codes.
"""

from __future__ import annotations

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
    main,
    show_error,
)
from runner.cli.github import annotations_option
from runner.cli.run_options import (
    Concurrency,
    RunOptions,
    build_config,
    find_key,
    parse_params,
    unique_models,
)
from runner.errors import ConfigError, RunnerError
from runner.run.config import AUTO_CEILING, AUTO_START
from runner.spec.tools import REASONING_POLICIES

if TYPE_CHECKING:
    from runner.cli.github import GitHubOutput
    from runner.cli.progress import ProgressPrinter
    from runner.run.config import RunConfig
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
    type=Concurrency(),
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
    "--reasoning",
    type=click.Choice(REASONING_POLICIES),
    metavar="WHEN",
    help="Which reasoning goes back into the history, over every conversation's setting: "
    "never, tool_chain (only inside the current turn's tool calls; the default) or always.",
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
@annotations_option
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def run_command(**options: Any) -> None:
    """Run conversations (see RUN_HELP)."""
    run_from_options(RunOptions(**options))


def run_from_options(options: RunOptions) -> None:
    """``mtrun run``: load, expand and replay the batch, then report and exit."""
    from runner.cli.github import annotations_on, github_output, input_errors_annotated

    with github_output(annotations_on(options.annotations)) as github:
        with input_errors_annotated(github):
            _run_from_options(options, github)


def _run_from_options(options: RunOptions, github: GitHubOutput | None) -> None:
    from runner.run.batch import expand_batch
    from runner.run.plan import estimate_batch, plan_lines
    from runner.run.shard import parse_shard

    if options.resume and options.output is None:
        raise ConfigError("--resume needs -o PATH: the output to continue")
    models = unique_models(options.models, quiet=options.quiet)
    params, conversations = _load(options)
    shard = parse_shard(options.shard_spec, os.environ) if options.shard_spec else None
    if options.dry_run:
        config = build_config(options, models=models, params=params, shard=shard, api_key=None)
        for line in plan_lines(estimate_batch(conversations, config)):
            click.echo(line)
        sys.exit(EXIT_OK)
    api_key = find_key(options, os.environ)
    config = build_config(options, models=models, params=params, shard=shard, api_key=api_key)
    result = _replay(conversations, config, quiet=options.quiet)
    code = exit_code(result, options.min_pass_rate)
    try:
        _write_reports(result, code, options, batch=(conversations, config))
        if github is not None:
            github.publish_batch(result, expand_batch(conversations, config))
    except RunnerError as exc:  # the run happened: say how it went, then this
        show_error(exc)
        code = code if code == EXIT_INTERRUPTED else max(code, EXIT_FAILED)
    if not options.quiet:
        _print_summary(result, options.min_pass_rate)
    if result.output_error:
        show_error(result.output_error)
    sys.exit(code)


def _load(options: RunOptions) -> tuple[dict[str, Any], list[Conversation]]:
    """The ``--param`` overrides and the conversations (Ctrl-C here: exit 130, see base.py)."""
    from runner.spec.loader import load_conversations

    return parse_params(options.params), load_conversations(options.files)


def _replay(conversations: Sequence[Conversation], config: RunConfig, *, quiet: bool) -> RunResult:
    """Run the batch with live progress on stderr; Ctrl-C stops it cleanly, twice at once."""
    from runner.cli.garbage import fewer_collections
    from runner.cli.progress import ProgressPrinter
    from runner.run.config import insecure_key_warning

    warning = insecure_key_warning(config)
    if warning:
        click.echo(f"mtrun: warning: {warning}", err=True)
    progress = ProgressPrinter(sys.stderr, live=not quiet and sys.stderr.isatty())
    try:
        import asyncio  # a run needs it; --help and validate do not

        with fewer_collections():
            return asyncio.run(_replay_on_loop(conversations, config, progress, quiet=quiet))
    finally:
        progress.close()


async def _replay_on_loop(
    conversations: Sequence[Conversation],
    config: RunConfig,
    progress: ProgressPrinter,
    *,
    quiet: bool,
) -> RunResult:
    from runner.run.engine import RunControl, run_batch

    control = RunControl()

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

    import asyncio

    loop = asyncio.get_running_loop()
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


def _print_summary(result: RunResult, min_pass_rate: float) -> None:
    from runner.cli.progress import summary_lines

    for line in summary_lines(result, min_pass_rate=min_pass_rate):
        click.echo(line, err=True)
    if result.interrupted or result.not_started or result.failed:
        click.echo(
            f"to continue: run the same command with --resume -o {shlex.quote(str(result.output))}",
            err=True,
        )


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
    options: RunOptions,
    *,
    batch: tuple[Sequence[Conversation], RunConfig],
) -> None:
    """The JUnit report (of the whole output file) and the JSON summary, when asked for.

    The JUnit report also lists the batch's conversations that have no
    record (never started: the run stopped first), expanded as the engine
    runs them: this shard's part, per model, per repetition.
    """
    if options.junit is not None:
        from runner.review.junit import write_junit
        from runner.run.batch import expand_batch
        from runner.transcripts.reader import read_transcript

        expected = [(c.id, c.source) for c in expand_batch(*batch)]
        write_junit(
            options.junit,
            read_transcript(result.output),
            batch=expected,
            not_run_reason=result.stop_reason,
        )
    if options.summary_json is not None:
        from runner.transcripts.jsonio import write_json_atomic

        write_json_atomic(options.summary_json, {**result.as_dict(), "exit_code": code})


MAX_REPORTED_ERRORS = 50
"""Most errors ``mtrun validate`` prints; it says how many more there were."""


@main.command(
    "validate",
    help="Check conversation FILES without sending anything (exit 0 if valid, 2 if not).\n\n"
    "Every file is checked: each one with a problem gets a line naming its first problem "
    f"(at most {MAX_REPORTED_ERRORS} lines, then how many more).",
)
@click.argument("files", nargs=-1, required=True)
@annotations_option
def validate_command(files: tuple[str, ...], annotations: str) -> None:
    """Check conversation files, reporting every bad one (see the help above)."""
    from runner.cli.github import annotations_on, github_output
    from runner.spec.loader import check_files

    checked = check_files(files)
    with github_output(annotations_on(annotations)) as github:
        if github is not None:
            github.annotate_input_errors(checked.errors)
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
