"""LLM-graded checks: a rubric and the conversation so far, sent to a judge model.

The judge is asked for one JSON object, ``{"pass": true|false, "reason":
"..."}``. Its request and its verdict are kept in the check result, so a
reviewer can see exactly what the judge saw and said. Judge requests go
through the same responder as answers (so they are retried, recorded and
replayed like any other request); a judge that gives no usable verdict fails
the check with a message saying so.

The offline backend answers judge requests too (see ``mock.py``), so judged
conversations can be tested without a network.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Awaitable, Callable
from typing import Any

from runner.checks.kinds import Check, CheckResult, Judge, answer_text, check_error, excerpt
from runner.errors import RunnerError
from runner.send.responder import Responder
from runner.send.retry import GaveUp, RetryPolicy, Sleep, call_with_retries

JUDGE_MARKER = "You are mtrun's judge."
"""How every judge request's system prompt starts (the offline backend looks for it)."""

JUDGE_SYSTEM = (
    f"{JUDGE_MARKER} You grade one assistant answer in a conversation against a rubric. "
    "Read the conversation and the rubric, then reply with only a JSON object and nothing "
    'else: {"pass": true or false, "reason": "one short sentence"}.'
)

_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def rubric_of(check: Check) -> tuple[str, str | None]:
    """The rubric and the model named by a judge check (None: the default model)."""
    arg = check.arg
    assert isinstance(arg, Judge), "not a judge check"
    return arg.rubric, arg.model


def judge_body(rubric: str, messages: list[dict[str, Any]], model: str) -> dict[str, Any]:
    """The chat request that asks the judge for a verdict on the last answer."""
    lines = []
    for message in messages:
        content = message.get("content")
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        lines.append(f"[{message.get('role', '?')}]\n{text}")
    prompt = (
        "Conversation:\n\n"
        + "\n\n".join(lines)
        + f"\n\nRubric for the last assistant answer:\n{rubric}\n\n"
        + 'Reply with only {"pass": true or false, "reason": "..."}.'
    )
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": prompt},
        ],
        "temperature": 0,
    }


def parse_verdict(content: Any) -> tuple[bool, str] | None:
    """``(passed, reason)`` from the judge's reply, or None when it gave no verdict."""
    if not isinstance(content, str):
        return None
    found = _OBJECT.search(content)
    if found is None:
        return None
    try:
        data = json.loads(found.group(0))
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    verdict = data.get("pass", data.get("passed", data.get("verdict")))
    if isinstance(verdict, str) and verdict.strip().lower() in ("pass", "fail", "true", "false"):
        verdict = verdict.strip().lower() in ("pass", "true")
    if not isinstance(verdict, bool):
        return None
    reason = data.get("reason", "")
    return verdict, reason if isinstance(reason, str) else json.dumps(reason)


async def run_judge(
    check: Check,
    messages: list[dict[str, Any]],
    *,
    default_model: str,
    respond: Responder,
    conversation_id: str,
    turn: int,
    policy: RetryPolicy,
    sleep: Sleep,
    clock: Callable[[], float],
    rng: random.Random | None = None,
) -> CheckResult:
    """Ask the judge about the last answer in ``messages``; never raises for API failures.

    Nor for a bug: anything but a run-level error (a RunnerError, such as an
    unreadable fixture) fails this check with the error, keeping the answer.
    """
    seen = excerpt(answer_text(messages[-1].get("content") if messages else None))
    try:
        return await _ask_judge(
            check,
            messages,
            seen,
            default_model=default_model,
            respond=respond,
            conversation_id=conversation_id,
            turn=turn,
            policy=policy,
            sleep=sleep,
            clock=clock,
            rng=rng,
        )
    except RunnerError:
        raise
    except Exception as exc:
        return check_error(check, seen, exc)


async def _ask_judge(
    check: Check,
    messages: list[dict[str, Any]],
    seen: str,
    *,
    default_model: str,
    respond: Responder,
    conversation_id: str,
    turn: int,
    policy: RetryPolicy,
    sleep: Sleep,
    clock: Callable[[], float],
    rng: random.Random | None,
) -> CheckResult:
    """:func:`run_judge` without its guard."""
    rubric, model = rubric_of(check)
    body = judge_body(rubric, messages, model or default_model)
    details: dict[str, Any] = {"model": body["model"], "request": body}

    def ask() -> Awaitable[Any]:
        return respond(body, conversation_id=conversation_id, turn=turn, purpose="judge")

    def result(passed: bool, message: str) -> CheckResult:
        return CheckResult(
            kind=check.kind,
            scope=check.scope,
            passed=passed,
            expected=check.describe(),
            seen=seen,
            message=message,
            details=details,
        )

    try:
        completion, _ = await call_with_retries(ask, policy, sleep=sleep, clock=clock, rng=rng)
    except GaveUp as gave_up:
        details["error"] = gave_up.error.message
        return result(False, f"the judge gave no verdict: {gave_up.error.message}")
    details["reply"] = completion.content
    details["usage"] = completion.usage  # counted in the run's tokens; the report adds it too
    verdict = parse_verdict(completion.content)
    if verdict is None:
        return result(False, f"the judge gave no verdict: {excerpt(str(completion.content), 120)}")
    passed, reason = verdict
    details["verdict"] = {"pass": passed, "reason": reason}
    return result(passed, "" if passed else f"the judge says: {reason}")
