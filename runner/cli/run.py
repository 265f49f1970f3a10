"""``mtrun run`` (also plain ``mtrun FILES...``) and ``mtrun validate``.

``run`` declares its options here, gathers them (``run_options.py``) and
hands them to ``replay.py``, which loads and replays the batch and reports.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from runner.cli.base import EXIT_CODES_HELP, EXIT_USAGE, main
from runner.cli.github import annotations_option
from runner.cli.run_options import Concurrency, RunOptions
from runner.run.config import AUTO_CEILING, AUTO_START
from runner.spec.tools import REASONING_POLICIES
from runner.words import plural

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
    "timed-out answers and 503s lower the limit and clean rounds raise it back. "
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
    from runner.cli.replay import run_from_options

    run_from_options(RunOptions(**options))


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
    counts = (len(conversations), "conversation"), (turns, "turn"), (checked.files, "file")
    said = [plural(n, word) for n, word in counts]
    click.echo(f"ok: {said[0]}, {said[1]} in {said[2]}")
