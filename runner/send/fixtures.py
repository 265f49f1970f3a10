"""Recorded answers: ``--record DIR`` stores them, ``--replay DIR`` answers from them.

A fixture folder holds one JSON file per conversation, so a team can commit
it and review changes like code. Each file lists the conversation's
exchanges in turn order: the request exactly as sent (model, messages,
params: nothing endpoint-specific, never the key), the answer exactly as
received, and ``key``, a hash of the request. Replay looks an answer up by
that hash, so it only answers a request identical to the recorded one, and
a conversation whose history, model or params changed misses at the first
turn that differs.

Recording a turn drops the conversation's recorded exchanges from that turn
on (they belonged to a history that is no longer the current one), so a
re-recorded conversation holds exactly its latest exchanges, also across
``--resume``. Replaying and recording into the same folder answers what is
recorded and records only what is missing: re-recording what changed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner.errors import FatalAPIError, OutputError
from runner.http.client import Completion, completion_from_json
from runner.send.responder import Responder
from runner.transcripts.jsonio import write_json_atomic

SCHEMA = "mtrun.fixtures/1"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def request_key(body: Mapping[str, Any]) -> str:
    """The hash that identifies a request: its canonical JSON, key order ignored.

    Whether the answer was streamed does not change what was asked, so the
    stream fields are left out: a recording replays with or without --stream.
    """
    asked = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    canonical = json.dumps(asked, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode("ascii")).hexdigest()


def fixture_name(conversation_id: str) -> str:
    """A file name for a conversation's fixture that cannot leave the folder."""
    safe = _SAFE.sub("_", conversation_id).strip("._")[:80] or "conversation"
    if safe != conversation_id:
        safe += "-" + hashlib.sha256(conversation_id.encode("utf-8")).hexdigest()[:8]
    return safe + ".json"


class FixtureFolder:
    """Answers from, and records into, one folder of per-conversation fixture files."""

    def __init__(
        self,
        folder: Path,
        *,
        replay: bool,
        record: bool,
        upstream: Responder | None = None,
    ) -> None:
        if upstream is None and (record or not replay):
            raise ValueError("recording, or passing requests on, needs an upstream responder")
        self.folder = folder
        self.replay = replay
        self.record = record
        self.upstream = upstream
        self._cache: dict[str, list[dict[str, Any]]] = {}

    def _path(self, conversation_id: str) -> Path:
        return self.folder / fixture_name(conversation_id)

    def _exchanges(self, conversation_id: str) -> list[dict[str, Any]]:
        cached = self._cache.get(conversation_id)
        if cached is not None:
            return cached
        path = self._path(conversation_id)
        exchanges: list[dict[str, Any]] = []
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            data = None
        except (OSError, ValueError) as exc:
            raise OutputError(f"cannot read fixture {path}: {exc}") from None
        if data is not None:
            if not isinstance(data, dict) or not isinstance(data.get("exchanges"), list):
                raise OutputError(f"{path} is not an mtrun fixture file (no 'exchanges' list)")
            exchanges = [e for e in data["exchanges"] if isinstance(e, dict)]
        self._cache[conversation_id] = exchanges
        return exchanges

    async def __call__(
        self, body: Mapping[str, Any], *, conversation_id: str, turn: int, purpose: str
    ) -> Completion:
        """Answer from the folder, or from upstream (recording the answer)."""
        key = request_key(body)
        if self.replay:
            for exchange in self._exchanges(conversation_id):
                if exchange.get("key") == key:
                    return completion_from_json(exchange.get("response"))
            if not self.record:
                raise FatalAPIError(
                    f"no recorded answer in {self._path(conversation_id)} for this {purpose} "
                    f"request (turn {turn + 1}); the history, model or params differ from the "
                    f"recording: record again with --record {self.folder}",
                    kind="replay_miss",
                )
        if self.upstream is None:  # replay only: a miss raised above
            raise RuntimeError("a replay-only fixture folder has no upstream to ask")
        completion = await self.upstream(
            body, conversation_id=conversation_id, turn=turn, purpose=purpose
        )
        if self.record:
            self._store(conversation_id, turn, purpose, key, body, completion.raw)
        return completion

    def _store(
        self,
        conversation_id: str,
        turn: int,
        purpose: str,
        key: str,
        body: Mapping[str, Any],
        response: dict[str, Any],
    ) -> None:
        exchanges = self._exchanges(conversation_id)
        if purpose == "answer":
            exchanges[:] = [
                e
                for e in exchanges
                if _turn_of(e) < turn or (_turn_of(e) == turn and _earlier_step(e, body))
            ]
        else:
            exchanges[:] = [
                e for e in exchanges if not (_turn_of(e) == turn and e.get("purpose") == purpose)
            ]
        exchanges.append(
            {"turn": turn, "purpose": purpose, "key": key, "request": body, "response": response}
        )
        exchanges.sort(key=lambda e: (_turn_of(e), e.get("purpose") != "answer"))
        document = {"schema": SCHEMA, "conversation": conversation_id, "exchanges": exchanges}
        write_json_atomic(self._path(conversation_id), document)


def _earlier_step(exchange: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    """Whether ``exchange`` is an earlier step of the same turn (a turn that calls tools).

    Its request's history is then a strict beginning of ``body``'s: it is kept.
    """
    request = exchange.get("request")
    earlier = request.get("messages") if isinstance(request, Mapping) else None
    messages = body.get("messages")
    return (
        exchange.get("purpose") == "answer"
        and isinstance(earlier, list)
        and isinstance(messages, list)
        and len(earlier) < len(messages)
        and messages[: len(earlier)] == earlier
    )


def _turn_of(exchange: Mapping[str, Any]) -> int:
    turn = exchange.get("turn")
    return turn if isinstance(turn, int) else 0
