"""Merging the outputs of ``--shard K/N`` runs back into one transcript.

:func:`merge_shards` combines the shards' outputs into one transcript and
checks that each conversation is there exactly once and that no shard of the
split is missing. The merged file is created atomically and never replaces
an existing one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.errors import OutputError
from runner.transcripts.atomic import write_new
from runner.transcripts.jsonio import dumps_bytes
from runner.transcripts.reader import read_transcript
from runner.transcripts.status import Status


@dataclass(frozen=True)
class MergeReport:
    """What merging shard outputs found."""

    output: Path
    conversations: int
    """Conversations written to the merged output."""
    shards_seen: tuple[int, ...]
    shard_count: int | None
    missing_shards: tuple[int, ...] = ()
    duplicates: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Conversation ids found in more than one shard output, with those files."""
    missing: tuple[str, ...] = ()
    """Expected conversation ids found in no shard output."""
    unfinished: tuple[str, ...] = field(default_factory=tuple)
    """Conversations recorded as failed or interrupted."""

    @property
    def complete(self) -> bool:
        """Every conversation present exactly once, every shard present."""
        return not (self.missing_shards or self.duplicates or self.missing)


def merge_shards(
    output: Path,
    shard_files: Sequence[Path],
    *,
    expected_ids: Sequence[str] | None = None,
    shard_of: Callable[[str, int], int] | None = None,
) -> MergeReport:
    """Write the shards' conversations into ``output`` (which must not exist) and check them.

    A shard's output names its shard only in its records, so the output of a
    shard that holds none of the batch is empty and cannot be told from a
    missing one. With ``expected_ids`` and ``shard_of`` (the split's rule: the
    shard of an id out of N), only shards that hold a conversation of the
    batch must be present.
    """
    if output.exists():
        raise OutputError(f"{output} already exists; choose another output for the merge")
    seen: dict[str, list[str]] = {}
    records: list[dict[str, Any]] = []
    shard_indexes: set[int] = set()
    counts: set[int] = set()
    for path in shard_files:
        for record in read_transcript(path):
            seen.setdefault(str(record["id"]), []).append(str(path))
            if len(seen[str(record["id"])]) == 1:
                records.append(record)
            shard = record.get("shard")
            if isinstance(shard, dict):
                shard_indexes.add(int(shard.get("index", 0)))
                counts.add(int(shard.get("count", 0)))
    if len(counts) > 1:
        raise OutputError(
            f"the shard outputs come from different splits (shard counts {sorted(counts)}); "
            "merge the outputs of one --shard K/N run"
        )
    count = next(iter(counts), None)
    needed: Iterable[int] = range(1, (count or 0) + 1)
    if count and expected_ids is not None and shard_of is not None:
        needed = sorted({shard_of(cid, count) for cid in expected_ids})
    missing_shards = tuple(i for i in needed if i not in shard_indexes)
    duplicates = tuple((cid, tuple(files)) for cid, files in seen.items() if len(files) > 1)
    present = set(seen) | {str(r["group"]) for r in records if r.get("group")}
    missing = tuple(cid for cid in expected_ids or () if cid not in present)
    unfinished = tuple(
        str(r["id"]) for r in records if r.get("status") in (Status.FAILED, Status.INTERRUPTED)
    )
    _write_new(output, records)
    return MergeReport(
        output=output,
        conversations=len(records),
        shards_seen=tuple(sorted(shard_indexes)),
        shard_count=count,
        missing_shards=missing_shards,
        duplicates=duplicates,
        missing=missing,
        unfinished=unfinished,
    )


def _write_new(output: Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Write JSON Lines to a new file: never over an existing one."""
    data = b"".join(dumps_bytes(dict(record), newline=True) for record in records)
    write_new(output, data, hint="choose another output for the merge")
