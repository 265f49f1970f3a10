"""Comparing two runs: what a change (of model, prompt or code) did to the answers.

:func:`diff_runs` pairs the conversations of a base run and a new run by id
(the last record of an id wins, as in :func:`runner.transcripts.reader.read_transcript`)
and compares each pair turn by turn into a :class:`~runner.review.diff_model.RunDiff`.
:func:`render_json` turns it into a JSON document and
:func:`runner.review.diff_text.render_text` into a terminal report;
:func:`should_fail` decides whether a CI job should fail.

Each conversation found in both runs gets one outcome, the first that applies:

``regressed``
    it was ``completed`` in base and is not in new (``failed``,
    ``checks_failed``, ``interrupted``), or a check passed in base and fails in new.
``fixed``
    it is ``completed`` in new and was not in base, or a check failed in base
    and passes in new.
``changed``
    its status, a user prompt, an answer, a turn's tool calls
    (:mod:`runner.review.diff_tools`) or its set of checks differ.
``same``
    none of these. Tokens, latency and the model name never count as a change.

A conversation in base only is ``removed``, and counts as a regression for
:func:`should_fail`: a change that makes conversations vanish (a deleted
file, a run that stopped early, an empty output) must not pass a gate that
checks what the remaining ones did. One in new only is ``added``.

A turn's prompt is its user message (``message_index``); when the prompts of
a turn differ (a changed conversation file), the report says so and diffs
them, since differing answers to differing prompts are no surprise. A turn's
answer is the assistant message right after its user message
(``message_index + 1``), or the last step's message when the turn has
``steps``; a failed turn has none. Checks are paired by
(turn index, kind, scope, expected), several equal checks of one turn in
order; a check passes only when its ``passed`` is ``true``.

The similarity of two differing answers is measured as
:func:`runner.review.similarity.similarity_of` says.

Turn indexes are 0-based in :class:`RunDiff` and the JSON; the text report
numbers turns from 1, like every other mtrun message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from runner.review import FAIL_ON
from runner.review.diff_model import (
    AnswerChange,
    CheckChange,
    ConversationDiff,
    ConversationRef,
    DiffSummary,
    PromptChange,
    RunDiff,
    TokenDelta,
    TurnDiff,
)
from runner.review.diff_tools import diff_tools
from runner.review.similarity import similarity_of
from runner.review.view import answer_index
from runner.transcripts.fields import as_list as _list
from runner.transcripts.fields import as_number as _number
from runner.transcripts.fields import as_text as _text
from runner.transcripts.fields import is_int as _is_int
from runner.transcripts.fields import shallow, to_json
from runner.transcripts.status import Status
from runner.transcripts.totals import totals

SCHEMA = "mtrun.diff/1"
"""Version string of the JSON document; bumped on incompatible changes."""


def diff_runs(base: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> RunDiff:
    """Compare the transcript records of two runs (see the module docstring)."""
    base_by_id = _by_id(base)
    new_by_id = _by_id(new)
    conversations = tuple(
        _diff_conversation(base_by_id[cid], new_by_id[cid])
        for cid in sorted(base_by_id.keys() & new_by_id.keys())
    )
    added = tuple(_ref(new_by_id[cid]) for cid in sorted(new_by_id.keys() - base_by_id.keys()))
    removed = tuple(_ref(base_by_id[cid]) for cid in sorted(base_by_id.keys() - new_by_id.keys()))
    outcomes = [c.outcome for c in conversations]
    summary = DiffSummary(
        same=outcomes.count("same"),
        changed=outcomes.count("changed"),
        regressed=outcomes.count("regressed"),
        fixed=outcomes.count("fixed"),
        added=len(added),
        removed=len(removed),
    )
    return RunDiff(summary=summary, conversations=conversations, added=added, removed=removed)


def should_fail(diff: RunDiff, fail_on: str) -> bool:
    """Whether ``diff`` fails a CI job under the policy ``fail_on`` (one of :data:`FAIL_ON`)."""
    if fail_on == "never":
        return False
    if fail_on == "regressed":
        return diff.summary.regressed + diff.summary.removed > 0
    if fail_on == "changed":
        s = diff.summary
        return s.changed + s.regressed + s.fixed + s.added + s.removed > 0
    raise ValueError(f"unknown fail_on value {fail_on!r}; use one of {', '.join(FAIL_ON)}")


def render_json(diff: RunDiff) -> dict[str, Any]:
    """``diff`` as a JSON-serialisable document: ``schema``, then the fields of :class:`RunDiff`.

    Keys are the dataclass field names in declaration order, tuples become lists.
    """
    document: dict[str, Any] = _plain(dataclasses.asdict(diff))
    for conversation in document["conversations"]:
        for turn in conversation["turns"]:
            if turn["tools"] is None:  # records without tool calls keep their documents
                del turn["tools"]
    return {"schema": SCHEMA, **document}


def _plain(value: Any) -> Any:
    """``value`` with every tuple made a list, as :func:`json.loads` would give it back."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


# -- comparing ------------------------------------------------------------------------


def _by_id(records: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for record in records:
        out[_text(record.get("id"))] = record
    return out


def _ref(record: Mapping[str, Any]) -> ConversationRef:
    return ConversationRef(
        id=_text(record.get("id")),
        source=_text(record.get("source")),
        status=_text(record.get("status")),
    )


def _diff_conversation(base: Mapping[str, Any], new: Mapping[str, Any]) -> ConversationDiff:
    base_turns, new_turns = _turns(base), _turns(new)
    base_messages, new_messages = _list(base.get("messages")), _list(new.get("messages"))
    turns = tuple(
        _diff_turn(index, base_turns.get(index), new_turns.get(index), base_messages, new_messages)
        for index in sorted(base_turns.keys() | new_turns.keys())
    )
    checks = tuple(_diff_checks(base_turns, new_turns))
    base_status, new_status = _text(base.get("status")), _text(new.get("status"))
    first = next((t.index for t in turns if t.answer is not None), None)
    prompts_changed = any(t.prompt is not None for t in turns)
    tools_changed = any(t.tools is not None for t in turns)

    if (base_status == Status.COMPLETED and new_status != Status.COMPLETED) or any(
        c.change == "regressed" for c in checks
    ):
        outcome = "regressed"
    elif (new_status == Status.COMPLETED and base_status != Status.COMPLETED) or any(
        c.change == "fixed" for c in checks
    ):
        outcome = "fixed"
    elif base_status != new_status or first is not None or prompts_changed or tools_changed:
        outcome = "changed"
    elif checks:
        outcome = "changed"
    else:
        outcome = "same"

    base_latency, new_latency = _latency_sum(base_turns), _latency_sum(new_turns)
    return ConversationDiff(
        id=_text(new.get("id")),
        source=_text(new.get("source")),
        outcome=outcome,
        base_status=base_status,
        new_status=new_status,
        base_model=_text(base.get("model")),
        new_model=_text(new.get("model")),
        base_error=_error(base),
        new_error=_error(new),
        first_divergence=first,
        turns=turns,
        checks=checks,
        tokens=_token_delta(_conversation_usage(base), _conversation_usage(new)),
        latency_ms=None
        if base_latency is None and new_latency is None
        else _delta(base_latency or 0.0, new_latency or 0.0),
    )


def _diff_turn(
    index: int,
    base: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    base_messages: list[Any],
    new_messages: list[Any],
) -> TurnDiff:
    base_prompt, new_prompt = _prompt(base, base_messages), _prompt(new, new_messages)
    prompt = None
    if base is not None and new is not None and base_prompt != new_prompt:
        prompt = PromptChange(base_prompt, new_prompt)
    base_answer, new_answer = _answer(base, base_messages), _answer(new, new_messages)
    answer = None
    if base_answer != new_answer:
        similarity, method = None, None
        if base_answer is not None and new_answer is not None:
            similarity, method = similarity_of(base_answer, new_answer)
        answer = AnswerChange(base_answer, new_answer, similarity, method)
    base_usage, new_usage = _usage(base), _usage(new)
    return TurnDiff(
        index=index,
        prompt=prompt,
        answer=answer,
        tokens=_token_delta(base_usage, new_usage),
        latency_ms=_delta(
            _number((base or {}).get("latency_ms")), _number((new or {}).get("latency_ms"))
        ),
        tools=diff_tools(base, new, base_messages, new_messages),
    )


def _diff_checks(
    base_turns: Mapping[int, Mapping[str, Any]], new_turns: Mapping[int, Mapping[str, Any]]
) -> Iterator[CheckChange]:
    base_checks, new_checks = _checks_by_key(base_turns), _checks_by_key(new_turns)
    for key in sorted(base_checks.keys() | new_checks.keys()):
        olds, news = base_checks.get(key, []), new_checks.get(key, [])
        for position in range(max(len(olds), len(news))):
            old = olds[position] if position < len(olds) else None
            now = news[position] if position < len(news) else None
            old_passed = None if old is None else old.get("passed") is True
            new_passed = None if now is None else now.get("passed") is True
            if old_passed == new_passed:
                continue
            if old_passed is None:
                change = "added"
            elif new_passed is None:
                change = "removed"
            else:
                change = "fixed" if new_passed else "regressed"
            shown = now if now is not None else old
            if shown is None:  # not reached: the two would be equal
                continue
            yield CheckChange(
                turn=key[0],
                kind=_text(shown.get("kind")),
                scope=shallow(shown.get("scope")),
                expected=shallow(shown.get("expected")),
                change=change,
                base_passed=old_passed,
                new_passed=new_passed,
                message=_text(shown.get("message")),
                seen=shallow(shown.get("seen")),
            )


def _checks_by_key(
    turns: Mapping[int, Mapping[str, Any]],
) -> dict[tuple[int, str, str, str], list[Mapping[str, Any]]]:
    """A turn's checks grouped by what identifies them; ``scope`` and ``expected`` as JSON."""
    out: dict[tuple[int, str, str, str], list[Mapping[str, Any]]] = {}
    for index, turn in turns.items():
        for check in _list(turn.get("checks")):
            if isinstance(check, Mapping):
                key = (
                    index,
                    _text(check.get("kind")),
                    _canonical(check.get("scope")),
                    _canonical(check.get("expected")),
                )
                out.setdefault(key, []).append(check)
    return out


# -- reading records ------------------------------------------------------------------


def _turns(record: Mapping[str, Any]) -> dict[int, Mapping[str, Any]]:
    out: dict[int, Mapping[str, Any]] = {}
    for turn in _list(record.get("turns")):
        if isinstance(turn, Mapping) and _is_int(turn.get("index")):
            out[turn["index"]] = turn
    return out


def _answer(turn: Mapping[str, Any] | None, messages: list[Any]) -> str | None:
    """The turn's answer as text; None when it got none."""
    if turn is None or turn.get("error") is not None:
        return None
    at = answer_index(turn)
    return None if at is None else _message_text(messages, at, "assistant")


def _prompt(turn: Mapping[str, Any] | None, messages: list[Any]) -> str | None:
    """The turn's user message as text; None when the transcript does not have it."""
    if turn is None or not _is_int(turn.get("message_index")):
        return None
    return _message_text(messages, turn["message_index"], "user")


def _message_text(messages: list[Any], position: int, role: str) -> str | None:
    """The content of ``messages[position]`` as text if it has ``role``, else None."""
    if not 0 <= position < len(messages):
        return None
    message = messages[position]
    if not isinstance(message, Mapping) or message.get("role") != role:
        return None
    content = message.get("content")
    if content is None or isinstance(content, str):
        return content or ""
    return to_json(content, sort_keys=True)


def _usage(turn: Mapping[str, Any] | None) -> tuple[int, int, int] | None:
    """A turn's prompt, completion and total tokens, counted as :func:`totals` counts them."""
    if turn is None or not isinstance(turn.get("usage"), Mapping):
        return None
    counted = totals({"turns": [turn]})
    return counted.prompt_tokens, counted.completion_tokens, counted.total_tokens


def _conversation_usage(record: Mapping[str, Any]) -> tuple[int, int, int] | None:
    """The record's token totals; None when neither it nor any turn reports usage."""
    counted = totals({"turns": list(_turns(record).values())})
    if not counted.usage_reported and not isinstance(record.get("totals"), Mapping):
        return None
    return counted.prompt_tokens, counted.completion_tokens, counted.total_tokens


def _token_delta(base: tuple[int, int, int] | None, new: tuple[int, int, int] | None) -> TokenDelta:
    if base is None or new is None:
        return TokenDelta(None, None, None)
    return TokenDelta(new[0] - base[0], new[1] - base[1], new[2] - base[2])


def _latency_sum(turns: Mapping[int, Mapping[str, Any]]) -> float | None:
    values = [v for t in turns.values() if (v := _number(t.get("latency_ms"))) is not None]
    return sum(values) if values else None


def _delta(base: float | None, new: float | None) -> float | None:
    """``new - base`` rounded to 3 places (hiding float noise); None when either is missing."""
    if base is None or new is None:
        return None
    return round(new - base, 3)


def _error(record: Mapping[str, Any]) -> dict[str, Any] | None:
    error = record.get("error")
    bounded = shallow(error) if isinstance(error, Mapping) else None
    return bounded if isinstance(bounded, dict) else None


def _canonical(value: Any) -> str:
    return to_json(value, sort_keys=True)
