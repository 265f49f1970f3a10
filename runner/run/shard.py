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

Merging the shards' outputs back is :mod:`runner.transcripts.merge`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from runner.errors import ConfigError


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
