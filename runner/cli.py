"""The ``mtrun`` command: parses options, calls the core, renders, picks the exit code.

This is the only module that knows about click, the terminal, signals and
exit codes; everything it does is also possible from Python.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from runner import __version__
from runner.errors import ConfigError, InputError, OutputError, RunnerError

if TYPE_CHECKING:
    from runner.events import RunResult
    from runner.spec import Conversation

EXIT_OK = 0
EXIT_CHECKS_FAILED = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\b
Exit codes:
  0    every conversation completed and every expectation passed
  1    an expectation failed (with --repeat: a pass rate below
       --min-pass-rate)
  2    invalid input or usage: bad conversation file, option, key or output
       path; nothing was sent
  3    some conversation failed (API error after retries, or a non-retryable
       one, or a replay miss), or the run stopped early (quota exhausted,
       output not writable)
  130  interrupted (Ctrl-C); the output is valid, continue it with --resume
When several apply, the first in this order wins: 130, 3, 1.
"""

MAIN_HELP = f"""Replay scripted multi-turn dialogues against an OpenAI-compatible chat API.

\b
Examples:
  mtrun --mock conversations/*.yaml          run offline, no key needed
  mtrun conversations/                       run every .yaml under a folder
  mtrun -j 16 -o outputs/nightly.jsonl conversations/
  mtrun --resume -o outputs/nightly.jsonl conversations/
  mtrun --base-url http://localhost:8000/v1 --model my-model conversations/
  mtrun validate conversations/*.yaml        check files, send nothing

`mtrun FILES...` is short for `mtrun run FILES...`; see `mtrun run --help`
for every option.

{EXIT_CODES_HELP}"""

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


class _DefaultRunGroup(click.Group):
    """A group where ``mtrun FILES...`` means ``mtrun run FILES...``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(
    cls=_DefaultRunGroup, help=MAIN_HELP, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="mtrun")
def main() -> None:
    """The mtrun command group."""


def _fail(exc: RunnerError) -> NoReturn:
    """Print one error line and exit with the code for its kind."""
    click.echo(f"mtrun: error: {exc}", err=True)
    sys.exit(EXIT_USAGE)


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
    "429s lower the limit and clean rounds raise it back. "
    f"'auto': up to {AUTO_CEILING}, starting at {AUTO_START}.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=120.0,
    show_default=True,
    help="Seconds one request may take.",
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
    help="Cap in seconds on a wait asked for by Retry-After.",
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
    help="Stop sending once the run has used N tokens; the output stays resumable.",
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
    from runner.client import DEFAULT_BASE_URL, KEY_ENV_VARS, MOCK_BASE_URL, find_api_key
    from runner.engine import RunConfig, RunControl, insecure_key_warning, run_batch
    from runner.loader import load_conversations
    from runner.progress import Progress, summary_lines
    from runner.retry import RetryPolicy
    from runner.store import default_output_path

    if resume and output is None:
        _fail(ConfigError("--resume needs -o PATH: the output to continue"))
    try:
        overrides = _parse_params(params)
        conversations = load_conversations(files)
    except RunnerError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)  # nothing was sent or written yet

    shard = None
    if shard_spec is not None:
        from runner.shard import parse_shard

        try:
            shard = parse_shard(shard_spec, os.environ)
        except RunnerError as exc:
            _fail(exc)
    if dry_run:
        mine = [c for c in conversations if shard is None or shard.holds(c.id)]
        _print_plan(mine, models, overrides, repeat)
        sys.exit(EXIT_OK)
    key_names = (api_key_env,) if api_key_env else KEY_ENV_VARS
    if api_key_env and not os.environ.get(api_key_env, "").strip():
        _fail(ConfigError(f"--api-key-env {api_key_env}: that environment variable is not set"))
    config = RunConfig(
        output=output
        or default_output_path(
            Path("outputs"), suffix=f"-shard{shard.index}of{shard.count}" if shard else ""
        ),
        shard=shard,
        resume=resume,
        base_url=MOCK_BASE_URL if mock else (base_url or DEFAULT_BASE_URL),
        api_key=None if mock else find_api_key(os.environ, key_names),
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
        return await run_batch(
            conversations, config, on_event=None if quiet else progress, control=control
        )

    try:
        result = asyncio.run(go())
    except RunnerError as exc:
        progress.close()
        _fail(exc)
    progress.close()
    code = exit_code(result, min_pass_rate)
    try:
        _write_reports(result, code, junit=junit, summary_json=summary_json)
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


def _print_plan(
    conversations: Sequence[Conversation],
    models: Sequence[str],
    params: dict[str, Any],
    repeat: int,
) -> None:
    """``--dry-run``: what the batch would send, estimated; nothing is sent or written."""
    from runner.plan import estimate_cost, plan_lines
    from runner.spec import plan_request

    env_model = os.environ.get("MTRUN_MODEL") or None
    plans = [
        plan_request(c, model_override=model, env_model=env_model, param_overrides=params)
        for c in conversations
        for model in models or (None,)
        for _ in range(repeat)
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
    result: RunResult, code: int, *, junit: Path | None, summary_json: Path | None
) -> None:
    """The JUnit report (of the whole output file) and the JSON summary, when asked for."""
    if junit is not None:
        from runner.junit import write_junit
        from runner.store import read_transcript

        write_junit(junit, read_transcript(result.output))
    if summary_json is not None:
        from runner.jsonio import write_json_atomic

        write_json_atomic(summary_json, {**result.as_dict(), "exit_code": code})


@main.command("validate")
@click.argument("files", nargs=-1, required=True)
def validate_command(files: tuple[str, ...]) -> None:
    """Check conversation FILES without sending anything (exit 0 if valid, 2 if not)."""
    from runner.loader import load_conversations

    try:
        conversations = load_conversations(files)
    except RunnerError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    sources = {c.source for c in conversations}
    turns = sum(len(c.turns) for c in conversations)
    click.echo(f"ok: {len(conversations)} conversations, {turns} turns in {len(sources)} files")


@main.command("diff")
@click.argument("base", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option(
    "--models",
    nargs=2,
    metavar="A B",
    help="Compare model A with model B of a several-model run (in BASE, or A in BASE "
    "with B in NEW).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.option(
    "--fail-on",
    type=click.Choice(["regressed", "changed", "never"]),
    default="regressed",
    show_default=True,
    help="Exit 1 when a conversation regressed (newly failed, a check flipped to failing), "
    "when anything changed, or never.",
)
@click.option(
    "--color/--no-color", default=None, help="Colour the text report (default: on a terminal)."
)
def diff_command(
    base: Path,
    new: Path | None,
    models: tuple[str, str] | None,
    as_json: bool,
    fail_on: str,
    color: bool | None,
) -> None:
    """Compare two transcripts: BASE (e.g. main) against NEW (e.g. a pull request).

    \b
    Pairs conversations by id and turns by index, and reports conversations
    added or removed, status changes, the first turn where answers diverge
    (with a unified diff and a similarity), checks that flipped, and token and
    latency deltas. Exit 1 per --fail-on, 2 when a file cannot be read.
    """
    from runner.diff import diff_runs, render_json, render_text, should_fail
    from runner.store import read_transcript

    try:
        before = read_transcript(base)
        after = read_transcript(new) if new is not None else before
    except RunnerError as exc:
        _fail(exc)
    if models:
        from runner.transcript import records_of_model

        before, after = records_of_model(before, models[0]), records_of_model(after, models[1])
        for model, records in zip(models, (before, after), strict=True):
            if not records:
                _fail(InputError(f"--models: no conversation in the transcript used {model!r}"))
    elif new is None:
        _fail(InputError("give two transcripts (BASE NEW), or one with --models A B"))
    report = diff_runs(before, after)
    if as_json:
        click.echo(json.dumps(render_json(report), ensure_ascii=False, indent=2))
    else:
        use_color = (
            color if color is not None else sys.stdout.isatty() and "NO_COLOR" not in os.environ
        )
        click.echo(render_text(report, color=use_color), nl=False)
    sys.exit(EXIT_CHECKS_FAILED if should_fail(report, fail_on) else EXIT_OK)


def _read_for_review(path: Path) -> list[dict[str, Any]]:
    """A transcript's current records, or a one-line error and exit 2."""
    from runner.store import read_transcript

    try:
        return read_transcript(path)
    except RunnerError as exc:
        _fail(exc)


@main.command("show")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--id",
    "ids",
    multiple=True,
    metavar="GLOB",
    help="Only conversations whose id matches (repeatable).",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["completed", "checks_failed", "failed", "interrupted"]),
    help="Only conversations with this status (repeatable).",
)
@click.option(
    "--failed",
    "failed_only",
    is_flag=True,
    help="Only conversations that failed, failed checks or were interrupted.",
)
@click.option(
    "--turn", type=click.IntRange(min=1), help="Only this turn (1-based) of each conversation."
)
@click.option(
    "--color/--no-color",
    default=None,
    help="Colour the output (default: on a terminal, unless NO_COLOR is set).",
)
@click.option("--pager/--no-pager", default=None, help="Page long output (default: on a terminal).")
def show_command(
    file: Path,
    ids: tuple[str, ...],
    statuses: tuple[str, ...],
    failed_only: bool,
    turn: int | None,
    color: bool | None,
    pager: bool | None,
) -> None:
    """Read a transcript in the terminal: each conversation turn by turn.

    Works on files from interrupted or partly failed runs. Model output is
    shown as text: control characters and escape sequences are made visible.
    """
    import shutil

    from runner.show import Selection, render_records, select, summary_line

    records = _read_for_review(file)
    chosen = select(
        records, Selection(ids=ids, statuses=statuses, failed_only=failed_only, turn=turn)
    )
    on_terminal = sys.stdout.isatty()
    use_color = color if color is not None else on_terminal and "NO_COLOR" not in os.environ
    width = shutil.get_terminal_size((100, 24)).columns
    lines = (
        line + "\n"
        for line in (
            *render_records(chosen, color=use_color, width=width, turn=turn),
            summary_line(chosen),
        )
    )
    if pager if pager is not None else on_terminal:
        click.echo_via_pager(lines, color=use_color)
    else:
        for line in lines:
            click.echo(line, nl=False, color=use_color)


@main.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md"]),
    default="md",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--id",
    "ids",
    multiple=True,
    metavar="GLOB",
    help="Only conversations whose id matches (repeatable).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to a file instead of standard output.",
)
def export_command(file: Path, fmt: str, ids: tuple[str, ...], output: Path | None) -> None:
    """Export transcripts as Markdown, one section per conversation (for pull requests, issues)."""
    from runner.markdown import render_markdown
    from runner.show import Selection, select

    chosen = select(_read_for_review(file), Selection(ids=ids))
    text = render_markdown(chosen, title=f"mtrun transcript: {file.name}")
    if output is None:
        click.echo(text, nl=False)
        return
    if output.exists():
        _fail(OutputError(f"{output} already exists; choose another -o"))
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        _fail(OutputError(f"cannot write {output}: {exc.strerror or exc}"))


@main.command("report")
@click.argument(
    "transcripts", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path)
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="HTML file to write (default: beside the last transcript, .html).",
)
@click.option(
    "--models",
    nargs=2,
    metavar="A B",
    help="Compare model A with model B of a several-model run.",
)
def report_command(
    transcripts: tuple[Path, ...], output: Path | None, models: tuple[str, str] | None
) -> None:
    """Write one self-contained HTML page of a run (FILE), or comparing two (BASE NEW).

    \b
    The page needs no network: open it from disk or attach it to a CI run.
    It shows totals, a sortable and filterable table of conversations, each
    conversation as a chat with its checks and retries, and charts of latency
    and tokens per turn; comparing two runs lists regressions first and shows
    answers side by side with the differences highlighted.
    """
    from runner.report import build_comparison, build_report, write_report

    if len(transcripts) > 2:
        _fail(InputError("give one transcript, or two to compare: mtrun report BASE NEW"))
    if models:
        from runner.transcript import records_of_model

        records = [_read_for_review(path) for path in transcripts]
        base_records = records_of_model(records[0], models[0])
        new_records = records_of_model(records[-1], models[1])
        page = build_comparison(
            base_records,
            new_records,
            title=f"{models[0]} vs {models[1]}",
            base_source=f"{transcripts[0]} ({models[0]})",
            new_source=f"{transcripts[-1]} ({models[1]})",
        )
        last = transcripts[-1]
        target = output or last.with_name(f"{last.stem}.models.html")
    elif len(transcripts) == 1:
        (path,) = transcripts
        page = build_report(_read_for_review(path), title=path.name, source=str(path))
        target = output or path.with_suffix(".html")
    else:
        base, new = transcripts
        page = build_comparison(
            _read_for_review(base),
            _read_for_review(new),
            title=f"{base.name} vs {new.name}",
            base_source=str(base),
            new_source=str(new),
        )
        target = output or new.with_name(new.stem + ".compare.html")
    replacing = target.exists()
    try:
        write_report(target, page)
    except RunnerError as exc:
        _fail(exc)
    click.echo(f"wrote {target}" + (" (replacing the earlier report)" if replacing else ""))


@main.command("merge")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("shards", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--conversations",
    "patterns",
    multiple=True,
    metavar="FILES",
    help="The batch's conversation files (repeatable): also check that none is missing.",
)
def merge_command(output: Path, shards: tuple[Path, ...], patterns: tuple[str, ...]) -> None:
    """Combine the outputs of `mtrun --shard K/N` runs into OUTPUT.

    \b
    Checks that every shard of the split is present and every conversation
    appears exactly once (with --conversations: that none of the batch is
    missing). Exit 0 when complete, 3 when something is missing or
    duplicated (OUTPUT is still written, for inspection), 2 on bad input.
    """
    from runner.loader import load_conversations
    from runner.shard import merge_shards

    try:
        expected = [c.id for c in load_conversations(patterns)] if patterns else None
        report = merge_shards(output, shards, expected_ids=expected)
    except RunnerError as exc:
        _fail(exc)
    click.echo(
        f"merged {report.conversations} conversations from {len(shards)} files into {output}"
    )
    for index in report.missing_shards:
        click.echo(f"missing shard: {index}/{report.shard_count}", err=True)
    for cid, files in report.duplicates:
        click.echo(f"duplicated: {cid} in {', '.join(files)}", err=True)
    for cid in report.missing:
        click.echo(f"missing conversation: {cid}", err=True)
    if report.unfinished:
        click.echo(
            f"{len(report.unfinished)} conversations failed or were interrupted "
            "(resume their shard with --resume)",
            err=True,
        )
    sys.exit(EXIT_OK if report.complete else EXIT_FAILED)
