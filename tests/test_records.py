"""Tolerant accessors for transcript fields read back from files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runner.transcripts.fields import (
    NESTING_SHOWN,
    TOO_DEEP,
    as_int,
    as_list,
    as_number,
    as_text,
    escape_surrogates,
    is_int,
    shallow,
    to_json,
    unreadable_last_line,
)


def test_accessors_never_trust_a_fields_type() -> None:
    assert as_list([1]) == [1] and as_list((1, 2)) == [1, 2]
    assert as_list(None) == [] and as_list("ab") == [] and as_list({"a": 1}) == []
    assert as_text(None) == "" and as_text("x") == "x" and as_text(3) == "3"
    assert is_int(3) and not is_int(True) and not is_int(3.0)
    assert as_int(7) == 7 and as_int(True) == 0 and as_int("7") == 0
    assert as_number(2) == 2.0 and as_number(1.5) == 1.5
    assert as_number(float("inf")) is None and as_number(float("nan")) is None
    assert as_number(False) is None and as_number("1") is None


def test_lone_surrogates_are_escaped_the_same_way_as_text_and_in_json() -> None:
    assert escape_surrogates("a\ud800b\udfff") == "a\\ud800b\\udfff"
    assert escape_surrogates("🙂 é") == "🙂 é"
    document = to_json({"id": "a\ud800"})
    document.encode("utf-8")
    assert document == '{"id": "a\\ud800"}'
    assert json.loads(document) == {"id": "a\ud800"}


def test_odd_values_become_json_that_always_parses() -> None:
    deep: Any = "bottom"
    for _ in range(950):
        deep = [deep]
    value = {"nan": float("nan"), "inf": float("-inf"), "deep": deep, "t": (1, 2)}
    back = json.loads(to_json(value))
    assert back["nan"] == "nan" and back["inf"] == "-inf" and back["t"] == [1, 2]
    level, depth = back["deep"], 1
    while isinstance(level, list):
        level, depth = level[0], depth + 1
    assert level == TOO_DEEP and depth == NESTING_SHOWN
    assert TOO_DEEP in as_text(deep)
    assert shallow({1: "a"}) == {"1": "a"}


def test_an_unreadable_last_line_is_found(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    for content, expected in (
        ("", None),
        ('{"id": "a"}\n', None),
        ('{"id": "a"}\n{"id": "b", "st', 2),
        ('{"id": "a"}\n[1]\n', 2),
        ('{"no_id": 1}', 1),
        ("\n", 1),
    ):
        path.write_text(content, encoding="utf-8")
        assert unreadable_last_line(path) == expected, content
    assert unreadable_last_line(tmp_path / "missing.jsonl") is None
    assert unreadable_last_line(tmp_path) is None
