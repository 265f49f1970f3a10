"""Load conversation files: YAML in, validated :class:`~runner.spec.Conversation` out.

``yamlsafe.py`` turns each file into a bounded tree of YAML nodes; this
module walks the nodes, checks every field, and builds the specs. Nodes keep
the line and column of every value, so every message can point at it.

Every problem is an :class:`~runner.errors.InputError` rendered as
``path:line:column: field: what is wrong``; the first one found is raised.
"""

from __future__ import annotations

import difflib
import glob
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, cast

from yaml.error import Mark
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from runner.checks import Check, CheckSpecError, parse_expect
from runner.errors import InputError
from runner.spec import MESSAGE_ROLES, Conversation, Message, Turn
from runner.yamlsafe import (
    MERGE_TAG,
    NULL_TAG,
    SCALARS,
    TEXT_TAGS,
    TOO_DEEP,
    error_at,
    os_reason,
    read_document,
)

SCHEMA_KEY = "$schema"
"""Allowed, and ignored, at the top level of a file: editors read it."""
FILE_KEYS = ("conversations", "defaults")
CONVERSATION_KEYS = (
    "id",
    "model",
    "system",
    "params",
    "messages",
    "expect",
    "expect_final",
    "turns",
)
DEFAULTS_KEYS = ("model", "system", "params", "messages", "expect", "expect_final")
TURN_KEYS = ("content", "params", "expect")
MESSAGE_KEYS = ("role", "content", "name")
RESERVED_PARAMS: Mapping[str, str] = {
    "model": "set 'model' at the conversation level",
    "messages": "'messages' cannot be a parameter; use the conversation's 'messages'",
    "stream": "streaming is not supported in params",
}
"""Parameter names refused in ``params``, with the reason given to the user."""

MAX_ID_LENGTH = 200
_EMPTY_TURN = "empty turn; write the user's message or remove the turn"


def expand_paths(patterns: Sequence[str]) -> list[Path]:
    """The conversation files named by files, folders and glob patterns, each once.

    A folder stands for its ``*.yaml`` and ``*.yml`` files, recursively; a glob
    may use ``**``. Matches are sorted; a file named twice keeps its first place.
    """
    files: list[Path] = []
    seen: set[Path] = set()
    for pattern in patterns:
        for path in _expand(pattern):
            if path.resolve() not in seen:
                seen.add(path.resolve())
                files.append(path)
    return files


def load_file(path: Path, display: str | None = None) -> list[Conversation]:
    """The conversations in one file; ``display`` names the file in messages."""
    return [item.conversation for item in _load(path, str(path) if display is None else display)]


def load_conversations(patterns: Sequence[str]) -> list[Conversation]:
    """Every conversation named by ``patterns``, with ids unique across the batch."""
    first: dict[str, _Loaded] = {}
    conversations: list[Conversation] = []
    for path in expand_paths(patterns):
        for item in _load(path, str(path)):
            _register(first, item)
            conversations.append(item.conversation)
    return conversations


class _Loaded(NamedTuple):
    """A conversation, where its id is defined, and the id's field name."""

    conversation: Conversation
    mark: Mark
    field: str


@dataclass(frozen=True)
class _Settings:
    """What a conversation and ``defaults:`` may both set; None when not given."""

    model: str | None = None
    system: str | None = None
    params: Mapping[str, Any] | None = None
    messages: tuple[Message, ...] | None = None
    expect: tuple[Check, ...] | None = None
    expect_final: tuple[Check, ...] | None = None

    def over(self, base: _Settings) -> _Settings:
        """These settings laid over ``base``; params merge key by key, null removes one."""
        params = {**(base.params or {}), **(self.params or {})}
        return _Settings(
            model=base.model if self.model is None else self.model,
            system=base.system if self.system is None else self.system,
            params={key: value for key, value in params.items() if value is not None},
            messages=base.messages if self.messages is None else self.messages,
            expect=base.expect if self.expect is None else self.expect,
            expect_final=base.expect_final if self.expect_final is None else self.expect_final,
        )


def _locate(node: Node, path: str) -> Node:
    """The node at a field path such as ``.contains.any[1]`` below ``node`` (best effort)."""
    for key, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        if key and isinstance(node, MappingNode):
            found = [v for k, v in node.value if isinstance(k, ScalarNode) and k.value == key]
            if not found:
                break
            node = found[0]
        elif index and isinstance(node, SequenceNode) and int(index) < len(node.value):
            node = node.value[int(index)]
        else:
            break
    return node


def _expand(pattern: str) -> list[Path]:
    path = Path(pattern)
    if path.exists() or not any(c in pattern for c in "*?["):
        matches = [path] if path.exists() else []
    else:
        matches = [Path(m) for m in sorted(glob.glob(pattern, recursive=True))]
    files: list[Path] = []
    for match in matches:
        files.extend(_yaml_files_in(match, pattern) if match.is_dir() else [match])
    if not files:
        raise InputError("no conversation files match", path=pattern)
    return files


def _yaml_files_in(folder: Path, pattern: str) -> list[Path]:
    try:
        found = [p for p in folder.rglob("*") if p.suffix.lower() in (".yaml", ".yml")]
    except OSError as exc:
        raise InputError(f"cannot read folder: {os_reason(exc)}", path=pattern) from None
    return sorted(p for p in found if p.is_file())


def _register(first: dict[str, _Loaded], item: _Loaded) -> None:
    """Remember where an id was first defined; refuse it the second time."""
    seen = first.setdefault(item.conversation.id, item)
    if seen is not item:
        where = f"{seen.conversation.source}:{seen.mark.line + 1}:{seen.mark.column + 1}"
        message = (
            f"duplicate conversation id '{item.conversation.id}' (first defined at {where}); "
            "give each conversation a unique 'id'"
        )
        raise error_at(item.conversation.source, item.mark, message, item.field)


def _load(path: Path, display: str) -> list[_Loaded]:
    root = read_document(path, display)
    if root is None or (isinstance(root, ScalarNode) and root.tag == NULL_TAG):
        raise InputError("file is empty; expected a conversation with 'turns'", path=display)
    try:
        loaded = _Builder(display, path.stem).file(root)
    except RecursionError:  # not expected after _check_bounds; never a traceback though
        raise InputError(TOO_DEEP, path=display) from None
    first: dict[str, _Loaded] = {}
    for item in loaded:
        _register(first, item)
    return loaded


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


_Items = dict[str, tuple[Node, Node]]


class _Builder:
    """Builds the conversations of one file from its nodes, failing at the first problem."""

    def __init__(self, display: str, stem: str) -> None:
        self.display = display
        self.stem = stem

    def file(self, root: Node) -> list[_Loaded]:
        """The file's conversations: one mapping, a list, or ``conversations:``."""
        if isinstance(root, SequenceNode):
            return self.conversations(root, "", _Settings())
        if isinstance(root, MappingNode):
            items = self.items(root, "")
            if "conversations" in items:
                for key, (key_node, _) in items.items():
                    if key in DEFAULTS_KEYS:
                        message = "not allowed beside 'conversations:'; move it under 'defaults:'"
                        raise self.error(key_node, key, message)
                self.check_keys(items, "", (*FILE_KEYS, SCHEMA_KEY))
                defaults = _Settings()
                if "defaults" in items:
                    node = items["defaults"][1]
                    defaults = self.settings(node, "defaults", DEFAULTS_KEYS, "a mapping")
                node = items["conversations"][1]
                if not isinstance(node, SequenceNode):
                    raise self.type_error(node, "conversations", "a list of conversations")
                return self.conversations(node, "conversations", defaults)
            if "turns" in items:
                return [self.conversation(root, "", self.stem, _Settings(), top=True)]
            self.check_keys(items, "", (*CONVERSATION_KEYS, *FILE_KEYS, SCHEMA_KEY))
        message = "expected a conversation (a mapping with 'turns') or 'conversations:'"
        raise self.error(root, "", message)

    def conversations(self, node: SequenceNode, field: str, defaults: _Settings) -> list[_Loaded]:
        if not node.value:
            raise self.error(node, field, "no conversations; add at least one")
        loaded = []
        for i, item in enumerate(node.value):
            default_id = f"{self.stem}-{i + 1}" if len(node.value) > 1 else self.stem
            loaded.append(self.conversation(item, f"{field}[{i}]", default_id, defaults))
        return loaded

    def conversation(
        self, node: Node, field: str, default_id: str, defaults: _Settings, *, top: bool = False
    ) -> _Loaded:
        allowed = (*CONVERSATION_KEYS, SCHEMA_KEY) if top else CONVERSATION_KEYS
        what = "a conversation (a mapping with 'turns')"
        settings = self.settings(node, field, allowed, what).over(defaults)
        items = self.items(cast(MappingNode, node), field)  # settings() checked the type
        turns = self.turns(self.require(node, items, field, "turns"), _join(field, "turns"))
        id_key, conversation_id = node, default_id
        if "id" in items:
            id_key, id_node = items["id"]
            conversation_id = self.conversation_id(id_node, _join(field, "id"))
        conversation = Conversation(
            id=conversation_id,
            source=self.display,
            turns=turns,
            model=settings.model,
            system=settings.system,
            messages=settings.messages or (),
            params=dict(settings.params or {}),
            line=node.start_mark.line + 1,
            expect=settings.expect or (),
            expect_final=settings.expect_final or (),
        )
        return _Loaded(conversation, id_key.start_mark, _join(field, "id"))

    def settings(self, node: Node, field: str, allowed: Sequence[str], what: str) -> _Settings:
        """Model, system, params and messages of a conversation or of ``defaults:``."""
        if not isinstance(node, MappingNode):
            raise self.type_error(node, field, what)
        items = self.items(node, field)
        self.check_keys(items, field, allowed)
        given = {key: (items[key][1], _join(field, key)) for key in DEFAULTS_KEYS if key in items}
        model = system = None
        if "model" in given:
            model = self.nonblank(
                *given["model"], "must not be empty; name a model or remove 'model'"
            )
        if "system" in given:
            system = self.nonblank(
                *given["system"], "must not be empty; write a system prompt or remove 'system'"
            )
        return _Settings(
            model=model,
            system=system,
            params=self.params(*given["params"]) if "params" in given else None,
            messages=self.messages(*given["messages"]) if "messages" in given else None,
            expect=self.expect(*given["expect"], "every_turn") if "expect" in given else None,
            expect_final=(
                self.expect(*given["expect_final"], "final") if "expect_final" in given else None
            ),
        )

    def conversation_id(self, node: Node, field: str) -> str:
        value = self.nonblank(
            node, field, "must not be empty; name the conversation or remove 'id'"
        )
        if len(value) > MAX_ID_LENGTH:
            message = f"too long ({len(value)} characters; at most {MAX_ID_LENGTH})"
            raise self.error(node, field, message)
        for char in value:
            if unicodedata.category(char) == "Cc":
                message = f"contains a control character (U+{ord(char):04X})"
                raise self.error(node, field, message)
        return value

    def turns(self, node: Node, field: str) -> tuple[Turn, ...]:
        if not isinstance(node, SequenceNode):
            raise self.type_error(node, field, "a list of turns")
        if not node.value:
            raise self.error(node, field, "no turns; add at least one user turn")
        return tuple(self.turn(item, f"{field}[{i}]") for i, item in enumerate(node.value))

    def turn(self, node: Node, field: str) -> Turn:
        line = node.start_mark.line + 1
        if not isinstance(node, MappingNode):
            expected = "a string or a mapping with 'content'"
            return Turn(content=self.nonblank(node, field, _EMPTY_TURN, expected), line=line)
        items = self.items(node, field)
        self.check_keys(items, field, TURN_KEYS)
        content_node = self.require(node, items, field, "content")
        content = self.nonblank(content_node, _join(field, "content"), _EMPTY_TURN)
        params: dict[str, Any] = {}
        if "params" in items:
            params = self.params(items["params"][1], _join(field, "params"))
        expect: tuple[Check, ...] = ()
        if "expect" in items:
            expect = self.expect(items["expect"][1], _join(field, "expect"), "turn")
        return Turn(content=content, params=params, line=line, expect=expect)

    def expect(self, node: Node, field: str, scope: str) -> tuple[Check, ...]:
        """Expectations, pointing any problem at the value it is about."""
        try:
            return parse_expect(self.plain(node, field), field=field, scope=scope)
        except CheckSpecError as exc:
            raise self.error(
                _locate(node, exc.field[len(field) :]), exc.field, exc.message
            ) from None

    def params(self, node: Node, field: str) -> dict[str, Any]:
        if not isinstance(node, MappingNode):
            raise self.type_error(node, field, "a mapping of API parameters")
        params: dict[str, Any] = {}
        for name, (key_node, value_node) in self.items(node, field).items():
            if name in RESERVED_PARAMS:
                raise self.error(key_node, _join(field, name), RESERVED_PARAMS[name])
            params[name] = self.plain(value_node, _join(field, name))
        return params

    def messages(self, node: Node, field: str) -> tuple[Message, ...]:
        if not isinstance(node, SequenceNode):
            raise self.type_error(node, field, "a list of messages")
        return tuple(self.message(item, f"{field}[{i}]") for i, item in enumerate(node.value))

    def message(self, node: Node, field: str) -> Message:
        if not isinstance(node, MappingNode):
            raise self.type_error(node, field, "a message (a mapping with 'role' and 'content')")
        items = self.items(node, field)
        self.check_keys(items, field, MESSAGE_KEYS)
        role_node = self.require(node, items, field, "role")
        role = self.text(role_node, _join(field, "role"))
        if role not in MESSAGE_ROLES:
            message = f"unknown role '{role}'; use one of: {', '.join(MESSAGE_ROLES)}"
            raise self.error(role_node, _join(field, "role"), message)
        content_node = self.require(node, items, field, "content")
        content_field = _join(field, "content")
        content: Any
        if isinstance(content_node, SequenceNode):
            if not content_node.value:
                raise self.error(
                    content_node, content_field, "must not be an empty list; add a content part"
                )
            for i, part in enumerate(content_node.value):
                if not isinstance(part, MappingNode):
                    expected = "a content part (a mapping)"
                    raise self.type_error(part, f"{content_field}[{i}]", expected)
            content = self.plain(content_node, content_field)
        else:
            expected = "a string or a list of content parts"
            content = self.nonblank(content_node, content_field, "must not be empty", expected)
        name = None
        if "name" in items:
            name = self.nonblank(items["name"][1], _join(field, "name"), "must not be empty")
        return Message(role=role, content=content, name=name)

    def plain(self, node: Node, field: str) -> Any:
        """The node as plain JSON-compatible data: dict, list, str, int, float, bool, None."""
        if isinstance(node, MappingNode):
            items = self.items(node, field)
            return {key: self.plain(value, _join(field, key)) for key, (_, value) in items.items()}
        if isinstance(node, SequenceNode):
            return [self.plain(item, f"{field}[{i}]") for i, item in enumerate(node.value)]
        if node.tag in TEXT_TAGS:
            return str(node.value)
        try:
            value = SCALARS[node.tag](cast(ScalarNode, node))
        except (ValueError, OverflowError):  # e.g. '0b_', which YAML resolves as an int
            message = f"cannot read {node.value} as a number; put it in quotes to use it as text"
            raise self.error(node, field, message) from None
        if isinstance(value, float) and not math.isfinite(value):
            message = f"{node.value} is not representable in JSON; use a finite number"
            raise self.error(node, field, message)
        return value

    def items(self, node: MappingNode, field: str) -> _Items:
        """The mapping's entries by key, ``<<`` merges applied; keys must be unique strings."""
        items: _Items = {}
        merged: list[MappingNode] = []
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                if not all(isinstance(source, MappingNode) for source in sources):
                    message = "'<<' merges a mapping or a list of mappings"
                    raise self.error(value_node, field, message)
                merged.extend(sources)
                continue
            key = self.text(key_node, field, "a string key")
            if key in items:
                first = items[key][0].start_mark.line + 1
                raise self.error(key_node, field, f"duplicate key '{key}' (first at line {first})")
            items[key] = (key_node, value_node)
        for source in merged:  # explicit keys win, then earlier merges
            for key, item in self.items(source, field).items():
                items.setdefault(key, item)
        return items

    def check_keys(self, items: _Items, field: str, allowed: Sequence[str]) -> None:
        for key, (key_node, _) in items.items():
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = (
                    f"did you mean '{close[0]}'?"
                    if close
                    else f"expected one of: {', '.join(allowed)}"
                )
                raise self.error(key_node, _join(field, key), f"unknown key; {hint}")

    def require(self, node: Node, items: _Items, field: str, key: str) -> Node:
        if key not in items:
            raise self.error(node, field, f"missing required key '{key}'")
        return items[key][1]

    def text(self, node: Node, field: str, expected: str = "a string") -> str:
        if isinstance(node, ScalarNode) and node.tag in TEXT_TAGS:
            return str(node.value)
        raise self.type_error(node, field, expected)

    def nonblank(self, node: Node, field: str, empty: str, expected: str = "a string") -> str:
        value = self.text(node, field, expected)
        if not value.strip():
            raise self.error(node, field, empty)
        return value

    def type_error(self, node: Node, field: str, expected: str) -> InputError:
        """``expected ...``, with a hint when the value is null or a scalar meant as text."""
        message = f"expected {expected}"
        if isinstance(node, ScalarNode) and node.tag == NULL_TAG:
            message += "; the value is empty"
        elif isinstance(node, ScalarNode) and "string" in expected:
            message += f'; write "{node.value}" (in quotes) to use it as text'
        return self.error(node, field, message)

    def error(self, node: Node, field: str, message: str) -> InputError:
        return error_at(self.display, node.start_mark, message, field)
