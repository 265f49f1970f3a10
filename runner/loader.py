"""Load conversation files: YAML in, validated :class:`~runner.spec.Conversation` out.

Each file is read as bytes and composed into YAML *nodes* by PyYAML's safe
composer; the loader builds the specs from the nodes itself. Nodes keep a line
and column for every message, and let the loader bound the work before doing
it: one pass over the distinct nodes checks tags, nesting depth and the size
the document would have once its aliases were expanded, so an alias bomb is
refused without being expanded.

Every problem is an :class:`~runner.errors.InputError` rendered as
``path:line:column: field: what is wrong``; the first one found is raised.
"""

from __future__ import annotations

import codecs
import difflib
import glob
import math
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, cast

import yaml
from yaml.constructor import SafeConstructor
from yaml.error import Mark
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from runner.errors import InputError
from runner.spec import MESSAGE_ROLES, Conversation, Message, Turn

SCHEMA_KEY = "$schema"
"""Allowed, and ignored, at the top level of a file: editors read it."""
FILE_KEYS = ("conversations", "defaults")
CONVERSATION_KEYS = ("id", "model", "system", "params", "messages", "turns")
DEFAULTS_KEYS = ("model", "system", "params", "messages")
TURN_KEYS = ("content", "params")
MESSAGE_KEYS = ("role", "content", "name")
RESERVED_PARAMS: Mapping[str, str] = {
    "model": "set 'model' at the conversation level",
    "messages": "'messages' cannot be a parameter; use the conversation's 'messages'",
    "stream": "streaming is not supported in params",
}
"""Parameter names refused in ``params``, with the reason given to the user."""

MAX_ID_LENGTH = 200
MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_NODES = 1_000_000
"""Most nodes a document may hold once its aliases are expanded."""
MAX_DEPTH = 100

_YAML = "tag:yaml.org,2002:"
_NULL, _MERGE = _YAML + "null", _YAML + "merge"
_COLLECTION_TAGS: Mapping[type[Node], set[str]] = {
    SequenceNode: {_YAML + "seq"},
    MappingNode: {_YAML + "map"},
}
# Timestamps, a lone '=' and a stray '<<' stay the text they were written as.
_TEXT_TAGS = frozenset(_YAML + t for t in ("str", "timestamp", "value", "merge"))
_CONSTRUCTOR = SafeConstructor()
_SCALARS: Mapping[str, Callable[[ScalarNode], Any]] = {
    _NULL: _CONSTRUCTOR.construct_yaml_null,
    _YAML + "bool": _CONSTRUCTOR.construct_yaml_bool,
    _YAML + "int": _CONSTRUCTOR.construct_yaml_int,
    _YAML + "float": _CONSTRUCTOR.construct_yaml_float,
}
_SCALAR_TAGS = _TEXT_TAGS | _SCALARS.keys()
_TOO_DEEP = f"nesting too deep (more than {MAX_DEPTH} levels)"
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

    def over(self, base: _Settings) -> _Settings:
        """These settings laid over ``base``; params merge key by key, null removes one."""
        params = {**(base.params or {}), **(self.params or {})}
        return _Settings(
            model=base.model if self.model is None else self.model,
            system=base.system if self.system is None else self.system,
            params={key: value for key, value in params.items() if value is not None},
            messages=base.messages if self.messages is None else self.messages,
        )


def _error(display: str, mark: Mark, message: str, field: str = "") -> InputError:
    line, column = mark.line + 1, mark.column + 1  # PyYAML counts from 0
    return InputError(message, path=display, line=line, column=column, field=field)


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
        raise InputError(f"cannot read folder: {_reason(exc)}", path=pattern) from None
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
        raise _error(item.conversation.source, item.mark, message, item.field)


def _load(path: Path, display: str) -> list[_Loaded]:
    root = _compose(_read_text(path, display), display)
    if root is None or (isinstance(root, ScalarNode) and root.tag == _NULL):
        raise InputError("file is empty; expected a conversation with 'turns'", path=display)
    try:
        _check_bounds(root, display)
        loaded = _Builder(display, path.stem).file(root)
    except RecursionError:  # not expected after _check_bounds; never a traceback though
        raise InputError(_TOO_DEEP, path=display) from None
    first: dict[str, _Loaded] = {}
    for item in loaded:
        _register(first, item)
    return loaded


def _reason(exc: OSError) -> str:
    reason = exc.strerror or type(exc).__name__
    return reason[:1].lower() + reason[1:]


def _read_text(path: Path, display: str) -> str:
    """The file's text, refusing huge files and bytes that are not UTF-8."""
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read file: {_reason(exc)}", path=display) from None
    if len(data) > MAX_FILE_BYTES:
        raise InputError(f"file too large (over {MAX_FILE_BYTES // 2**20} MB)", path=display)
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start)
        column = len(data[line_start : exc.start].decode("utf-8"))
        message = f"not valid UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        raise _error(display, Mark(display, exc.start, line, column, None, 0), message) from None


_FAST_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's composer when PyYAML has it: the same nodes, many times faster."""


def _compose(text: str, display: str) -> Node | None:
    """The file's single YAML document as nodes (None when it has none).

    Composed by libyaml when available; a file it refuses is composed again by
    PyYAML's own composer, whose error messages say more (the offending
    character, the alias's name, where the second document starts).
    """
    if _FAST_LOADER is yaml.SafeLoader:
        return _compose_with(yaml.SafeLoader, text, display)
    try:
        return _compose_with(_FAST_LOADER, text, display)
    except InputError as fast_error:
        try:
            _compose_with(yaml.SafeLoader, text, display)
        except InputError as error:
            raise error from None
        raise fast_error from None


def _compose_with(loader_class: type[yaml.SafeLoader], text: str, display: str) -> Node | None:
    loader: yaml.SafeLoader | None = None
    try:
        loader = loader_class(text)
        root = loader.get_node() if loader.check_node() else None
        if loader.check_node():
            mark = loader.peek_event().start_mark  # type: ignore[no-untyped-call]  # untyped stub
            message = "several YAML documents in one file; use a list or 'conversations:'"
            raise _error(display, mark, message)
        return root
    except ReaderError as exc:  # characters YAML forbids; position counts characters
        line = text.count("\n", 0, exc.position)
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1)
        message = f"character U+{exc.character:04X} is not allowed in YAML; remove it"
        raise _error(display, Mark(display, exc.position, line, column, None, 0), message) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if problem == "second occurrence" and exc.context and exc.context_mark:  # anchor reused
            problem = f"{exc.context.split(';')[0]} (first at line {exc.context_mark.line + 1})"
        message = f"YAML syntax error: {' '.join(problem.split())}"
        if mark is None:
            raise InputError(message, path=display) from None
        raise _error(display, mark, message) from None
    except yaml.YAMLError as exc:
        raise InputError(f"YAML syntax error: {' '.join(str(exc).split())}", path=display) from None
    except RecursionError:
        raise InputError(_TOO_DEEP, path=display) from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_bounds(root: Node, display: str) -> None:
    """Refuse unsupported tags, deep nesting and alias bombs before building anything.

    An alias reuses its anchor's node, so sizes are memoised per node: a
    document that would expand to billions of nodes costs one visit per
    distinct node.
    """
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, height)
    open_nodes: set[int] = set()

    def visit(node: Node, depth: int) -> tuple[int, int]:
        if id(node) in open_nodes:
            raise _error(display, node.start_mark, "an anchor is used inside itself")
        known = sizes.get(id(node))
        if known is None:
            if node.tag not in (_COLLECTION_TAGS.get(type(node)) or _SCALAR_TAGS):
                tag = node.tag.replace(_YAML, "!!", 1) if node.tag.startswith(_YAML) else node.tag
                raise _error(display, node.start_mark, f"unsupported YAML tag '{tag}'")
            if depth > MAX_DEPTH:
                raise _error(display, node.start_mark, _TOO_DEEP)
            open_nodes.add(id(node))
            size, height = 1, 0
            children = node.value if isinstance(node, SequenceNode) else ()
            if isinstance(node, MappingNode):
                children = [child for pair in node.value for child in pair]
            for child in children:
                child_size, child_height = visit(child, depth + 1)
                size, height = size + child_size, max(height, child_height + 1)
            open_nodes.discard(id(node))
            if size > MAX_NODES:
                raise _error(display, node.start_mark, "too many YAML nodes (alias expansion?)")
            known = sizes[id(node)] = (size, height)
        if depth + known[1] > MAX_DEPTH:
            raise _error(display, node.start_mark, _TOO_DEEP)
        return known

    visit(root, 0)


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
        return Turn(content=content, params=params, line=line)

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
        if node.tag in _TEXT_TAGS:
            return str(node.value)
        try:
            value = _SCALARS[node.tag](cast(ScalarNode, node))
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
            if key_node.tag == _MERGE:
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
        if isinstance(node, ScalarNode) and node.tag in _TEXT_TAGS:
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
        if isinstance(node, ScalarNode) and node.tag == _NULL:
            message += "; the value is empty"
        elif isinstance(node, ScalarNode) and "string" in expected:
            message += f'; write "{node.value}" (in quotes) to use it as text'
        return self.error(node, field, message)

    def error(self, node: Node, field: str, message: str) -> InputError:
        return _error(self.display, node.start_mark, message, field)
