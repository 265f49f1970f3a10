"""Several models in one run, compared like two runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import read_jsonl

from runner.cli import main


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(
        "conversations:\n  - id: one\n    turns: [Hi, More]\n  - id: two\n    turns: [Yo]\n"
    )
    result = invoke(
        "--mock", "-q", "--model", "small", "--model", "large", "-o", "m.jsonl", "c.yaml"
    )
    assert result.exit_code == 0, result.stderr
    return tmp_path / "m.jsonl"


def test_each_conversation_runs_once_per_model_into_one_output(run: Path) -> None:
    records = {r["id"]: r for r in read_jsonl(run)}
    assert sorted(records) == ["one@large", "one@small", "two@large", "two@small"]
    assert records["one@small"]["model"] == "small" and records["one@large"]["model"] == "large"
    assert records["one@small"]["variant_of"] == "one"
    assert records["one@small"]["messages"][0] == records["one@large"]["messages"][0]
    assert records["one@small"]["messages"][1] != records["one@large"]["messages"][1]


def test_diff_and_report_compare_two_models(run: Path) -> None:
    result = invoke("diff", str(run), "--models", "small", "large", "--json", "--fail-on", "never")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert sorted(c["id"] for c in data["conversations"]) == ["one", "two"]
    assert data["summary"]["added"] == 0 and data["summary"]["removed"] == 0
    assert {c["new_model"] for c in data["conversations"]} == {"large"}
    report = invoke("report", str(run), "--models", "small", "large")
    assert report.exit_code == 0, report.stderr
    assert (run.parent / "m.models.html").exists()
    missing = invoke("diff", str(run), "--models", "small", "nope")
    assert missing.exit_code == 2 and "'nope'" in missing.stderr


def test_dry_run_counts_every_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text("turns: [Hi, More]\n")
    result = invoke("--dry-run", "--model", "a", "--model", "b", "--model", "c", "c.yaml")
    assert result.exit_code == 0
    assert "total: 3 conversations, 6 requests" in result.stdout


def test_a_model_given_twice_runs_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text("id: c\nturns: [Hi]\n")
    args = ["--mock", "--model", "a", "--model", "b", "--model", "a", "-o", "m.jsonl", "c.yaml"]
    result = invoke(*args)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines()[0] == (
        "mtrun: note: --model a given more than once; each runs once"
    )
    assert "2 conversations: 2 completed, 0 failed" in result.stderr
    assert sorted(r["id"] for r in read_jsonl(tmp_path / "m.jsonl")) == ["c@a", "c@b"]
    same = invoke("--mock", "-q", "--model", "a", "--model", "a", "-o", "one.jsonl", "c.yaml")
    assert same.exit_code == 0 and same.stderr == ""
    (record,) = read_jsonl(tmp_path / "one.jsonl")
    assert (record["id"], record["model"]) == ("c", "a")
    dry = invoke("--dry-run", "--model", "a", "--model", "a", "c.yaml")
    assert "total: 1 conversation, 1 request" in dry.stdout


FILE_MODELS = "id: c\nmodels: [x, y]\nturns: [Hi]\n"


@pytest.mark.parametrize(
    ("models", "ids"),
    [
        ((), {"c@x": "x", "c@y": "y"}),
        (("z",), {"c@z": "z"}),
        (("z", "w"), {"c@z": "z", "c@w": "w"}),
        (("x",), {"c@x": "x"}),
    ],
)
def test_model_options_win_over_the_files_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models: tuple[str, ...], ids: dict[str, str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(FILE_MODELS)
    options = [arg for model in models for arg in ("--model", model)]
    result = invoke("--mock", *options, "-o", "m.jsonl", "c.yaml")
    assert result.exit_code == 0, result.stderr
    said = "1 conversation" if len(ids) == 1 else f"{len(ids)} conversations"
    assert f"{said}: {len(ids)} completed" in result.stderr
    records = read_jsonl(tmp_path / "m.jsonl")
    assert {r["id"]: r["model"] for r in records} == ids
    assert {r["variant_of"] for r in records} == {"c"}
    dry = invoke("--dry-run", *options, "c.yaml")
    assert f"total: {said}, " in dry.stdout
