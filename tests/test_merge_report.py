"""One report for a sharded batch: ``mtrun merge --report --junit`` over real ``--shard`` outputs.

The batch runs once whole and once as three shards; the merged page and
JUnit file must say what the whole run's say, so a user of an N-way job
array opens one page instead of N.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import record

from runner.cli import main

COUNT = 12


def invoke(*args: str, **env: str) -> Any:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace with twelve conversations, two of which fail a check on the offline backend."""
    monkeypatch.chdir(tmp_path)
    items = []
    for i in range(COUNT):
        check = "        expect: {contains: zzz}\n" if i in (3, 7) else ""
        items.append(f"  - id: c{i:02d}\n    turns:\n      - content: question {i}\n{check}")
    (tmp_path / "conversations").mkdir()
    (tmp_path / "conversations" / "batch.yaml").write_text("conversations:\n" + "".join(items))
    return tmp_path


def run_shards(count: int, skip: int | None = None) -> list[str]:
    files = []
    for k in range(1, count + 1):
        if k == skip:
            continue
        result = invoke("--mock", "--shard", f"{k}/{count}", "-o", f"s{k}.jsonl", "conversations/")
        assert result.exit_code in (0, 1), result.stderr
        files.append(f"s{k}.jsonl")
    return files


def cases_of(path: str) -> dict[str, tuple[str, str]]:
    """Each testcase of a JUnit file: name -> (classname, its outcome element or 'passed')."""
    root = ET.parse(path).getroot()
    return {
        case.get("name", ""): (
            case.get("classname", ""),
            next((child.tag for child in case if child.tag in ("failure", "error")), "passed"),
        )
        for case in root.iter("testcase")
    }


def page_ids(path: str) -> list[str]:
    page = Path(path).read_text(encoding="utf-8")
    match = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    assert match
    (run,) = json.loads(match.group(1))["runs"]
    return sorted(c["id"] for c in run["conversations"])


def test_the_merged_batch_has_one_page_and_one_junit_file_like_a_whole_run(batch: Path) -> None:
    whole = invoke("--mock", "-o", "whole.jsonl", "--junit", "whole.xml", "conversations/")
    assert whole.exit_code == 1
    assert invoke("report", "whole.jsonl", "-o", "whole.html").exit_code == 0
    shards = run_shards(3)
    result = invoke(
        "merge", "all.jsonl", *shards, "--conversations", "conversations/",
        "--report", "all.html", "--junit", "all.xml",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"merged {COUNT} conversations from 3 files into all.jsonl",
        "wrote all.html",
        "wrote all.xml",
    ]
    assert cases_of("all.xml") == cases_of("whole.xml")
    assert len(cases_of("all.xml")) == COUNT
    root = ET.parse("all.xml").getroot()
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("12", "2", "0")
    assert page_ids("all.html") == page_ids("whole.html") == [f"c{i:02d}" for i in range(COUNT)]


def test_a_missing_shard_still_gets_its_reports_and_its_conversations_count(batch: Path) -> None:
    shards = run_shards(3, skip=2)
    result = invoke(
        "merge", "part.jsonl", *shards, "--conversations", "conversations/",
        "--report", "part.html", "--junit", "part.xml",
    )  # fmt: skip
    assert result.exit_code == 3
    assert "missing shard: 2/3" in result.stderr
    cases = cases_of("part.xml")
    assert len(cases) == COUNT  # the missing shard's conversations are there, as errors
    missing = {name for name, (_, outcome) in cases.items() if outcome == "error"}
    assert missing and len(page_ids("part.html")) == COUNT - len(missing)
    root = ET.parse("part.xml").getroot()
    assert root.get("errors") == str(len(missing))
    error = next(root.iter("error"))
    assert error.get("message") == "not run: missing from every shard output"


def test_the_merge_annotates_and_summarises_the_whole_batch(batch: Path) -> None:
    shards = run_shards(4)
    summary = batch / "summary.md"
    result = invoke("merge", "all.jsonl", *shards, GITHUB_ACTIONS="true",
                    GITHUB_STEP_SUMMARY=str(summary))  # fmt: skip
    assert result.exit_code == 0, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("::error ")]
    assert sorted(line.split("::")[1] for line in errors) == [
        "error file=conversations/batch.yaml,line=13,title=c03%3A turn 1%3A contains failed",
        "error file=conversations/batch.yaml,line=26,title=c07%3A turn 1%3A contains failed",
    ]
    text = summary.read_text()
    assert text.startswith(
        "## ❌ mtrun: `all.jsonl`\n\n**12 conversations**: 10 completed, 2 with failed checks"
    )


def write_records(path: str, records: list[dict[str, Any]]) -> str:
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_the_merge_counts_one_in_the_singular_and_big_ones_grouped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    one = write_records("one.jsonl", [record(0, "failed")])
    merged = invoke("merge", "m1.jsonl", one)
    assert merged.stdout == "merged 1 conversation from 1 file into m1.jsonl\n"
    assert merged.stderr == (
        "1 conversation failed or was interrupted (resume its shard with --resume)\n"
    )
    two = write_records("two.jsonl", [record(1, "interrupted")])
    merged = invoke("merge", "m2.jsonl", one, two)
    assert merged.stdout == "merged 2 conversations from 2 files into m2.jsonl\n"
    assert merged.stderr == (
        "2 conversations failed or were interrupted (resume their shard with --resume)\n"
    )
    many = write_records("many.jsonl", [record(i) for i in range(1_000)])
    merged = invoke("merge", "m3.jsonl", many)
    assert merged.stdout == "merged 1,000 conversations from 1 file into m3.jsonl\n"
