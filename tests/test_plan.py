"""--dry-run: the cost plan of a batch, with nothing sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from runner.cli import main
from runner.run.plan import MESSAGE_OVERHEAD_TOKENS as M
from runner.run.plan import estimate_cost, plan_lines
from runner.spec.model import Conversation, Turn, apply_overrides


def conv(turns: int, **kw: object) -> Conversation:
    return Conversation(
        id=f"c{turns}", source="s.yaml", turns=tuple(Turn("abcd" * 10) for _ in range(turns)), **kw
    )  # type: ignore[arg-type]


def test_prompt_tokens_grow_with_the_square_of_the_turns() -> None:
    plan = estimate_cost(
        [apply_overrides(conv(1)), apply_overrides(conv(2)), apply_overrides(conv(4))]
    )
    one, two, four = (c.prompt_tokens for c in plan.conversations)
    user = M + 10  # 40 characters
    answer = M + 300
    assert one == user
    assert two == user + (2 * user + answer)
    assert four == sum(k * user + (k - 1) * answer for k in range(1, 5))
    assert four > 2 * two > 4 * one
    assert plan.requests == 7 and plan.prompt_tokens == one + two + four


def test_max_tokens_bounds_answers_and_completion() -> None:
    capped = apply_overrides(conv(3, params={"max_tokens": 50}))
    plan = estimate_cost([capped])
    (cost,) = plan.conversations
    user, answer = M + 10, M + 50
    assert cost.prompt_tokens == sum(k * user + (k - 1) * answer for k in range(1, 4))
    assert cost.max_completion_tokens == 150
    assert estimate_cost([apply_overrides(conv(3))]).conversations[0].max_completion_tokens is None


def test_dry_run_sends_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.yaml").write_text("turns: [Hello there, And again]\n")
    # No key, default remote endpoint: a dry run still works, since nothing is sent.
    result = CliRunner().invoke(main, ["--dry-run", "--repeat", "2", "a.yaml"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["conversation", "turns", "prompt", "tokens", "model"]
    assert lines[-2].startswith("total: 2 conversations, 4 requests, about ")
    assert lines[-1] == "estimates: about 4 characters a token; nothing was sent"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yaml"]


LIST_FORM = Path(__file__).resolve().parent.parent / "conversations" / "list_form.yaml"


def dry_run_ids(*args: str) -> list[str]:
    result = CliRunner().invoke(main, ["--mock", "--dry-run", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return [line.split()[0] for line in result.stdout.splitlines()[1:-2]]


def test_the_dry_run_lists_the_ids_the_run_writes() -> None:
    ids = dry_run_ids("--model", "a", "--model", "b", "--repeat", "2", str(LIST_FORM))
    assert sorted(ids) == [
        "list_form-1@a#1",
        "list_form-1@a#2",
        "list_form-1@b#1",
        "list_form-1@b#2",
        "list_form-2@a#1",
        "list_form-2@a#2",
        "list_form-2@b#1",
        "list_form-2@b#2",
    ]


@pytest.mark.parametrize(
    "options",
    [
        ("--model", "a", "--model", "b", "--repeat", "2"),
        ("--model", "z"),
        ("--repeat", "3", "--shard", "1/2"),
        ("--model", "x", "--model", "w", "--shard", "2/2"),
    ],
)
def test_dry_run_run_and_junit_expand_the_batch_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: tuple[str, ...]
) -> None:
    """One expansion (run/batch.py): the ids planned are the ids run and the ids reported."""
    import xml.etree.ElementTree as ET

    from helpers import read_jsonl

    monkeypatch.chdir(tmp_path)
    files = ["c.yaml", str(LIST_FORM)]
    (tmp_path / "c.yaml").write_text("id: c\nmodels: [x, y]\nturns: [Hi]\n")
    planned = dry_run_ids(*options, *files)
    args = ["--mock", "-q", *options, "-o", "out.jsonl", "--junit", "j.xml", *files]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    ran = [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")]
    reported = [case.attrib["name"] for case in ET.parse("j.xml").iter("testcase")]
    assert planned and sorted(planned) == sorted(ran) == sorted(reported)


@pytest.mark.parametrize(
    ("turns", "said"), [(1, "at most 1 completion token"), (2, "at most 2 completion tokens")]
)
def test_a_completion_bound_of_one_token_is_singular(turns: int, said: str) -> None:
    capped = apply_overrides(conv(turns, params={"max_tokens": 1}))
    assert plan_lines(estimate_cost([capped]))[-2].endswith(f" prompt tokens; {said}")
