"""A run from the command line: load the batch, replay it with progress and signals, report, exit.

The run layer (:func:`~runner.run.engine.run_batch`, or
:func:`~runner.run.plan.estimate_batch` for ``--dry-run``) does the work;
what stays here is the terminal: signals, progress, the summary, reports,
exit codes. ``run.py`` declares the command and its options.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from runner.cli.base import (
    EXIT_CHECKS_FAILED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    show_error,
)
from runner.cli.run_options import (
    RunOptions,
    build_config,
    find_key,
    parse_params,
    unique_models,
)
from runner.errors import ConfigError, RunnerError

if TYPE_CHECKING:
    from runner.cli.github import GitHubOutput
    from runner.cli.progress import ProgressPrinter
    from runner.run.config import RunConfig
    from runner.run.events import RunResult
    from runner.spec.model import Conversation


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
