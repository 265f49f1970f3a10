"""Judge checks: the request sent, verdict parsing, and failures that give no verdict."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from virtualtime import clock, run_virtual

from runner.checks.judge import JUDGE_MARKER, judge_body, parse_verdict
from runner.checks.kinds import parse_expect
from runner.errors import FatalAPIError, OutputError
from runner.http.client import Completion
from runner.http.mock import answer
from runner.run.judging import Judge
from runner.send.retry import RetryPolicy

MESSAGES = [
    {"role": "user", "content": "Name a small model."},
    {"role": "assistant", "content": "AFM-4.5B is a small language model."},
]


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ('{"pass": true, "reason": "ok"}', (True, "ok")),
        ('Sure! {"pass": false, "reason": "too long"} Hope that helps.', (False, "too long")),
        ('```json\n{"passed": true}\n```', (True, "")),
        ('{"verdict": "FAIL", "reason": "no"}', (False, "no")),
        ("I think it passes.", None),
        ('{"pass": "maybe"}', None),
        ("{not json}", None),
        (None, None),
    ],
)
def test_parse_verdict(reply: Any, verdict: tuple[bool, str] | None) -> None:
    assert parse_verdict(reply) == verdict


def test_judge_body_carries_the_conversation_and_the_rubric() -> None:
    body = judge_body('Mentions "small"', MESSAGES, "judge-model")
    assert body["model"] == "judge-model" and body["temperature"] == 0
    system, user = body["messages"]
    assert system["role"] == "system" and system["content"].startswith(JUDGE_MARKER)
    assert "[user]\nName a small model." in user["content"]
    assert "[assistant]\nAFM-4.5B is a small language model." in user["content"]
    assert 'Rubric for the last assistant answer:\nMentions "small"' in user["content"]


def test_the_offline_judge_follows_its_documented_rule() -> None:
    passing = answer(judge_body('Mentions "SMALL language"', MESSAGES, "m"))
    failing = answer(judge_body('Mentions "large" and "small"', MESSAGES, "m"))
    assert parse_verdict(passing["choices"][0]["message"]["content"])[0] is True  # type: ignore[index]
    verdict = parse_verdict(failing["choices"][0]["message"]["content"])
    assert verdict == (False, "the answer does not mention 'large'")


def judge_check(model: str | None = None) -> Any:
    spec: Any = {"rubric": 'Mentions "small"', "model": model} if model else 'Mentions "small"'
    (check,) = parse_expect({"judge": spec}, field="expect", scope="turn")
    return check


def run(check: Any, respond: Any) -> Any:
    judge = Judge(respond, RetryPolicy(max_retries=1), asyncio.sleep, clock)
    return run_virtual(
        judge.grade(check, MESSAGES, answer_model="answer-model", conversation_id="c", turn=0)
    )


def test_grading_records_request_and_verdict() -> None:
    seen: list[Mapping[str, Any]] = []

    async def respond(body: Mapping[str, Any], **kw: Any) -> Completion:
        seen.append(kw)
        data = answer(dict(body))
        return Completion(data["choices"][0]["message"], "stop", None, None, None, data)

    result = run(judge_check(model="judge-x"), respond)
    assert result.passed and result.message == ""
    assert result.details["model"] == "judge-x"
    assert result.details["verdict"] == {"pass": True, "reason": "the answer meets the rubric"}
    assert seen == [{"conversation_id": "c", "turn": 0, "purpose": "judge"}]
    assert result.seen == "AFM-4.5B is a small language model."


def test_the_judge_model_is_the_checks_else_the_runs_else_the_answers() -> None:
    models: list[str] = []

    async def respond(body: Mapping[str, Any], **kw: Any) -> Completion:
        models.append(body["model"])
        data = answer(dict(body))
        return Completion(data["choices"][0]["message"], "stop", None, None, None, data)

    for run_model in (None, "run-judge"):
        judge = Judge(respond, RetryPolicy(max_retries=0), asyncio.sleep, clock, model=run_model)
        for check in (judge_check(model="check-judge"), judge_check()):
            result = run_virtual(
                judge.grade(check, MESSAGES, answer_model="answers", conversation_id="c", turn=0)
            )
            assert result.passed
    assert models == ["check-judge", "answers", "check-judge", "run-judge"]


def test_a_judge_that_fails_or_rambles_fails_the_check() -> None:
    async def broken(body: Mapping[str, Any], **kw: Any) -> Completion:
        raise FatalAPIError("HTTP 404: no such model", kind="http_404", status=404)

    result = run(judge_check(), broken)
    assert not result.passed
    assert result.message == "the judge gave no verdict: HTTP 404: no such model"

    async def rambling(body: Mapping[str, Any], **kw: Any) -> Completion:
        message = {"role": "assistant", "content": "It is fine, I suppose."}
        return Completion(message, "stop", None, None, None, {})

    result = run(judge_check(), rambling)
    assert not result.passed
    assert result.message == "the judge gave no verdict: It is fine, I suppose."
    assert result.details["request"]["model"] == "answer-model"


def test_a_judge_endpoint_gets_only_judge_requests_and_fixtures_keep_both(tmp_path: Any) -> None:
    import json as _json

    import httpx

    from runner.run.engine import RunConfig, run_batch
    from runner.spec.model import Conversation, Turn

    hosts: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = _json.loads(request.content)
        role = "judge" if body["messages"][0]["content"].startswith(JUDGE_MARKER) else "answer"
        hosts.append((role, request.url.host))
        return httpx.Response(200, json=answer(body))

    (check,) = parse_expect({"judge": "fine"}, field="expect", scope="turn")
    conv = Conversation(id="c", source="s", turns=(Turn("Hi", expect=(check,)),))
    config = RunConfig(
        output=tmp_path / "o.jsonl",
        base_url="http://127.0.0.1:9/v1",
        judge_base_url="http://127.0.0.2:9/v1",
        transport=httpx.MockTransport(handler),
        record=tmp_path / "fx",
    )
    result = asyncio.run(run_batch([conv], config))
    assert result.completed == 1
    assert hosts == [("answer", "127.0.0.1"), ("judge", "127.0.0.2")]
    exchanges = _json.loads((tmp_path / "fx" / "c.json").read_text())["exchanges"]
    assert [e["purpose"] for e in exchanges] == ["answer", "judge"]


def judged_batch(n: int) -> list[Any]:
    from runner.spec.model import Conversation, Turn

    (check,) = parse_expect({"judge": "fine"}, field="expect", scope="turn")
    return [
        Conversation(id=f"c{i}", source="s", turns=(Turn(f"Hi {i}", expect=(check,)),))
        for i in range(n)
    ]


def test_judge_requests_on_the_answers_endpoint_share_its_request_slots(tmp_path: Any) -> None:
    import json as _json

    import httpx

    from runner.run.engine import RunConfig, run_batch

    in_flight = peak = judged = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak, judged
        body = _json.loads(request.content)
        judged += body["messages"][0]["content"].startswith(JUDGE_MARKER)
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.003)
        in_flight -= 1
        return httpx.Response(200, json=answer(body))

    config = RunConfig(
        output=tmp_path / "o.jsonl",
        base_url="http://127.0.0.1:9/v1",
        transport=httpx.MockTransport(handler),
        concurrency=4,  # five conversations run: one may be judging while four answer
    )
    result = run_virtual(run_batch(judged_batch(20), config, sleep=asyncio.sleep, clock=clock))
    assert result.completed + result.checks_failed == 20
    assert judged == 20
    assert peak == 4


def test_judge_tokens_count_toward_the_run_and_its_budget(tmp_path: Any) -> None:
    from runner.run.engine import RunConfig, run_batch

    def config(out: str, budget: int | None = None) -> RunConfig:
        return RunConfig(
            output=tmp_path / out,
            base_url="mock://",
            concurrency=1,
            budget_tokens=budget,
        )

    plain = asyncio.run(run_batch(judged_batch(1), config("one.jsonl")))
    (record,) = [_read(tmp_path / "one.jsonl")]
    answer_tokens = record["turns"][0]["usage"]["total_tokens"]
    judged_tokens = plain.prompt_tokens + plain.completion_tokens
    assert judged_tokens > answer_tokens  # the judge's usage is in the run's totals

    # A budget the answers alone would not reach within 3 conversations, the judges do.
    budget = 3 * answer_tokens + 1
    result = asyncio.run(run_batch(judged_batch(10), config("budget.jsonl", budget)))
    assert result.stop_reason is not None and "budget" in result.stop_reason
    assert result.completed + result.checks_failed < 3


def _read(path: Any) -> dict[str, Any]:
    import json as _json

    (line,) = path.read_text().splitlines()
    return _json.loads(line)  # type: ignore[no-any-return]


def test_a_judge_that_raises_fails_its_check_with_the_error() -> None:
    async def buggy(body: Mapping[str, Any], **kw: Any) -> Completion:
        raise ZeroDivisionError("division by zero")

    result = run(judge_check(), buggy)
    assert not result.passed
    assert result.message == (
        "the check could not run (ZeroDivisionError: division by zero); "
        "this is a bug in mtrun, please report it"
    )
    assert result.seen == "AFM-4.5B is a small language model."


def test_a_run_level_error_in_the_judge_is_the_runs() -> None:
    async def unreadable(body: Mapping[str, Any], **kw: Any) -> Completion:
        raise OutputError("cannot read fixture f.json: bad")

    with pytest.raises(OutputError):
        run(judge_check(), unreadable)


def test_the_judge_sees_the_tool_exchange() -> None:
    """A tool call and its result are in the conversation the judge reads, not 'null'."""
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c":18}'},
        {"role": "assistant", "content": "It is 18 C."},
    ]
    prompt = judge_body("mentions 18", messages, "m")["messages"][1]["content"]
    assert '[assistant]\n(calls the tool get_weather with {"city":"Paris"})' in prompt
    assert '[tool]\n(the result of tool call call_1)\n{"temp_c":18}' in prompt
    assert "null" not in prompt
    plain = judge_body("r", [{"role": "user", "content": "hi"}], "m")["messages"][1]["content"]
    assert "[user]\nhi\n\n" in plain  # messages without tools read as before
