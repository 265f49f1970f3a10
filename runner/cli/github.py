"""GitHub-native results on the command line: when to print annotations, and where to write.

``--annotations auto`` (the default) turns them on when ``GITHUB_ACTIONS`` is
``true``, as GitHub sets it in every step; ``github`` turns them on anywhere,
``off`` never. While on, a command prints its annotations on stderr, appends
its Markdown summary to ``$GITHUB_STEP_SUMMARY`` when that is set, and every
other line it prints passes through :func:`runner.review.github.neutralise`,
so no answer, error or diff line can be read as a workflow command. The
formatting itself is ``runner/review/github*.py``; this module only decides
and writes.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from runner.errors import InputError, RunnerError
from runner.words import plural

if TYPE_CHECKING:
    from runner.review.diff_model import RunDiff
    from runner.review.github import Location
    from runner.run.events import RunResult
    from runner.spec.model import Conversation

ANNOTATION_MODES = ("auto", "github", "off")

annotations_option = click.option(
    "--annotations",
    type=click.Choice(ANNOTATION_MODES),
    default="auto",
    show_default=True,
    metavar="WHEN",
    help="GitHub Actions annotations of failures at their file and line, and a job summary "
    "appended to $GITHUB_STEP_SUMMARY: 'auto' when GITHUB_ACTIONS=true, 'github' always, "
    "'off' never.",
)
"""``--annotations``, shared by ``run``, ``diff`` and ``merge``."""


def annotations_on(mode: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``--annotations MODE`` prints annotations here."""
    return mode == "github" or (mode == "auto" and environ.get("GITHUB_ACTIONS") == "true")


def workspace_file(source: str, environ: Mapping[str, str] = os.environ) -> str:
    """``source`` as GitHub names files: relative to ``GITHUB_WORKSPACE`` (else the cwd).

    Empty for a file outside the workspace (a base branch checked out beside
    it): an annotation there would land on the workspace's file of that name.
    """
    if not source:
        return ""
    root = Path(environ.get("GITHUB_WORKSPACE") or os.getcwd()).resolve()
    try:
        return (Path.cwd() / source).resolve().relative_to(root).as_posix()
    except (ValueError, OSError):
        return ""


def locations_of(
    conversations: Iterable[Conversation], environ: Mapping[str, str] = os.environ
) -> dict[str, Location]:
    """Each conversation's file and turn lines, by id."""
    from runner.review.github import Location

    return {
        c.id: Location(workspace_file(c.source, environ), c.line, tuple(t.line for t in c.turns))
        for c in conversations
    }


def locations_from_files(
    records: Sequence[Mapping[str, Any]], environ: Mapping[str, str] = os.environ
) -> dict[str, Location]:
    """The lines of the records' conversations, read again from their files where they exist.

    For commands that only have transcripts (``diff``, ``merge``). A file
    that is gone or no longer loads points annotations at no line.
    """
    from runner.spec.loader import load_conversations

    found: dict[str, Location] = {}
    sources = {str(r.get("source")) for r in records if r.get("source")}
    for source in sorted(sources):
        if not Path(source).is_file():
            continue
        try:
            found.update(locations_of(load_conversations([source]), environ))
        except RunnerError:
            continue
    return {**found, **_by_record_id(records, found)}


def _by_record_id(
    records: Sequence[Mapping[str, Any]], found: Mapping[str, Location]
) -> dict[str, Location]:
    """Record ids (``ID@MODEL``, ``ID#K``) mapped to their conversation's location."""
    out: dict[str, Location] = {}
    for record in records:
        rid, model = str(record.get("id", "")), str(record.get("model", ""))
        base = rid.split("#")[0]
        base = base.removesuffix(f"@{model}") if model else base
        if rid not in found and base in found:
            out[rid] = found[base]
    return out


class _Neutralising(io.TextIOBase):
    """A text stream that writes every whole line neutralised to the stream it wraps."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner
        self.pending = ""

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.inner.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self.inner.errors

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.inner.isatty()

    def write(self, text: str) -> int:
        from runner.review.github import neutralise, runner_lines

        lines = runner_lines(self.pending + text)
        self.pending = lines.pop() if lines and not lines[-1].endswith(("\n", "\r")) else ""
        if lines:
            self.inner.write("".join(neutralise(line) for line in lines))
        return len(text)

    def flush(self) -> None:
        self.inner.flush()

    def finish(self) -> None:
        """Write a last line that never got its line end."""
        from runner.review.github import neutralise

        if self.pending:
            self.inner.write(neutralise(self.pending))
            self.pending = ""
        self.inner.flush()


class GitHubOutput:
    """While on: stdout and stderr neutralised, annotations printed, the summary appended."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self.environ = environ
        self.stderr: TextIO = sys.stderr

    def annotate(self, lines: Sequence[str]) -> None:
        """Print workflow commands on stderr, past the guard (they are ours)."""
        sys.stderr.flush()
        for line in lines:
            self.stderr.write(line + "\n")
        self.stderr.flush()

    def publish_batch(self, result: RunResult, batch: Iterable[Conversation]) -> None:
        """Annotations and the job summary of ``mtrun run``'s output (``batch``: as expanded)."""
        publish_run(
            self,
            result.output,
            locations_of(batch, self.environ),
            not_started=result.not_started,
            reason=result.stop_reason or "",
        )

    def annotate_input_errors(self, errors: Sequence[InputError]) -> None:
        """Errors at the file, line and column of problems in conversation files."""
        from runner.review.github import command_lines, input_annotation

        found = [
            input_annotation(
                workspace_file(e.path, self.environ), e.line or 0, e.column or 0, str(e)
            )
            for e in errors
        ]
        self.annotate(command_lines(found))

    def summarise(self, markdown: str) -> None:
        """Append ``markdown`` to ``$GITHUB_STEP_SUMMARY`` within GitHub's limit, if it is set."""
        from runner.review.github_summary import SUMMARY_LIMIT, fit

        target = self.environ.get("GITHUB_STEP_SUMMARY")
        if not target:
            return
        try:
            with open(target, "a", encoding="utf-8") as summary:
                used = summary.tell()
                text = fit(("\n" if used else "") + markdown, SUMMARY_LIMIT - used)
                summary.write(text)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            click.echo(
                f"mtrun: warning: cannot append the job summary to {target}: {reason}", err=True
            )


@contextmanager
def input_errors_annotated(output: GitHubOutput | None) -> Iterator[None]:
    """While ``output`` is on, an invalid conversation file raised inside is annotated too."""
    try:
        yield
    except InputError as exc:
        if output is not None:
            output.annotate_input_errors([exc])
        raise


@contextmanager
def github_output(
    on: bool, environ: Mapping[str, str] = os.environ
) -> Iterator[GitHubOutput | None]:
    """While ``on``: stdout and stderr neutralised (see the module docstring); else nothing."""
    if not on:
        yield None
        return
    output = GitHubOutput(environ)
    saved = sys.stdout, sys.stderr
    # A terminal is never a step's log, and its live progress line must not wait for a line end.
    out, err = (s if s.isatty() else _Neutralising(s) for s in saved)
    sys.stdout, sys.stderr = out, err
    try:
        yield output
    finally:
        for stream in (out, err):
            if isinstance(stream, _Neutralising):
                stream.finish()
        sys.stdout, sys.stderr = saved


def publish_run(
    output: GitHubOutput,
    transcript: Path,
    locations: Mapping[str, Location],
    *,
    not_started: int = 0,
    reason: str = "",
) -> None:
    """Annotations and the job summary of a run's transcript (``run``, ``merge``).

    ``not_started`` conversations of the batch have no record (the run
    stopped first, or no shard output holds them): one warning, ``reason``.
    """
    from runner.review.github import Annotation, command_lines, run_annotations
    from runner.review.github_summary import run_summary
    from runner.transcripts.reader import read_transcript

    records = read_transcript(transcript)
    found = run_annotations(records, locations)
    if not_started:
        title = f"mtrun: {plural(not_started, 'conversation')} not started"
        found.append(Annotation("warning", title, reason or "the run stopped before them"))
    output.annotate(command_lines(found))
    title = workspace_file(str(transcript), output.environ) or str(transcript)
    output.summarise(run_summary(records, locations, title=title, not_started=not_started))


def publish_diff(
    output: GitHubOutput, diff: RunDiff, locations: Mapping[str, Location], *, title: str
) -> None:
    """Annotations and the job summary of ``mtrun diff``'s regressions."""
    from runner.review.github import command_lines, diff_annotations
    from runner.review.github_summary import diff_summary

    output.annotate(command_lines(diff_annotations(diff, locations)))
    output.summarise(diff_summary(diff, locations, title=title))
