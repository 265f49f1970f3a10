"""``plural``: the one rule for a count before its noun, shared by every layer."""

from __future__ import annotations

import pytest

from runner.words import plural


@pytest.mark.parametrize(
    ("number", "said"),
    [(0, "0 turns"), (1, "1 turn"), (2, "2 turns"), (1_000, "1,000 turns")],
)
def test_one_of_a_kind_is_singular_and_big_counts_are_grouped(number: int, said: str) -> None:
    assert plural(number, "turn") == said


def test_an_irregular_plural_is_given() -> None:
    assert [plural(n, "retry", "retries") for n in (1, 2, 1_234)] == [
        "1 retry",
        "2 retries",
        "1,234 retries",
    ]


def test_the_noun_may_be_several_words() -> None:
    assert plural(1, "failed check") == "1 failed check"
    assert plural(3, "failed check") == "3 failed checks"


def test_checks_keep_no_copy_of_the_rule() -> None:
    """One rule in one place: the check kinds use this module's, not one of their own."""
    from runner.checks import base

    assert not hasattr(base, "plural")
