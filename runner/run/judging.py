"""Grading ``judge`` checks: one judge request per check, sent like any other request.

Judge requests go through the same responder as answers, so they are retried,
recorded and replayed like any other request; their request and verdict are
kept in the check result, so a reviewer can see exactly what the judge saw and
said. A judge that gives no usable verdict fails the check with a message
saying so. The prompt and the verdict rules are ``runner/checks/judge.py``.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from runner.checks.judge import judge_body, parse_verdict, rubric_of
from runner.checks.kinds import Check, CheckResult, answer_text, check_error, excerpt
from runner.errors import RunnerError
from runner.send.responder import Responder
from runner.send.retry import GaveUp, RetryPolicy, Sleep, call_with_retries


@dataclass(frozen=True)
class Judge:
    """What judge requests need from the run: built once by the engine, used for every check."""

    respond: Responder
    """Sends one request (``purpose="judge"``) and returns its completion."""
    policy: RetryPolicy
    """How a judge request is retried."""
    sleep: Sleep
    """Waits between retries."""
    clock: Callable[[], float]
    """Monotonic seconds, for the retry loop."""
    rng: random.Random | None = None
    """Jitter for the retry waits."""
    model: str | None = None
    """``--judge-model``: for checks that name no model (None: the answer's model)."""

    async def grade(
        self,
        check: Check,
        messages: list[dict[str, Any]],
        *,
        answer_model: str,
        conversation_id: str,
        turn: int,
    ) -> CheckResult:
        """Ask the judge about the last answer in ``messages``; never raises for API failures.

        Nor for a bug: anything but a run-level error (a RunnerError, such as an
        unreadable fixture) fails this check with the error, keeping the answer.
        The judge model is the check's, else :attr:`model`, else ``answer_model``.
        """
        seen = excerpt(answer_text(messages[-1].get("content") if messages else None))
        try:
            rubric, model = rubric_of(check)
            body = judge_body(rubric, messages, model or self.model or answer_model)
            return await self._ask(check, body, seen, conversation_id, turn)
        except RunnerError:
            raise
        except Exception as exc:
            return check_error(check, seen, exc)

    async def _ask(
        self, check: Check, body: dict[str, Any], seen: str, conversation_id: str, turn: int
    ) -> CheckResult:
        """:meth:`grade` without its guard."""
        details: dict[str, Any] = {"model": body["model"], "request": body}

        def ask() -> Awaitable[Any]:
            return self.respond(body, conversation_id=conversation_id, turn=turn, purpose="judge")

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
            completion, _ = await call_with_retries(
                ask, self.policy, sleep=self.sleep, clock=self.clock, rng=self.rng
            )
        except GaveUp as gave_up:
            details["error"] = gave_up.error.message
            return result(False, f"the judge gave no verdict: {gave_up.error.message}")
        details["reply"] = completion.content
        details["usage"] = completion.usage  # counted in the run's tokens; the report adds it too
        verdict = parse_verdict(completion.content)
        if verdict is None:
            reply = excerpt(str(completion.content), 120)
            return result(False, f"the judge gave no verdict: {reply}")
        passed, reason = verdict
        details["verdict"] = {"pass": passed, "reason": reason}
        return result(passed, "" if passed else f"the judge says: {reason}")
