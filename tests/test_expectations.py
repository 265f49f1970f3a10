"""Expectations end to end: checks in transcripts, statuses, judge, repeats, reports, exit codes."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import LoopbackServer, read_jsonl

from runner.cli import main

CONVERSATIONS = """\
conversations:
  - id: arithmetic
    expect:
      max_chars: 2000
    expect_final:
      contains: "offline reply"
    turns:
      - content: What is 2+2?
        expect:
          contains: "What is 2+2?"
          matches: 'Turn \\d'
      - content: And times three?
        expect:
          - contains: {any: [twelve, "12"]}
          - not_contains: offline
  - id: judged
    turns:
      - content: Tell me about small language models.
        expect:
          judge: 'The answer mentions "small language models"'
      - content: Thanks!
        expect:
          judge: 'The answer says "you are welcome"'
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "checks.yaml").write_text(CONVERSATIONS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_checks_are_recorded_and_failures_give_exit_1(workdir: Path) -> None:
    result = invoke("--mock", "-o", "out.jsonl", "checks.yaml")
    assert result.exit_code == 1, result.stderr
    records = {r["id"]: r for r in read_jsonl(workdir / "out.jsonl")}

    arithmetic = records["arithmetic"]
    assert arithmetic["status"] == "checks_failed"
    first, second = (t["checks"] for t in arithmetic["turns"])
    assert [(c["kind"], c["scope"], c["passed"]) for c in first] == [
        ("contains", "turn", True),
        ("matches", "turn", True),
        ("max_chars", "every_turn", True),
    ]
    assert [(c["kind"], c["scope"], c["passed"]) for c in second] == [
        ("contains", "turn", False),
        ("not_contains", "turn", False),
        ("max_chars", "every_turn", True),
        ("contains", "final", True),
    ]
    assert second[0]["message"] == "none of 'twelve', '12' appears"
    assert second[1]["message"] == "matched forbidden 'offline'"

    judged = records["judged"]
    assert judged["status"] == "checks_failed"
    verdicts = [t["checks"][0] for t in judged["turns"]]
    assert [v["passed"] for v in verdicts] == [True, False]
    details = verdicts[1]["details"]
    assert details["verdict"]["pass"] is False
    assert details["request"]["messages"][0]["content"].startswith("You are mtrun's judge.")
    assert "you are welcome" in verdicts[1]["message"]

    lines = result.stderr.splitlines()
    assert "2 conversations: 0 completed, 2 with failed checks, 0 failed" in lines
    assert (
        "  check failed: arithmetic (checks.yaml) turn 2: contains: none of 'twelve', '12' appears"
    ) in lines
    assert "    expected: contains any of: 'twelve', '12'" in lines


def test_passing_checks_give_exit_0(workdir: Path) -> None:
    (workdir / "ok.yaml").write_text(
        "turns:\n  - content: Hi\n    expect: {contains: offline reply, max_tokens: 500}\n"
    )
    result = invoke("--mock", "-o", "out.jsonl", "ok.yaml")
    assert result.exit_code == 0, result.stderr
    (record,) = read_jsonl(workdir / "out.jsonl")
    assert record["status"] == "completed"
    assert all(c["passed"] for c in record["turns"][0]["checks"])


def test_an_api_failure_wins_over_failed_checks(workdir: Path) -> None:
    def rules(body: dict[str, Any]) -> tuple[int, Any] | None:
        if body["messages"][-1]["content"] == "Thanks!":
            return 400, {"error": {"message": "nope"}}
        return None

    with LoopbackServer(rules) as server:
        result = invoke("--base-url", server.base_url, "-o", "out.jsonl", "checks.yaml")
    assert result.exit_code == 3
    records = {r["id"]: r for r in read_jsonl(workdir / "out.jsonl")}
    assert records["judged"]["status"] == "failed"
    assert records["arithmetic"]["status"] == "checks_failed"


def test_invalid_expectations_are_load_errors_with_their_line(workdir: Path) -> None:
    (workdir / "bad.yaml").write_text(
        "turns:\n  - content: Hi\n    expect:\n      matches: '(unclosed'\n"
    )
    result = invoke("validate", "bad.yaml")
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "mtrun: error: bad.yaml:4:16: turns[0].expect.matches: invalid regular expression"
    )
    (workdir / "bad.yaml").write_text("turns:\n  - content: Hi\n    expect: {contians: x}\n")
    result = invoke("validate", "bad.yaml")
    assert result.stderr == (
        "mtrun: error: bad.yaml:3:24: turns[0].expect.contians: "
        "unknown check; did you mean 'contains'?\n"
    )


def test_repeat_reports_pass_rates_and_min_pass_rate_decides(workdir: Path) -> None:
    (workdir / "r.yaml").write_text(
        "id: greet\nturns:\n  - content: Hi\n    expect: {contains: reply}\n"
    )
    result = invoke("--mock", "--repeat", "3", "-o", "out.jsonl", "r.yaml")
    assert result.exit_code == 0, result.stderr
    records = read_jsonl(workdir / "out.jsonl")
    assert sorted(r["id"] for r in records) == ["greet#1", "greet#2", "greet#3"]
    assert {(r["group"], r["repeat"]) for r in records} == {
        ("greet", 1),
        ("greet", 2),
        ("greet", 3),
    }
    assert "  pass rate: greet 3/3 (100%) ok" in result.stderr.splitlines()


def test_min_pass_rate_lets_a_flaky_conversation_pass(workdir: Path) -> None:
    (workdir / "r.yaml").write_text(
        "id: flaky\nturns:\n  - content: Hi\n    expect: {contains: GOOD}\n"
    )
    answers = iter(["GOOD", "bad", "GOOD", "GOOD"])

    def rules(body: dict[str, Any]) -> tuple[int, Any] | None:
        text = next(answers)
        return 200, {"choices": [{"message": {"role": "assistant", "content": text}}]}

    with LoopbackServer(rules) as server:
        args = ["--base-url", server.base_url, "--repeat", "4", "-j", "1", "r.yaml"]
        strict = invoke(*args, "-o", "a.jsonl")
    assert strict.exit_code == 1
    assert "  pass rate: flaky 3/4 (75%) below 100%" in strict.stderr.splitlines()
    answers = iter(["GOOD", "bad", "GOOD", "GOOD"])
    with LoopbackServer(rules) as server:
        args = ["--base-url", server.base_url, "--repeat", "4", "-j", "1", "r.yaml"]
        lenient = invoke(*args, "-o", "b.jsonl", "--min-pass-rate", "0.75")
    assert lenient.exit_code == 0, lenient.stderr


def test_junit_and_summary_json_reports(workdir: Path) -> None:
    result = invoke(
        "--mock",
        "-o",
        "out.jsonl",
        "--junit",
        "reports/junit.xml",
        "--summary-json",
        "reports/summary.json",
        "checks.yaml",
    )
    assert result.exit_code == 1
    root = ET.parse(workdir / "reports" / "junit.xml").getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "checks.yaml" and suite.get("tests") == "2"
    assert suite.get("failures") == "2"
    failures = [f.get("message") for f in root.iter("failure")]
    assert any(  # one failure per testcase, naming every failed check
        f and f.startswith("2 checks failed: turn 2: contains: none of 'twelve', '12' appears; ")
        for f in failures
    )
    summary = json.loads((workdir / "reports" / "summary.json").read_text())
    assert summary["exit_code"] == 1 and summary["checks_failed"] == 2
    assert summary["output"] == "out.jsonl"
    assert {f["conversation_id"] for f in summary["check_failures"]} == {"arithmetic", "judged"}


def test_resume_keeps_failed_checks_failing(workdir: Path) -> None:
    assert invoke("--mock", "-o", "out.jsonl", "checks.yaml").exit_code == 1
    again = invoke("--mock", "--resume", "-o", "out.jsonl", "checks.yaml")
    assert again.exit_code == 1  # a resumed CI run must not turn green by skipping them
    assert "0 completed (2 before this run), 2 with failed checks" in again.stderr


def test_judge_checks_replay_from_fixtures(workdir: Path) -> None:
    assert invoke("--mock", "-o", "a.jsonl", "--record", "fx", "checks.yaml").exit_code == 1
    shutil.rmtree(workdir / "outputs", ignore_errors=True)
    replayed = invoke("--replay", "fx", "-o", "b.jsonl", "checks.yaml")
    assert replayed.exit_code == 1, replayed.stderr
    a = {r["id"]: [t["checks"] for t in r["turns"]] for r in read_jsonl(workdir / "a.jsonl")}
    b = {r["id"]: [t["checks"] for t in r["turns"]] for r in read_jsonl(workdir / "b.jsonl")}
    assert a == b
    exchanges = json.loads((workdir / "fx" / "judged.json").read_text())["exchanges"]
    assert [(e["turn"], e["purpose"]) for e in exchanges] == [
        (0, "answer"),
        (0, "judge"),
        (1, "answer"),
        (1, "judge"),
    ]


def test_diff_exits_1_on_a_regression_and_reports_it(workdir: Path) -> None:
    (workdir / "q.yaml").write_text(
        "id: q\nturns:\n  - content: Hi\n    expect: {max_chars: 1000}\n"
    )
    assert invoke("--mock", "-o", "base.jsonl", "q.yaml").exit_code == 0
    (workdir / "q.yaml").write_text("id: q\nturns:\n  - content: Hi\n    expect: {max_chars: 10}\n")
    assert invoke("--mock", "-o", "new.jsonl", "q.yaml").exit_code == 1

    result = invoke("diff", "base.jsonl", "new.jsonl")
    assert result.exit_code == 1
    assert result.stdout.startswith("Regressed (1)\n")
    assert "status: completed -> checks_failed" in result.stdout
    assert invoke("diff", "--fail-on", "never", "base.jsonl", "new.jsonl").exit_code == 0
    assert invoke("diff", "base.jsonl", "base.jsonl").exit_code == 0
    assert invoke("diff", "--fail-on", "changed", "base.jsonl", "new.jsonl").exit_code == 1

    data = json.loads(invoke("diff", "--json", "base.jsonl", "new.jsonl").stdout)
    assert data["schema"] == "mtrun.diff/1" and data["summary"]["regressed"] == 1


def test_diff_of_a_missing_file_is_exit_2(workdir: Path) -> None:
    result = invoke("diff", "nope.jsonl", "nope.jsonl")
    assert result.exit_code == 2
    assert result.stderr.startswith("mtrun: error: cannot read nope.jsonl")


def test_a_check_that_raises_never_loses_the_answer(tmp_path: Path) -> None:
    """A check that raises is that check's failure: the answer is kept, resume works."""
    import asyncio

    from test_checks import broken_check

    from runner.run.engine import RunConfig, run_batch
    from runner.spec.model import Conversation, Turn

    broken = broken_check()
    conversation = Conversation(
        id="c",
        source="c.yaml",
        turns=(Turn("Hello", expect=(broken,)), Turn("Again")),
        params={"response_format": {"type": "json_object"}},
    )
    output = tmp_path / "out.jsonl"
    config = RunConfig(output=output, base_url="mock://")
    result = asyncio.run(run_batch([conversation], config))
    assert result.checks_failed == 1
    (record,) = read_jsonl(output)
    assert record["status"] == "checks_failed"
    assert [m["role"] for m in record["messages"]] == ["user", "assistant"] * 2
    (check,) = record["turns"][0]["checks"]
    assert check["message"].startswith("the check could not run (ZeroDivisionError")
    resumed = asyncio.run(
        run_batch([conversation], RunConfig(output=output, base_url="mock://", resume=True))
    )
    assert resumed.checks_failed == 1
    assert len(read_jsonl(output)) == 1
