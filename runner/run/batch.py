"""The batch a run replays, expanded once for the run, ``--dry-run`` and ``--junit``.

From the loaded conversations to what the engine runs: only this shard's
part (``--shard``), then each conversation per ``--model`` and per
repetition (``--repeat``, see :mod:`runner.run.variants`). Every reader of
"which conversations does this run hold" asks :func:`expand_batch`, so the
dry run's ids, the run's ids and the JUnit report's ids are the same ids.
"""

from __future__ import annotations

import dataclasses
from array import array
from collections.abc import Callable, Iterator, Sequence

from runner.run.config import RunConfig
from runner.run.variants import Variants
from runner.spec.model import Conversation, RequestSettings, apply_overrides


def expand_batch(conversations: Sequence[Conversation], config: RunConfig) -> Variants:
    """The conversations ``config`` runs: this shard's part, per model, per repetition."""
    if config.shard is not None:
        shard = config.shard
        conversations = [c for c in conversations if shard.holds(c.id)]
    return Variants(conversations, config.asked_models, config.repeat)


def request_settings(conversation: Conversation, config: RunConfig) -> RequestSettings:
    """The model and parameters ``conversation``'s requests are sent with under ``config``."""
    settings = apply_overrides(
        conversation,
        model_override=config.model,
        env_model=config.env_model,
        param_overrides=config.params,
    )
    if config.reasoning is not None:
        settings = dataclasses.replace(settings, reasoning=config.reasoning)
    return settings


def longest_first(batch: Variants, *, skip: Callable[[str], bool]) -> Iterator[Conversation]:
    """The conversations of ``batch`` to run, longest first, leaving out those ``skip`` names.

    A long chain of turns started last would set the batch's end. Indices,
    not conversations, are sorted: variants are made as they start. The
    order is kept as an array of machine integers (8 bytes a conversation,
    not a list of int objects' 40) while the run goes through it.
    """
    by_length = array("q", sorted(range(len(batch)), key=batch.turn_count, reverse=True))
    return (c for c in map(batch.__getitem__, by_length) if not skip(c.id))
