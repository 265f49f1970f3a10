"""What comparing two runs finds: the :class:`RunDiff` and its parts, as plain frozen data.

:func:`runner.review.diff.diff_runs` computes it (its docstring says what each
outcome means); :mod:`runner.review.diff_text` renders it for a terminal and
:func:`runner.review.diff.render_json` as JSON, whose keys are these field names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TokenDelta:
    """Token usage of new minus base; None where either side reported none."""

    prompt_tokens: int | None
    """Difference in prompt tokens."""
    completion_tokens: int | None
    """Difference in completion tokens."""
    total_tokens: int | None
    """Difference in total tokens."""


@dataclass(frozen=True, slots=True)
class AnswerChange:
    """Two differing answers to the same turn."""

    base: str | None
    """The base run's answer; None when the turn got no answer there."""
    new: str | None
    """The new run's answer; None when the turn got no answer there."""
    similarity: float | None
    """0 (unrelated) to 1 (equal), 3 decimals; None when either answer is missing."""
    similarity_method: str | None
    """``chars``, ``words`` or ``word_counts`` (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class PromptChange:
    """Two differing user messages at the same turn."""

    base: str | None
    """The base run's user message; None when it is not in the transcript."""
    new: str | None
    """The new run's user message; None when it is not in the transcript."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call as a step of a turn made it."""

    id: str
    """The call's id."""
    name: str
    """The tool's name."""
    arguments: Any
    """The arguments as recorded (JSON text, or whatever the record holds)."""


@dataclass(frozen=True, slots=True)
class ToolChange:
    """The first step of a turn whose tool calls differ between the runs."""

    step: int
    """0-based step number."""
    base_steps: int
    """How many steps called tools in base."""
    new_steps: int
    """How many steps called tools in new."""
    base_calls: tuple[ToolCall, ...] | None
    """The calls of that step in base; None when base has no such step."""
    new_calls: tuple[ToolCall, ...] | None
    """The calls of that step in new; None when new has no such step."""


@dataclass(frozen=True, slots=True)
class TurnDiff:
    """One turn sent in either run."""

    index: int
    """0-based turn number."""
    prompt: PromptChange | None
    """How the user message changed; None when both runs sent the same one."""
    answer: AnswerChange | None
    """How the answer changed; None when both runs gave the same answer (or none)."""
    tokens: TokenDelta
    """Token usage of this turn, new minus base."""
    latency_ms: float | None
    """Latency of this turn, new minus base; None where either side has none."""
    tools: ToolChange | None = None
    """The first step whose tool calls differ; None (and no key in the JSON) when none does."""


@dataclass(frozen=True, slots=True)
class CheckChange:
    """A check whose result differs between the runs, or that only one run has."""

    turn: int
    """0-based index of the turn the check belongs to."""
    kind: str
    """The check's kind, e.g. ``contains``."""
    scope: Any
    """The check's scope, as recorded."""
    expected: Any
    """What the check expected, as recorded."""
    change: str
    """``regressed`` (pass to fail), ``fixed`` (fail to pass), ``added`` or ``removed``."""
    base_passed: bool | None
    """Whether it passed in base; None when base does not have it."""
    new_passed: bool | None
    """Whether it passes in new; None when new does not have it."""
    message: str
    """The check's message in new (in base when removed)."""
    seen: Any
    """What the check saw in new (in base when removed)."""


@dataclass(frozen=True, slots=True)
class ConversationDiff:
    """One conversation found in both runs."""

    id: str
    """The conversation id."""
    source: str
    """The conversation file, as the new run recorded it."""
    outcome: str
    """``same``, ``changed``, ``regressed`` or ``fixed`` (see the module docstring)."""
    base_status: str
    """Its status in base."""
    new_status: str
    """Its status in new."""
    base_model: str
    """The model requested in base."""
    new_model: str
    """The model requested in new."""
    base_error: dict[str, Any] | None
    """The record's ``error`` in base, when it has one."""
    new_error: dict[str, Any] | None
    """The record's ``error`` in new, when it has one."""
    first_divergence: int | None
    """0-based index of the first turn whose answers differ; None when all are equal."""
    turns: tuple[TurnDiff, ...]
    """Every turn sent in either run, in order."""
    checks: tuple[CheckChange, ...]
    """Checks that flipped, appeared or disappeared, by turn."""
    tokens: TokenDelta
    """The conversation's token totals, new minus base."""
    latency_ms: float | None
    """Sum of turn latencies, new minus base (a side without any counts 0; None if both)."""


@dataclass(frozen=True, slots=True)
class ConversationRef:
    """A conversation found in one run only."""

    id: str
    """The conversation id."""
    source: str
    """The conversation file."""
    status: str
    """Its status in the run that has it."""


@dataclass(frozen=True, slots=True)
class DiffSummary:
    """How many conversations fall in each category."""

    same: int
    """In both runs, with no difference."""
    changed: int
    """In both runs, different but neither regressed nor fixed."""
    regressed: int
    """In both runs, newly failing or with a check that stopped passing."""
    fixed: int
    """In both runs, newly completed or with a check that started passing."""
    added: int
    """In new only."""
    removed: int
    """In base only; :func:`should_fail` counts them as regressions."""


@dataclass(frozen=True, slots=True)
class RunDiff:
    """Everything that differs between two runs."""

    summary: DiffSummary
    """Counts per category."""
    conversations: tuple[ConversationDiff, ...]
    """Every conversation in both runs, sorted by id."""
    added: tuple[ConversationRef, ...]
    """Conversations in new only, sorted by id."""
    removed: tuple[ConversationRef, ...]
    """Conversations in base only, sorted by id."""
