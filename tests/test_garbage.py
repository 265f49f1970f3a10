"""The garbage collector's pace during a run: fewer young collections, the setting put back."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from runner.cli.garbage import YOUNG_THRESHOLD, fewer_collections


@pytest.fixture
def default_threshold() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield gc.get_threshold()
    gc.set_threshold(*before)


def test_the_young_threshold_is_raised_inside_and_put_back_after(
    default_threshold: tuple[int, int, int],
) -> None:
    with fewer_collections():
        assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
    assert gc.get_threshold() == default_threshold


def test_put_back_after_an_error_too(default_threshold: tuple[int, int, int]) -> None:
    with pytest.raises(KeyboardInterrupt), fewer_collections():
        raise KeyboardInterrupt
    assert gc.get_threshold() == default_threshold


def test_a_higher_threshold_set_by_the_user_is_kept() -> None:
    before = gc.get_threshold()
    gc.set_threshold(50_000, 5, 5)
    try:
        with fewer_collections():
            assert gc.get_threshold() == (50_000, 5, 5)
    finally:
        gc.set_threshold(*before)


def test_a_run_still_collects_cycles() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    gc.collect()
    with fewer_collections():
        for _ in range(YOUNG_THRESHOLD * 3):
            Node()
        # Each allocation pair leaves a cycle: at most one threshold's worth is left over.
        alive = sum(isinstance(o, Node) for o in gc.get_objects())
    assert alive <= YOUNG_THRESHOLD
