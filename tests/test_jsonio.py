"""The compact JSON every request body and transcript line is written with."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runner.transcripts.jsonio import dumps_bytes

VALUES: list[Any] = [
    {"b": 1, "a": [1.5, None, True], "text": "héllo → 世界", "nested": {"k": ""}},
    [{"role": "user", "content": "x"}, {"role": "assistant", "content": 'y\n"z"'}],
    "just a string",
    42,
]


@pytest.mark.parametrize("value", VALUES)
def test_it_is_compact_utf8_json_in_the_given_key_order(value: Any) -> None:
    expected = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    assert dumps_bytes(value) == expected
    assert dumps_bytes(value, newline=True) == expected + b"\n"


def test_a_lone_surrogate_is_written_with_ascii_escapes() -> None:
    value = {"content": "ok \ud800 é"}
    assert dumps_bytes(value, newline=True) == b'{"content":"ok \\ud800 \\u00e9"}\n'
    assert json.loads(dumps_bytes(value)) == value


def test_a_value_json_cannot_hold_is_refused() -> None:
    with pytest.raises(TypeError):
        dumps_bytes({"when": object()})
