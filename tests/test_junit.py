"""JUnit XML reports: structure, counts, escaping and the atomic write."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from runner.cli import main
from runner.errors import OutputError
from runner.review.junit import junit_xml, write_junit

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$")


def attempt(n: int, outcome: str = "ok", latency_ms: float = 100.0, **more: Any) -> dict[str, Any]:
    return {"attempt": n, "outcome": outcome, "latency_ms": latency_ms, **more}


def answered(
    index: int, latency_ms: float, checks: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    turn: dict[str, Any] = {
        "index": index,
        "message_index": 2 * index,
        "latency_ms": latency_ms,
        "usage": None,
        "finish_reason": "stop",
        "response_id": None,
        "attempts": [attempt(1, latency_ms=latency_ms)],
    }
    if checks is not None:
        turn["checks"] = checks
    return turn


def check(passed: bool, message: str = "", **more: Any) -> dict[str, Any]:
    return {
        "kind": "contains",
        "scope": "turn",
        "passed": passed,
        "expected": "contains all of: '4'",
        "seen": "The answer is five.",
        "message": message,
        **more,
    }


def record(
    id: str,
    source: str,
    status: str,
    turns: list[dict[str, Any]],
    messages: list[dict[str, Any]] | None = None,
    **more: Any,
) -> dict[str, Any]:
    if messages is None:
        messages = []
        for turn in turns:
            messages.append({"role": "user", "content": f"question {turn['index'] + 1}"})
            if turn.get("error") is None:
                messages.append({"role": "assistant", "content": f"answer {turn['index'] + 1}"})
    return {
        "schema": "mtrun.transcript/1",
        "run_id": "20261124T101500Z-3f2a1c",
        "id": id,
        "source": source,
        "model": "arcee-ai/AFM-4.5B",
        "base_url": "mock://offline",
        "params": {},
        "status": status,
        "messages": messages,
        "turns": turns,
        "totals": {},
        "started_at": "2026-11-24T10:15:00.123Z",
        "finished_at": "2026-11-24T10:15:03.456Z",
        "fingerprint": "sha256:" + "0" * 64,
        **more,
    }


def completed() -> dict[str, Any]:
    return record(
        "greeting",
        "conversations/basic.yaml",
        "completed",
        [answered(0, 812.4, [check(True)]), answered(1, 200.0)],
    )


def checks_failed() -> dict[str, Any]:
    return record(
        "arithmetic",
        "conversations/basic.yaml",
        "checks_failed",
        [
            answered(0, 100.0, [check(False, "missing '4'"), check(True)]),
            answered(1, 100.0, [check(True)]),
            answered(
                2,
                150.4,
                [
                    check(
                        False,
                        "expected 2 sentences, saw 5",
                        kind="sentences",
                        scope="final",
                        expected="at most 2 sentences",
                        seen="One. Two.\nThree. Four. Five.",
                    )
                ],
            ),
        ],
        started_at="2026-11-24T10:14:59.900Z",
    )


def failed() -> dict[str, Any]:
    error = {"kind": "http_503", "status": 503, "message": "HTTP 503: upstream overloaded"}
    bad_turn = {
        "index": 1,
        "message_index": 2,
        "latency_ms": None,
        "usage": None,
        "finish_reason": None,
        "response_id": None,
        "attempts": [
            attempt(1, "http_503", 30.0, status=503, message="HTTP 503: busy", wait_s=1.0),
            attempt(2, "http_503", 20.0, status=503, message="HTTP 503: upstream overloaded"),
        ],
        "error": error,
    }
    return record(
        "weather",
        "other/more.yml",
        "failed",
        [
            answered(0, 500.0, [check(False, "missing 'sunny'", expected="contains: 'sunny'")]),
            bad_turn,
        ],
        error={"turn": 1, **error},
        started_at="2026-11-24T10:16:00.000Z",
    )


def interrupted() -> dict[str, Any]:
    return record(
        "story",
        "other/more.yml",
        "interrupted",
        [answered(0, 250.0)],
        error={"kind": "interrupted", "message": "the run was stopped (Ctrl-C)"},
        started_at="2026-11-24T10:15:30.000Z",
        finished_at=None,
    )


def parse(records: list[dict[str, Any]], **kw: Any) -> ET.Element:
    return ET.fromstring(junit_xml(records, **kw))


def children(case: ET.Element) -> list[str]:
    return [child.tag for child in case]


def test_report_structure_and_counts() -> None:
    root = parse([completed(), checks_failed(), failed(), interrupted()], run_name="nightly")

    assert root.tag == "testsuites"
    assert root.attrib == {
        "name": "nightly",
        "tests": "4",
        "failures": "1",
        "errors": "2",
        "skipped": "0",
        "time": "7.689",
    }
    basic, more = root.findall("testsuite")
    assert basic.attrib == {
        "name": "conversations/basic.yaml",
        "tests": "2",
        "failures": "1",
        "errors": "0",
        "skipped": "0",
        "time": "6.889",
        "timestamp": "2026-11-24T10:14:59",
    }
    assert more.attrib == {
        "name": "other/more.yml",
        "tests": "2",
        "failures": "0",
        "errors": "2",
        "skipped": "0",
        "time": "0.800",
        "timestamp": "2026-11-24T10:15:30",
    }

    greeting, arithmetic = basic.findall("testcase")
    assert greeting.attrib == {
        "name": "greeting",
        "classname": "conversations.basic",
        "time": "3.333",  # wall clock: finished_at - started_at
    }
    assert children(greeting) == ["system-out"]

    assert arithmetic.attrib["time"] == "3.556"
    assert children(arithmetic) == ["failure", "system-out"]  # one element, every check in it
    failure = arithmetic.find("failure")
    assert failure is not None
    assert failure.attrib == {
        "message": "2 checks failed: turn 1: contains: missing '4'; "
        "turn 3: sentences: expected 2 sentences, saw 5",
        "type": "checks",
    }
    assert failure.text == (
        "2 checks failed:\n"
        "\n"
        "turn 1: contains (scope: turn)\n"
        "message:  missing '4'\n"
        "expected: contains all of: '4'\n"
        "seen:     The answer is five.\n"
        "\n"
        "turn 3: sentences (scope: final)\n"
        "message:  expected 2 sentences, saw 5\n"
        "expected: at most 2 sentences\n"
        "seen:     One. Two.\n"
        "          Three. Four. Five."
    )

    weather, story = more.findall("testcase")
    # started_at after finished_at: the time falls back to the attempts' latencies
    assert weather.attrib == {"name": "weather", "classname": "other.more", "time": "0.550"}
    assert children(weather) == ["error", "system-out"]
    error = weather.find("error")
    assert error is not None
    assert error.attrib == {"message": "turn 2: HTTP 503: upstream overloaded", "type": "http_503"}
    assert error.text == (
        "turn 2 failed: http_503 (HTTP 503)\n"
        "HTTP 503: upstream overloaded\n"
        "\n"
        "attempts (2):\n"
        "  1: http_503: HTTP 503: busy\n"
        "  2: http_503: HTTP 503: upstream overloaded\n"
        "\n"
        "before it, 1 check failed:\n"
        "\n"
        "turn 1: contains (scope: turn)\n"
        "message:  missing 'sunny'\n"
        "expected: contains: 'sunny'\n"
        "seen:     The answer is five."
    )

    assert story.attrib == {"name": "story", "classname": "other.more", "time": "0.250"}
    assert children(story) == ["error", "system-out"]
    interruption = story.find("error")
    assert interruption is not None
    assert interruption.attrib == {
        "message": "interrupted after 1 turn: the run was stopped (Ctrl-C)",
        "type": "interrupted",
    }


def test_one_failure_names_every_failed_check_in_its_message() -> None:
    many = completed()
    many["status"] = "checks_failed"
    many["turns"][0]["checks"] = [check(False, f"missing {n}") for n in range(3)]
    failure = parse([many]).find("testsuite/testcase/failure")
    assert failure is not None
    assert failure.attrib == {
        "message": "3 checks failed: turn 1: contains: missing 0; turn 1: contains: missing 1; "
        "turn 1: contains: missing 2",
        "type": "contains",
    }
    assert failure.text is not None and failure.text.count("turn 1: contains (scope: turn)") == 3


def test_conversations_of_the_batch_without_a_record_are_errors() -> None:
    batch = [
        ("greeting", "conversations/basic.yaml"),
        ("later", "conversations/basic.yaml"),
        ("elsewhere", "other/new.yaml"),
    ]
    reason = "the token budget is spent (1,000 of 1,000 tokens used)"
    root = parse([completed()], batch=batch, not_run_reason=reason)
    assert root.attrib["tests"] == "3" and root.attrib["errors"] == "2"
    basic, new = root.findall("testsuite")
    assert [c.attrib["name"] for c in basic.findall("testcase")] == ["greeting", "later"]
    assert (basic.attrib["tests"], basic.attrib["errors"]) == ("2", "1")
    later = basic.findall("testcase")[1]
    assert later.attrib == {"name": "later", "classname": "conversations.basic", "time": "0.000"}
    assert children(later) == ["error"]
    assert later[0].attrib == {"message": f"not run: {reason}", "type": "not_run"}
    assert new.attrib["name"] == "other/new.yaml" and "timestamp" not in new.attrib
    assert new.find("testcase/error") is not None
    default = parse([], batch=batch[:1]).find("testsuite/testcase/error")
    assert default is not None
    assert default.attrib["message"] == "not run: the run stopped before it started"


def test_system_out_is_a_compact_transcript() -> None:
    root = parse([checks_failed()])
    out = root.find("testsuite/testcase/system-out")
    assert out is not None
    assert out.text == (
        "conversation arithmetic from conversations/basic.yaml, model arcee-ai/AFM-4.5B, "
        "status checks_failed\n"
        "user: question 1\n"
        "assistant: answer 1\n"
        "user: question 2\n"
        "assistant: answer 2\n"
        "user: question 3\n"
        "assistant: answer 3"
    )


def test_system_out_is_bounded() -> None:
    long_answer = "x" * 10_000
    messages: list[dict[str, Any]] = [{"role": "system", "content": None}]
    for n in range(200):
        messages.append({"role": "user", "content": [{"type": "text", "text": f"q{n}"}]})
        messages.append({"role": "assistant", "content": long_answer})
    root = parse([record("long", "a.yaml", "completed", [answered(0, 1.0)], messages=messages)])
    out = root.find("testsuite/testcase/system-out")
    assert out is not None and out.text is not None
    lines = out.text.splitlines()
    assert lines[1] == "system: (no content)"
    assert lines[2] == "user: q0"
    assert lines[3] == "assistant: " + "x" * 500 + " … (9,500 more characters)"
    assert lines[-1].endswith("more messages; see the transcript file")
    assert len(out.text) < 25_000


def test_hostile_text_is_escaped_and_illegal_characters_removed() -> None:
    reply = "<script>alert('x')</script> ]]> & \"quoted\" \x1b[31mred\x00 \ud800 \ufffe end"
    hostile = record(
        'id "with" <tags> & \x07bell',
        "dir/<odd> & name.yaml",
        "checks_failed",
        [answered(0, 10.0, [check(False, "missing '4' in <b>\x1b\x00 & \"it\"", seen=reply)])],
        messages=[
            {"role": "user", "content": "say <b>hi</b> & ]]>"},
            {"role": "assistant", "content": reply},
        ],
    )
    data = junit_xml([hostile])
    for raw in (b"\x1b", b"\x00", b"\x07", b"<script>", b"]]>"):
        assert raw not in data

    root = ET.fromstring(data)
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.attrib["name"] == "dir/<odd> & name.yaml"
    case = suite.find("testcase")
    assert case is not None
    assert case.attrib["name"] == 'id "with" <tags> & bell'
    assert case.attrib["classname"] == "dir.<odd> & name"
    failure = case.find("failure")
    assert failure is not None
    assert failure.attrib["message"] == "turn 1: contains: missing '4' in <b> & \"it\""
    clean_reply = "<script>alert('x')</script> ]]> & \"quoted\" [31mred \\ud800  end"
    assert failure.text is not None
    assert f"seen:     {clean_reply}" in failure.text
    out = case.find("system-out")
    assert out is not None and out.text is not None
    assert out.text.splitlines()[1:] == ["user: say <b>hi</b> & ]]>", f"assistant: {clean_reply}"]


def test_counts_add_up_and_follow_junit_conventions() -> None:
    records = [completed(), checks_failed(), failed(), interrupted()]
    records.append(record("plain", "conversations/basic.yaml", "completed", [answered(0, 1.0)]))
    root = parse(records)

    suites = root.findall("testsuite")
    for key in ("tests", "failures", "errors", "skipped"):
        assert int(root.attrib[key]) == sum(int(s.attrib[key]) for s in suites)
    assert float(root.attrib["time"]) == pytest.approx(sum(float(s.attrib["time"]) for s in suites))
    for suite in suites:
        for key in ("name", "tests", "failures", "errors", "skipped", "time", "timestamp"):
            assert key in suite.attrib, key
        assert TIMESTAMP.match(suite.attrib["timestamp"])
        cases = suite.findall("testcase")
        assert len(cases) == int(suite.attrib["tests"])
        assert [c.tag for c in suite] == ["testcase"] * len(cases)
        outcomes = {"failure": 0, "error": 0, "skipped": 0}
        for case in cases:
            assert {"name", "classname", "time"} <= case.attrib.keys()
            assert float(case.attrib["time"]) >= 0
            tags = children(case)
            assert tags[-1] == "system-out"
            assert set(tags) <= {"failure", "error", "skipped", "system-out"}
            # each testcase counts once: an error outranks failures
            for tag in ("error", "skipped", "failure"):
                if tag in tags:
                    outcomes[tag] += 1
                    break
        assert outcomes["failure"] == int(suite.attrib["failures"])
        assert outcomes["error"] == int(suite.attrib["errors"])
        assert outcomes["skipped"] == int(suite.attrib["skipped"])
        assert float(suite.attrib["time"]) == pytest.approx(
            sum(float(c.attrib["time"]) for c in cases)
        )


def test_document_has_a_utf8_declaration() -> None:
    data = junit_xml([completed()])
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<testsuites ')
    reply = record("u", "a.yaml", "completed", [answered(0, 1.0)])
    reply["messages"][1]["content"] = "naïve café \u2013 日本語 😀"
    out = ET.fromstring(junit_xml([reply])).find("testsuite/testcase/system-out")
    assert out is not None and out.text is not None
    assert out.text.endswith("assistant: naïve café \u2013 日本語 😀")


def test_empty_run() -> None:
    root = parse([])
    assert root.attrib == {
        "name": "mtrun",
        "tests": "0",
        "failures": "0",
        "errors": "0",
        "skipped": "0",
        "time": "0.000",
    }
    assert list(root) == []


def test_given_timestamp_is_used_in_utc_without_zone() -> None:
    root = parse([completed(), failed()], timestamp="2026-11-24T12:00:00.500+02:00")
    assert [s.attrib["timestamp"] for s in root.findall("testsuite")] == [
        "2026-11-24T10:00:00",
        "2026-11-24T10:00:00",
    ]


def test_repeats_are_separate_testcases() -> None:
    runs = []
    for k in (1, 2):
        run = completed()
        run.update(id=f"greeting#{k}", repeat=k, group="greeting")
        runs.append(run)
    runs[1]["status"] = "checks_failed"
    runs[1]["turns"][1]["checks"] = [check(False, "missing '4'", scope="every_turn")]
    suite = parse(runs).find("testsuite")
    assert suite is not None
    assert suite.attrib["tests"] == "2" and suite.attrib["failures"] == "1"
    first, second = suite.findall("testcase")
    assert first.attrib["name"] == "greeting#1" and children(first) == ["system-out"]
    assert second.attrib["name"] == "greeting#2"
    assert children(second) == ["failure", "system-out"]
    out = second.find("system-out")
    assert out is not None and out.text is not None
    assert out.text.startswith("conversation greeting#2 (repeat 2 of greeting) from ")


def test_failed_checks_fail_the_testcase_whatever_the_status_says() -> None:
    listed = completed()
    listed["turns"][0]["checks"] = [check(False, "missing '4'")]
    unlisted = checks_failed()
    for turn in unlisted["turns"]:
        turn.pop("checks")
    unknown = completed()
    unknown["status"] = "exploded"
    root = parse([listed, unlisted, unknown])
    assert root.attrib["failures"] == "2" and root.attrib["errors"] == "1"
    cases = root.findall("testsuite/testcase")
    assert [children(c) for c in cases] == [
        ["failure", "system-out"],
        ["failure", "system-out"],
        ["error", "system-out"],
    ]
    assert cases[1][0].attrib == {"message": "checks failed", "type": "checks"}
    assert cases[2][0].attrib == {"message": "unknown status 'exploded'", "type": "unknown_status"}


def test_interrupted_is_an_error_listing_earlier_failed_checks() -> None:
    story = interrupted()
    story["turns"][0]["checks"] = [check(False, "missing '4'")]
    case = parse([story]).find("testsuite/testcase")
    assert case is not None
    assert children(case) == ["error", "system-out"]
    assert case[0].text is not None
    assert case[0].text.startswith(
        "interrupted after 1 turn: the run was stopped (Ctrl-C)\n\n1 check failed:\n\nturn 1:"
    )


def test_without_wall_clock_time_counts_every_attempt_of_every_turn() -> None:
    retried = answered(0, 800.0)
    retried["attempts"] = [attempt(1, "http_429", 40.25), attempt(2, "ok", 800.0)]
    no_attempt_latency = answered(1, 100.0)
    no_attempt_latency["attempts"] = [{"attempt": 1, "outcome": "ok"}]
    run = record("r", "a.yaml", "completed", [retried, no_attempt_latency], finished_at=None)
    case = parse([run]).find("testsuite/testcase")
    assert case is not None
    assert case.attrib["time"] == "0.940"


def test_time_is_wall_clock_waits_included() -> None:
    """A conversation that failed after 52 s of retries took 52 s, not its 0.149 s of requests."""
    run = failed()
    run["started_at"], run["finished_at"] = "2026-11-24T10:15:00.000Z", "2026-11-24T10:15:52.000Z"
    case = parse([run]).find("testsuite/testcase")
    assert case is not None and case.attrib["time"] == "52.000"


@pytest.mark.parametrize(
    ("source", "classname"),
    [
        ("conversations/basic.yaml", "conversations.basic"),
        ("./convs/sub/x.y.yml", "convs.sub.x.y"),
        ("convs\\win\\case.json", "convs.win.case"),
        ("/abs/path/c.yaml", "abs.path.c"),
        ("noext", "noext"),
        ("", "mtrun"),
    ],
)
def test_classname_from_source(source: str, classname: str) -> None:
    case = parse([record("c", source, "completed", [answered(0, 1.0)])]).find("testsuite/testcase")
    assert case is not None
    assert case.attrib["classname"] == classname


def test_write_junit_replaces_the_file_atomically(tmp_path: Path) -> None:
    target = tmp_path / "reports" / "junit.xml"
    write_junit(target, [completed()], run_name="first")
    write_junit(target, [completed(), failed()], run_name="second")
    assert target.read_bytes() == junit_xml([completed(), failed()], run_name="second")
    assert [p.name for p in target.parent.iterdir()] == ["junit.xml"]


def test_write_junit_fails_with_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(OutputError) as info:
        write_junit(blocker / "junit.xml", [completed()])
    message = str(info.value)
    assert message.startswith(f"cannot write JUnit report {blocker / 'junit.xml'}: ")
    assert "\n" not in message
    assert blocker.read_text() == "x"


def test_write_junit_leaves_no_temporary_file_behind(tmp_path: Path) -> None:
    folder = tmp_path / "junit.xml"
    folder.mkdir()
    with pytest.raises(OutputError, match="cannot write JUnit report"):
        write_junit(folder, [completed()])
    assert [p.name for p in tmp_path.iterdir()] == ["junit.xml"]
    assert folder.is_dir()


def test_run_junit_lists_conversations_a_budget_stop_never_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(
        "conversations:\n"
        "  - id: a\n    turns: [Hi, Again]\n"
        "  - id: b\n    turns: [Hi]\n"
        "  - id: c\n    turns: [Hi]\n"
    )
    args = ["--mock", "-q", "-j", "1", "--budget-tokens", "1", "--junit", "j.xml", "-o", "t.jsonl"]
    result = CliRunner().invoke(main, [*args, "--repeat", "2", "c.yaml"])
    assert result.exit_code == 3
    root = ET.fromstring((tmp_path / "j.xml").read_bytes())
    cases = {c.attrib["name"]: c for c in root.iter("testcase")}
    assert sorted(cases) == ["a#1", "a#2", "b#1", "b#2", "c#1", "c#2"]
    assert root.attrib["tests"] == "6" and root.attrib["errors"] == "6"
    types = sorted(c[0].attrib["type"] for c in cases.values())
    assert types == ["interrupted"] + ["not_run"] * 5
    not_run = next(c for c in cases.values() if c[0].attrib["type"] == "not_run")
    assert not_run[0].attrib["message"].startswith("not run: the token budget is spent")


def with_failed_checks(count: int) -> ET.Element:
    """The testcase of a conversation whose first turn failed ``count`` checks."""
    many = completed()
    many["status"] = "checks_failed"
    many["turns"][0]["checks"] = [check(False, f"missing {n}") for n in range(count)]
    case = parse([many]).find("testsuite/testcase")
    assert case is not None
    return case


@pytest.mark.parametrize(("count", "said"), [(2, "2 checks"), (1_000, "1,000 checks")])
def test_a_failure_counts_its_checks_with_thousands_separators(count: int, said: str) -> None:
    failure = with_failed_checks(count).find("failure")
    assert failure is not None and failure.text is not None
    assert failure.attrib["message"].startswith(f"{said} failed: turn 1: contains: missing 0; ")
    assert failure.text.startswith(f"{said} failed:\n\nturn 1: contains (scope: turn)")


def test_one_failed_check_is_named_alone_and_counted_in_the_singular() -> None:
    failure = with_failed_checks(1).find("failure")
    assert failure is not None and failure.text is not None
    assert failure.attrib["message"] == "turn 1: contains: missing 0"
    assert failure.text.startswith("1 check failed:\n\nturn 1: contains (scope: turn)")


@pytest.mark.parametrize(("count", "said"), [(2, "2 turns"), (1_000, "1,000 turns")])
def test_an_interruption_counts_the_turns_answered_before_it(count: int, said: str) -> None:
    story = interrupted()
    story["turns"] = [answered(i, 250.0) for i in range(count)]
    error = parse([story]).find("testsuite/testcase/error")
    assert error is not None
    assert error.attrib["message"] == f"interrupted after {said}: the run was stopped (Ctrl-C)"


def system_out(messages: list[dict[str, Any]]) -> list[str]:
    root = parse([record("long", "a.yaml", "completed", [answered(0, 1.0)], messages=messages)])
    out = root.find("testsuite/testcase/system-out")
    assert out is not None and out.text is not None
    return out.text.splitlines()


def test_what_system_out_leaves_out_is_counted_in_the_singular_for_one() -> None:
    long = [{"role": "user", "content": "x" * 10_000}] * 400
    left = int(
        re.fullmatch(r"… (\d+) more messages; see the transcript file", system_out(long)[-1])[1]
    )
    shown = len(long) - left  # where the bound is reached: the same in a shorter list
    assert system_out(long[: shown + 1])[-1] == "… 1 more message; see the transcript file"
    assert system_out(long[: shown + 2])[-1] == "… 2 more messages; see the transcript file"
    cut_by = {n: system_out([{"role": "user", "content": "y" * (500 + n)}])[1] for n in (1, 2)}
    assert cut_by == {
        1: "user: " + "y" * 500 + " … (1 more character)",
        2: "user: " + "y" * 500 + " … (2 more characters)",
    }
