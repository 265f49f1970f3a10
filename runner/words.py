"""How a count is written before its noun, in every message mtrun shows people.

One of a kind is singular ("1 conversation"), any other count plural ("0
conversations", "2 conversations"), and big numbers get thousands separators
("1,234 turns"). The rule sits beside ``errors.py`` because every layer writes
such messages: the run's progress and plan, check results, the review layer's
Markdown, JUnit and GitHub summaries. JSON keys and attributes that tools parse
keep their fixed names and never go through here.
"""

from __future__ import annotations


def plural(number: int, word: str, many: str | None = None) -> str:
    """``1 word``, ``2 words``, ``1,234 words``; ``many`` for the rest: ``2 retries``."""
    return f"{number:,} {word}" if number == 1 else f"{number:,} {many or word + 's'}"
