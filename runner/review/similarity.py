"""How alike two answers are: one number from 0 to 1, in bounded time whatever their size.

The similarity of two differing answers is ``2 * matches / total length``,
rounded to 3 places, measured one of three ways (``similarity_method``):

``chars``
    difflib's ``SequenceMatcher(None, a, b, autojunk=False).ratio()``, for
    answers whose lengths multiply to at most :data:`CHAR_PAIRS` (about 500
    characters each). Beyond that difflib is too slow for a report: typical
    prose takes 0.5 s at 4,000 characters and 9 s at 20,000, and repetitive
    output ("x y x y ...") 3 s at 1,000, since its worst case is cubic; a
    model swap changes every answer of a batch.
``words``
    matches are the longest common subsequence of whitespace-separated
    words, computed bit-parallel in ``O(n * m / 64)`` whatever the text
    (two 20,000-word answers take about 0.1 s). On prose it lands close to
    difflib's character ratio; whitespace-only changes score 1.
``word_counts``
    difflib's ``quick_ratio`` over words (shared words, order ignored: an
    upper bound of ``words``), in linear time, when the word counts multiply
    to more than :data:`WORD_PAIRS`.
"""

from __future__ import annotations

import difflib

CHAR_PAIRS = 500 * 500
"""Largest product of two answers' lengths measured with difflib over characters."""
WORD_PAIRS = 30_000 * 30_000
"""Largest product of two answers' word counts measured by common subsequence."""


def similarity_of(a: str, b: str) -> tuple[float, str]:
    """How alike two texts are, 0 to 1 rounded to 3 places, and the method used.

    ``chars``, ``words`` or ``word_counts`` by size: see the module docstring.
    """
    if len(a) * len(b) <= CHAR_PAIRS:
        return round(difflib.SequenceMatcher(None, a, b, autojunk=False).ratio(), 3), "chars"
    words_a, words_b = a.split(), b.split()
    total = len(words_a) + len(words_b)
    if not total:
        return 1.0, "words"
    if len(words_a) * len(words_b) <= WORD_PAIRS:
        return round(2 * _common_subsequence(words_a, words_b) / total, 3), "words"
    quick = difflib.SequenceMatcher(None, words_a, words_b, autojunk=False).quick_ratio()
    return round(quick, 3), "word_counts"


def _common_subsequence(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of ``a`` and ``b``.

    Hyyrö's bit-parallel algorithm: one bit per element of the shorter list,
    a few big-integer operations per element of the longer one.
    """
    if len(a) > len(b):
        a, b = b, a
    positions: dict[str, int] = {}
    for i, item in enumerate(a):
        positions[item] = positions.get(item, 0) | (1 << i)
    full = (1 << len(a)) - 1
    row = full
    for item in b:
        matched = row & positions.get(item, 0)
        row = ((row + matched) | (row - matched)) & full
    return len(a) - row.bit_count()
