"""A batch for the scale-out examples: conversations spread over every shard.

The examples split a batch 16 (Slurm) or 8 (Kubernetes) ways. A batch with
an empty shard would leave that task nothing to prove, so this one is made
of conversations picked by the split itself: ``per_shard`` in each shard,
each with ``turns`` user turns whose first one names the conversation (the
fault server tells conversations apart by it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from runner.run.shard import shard_of


def write_batch(folder: Path, shards: int, per_shard: int = 3, turns: int = 3) -> list[str]:
    """Write ``folder/batch.yaml``; the conversation ids, in shard order."""
    picked: dict[int, list[str]] = {k: [] for k in range(1, shards + 1)}
    number = 0
    while any(len(ids) < per_shard for ids in picked.values()):
        cid = f"c-{number:03d}"
        number += 1
        owner = picked[shard_of(cid, shards)]
        if len(owner) < per_shard:
            owner.append(cid)
    ids = [cid for k in sorted(picked) for cid in picked[k]]
    conversations = [
        {"id": cid, "turns": [f"{cid}, question {t + 1}: what comes next?" for t in range(turns)]}
        for cid in ids
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "batch.yaml").write_text(yaml.safe_dump(conversations, sort_keys=False))
    return ids


def first_turn(cid: str) -> str:
    """The first user message of conversation ``cid`` (the fault server's key for it)."""
    return f"{cid}, question 1: what comes next?"


def messages_by_id(path: Path) -> dict[str, Any]:
    """Each conversation's status and messages in a transcript, by id."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["id"]: (r["status"], r["messages"]) for r in records}
