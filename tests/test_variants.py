"""The batch expanded per model and per repetition, made on access."""

from __future__ import annotations

import pytest

from runner.run.variants import Variants
from runner.spec.model import Conversation, Turn


def conv(cid: str, turns: int) -> Conversation:
    return Conversation(id=cid, source="s.yaml", turns=tuple(Turn(f"t{i}") for i in range(turns)))


BASE = [conv("a", 1), conv("b", 3)]


def test_ids_and_order_per_model_then_per_repetition() -> None:
    batch = Variants(BASE, ["m1", "m2"], 2)
    assert [c.id for c in batch] == [
        "a@m1#1", "a@m1#2", "a@m2#1", "a@m2#2",
        "b@m1#1", "b@m1#2", "b@m2#1", "b@m2#2",
    ]  # fmt: skip
    third = batch[2]
    assert (third.model, third.variant_of, third.group, third.repeat) == ("m2", "a", "a@m2", 1)
    assert [batch.turn_count(i) for i in range(len(batch))] == [1] * 4 + [3] * 4


def test_one_model_and_no_repeat_leave_the_batch_as_it_is() -> None:
    batch = Variants(BASE, ["only"], 1)
    assert len(batch) == 2
    assert batch[0] is BASE[0] and batch[-1] is BASE[1]
    assert batch[0:2] == BASE


def test_repeat_alone() -> None:
    batch = Variants(BASE, [], 3)
    assert [c.id for c in batch] == ["a#1", "a#2", "a#3", "b#1", "b#2", "b#3"]
    assert {c.group for c in batch} == {"a", "b"}
    assert batch[-1].repeat == 3


def test_out_of_range_and_a_bad_repeat() -> None:
    batch = Variants(BASE, ["m1", "m2"], 1)
    with pytest.raises(IndexError):
        batch[4]
    with pytest.raises(ValueError, match="at least 1"):
        Variants(BASE, [], 0)


def test_a_model_named_twice_runs_once() -> None:
    batch = Variants(BASE, ["m1", "m2", "m1"], 1)
    assert [c.id for c in batch] == ["a@m1", "a@m2", "b@m1", "b@m2"]
    assert list(Variants(BASE, ["m1", "m1"], 1)) == BASE


def test_model_options_replace_a_files_models() -> None:
    copies = [conv("f", 2).for_model("x"), conv("f", 2).for_model("y"), conv("a", 1)]
    assert [c.id for c in Variants(copies, [], 1)] == ["f@x", "f@y", "a"]
    one = Variants(copies, ["z"], 1)
    assert [(c.id, c.model, c.variant_of) for c in one] == [("f@z", "z", "f"), ("a", None, None)]
    several = Variants(copies, ["z", "w"], 2)
    assert [c.id for c in several] == [
        "f@z#1",
        "f@z#2",
        "f@w#1",
        "f@w#2",
        "a@z#1",
        "a@z#2",
        "a@w#1",
        "a@w#2",
    ]
    assert [several.turn_count(i) for i in range(len(several))] == [2] * 4 + [1] * 4
