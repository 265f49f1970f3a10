"""The commands that read transcripts: ``diff``, ``show``, ``export``, ``report``.

``merge`` has its own module, ``merge.py``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from runner.cli.base import (
    EXIT_CHECKS_FAILED,
    EXIT_OK,
    main,
)
from runner.cli.github import annotations_option
from runner.errors import InputError
from runner.review import FAIL_ON
from runner.transcripts.status import Status

_ids_option = click.option(
    "--id",
    "ids",
    multiple=True,
    metavar="GLOB",
    help="Only conversations whose id matches (repeatable).",
)
"""``--id GLOB``, shared by the commands that pick conversations out of a transcript."""


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
    type=click.Choice(FAIL_ON),
    default="regressed",
    show_default=True,
    help="Exit 1 when a conversation regressed (newly failed, a check flipped to failing), "
    "when anything changed, or never.",
)
@click.option(
    "--color/--no-color", default=None, help="Colour the text report (default: on a terminal)."
)
@annotations_option
def diff_command(
    base: Path,
    new: Path | None,
    models: tuple[str, str] | None,
    as_json: bool,
    fail_on: str,
    color: bool | None,
    annotations: str,
) -> None:
    """Compare two transcripts: BASE (e.g. main) against NEW (e.g. a pull request).

    \b
    Pairs conversations by id and turns by index, and reports conversations
    added or removed, status changes, the first turn where answers diverge
    (with a unified diff and a similarity), checks that flipped, and token and
    latency deltas. A conversation missing from NEW counts as a regression.
    Exit 1 per --fail-on; 2 when a file cannot be read or NEW holds no
    conversation at all (an empty or unreadable output is no evidence).
    """
    from runner.cli.github import annotations_on, github_output, locations_from_files, publish_diff
    from runner.review.diff import diff_runs, render_json, should_fail
    from runner.review.diff_text import render_text
    from runner.review.github import json_without_commands
    from runner.transcripts.fields import escape_surrogates

    before = read_for_review(base)
    after = read_for_review(new) if new is not None else before
    if new is not None and not after:
        raise InputError(f"{new}: no conversation in the transcript; nothing to compare")
    if models:
        from runner.transcripts.records import records_of_model

        before, after = records_of_model(before, models[0]), records_of_model(after, models[1])
        for model, records in zip(models, (before, after), strict=True):
            if not records:
                raise InputError(f"--models: no conversation in the transcript used {model!r}")
    elif new is None:
        raise InputError("give two transcripts (BASE NEW), or one with --models A B")
    report = diff_runs(before, after)
    on = annotations_on(annotations)
    with github_output(on) as github:
        if as_json:
            text = escape_surrogates(json.dumps(render_json(report), ensure_ascii=False, indent=2))
            click.echo(json_without_commands(text) if on else text)
        else:
            use_color = (
                color if color is not None else sys.stdout.isatty() and "NO_COLOR" not in os.environ
            )
            click.echo(render_text(report, color=use_color))
        if github is not None:
            title = f"{base} vs {new}" if models is None else f"{models[0]} vs {models[1]}"
            publish_diff(github, report, locations_from_files(after), title=title)
    sys.exit(EXIT_CHECKS_FAILED if should_fail(report, fail_on) else EXIT_OK)


def read_for_review(path: Path) -> list[dict[str, Any]]:
    """A transcript's current records, or a one-line error and exit 2.

    A last line that is not a whole record (torn by a crash) is skipped by
    the reader; a warning on stderr names it, so a review never silently
    shows less than the file holds.
    """
    from runner.transcripts.fields import unreadable_last_line
    from runner.transcripts.reader import read_transcript

    records = read_transcript(path)
    cut = unreadable_last_line(path)
    if cut is not None:
        click.echo(
            f"mtrun: warning: {path}:{cut}: not a whole transcript line (torn by a crash?); "
            "skipped",
            err=True,
        )
    return records


@main.command("show")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_ids_option
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(Status.ALL),
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

    from runner.review.show import Selection, render_records, select, summary_line

    records = read_for_review(file)
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
        if use_color:  # click sets LESS=-R only when it picks colour itself
            os.environ["LESS"] = f"{os.environ.get('LESS', '')} -R".strip()
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
@_ids_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to a file instead of standard output.",
)
def export_command(file: Path, fmt: str, ids: tuple[str, ...], output: Path | None) -> None:
    """Export transcripts as Markdown, one section per conversation (for pull requests, issues)."""
    from runner.review.markdown import render_markdown
    from runner.review.show import Selection, select
    from runner.transcripts.atomic import write_new

    chosen = select(read_for_review(file), Selection(ids=ids))
    text = render_markdown(chosen, title=f"mtrun transcript: {file.name}")
    if output is None:
        click.echo(text, nl=False)
        return
    write_new(output, text.encode("utf-8"), hint="choose another -o")


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
    from runner.review.report import build_comparison, build_report, write_report

    if len(transcripts) > 2:
        raise InputError(
            "give one transcript, or two to compare: mtrun report BASE NEW "
            "(for the shards of one batch: mtrun merge OUT SHARDS... --report OUT.html)"
        )
    if models:
        from runner.transcripts.records import records_of_model

        records = [read_for_review(path) for path in transcripts]
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
        page = build_report(read_for_review(path), title=path.name, source=str(path))
        target = output or path.with_suffix(".html")
    else:
        base, new = transcripts
        page = build_comparison(
            read_for_review(base),
            read_for_review(new),
            title=f"{base.name} vs {new.name}",
            base_source=str(base),
            new_source=str(new),
        )
        target = output or new.with_name(new.stem + ".compare.html")
    replacing = target.exists()
    write_report(target, page)
    click.echo(f"wrote {target}" + (" (replacing the earlier report)" if replacing else ""))
