"""What ``--resume`` may trust: recorded turns checked against the conversation they continue.

An output's unfinished conversations come back from two places: the
transcript line of a conversation cut short (failed, interrupted), and the
journal's lines, one per completed turn. Both are files a crash, a hand edit
or another run may have left in any state, and a recorded turn that is
taken as done is never sent again. So before a conversation continues, each
recorded turn must be the turn the conversation file scripts at that place:

- the history before the first turn is the file's system prompt and messages;
- turn ``i`` is numbered ``i`` and points at message ``len(prefix) + 2 * i``;
- its user message is exactly the scripted turn's content, and its answer an
  assistant message;
- its record has the shapes the engine relies on (attempts and checks are
  lists of objects, usage an object);
- each of its steps is tool calls answered by exactly the script's results,
  but for the last step of a turn that failed because the script had none
  (``tool_unscripted``): that answer is kept, and the engine applies the
  script to its calls again instead of sending the request again.

The conversation continues after the last turn that passes; the turns after
it are discarded and sent again, and the store says so in its
:class:`~runner.transcripts.store.ResumeReport`. Attempts spent on a failed next turn
are kept only when nothing was discarded before them.

Which output may be resumed at all is decided by the store: an output that
holds conversations this batch does not have is another batch's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.errors import OutputError
from runner.spec.tools import ToolSettings
from runner.transcripts.history import Unscripted, answer_calls, count_calls, tool_calls_of
from runner.transcripts.records import ConversationRecord, TurnRecord
from runner.transcripts.status import Status
from runner.words import plural

if TYPE_CHECKING:
    from runner.spec.model import Conversation


@dataclass(slots=True)
class TurnsDone:
    """Where a resumed conversation picks up."""

    started_at: str
    """When the conversation was first started."""
    turns: list[TurnRecord] = field(default_factory=list)
    """Its completed turns, in order."""
    exchanges: list[Any] = field(default_factory=list)
    """The user and assistant messages of those turns, after the prefix."""
    failed_attempts: list[Any] = field(default_factory=list)
    """Attempts already spent on the next turn before it failed."""
    prefix: list[Any] | None = None
    """The history before the first turn, as a transcript line holds it (None: not recorded)."""
    origins: list[str] = field(default_factory=list)
    """Where each of ``turns`` was read (for saying what was discarded)."""
    failed_index: int | None = None
    """The turn ``failed_attempts`` were spent on."""
    partial: TurnRecord | None = None
    """The next turn's answered steps, when the run stopped in its tool chain."""
    partial_exchange: list[Any] = field(default_factory=list)
    """That turn's messages: its user message, then each answered step's messages."""
    partial_origin: str = "the transcript"
    """Where ``partial`` was read."""


def matching_turns(progress: TurnsDone, conversation: Conversation) -> tuple[int, str | None]:
    """How many recorded turns continue ``conversation``, and why the next one does not."""
    prefix = conversation.prefix()
    if progress.prefix is not None and progress.prefix != prefix:
        return 0, "the history before its first turn is not the file's system prompt and messages"
    messages = [*prefix, *progress.exchanges]
    counts: dict[str, int] = {}
    at = len(prefix)
    for i, turn in enumerate(progress.turns):
        if i >= len(conversation.turns):
            return i, "the file has fewer turns"
        end = turn.answer_index + 1
        if turn.index != i or turn.message_index != at or end > len(messages) or end < at + 2:
            return i, "its record is not numbered as that turn"
        if messages[at] != {"role": "user", "content": conversation.turns[i].content}:
            return i, "its user message is not the turn's content"
        answer = messages[end - 1]
        if not (
            isinstance(answer, dict)
            and answer.get("role") == "assistant"
            and "content" in answer
            and not tool_calls_of(answer)
        ):
            return i, "its answer is not an assistant message"
        if not well_formed(turn):
            return i, "its record has fields of the wrong type"
        tools = conversation.turns[i].tools
        if turn.steps is not None or end != at + 2:
            chained = valid_steps(turn, messages, tools, counts)
            if chained != len(turn.steps or ()) - 1 or chained == 0:
                return i, "its tool calls are not answered with the scripted results"
        at = end
    return len(progress.turns), None


def valid_steps(
    turn: TurnRecord,
    messages: list[Any],
    tools: ToolSettings,
    counts: dict[str, int],
    *,
    owed: bool = False,
) -> int:
    """How many of ``turn``'s steps, from the first, are tool calls answered as scripted.

    Each such step's assistant message makes calls, and the messages after it
    are exactly the tool messages the script gives those calls; ``counts``
    (earlier calls of each tool) is advanced past them. With ``owed``, the
    last step may also be calls with nothing after them: the API answered
    that request and the script did not (a ``tool_unscripted`` failure), so
    resuming keeps the answer and applies the script to its calls again
    instead of sending the request again.
    """
    steps = turn.steps if isinstance(turn.steps, list) else []
    at = turn.message_index + 1
    for k, step in enumerate(steps):
        if not (
            isinstance(step, dict) and step.get("step") == k and step.get("message_index") == at
        ):
            return k
        message = messages[at] if at < len(messages) else None
        calls = tool_calls_of(message) if isinstance(message, dict) else []
        if message is None or message.get("role") != "assistant" or not calls:
            return k
        if owed and k == len(steps) - 1 and at + 1 == len(messages):
            return len(steps)
        answers = answer_calls(tools, calls, dict(counts))
        if isinstance(answers, Unscripted) or messages[at + 1 : at + 1 + len(answers)] != answers:
            return k
        answer_calls(tools, calls, counts)
        at += 1 + len(answers)
    return len(steps)


def keep_partial(progress: TurnsDone, conversation: Conversation, kept: int) -> str | None:
    """Keep of the next turn's answered steps those that continue ``conversation``.

    Says what was discarded, if anything.
    """
    turn = progress.partial
    if turn is None:
        return None
    progress.partial = None
    recorded = len(turn.steps or [])
    prefix = conversation.prefix()
    before = [*prefix, *progress.exchanges]
    exchange = progress.partial_exchange
    if (
        turn.index != kept
        or kept >= len(conversation.turns)
        or turn.message_index != len(before)
        or not exchange
        or exchange[0] != {"role": "user", "content": conversation.turns[kept].content}
        or not objects(turn.attempts)
    ):
        return _steps_note(conversation, kept, recorded, 0, progress.partial_origin, "numbering")
    counts = count_calls(progress.exchanges)
    tools = conversation.turns[kept].tools
    steps = valid_steps(turn, [*before, *exchange], tools, counts, owed=True)
    if steps == 0:
        return _steps_note(conversation, kept, recorded, 0, progress.partial_origin, "tools")
    turn.steps = list(turn.steps or [])[:steps]
    end = turn.steps[-1]["message_index"] - turn.message_index + 1
    end = min(end + len(tool_calls_of(exchange[end - 1])), len(exchange))  # owed: no results
    # Attempts at the step after the last one kept stay when no step was discarded: the
    # request they were for is sent again, as a failed turn's attempts are.
    failed_step = steps if steps == recorded else -1
    turn.attempts = [
        dict(a, resumed=True) if a.get("step") == failed_step else a
        for a in turn.attempts
        if a.get("step", 0) < steps or a.get("step") == failed_step
    ]
    turn.error = None
    progress.partial = turn
    progress.partial_exchange = exchange[:end]
    return _steps_note(conversation, kept, recorded, steps, progress.partial_origin, "tools")


def _steps_note(
    conversation: Conversation, turn: int, recorded: int, kept: int, where: str, why: str
) -> str | None:
    """What resuming says about steps of a turn it does not trust (None: all trusted)."""
    dropped = recorded - kept
    if dropped <= 0:
        return None
    reason = (
        "its tool calls are not answered with the scripted results"
        if why == "tools"
        else "its record is not numbered as that turn's"
    )
    then = f"sending it again from step {kept}" if kept else "sending the turn again"
    return (
        f"{conversation.id!r}: discarded {plural(dropped, 'recorded step')} of "
        f"turn {turn + 1} ({where}): {reason}; {then}"
    )


def keep_matching(progress: TurnsDone, conversation: Conversation) -> str | None:
    """Cut ``progress`` to the turns that continue ``conversation``; say what was discarded."""
    kept, reason = matching_turns(progress, conversation)
    attempts_fit = progress.failed_index == kept and all(
        isinstance(a, dict) for a in progress.failed_attempts
    )
    if not attempts_fit:
        progress.failed_attempts = []
    if reason is None:
        return keep_partial(progress, conversation, kept)
    progress.partial = None
    dropped = len(progress.turns) - kept
    where = progress.origins[kept] if kept < len(progress.origins) else "the transcript"
    end = progress.turns[kept - 1].answer_index + 1 - len(conversation.prefix()) if kept else 0
    progress.turns = progress.turns[:kept]
    progress.exchanges = progress.exchanges[:end]
    progress.origins = progress.origins[:kept]
    progress.failed_attempts = []
    then = f"continuing after turn {kept}" if kept else "starting it afresh"
    if not dropped:  # only the prefix was wrong, with no turn recorded
        return f"{conversation.id!r}: {where} does not continue it: {reason}; {then}"
    return (
        f"{conversation.id!r}: discarded {plural(dropped, 'recorded turn')} "
        f"from turn {kept + 1} ({where}): {reason}; {then}"
    )


def objects(value: Any) -> bool:
    """Whether ``value`` is a list of objects."""
    return isinstance(value, list) and all(isinstance(v, dict) for v in value)


def well_formed(turn: TurnRecord) -> bool:
    """Whether a recorded turn has the shapes the engine reads back."""
    return (
        objects(turn.attempts)
        and (turn.checks is None or objects(turn.checks))
        and (turn.steps is None or objects(turn.steps))
        and (turn.usage is None or isinstance(turn.usage, dict))
        and turn.error is None
    )


def tokens_of(turns: list[TurnRecord]) -> int:
    """Prompt plus completion tokens the turns' usage says they used."""
    total = 0
    for turn in turns:
        usage = turn.usage if isinstance(turn.usage, dict) else {}
        for key in ("prompt_tokens", "completion_tokens"):
            value = usage.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                total += value
    return total


def resume_point(record: ConversationRecord, where: str) -> TurnsDone | None:
    """Where a transcript record of a cut-short conversation continues (unchecked)."""
    if record.status in Status.FINISHED:
        return None
    done = [t for t in record.turns if t.completed]
    failed = [t for t in record.turns if not t.completed]
    first = (done or failed)[0].message_index if record.turns else None
    prefix = None if first is None else record.messages[: max(first, 0)]
    start = max(first or 0, 0)
    end = done[-1].answer_index + 1 if done else start
    progress = TurnsDone(
        started_at=record.started_at,
        turns=done,
        exchanges=record.messages[start:end],
        failed_attempts=list(failed[0].attempts) if failed else [],
        prefix=prefix,
        origins=[where] * len(done),
        failed_index=failed[0].index if failed else None,
    )
    if failed and failed[0].steps:  # stopped in its tool chain: continue after its steps
        progress.partial = failed[0]
        progress.partial_exchange = record.messages[max(failed[0].message_index, 0) :]
        progress.partial_origin = where
        progress.failed_attempts = []
        progress.failed_index = None
    return progress


def changed_error(path: Path, conversation: Conversation, recorded_source: str) -> OutputError:
    """Why ``path`` cannot be resumed: it recorded another version of ``conversation``.

    Another batch's, when the recorded one came from another file.
    """
    if recorded_source != conversation.source:
        return OutputError(
            f"{path} is the output of another batch: it holds conversation "
            f"{conversation.id!r} from {recorded_source}, this batch has another one of that "
            f"id from {conversation.source}; resume only with the same files and options, "
            "or write to a new output with -o"
        )
    return OutputError(
        f"{conversation.source}: conversation {conversation.id!r} has changed since "
        f"{path} recorded it (its turns, system prompt, messages, model or params "
        "differ); resume only with the same files and options, or write to a new output "
        "with -o"
    )
