"""Tolerant accessors for transcript fields read back from files."""

from __future__ import annotations

from runner.records import as_int, as_list, as_number, as_text, is_int


def test_accessors_never_trust_a_fields_type() -> None:
    assert as_list([1]) == [1] and as_list((1, 2)) == [1, 2]
    assert as_list(None) == [] and as_list("ab") == [] and as_list({"a": 1}) == []
    assert as_text(None) == "" and as_text("x") == "x" and as_text(3) == "3"
    assert is_int(3) and not is_int(True) and not is_int(3.0)
    assert as_int(7) == 7 and as_int(True) == 0 and as_int("7") == 0
    assert as_number(2) == 2.0 and as_number(1.5) == 1.5
    assert as_number(float("inf")) is None and as_number(float("nan")) is None
    assert as_number(False) is None and as_number("1") is None
