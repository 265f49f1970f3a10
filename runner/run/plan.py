"""The cost plan of a batch (``--dry-run``): requests and prompt tokens, before sending any.

Chat APIs are stateless, so turn *k* resends the system prompt, the
pre-filled messages, every earlier user turn and every earlier answer: a
conversation's prompt tokens grow roughly with the square of its turn count.
Answers are not known before the run, so each earlier answer is counted as
the request's ``max_tokens`` when it sets one, else as ``assumed_answer_tokens``.
Tokens are estimated at about four characters a token (``runner.spec.tokens``),
the usual rule of thumb for English with BPE tokenizers; real counts depend on
the model's tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from runner.run.batch import expand_batch, request_settings
from runner.run.config import RunConfig
from runner.spec.model import Conversation, RequestSettings
from runner.spec.tokens import (
    ASSUMED_ANSWER_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    answer_cap,
    message_tokens,
)
from runner.words import plural


@dataclass(frozen=True, slots=True)
class ConversationCost:
    """The estimated cost of one conversation."""

    id: str
    source: str
    model: str
    requests: int
    """One request per turn."""
    prompt_tokens: int
    """Estimated prompt tokens over all its requests."""
    max_completion_tokens: int | None
    """The most completion tokens its requests allow, when every turn sets max_tokens."""
    uses_tools: bool = False
    """Whether it declares tools (a turn may then make more than one request)."""


@dataclass(frozen=True, slots=True)
class CostPlan:
    """The estimated cost of a batch."""

    conversations: tuple[ConversationCost, ...]
    assumed_answer_tokens: int

    @property
    def requests(self) -> int:
        """Requests the batch sends when nothing fails."""
        return sum(c.requests for c in self.conversations)

    @property
    def prompt_tokens(self) -> int:
        """Estimated prompt tokens of the whole batch."""
        return sum(c.prompt_tokens for c in self.conversations)


def estimate_cost(
    requests: Sequence[RequestSettings], *, assumed_answer_tokens: int = ASSUMED_ANSWER_TOKENS
) -> CostPlan:
    """Estimate requests and prompt tokens for each conversation of a batch."""
    costs = []
    for settings in requests:
        conv = settings.conversation
        history = sum(message_tokens(m["content"]) for m in conv.prefix())
        prompt_total = 0
        completion_caps: list[int | None] = []
        for index, turn in enumerate(conv.turns):
            history += message_tokens(turn.content)
            prompt_total += history
            cap = answer_cap(settings.turn_params(index))
            completion_caps.append(cap)
            history += MESSAGE_OVERHEAD_TOKENS + (cap or assumed_answer_tokens)
        known = [c for c in completion_caps if c is not None]
        costs.append(
            ConversationCost(
                id=conv.id,
                source=conv.source,
                model=settings.model,
                requests=len(conv.turns),
                prompt_tokens=prompt_total,
                max_completion_tokens=sum(known) if len(known) == len(completion_caps) else None,
                uses_tools=settings.uses_tools,
            )
        )
    return CostPlan(tuple(costs), assumed_answer_tokens)


def estimate_batch(conversations: Sequence[Conversation], config: RunConfig) -> CostPlan:
    """The cost plan of the batch ``config`` would run (``--dry-run``), expanded as the run does."""
    batch = expand_batch(conversations, config)
    return estimate_cost([request_settings(c, config) for c in batch])


def plan_lines(plan: CostPlan, *, top: int = 20) -> list[str]:
    """The plan as text: the costliest conversations, then the totals."""
    lines = [f"{'conversation':<40} {'turns':>5} {'prompt tokens':>14}  model"]
    ranked = sorted(plan.conversations, key=lambda c: c.prompt_tokens, reverse=True)
    for cost in ranked[:top]:
        name = cost.id if len(cost.id) <= 40 else cost.id[:39] + "…"
        lines.append(f"{name:<40} {cost.requests:>5} {cost.prompt_tokens:>14,}  {cost.model}")
    if len(ranked) > top:
        rest = ranked[top:]
        lines.append(
            f"{f'... {len(rest)} more':<40} {sum(c.requests for c in rest):>5} "
            f"{sum(c.prompt_tokens for c in rest):>14,}"
        )
    caps = [c.max_completion_tokens for c in plan.conversations]
    completion = (
        f"at most {plural(sum(c for c in caps if c is not None), 'completion token')}"
        if all(c is not None for c in caps)
        else f"completion tokens unknown (answers assumed {plan.assumed_answer_tokens} tokens "
        "where max_tokens is not set)"
    )
    lines.append(
        f"total: {plural(len(plan.conversations), 'conversation')}, "
        f"{plural(plan.requests, 'request')}, "
        f"about {plan.prompt_tokens:,} prompt tokens; {completion}"
    )
    lines.append("estimates: about 4 characters a token; nothing was sent")
    with_tools = sum(c.uses_tools for c in plan.conversations)
    if with_tools:
        lines.append(
            f"tools: {plural(with_tools, 'conversation')} "
            f"{'declares' if with_tools == 1 else 'declare'} tools; the plan assumes one "
            "request per turn, tool calls add more"
        )
    return lines
