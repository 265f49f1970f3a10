"""The ``mtrun`` command group: exit codes, the group itself, and how errors are shown.

The ``cli`` package is the only part of mtrun that knows about click, the
terminal, signals and exiting; everything it does is also possible from
Python. The exit codes are named in ``runner/errors.py`` beside the errors
that carry them, and explained to users here (``EXIT_CODES_HELP``); the
group's ``invoke`` is the one place an error becomes its exit code.
``run.py`` holds ``mtrun run`` and ``mtrun validate`` (options in
``run_options.py``), ``review.py`` the commands that read transcripts.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from runner import __version__
from runner.errors import (
    EXIT_CHECKS_FAILED,
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    RunnerError,
)

__all__ = [
    "EXIT_CHECKS_FAILED",
    "EXIT_CODES_HELP",
    "EXIT_FAILED",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "internal_error",
    "main",
    "show_error",
]
_ARGS = "mtrun.args"
DEBUG_ENV = "MTRUN_DEBUG"
"""Set to 1 to print an internal error's traceback on stderr too."""

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
  4    internal error: a bug in mtrun; the message names the file holding
       the traceback (MTRUN_DEBUG=1 prints it too); please report it
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
        ctx.meta[_ARGS] = list(args)  # for internal_error, which names no secret in them
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; turn its error into a message and an exit code.

        This is the one place errors become exit codes: a :class:`RunnerError`
        exits with its class's ``exit_code``; an exception no command expected
        is an internal error (exit 4).
        """
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except RunnerError as exc:
            show_error(exc)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            # click would print "Aborted!" and exit 1, the code for a failed expectation.
            click.echo("mtrun: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # click's own handling: output closed early
                raise
            internal_error(exc, ctx.meta.get(_ARGS, ()))
        except Exception as exc:
            internal_error(exc, ctx.meta.get(_ARGS, ()))


@click.group(
    cls=_DefaultRunGroup, help=MAIN_HELP, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="mtrun")
def main() -> None:
    """The mtrun command group."""


def show_error(exc: RunnerError | str) -> None:
    """Print one error line on stderr."""
    click.echo(f"mtrun: error: {exc}", err=True)


def internal_error(exc: BaseException, args: Sequence[str] = ()) -> NoReturn:
    """Report a bug in mtrun: one line, the traceback in a file (and on stderr when debugging).

    Never exit 1, which means an expectation failed: a crash must not pass for
    a failing check, nor a failing check for a crash. Secrets in the
    environment (the API key) are blanked out of both the line and the file.
    """
    secrets = _secrets(args)
    error = _redact(f"{type(exc).__name__}: {exc}".rstrip(": "), secrets)
    error = " ".join(error.split())
    error = error if len(error) <= 200 else error[:199] + "…"
    trace = _redact("".join(traceback.format_exception(exc)), secrets)
    where = _write_trace(trace, " ".join(_redact(arg, secrets) for arg in ["mtrun", *args]))
    if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
        click.echo(trace.rstrip("\n"), err=True)
    click.echo(
        f"mtrun: internal error: {error}; this is a bug in mtrun, please report it {where}",
        err=True,
    )
    sys.exit(EXIT_INTERNAL)


def _write_trace(trace: str, argv: str) -> str:
    """Save the traceback to a new file under the temp folder; how the message refers to it."""
    try:
        handle, path = tempfile.mkstemp(prefix="mtrun-crash-", suffix=".txt")
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(f"mtrun {__version__}, Python {sys.version.split()[0]}\n{argv}\n\n{trace}")
    except OSError as exc:
        return f"(the traceback could not be saved: {exc.strerror}; rerun with {DEBUG_ENV}=1)"
    return f"with the traceback in {path}"


_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|AUTH", re.IGNORECASE)


def _secrets(args: Sequence[str]) -> list[str]:
    """Values to blank out: variables named like secrets, and the one --api-key-env names."""
    names = {name for name in os.environ if _SECRET_NAME.search(name)}
    for i, arg in enumerate(args):
        if arg == "--api-key-env" and i + 1 < len(args):
            names.add(args[i + 1])
        elif arg.startswith("--api-key-env="):
            names.add(arg.partition("=")[2])
    values = {os.environ.get(name, "").strip() for name in names}
    return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    return text
