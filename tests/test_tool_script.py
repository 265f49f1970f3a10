"""Scripted tool results: which rule answers which call."""

from __future__ import annotations

from runner.checks.tools import is_subset
from runner.spec.tools import ToolRule, ToolScript, ToolSettings, scripted_result

WEATHER = ToolScript(
    rules=(
        ToolRule(result='{"temp_c":18}', when={"city": "Paris"}),
        ToolRule(result="cold", when={"city": "Oslo", "unit": "c"}),
        ToolRule(result="unknown city"),
    )
)


def test_the_first_rule_whose_subset_matches_answers() -> None:
    settings = ToolSettings(results={"get_weather": WEATHER})
    assert scripted_result(settings, "get_weather", '{"city": "Paris", "x": 1}', 0) == (
        '{"temp_c":18}'
    )
    assert scripted_result(settings, "get_weather", '{"city": "Oslo"}', 0) == "unknown city"
    assert scripted_result(settings, "get_weather", "not json", 0) == "unknown city"


def test_a_sequence_answers_call_by_call_then_nothing() -> None:
    settings = ToolSettings(results={"clock": ToolScript(sequence=("10:00", "10:05"))})
    assert [scripted_result(settings, "clock", "{}", n) for n in range(3)] == [
        "10:00",
        "10:05",
        None,
    ]


def test_an_unscripted_call_is_none_unless_a_fixed_text_is_set() -> None:
    assert scripted_result(ToolSettings(), "search", "{}", 0) is None
    fixed = ToolSettings(unscripted_result="no result")
    assert scripted_result(fixed, "search", "{}", 0) == "no result"


def test_subset_tells_json_types_apart() -> None:
    assert is_subset({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}, "d": 3})
    assert is_subset(1, 1.0)
    assert not is_subset(True, 1) and not is_subset(1, True)
    assert not is_subset({"a": 1}, [1])
