"""``mtrun merge``: one output (and one report) from the outputs of a sharded batch."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from runner.cli.base import EXIT_FAILED, EXIT_OK, main
from runner.cli.github import annotations_option
from runner.cli.review import read_for_review
from runner.words import plural

if TYPE_CHECKING:
    from runner.transcripts.merge import MergeReport


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
@click.option(
    "--report",
    "html",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Also write one HTML report of the whole batch (as 'mtrun report OUTPUT').",
)
@click.option(
    "--junit",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Also write one JUnit XML report of the whole batch (conversations missing from "
    "every shard, with --conversations, as errors).",
)
@annotations_option
def merge_command(
    output: Path,
    shards: tuple[Path, ...],
    patterns: tuple[str, ...],
    html: Path | None,
    junit: Path | None,
    annotations: str,
) -> None:
    """Combine the outputs of `mtrun --shard K/N` runs into OUTPUT.

    \b
    Checks that every shard of the split is present and every conversation
    appears exactly once (with --conversations: that none of the batch is
    missing). Exit 0 when complete, 3 when something is missing or
    duplicated (OUTPUT and the reports are still written, for inspection),
    2 on bad input. With --report and --junit, one page and one JUnit file
    cover every shard: the batch's results in one place.
    """
    from runner.cli.github import annotations_on, github_output
    from runner.spec.loader import load_conversations
    from runner.transcripts.merge import merge_shards

    conversations = load_conversations(patterns) if patterns else None
    expected = [c.id for c in conversations] if conversations is not None else None
    from runner.run.shard import shard_of

    report = merge_shards(output, shards, expected_ids=expected, shard_of=shard_of)
    sources = {c.id: c.source for c in conversations or ()}
    missing = [(cid, sources.get(cid, "")) for cid in report.missing]
    with github_output(annotations_on(annotations)) as github:
        _merge_lines(report, output, len(shards))
        _merged_reports(output, html=html, junit=junit, missing=missing)
        if github is not None:
            from runner.cli.github import locations_from_files, publish_run

            merged = read_for_review(output)
            reason = "missing from every shard output"
            where = locations_from_files(merged)
            publish_run(github, output, where, not_started=len(missing), reason=reason)
    sys.exit(EXIT_OK if report.complete else EXIT_FAILED)


def _merged_reports(
    output: Path, *, html: Path | None, junit: Path | None, missing: list[tuple[str, str]]
) -> None:
    """The HTML page and the JUnit file of a merged batch, when asked for."""
    if html is None and junit is None:
        return
    records = read_for_review(output)
    if html is not None:
        from runner.review.report import build_report, write_report

        write_report(html, build_report(records, title=output.name, source=str(output)))
        click.echo(f"wrote {html}")
    if junit is not None:
        from runner.review.junit import write_junit

        reason = "missing from every shard output"
        write_junit(junit, records, run_name=output.stem, batch=missing, not_run_reason=reason)
        click.echo(f"wrote {junit}")


def _merge_lines(report: MergeReport, output: Path, count: int) -> None:
    """What the merge found, on stdout and stderr."""
    merged = f"{plural(report.conversations, 'conversation')} from {plural(count, 'file')}"
    click.echo(f"merged {merged} into {output}")
    for index in report.missing_shards:
        click.echo(f"missing shard: {index}/{report.shard_count}", err=True)
    for cid, files in report.duplicates:
        click.echo(f"duplicated: {cid} in {', '.join(files)}", err=True)
    for cid in report.missing:
        click.echo(f"missing conversation: {cid}", err=True)
    if report.unfinished:
        one = len(report.unfinished) == 1
        click.echo(
            f"{plural(len(report.unfinished), 'conversation')} failed or "
            f"{'was' if one else 'were'} interrupted "
            f"(resume {'its' if one else 'their'} shard with --resume)",
            err=True,
        )
