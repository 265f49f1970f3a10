"""The compact JSON every request body and transcript line is written with."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


def _strict(data: bytes) -> Any:
    """``data`` read as JSON proper: NaN and the infinities are refused."""

    def refuse(word: str) -> None:
        raise ValueError(f"{word} is not JSON")

    return json.loads(data, parse_constant=refuse)


def test_nan_and_the_infinities_are_written_as_null() -> None:
    value = {"usage": {"score": float("nan")}, "logprobs": [float("-inf"), 0.5, float("inf")]}
    data = dumps_bytes(value)
    assert _strict(data) == {"usage": {"score": None}, "logprobs": [None, 0.5, None]}


def test_values_orjson_refuses_are_still_written_and_stay_strict_json() -> None:
    # Each sends dumps_bytes to its second encoder; NaN must still be null there.
    value = {"big": 2**70, 7: "seven", "nan": float("nan"), "deep": [[float("inf")]]}
    assert _strict(dumps_bytes(value)) == {
        "big": 2**70,
        "7": "seven",
        "nan": None,
        "deep": [[None]],
    }
    odd = {"content": "\ud800", "n": float("nan")}
    assert dumps_bytes(odd, newline=True) == b'{"content":"\\ud800","n":null}\n'


_TEXT = st.text(st.characters(exclude_categories=()))  # lone surrogates too
_JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=20,
)


def _nulled(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {key: _nulled(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nulled(item) for item in value]
    return value


@given(_JSONISH)
def test_any_value_reads_back_the_same_from_strict_json(value: Any) -> None:
    assert _strict(dumps_bytes(value)) == _nulled(value)
