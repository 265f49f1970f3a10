"""A conversation's totals: answered turns, tokens, attempts and retries, counted one way.

The record type writes them as a record's ``totals`` and every reader (show,
Markdown, diff, JUnit, the HTML report) counts them with :func:`totals`, so
no two views of one record can disagree. It reads a record as it comes from
a file: a turn that is not an object is not counted, a usage field that is
not an int counts 0, and a turn's ``total_tokens`` defaults to its prompt
plus completion tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runner.transcripts.fields import as_int, as_list, is_int


@dataclass(frozen=True, slots=True)
class Totals:
    """What a conversation's turns add up to."""

    turns: int
    """Turns answered (without an error)."""
    turns_sent: int
    """Turns recorded, the failed one included."""
    prompt_tokens: int
    """Prompt tokens the turns' usage reports."""
    completion_tokens: int
    """Completion tokens the turns' usage reports."""
    total_tokens: int
    """Total tokens the turns' usage reports."""
    attempts: int
    """Requests made, over every turn."""
    retries: int
    """Attempts after the first of each turn."""
    usage_reported: bool
    """Whether any turn has a usage object (else the token counts say nothing)."""

    def as_dict(self) -> dict[str, int]:
        """The record's ``totals`` field, in the order transcripts write it."""
        return {
            "turns": self.turns,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "attempts": self.attempts,
            "retries": self.retries,
        }


def totals(record: Mapping[str, Any]) -> Totals:
    """The totals of a record's ``turns`` (see the module docstring)."""
    turns = [t for t in as_list(record.get("turns")) if isinstance(t, Mapping)]
    prompt = completion = total = attempts = retries = 0
    reported = False
    for turn in turns:
        usage = turn.get("usage")
        if isinstance(usage, Mapping):
            reported = True
            p, c = as_int(usage.get("prompt_tokens")), as_int(usage.get("completion_tokens"))
            prompt, completion = prompt + p, completion + c
            total += as_int(usage.get("total_tokens")) or p + c
        tried = as_list(turn.get("attempts"))
        attempts += len(tried)
        # One request per step (tool calls make several): each step's last attempt is no retry.
        steps = {a["step"] for a in tried if isinstance(a, Mapping) and is_int(a.get("step"))}
        retries += max(len(tried) - max(len(steps), 1), 0)
    return Totals(
        turns=sum(1 for t in turns if t.get("error") is None),
        turns_sent=len(turns),
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total,
        attempts=attempts,
        retries=retries,
        usage_reported=reported,
    )
