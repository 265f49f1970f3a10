"""The ``mtrun`` command group: exit codes, the group itself, and how errors are shown.

The ``cli`` package is the only part of mtrun that knows about click, the
terminal, signals and exit codes; everything it does is also possible from
Python. ``run.py`` holds ``mtrun run`` and ``mtrun validate``, ``review.py``
the commands that read transcripts.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from runner import __version__
from runner.errors import RunnerError

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


def fail(exc: RunnerError) -> NoReturn:
    """Print one error line and exit with the code for its kind."""
    click.echo(f"mtrun: error: {exc}", err=True)
    sys.exit(EXIT_USAGE)
