"""Splitting a batch across machines, and merging the pieces back.

``--shard K/N`` keeps the conversations whose id hashes to shard K of N
(1-based). The hash is SHA-256 of the id, so every machine, Python version
and run agrees on the split without talking to the others; repetitions of a
conversation (``--repeat``) stay in one shard. ``--shard auto`` reads the
shard from the scheduler that started the process:

- ``MTRUN_SHARD=K/N`` (anything, e.g. a CI matrix);
- a Slurm job array: ``SLURM_ARRAY_TASK_ID`` (offset by
  ``SLURM_ARRAY_TASK_MIN``) of ``SLURM_ARRAY_TASK_COUNT``;
- a Kubernetes Indexed Job: ``JOB_COMPLETION_INDEX`` (0-based), with the
  count given as ``--shard auto/N`` or ``MTRUN_SHARD_COUNT``.

``merge_shards`` combines the shards' outputs into one transcript and checks
that each conversation is there exactly once and that no shard is missing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.errors import ConfigError, OutputError
from runner.transcripts.atomic import write_new
from runner.transcripts.jsonio import dumps_bytes
from runner.transcripts.status import Status


@dataclass(frozen=True, slots=True)
class Shard:
    """One part of a batch split N ways."""

    index: int
    """1-based."""
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, conversation_id: str) -> bool:
        """Whether this shard runs the conversation with this id."""
        return shard_of(conversation_id, self.count) == self.index


def shard_of(conversation_id: str, count: int) -> int:
    """The 1-based shard a conversation id belongs to, out of ``count``."""
    digest = hashlib.sha256(conversation_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def parse_shard(value: str, env: Mapping[str, str]) -> Shard:
    """``K/N``, ``auto`` or ``auto/N`` (see the module docstring)."""
    text = value.strip()
    if text == "auto" or text.startswith("auto/"):
        count = text[5:] or env.get("MTRUN_SHARD_COUNT", "")
        return _from_env(env, count)
    return _parse_pair(text, "--shard")


def _parse_pair(text: str, what: str) -> Shard:
    index, sep, count = text.partition("/")
    try:
        shard = Shard(int(index), int(count)) if sep else None
    except ValueError:
        shard = None
    if shard is None or not 1 <= shard.index <= shard.count:
        raise ConfigError(f"{what} {text!r}: expected K/N with 1 <= K <= N, e.g. 2/8")
    return shard


def _from_env(env: Mapping[str, str], count: str) -> Shard:
    if env.get("MTRUN_SHARD"):
        return _parse_pair(env["MTRUN_SHARD"], "MTRUN_SHARD")
    if env.get("SLURM_ARRAY_TASK_ID") and env.get("SLURM_ARRAY_TASK_COUNT"):
        first = int(env.get("SLURM_ARRAY_TASK_MIN", "0") or 0)
        index = int(env["SLURM_ARRAY_TASK_ID"]) - first + 1
        return _parse_pair(f"{index}/{env['SLURM_ARRAY_TASK_COUNT']}", "the Slurm array task")
    if env.get("JOB_COMPLETION_INDEX"):
        if not count:
            raise ConfigError(
                "--shard auto in a Kubernetes Indexed Job needs the shard count: "
                "--shard auto/N or MTRUN_SHARD_COUNT=N (N = the Job's completions)"
            )
        index = int(env["JOB_COMPLETION_INDEX"]) + 1
        return _parse_pair(f"{index}/{count}", "JOB_COMPLETION_INDEX")
    raise ConfigError(
        "--shard auto found no shard in the environment: set MTRUN_SHARD=K/N, or run it as a "
        "Slurm job array or a Kubernetes Indexed Job"
    )


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
) -> MergeReport:
    """Write the shards' conversations into ``output`` (which must not exist) and check them."""
    from runner.transcripts.store import read_transcript

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
    missing_shards = tuple(i for i in range(1, (count or 0) + 1) if i not in shard_indexes)
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
