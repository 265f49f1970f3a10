"""Load conversation files: YAML in, validated :class:`~runner.spec.model.Conversation` out.

``yamlsafe.py`` turns each file into a bounded tree of YAML nodes; this
module walks the nodes, checks every field, and builds the specs. Nodes keep
the line and column of every value, so every message can point at it.

Every problem is an :class:`~runner.errors.InputError` rendered as
``path:line:column: field: what is wrong``; the first one found is raised.

Variables (``vars:``) are filled in here, at load time, so the specs, the
requests and their fingerprints hold the final text; ``_fill`` and
``_matrix_ids``, at the end, describe the syntax and how a matrix expands.
"""

from __future__ import annotations

import difflib
import glob
import itertools
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple, cast

from yaml.error import Mark
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from runner.checks.kinds import Check, CheckSpecError, parse_expect
from runner.errors import InputError
from runner.spec.model import MESSAGE_ROLES, Conversation, Message, Turn
from runner.spec.yamlsafe import (
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
    "models",
    "system",
    "params",
    "messages",
    "expect",
    "expect_final",
    "vars",
    "turns",
)
DEFAULTS_KEYS = tuple(key for key in CONVERSATION_KEYS if key not in ("id", "turns"))
"""What ``defaults:`` may set: everything a conversation may, except its id and turns."""
TURN_KEYS = ("content", "params", "expect")
MESSAGE_KEYS = ("role", "content", "name")
RESERVED_PARAMS: Mapping[str, str] = {
    "model": "set 'model' at the conversation level",
    "messages": "'messages' cannot be a parameter; use the conversation's 'messages'",
    "stream": "streaming is not supported in params",
}
"""Parameter names refused in ``params``, with the reason given to the user."""

MAX_ID_LENGTH = 200
MAX_MATRIX = 10_000
"""Most conversations one conversation's ``vars:`` matrix may expand to."""
MAX_FILE_CONVERSATIONS = 100_000
"""Most conversations one file may hold once its matrices are expanded."""
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


@dataclass(frozen=True)
class CheckedFiles:
    """What :func:`check_files` found: the conversations that load, and every file's error."""

    conversations: list[Conversation]
    """Conversations of the files without errors, ids unique across them."""
    errors: list[InputError]
    """The first problem of each file (or pattern) that has one, in order."""
    files: int
    """How many files were read."""


def check_files(patterns: Sequence[str]) -> CheckedFiles:
    """Like :func:`load_conversations`, but going on past a bad file to report them all.

    Each file stops at its first problem, as when loading; a pattern that
    matches nothing and an id defined twice across files are problems too.
    """
    first: dict[str, _Loaded] = {}
    conversations: list[Conversation] = []
    errors: list[InputError] = []
    seen: set[Path] = set()
    for pattern in patterns:
        try:
            paths = [path for path in _expand(pattern) if path.resolve() not in seen]
        except InputError as exc:
            errors.append(exc)
            continue
        for path in paths:
            seen.add(path.resolve())
            try:
                loaded = _load(path, str(path))
                for item in loaded:
                    _register(first, item)
            except InputError as exc:
                errors.append(exc)
                continue
            conversations.extend(item.conversation for item in loaded)
    return CheckedFiles(conversations, errors, len(seen))


class _Loaded(NamedTuple):
    """A conversation, where its id is defined, and the id's field name."""

    conversation: Conversation
    mark: Mark
    field: str
    models: tuple[str, ...] = ()
    """``models:``: run it once per model (expanded by :func:`_per_model`)."""


@dataclass(frozen=True)
class _Settings:
    """What a conversation and ``defaults:`` may both set; None when not given."""

    model: str | None = None
    models: tuple[str, ...] | None = None
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
            # A conversation's own 'model' wins over the defaults' 'models'.
            models=self.models
            if self.models is not None
            else (None if self.model is not None else base.models),
            system=base.system if self.system is None else self.system,
            params={key: value for key, value in params.items() if value is not None},
            messages=base.messages if self.messages is None else self.messages,
            expect=base.expect if self.expect is None else self.expect,
            expect_final=base.expect_final if self.expect_final is None else self.expect_final,
        )


class _Var(NamedTuple):
    """One variable: its value as text, or a matrix variable's values in order."""

    values: tuple[str, ...]
    matrix: bool
    node: Node
    field: str


class _Defaults(NamedTuple):
    """``defaults:``: its node, read again for each conversation to fill in vars, and its vars."""

    node: Node | None
    variables: Mapping[str, _Var]


_NO_DEFAULTS = _Defaults(None, {})


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
        self.values: Mapping[str, str] | None = None
        """The vars being filled in; None while only checking the ``{{...}}`` syntax."""
        self.user = ""
        """The conversation being built, named in errors about ``defaults:``."""
        self.parsed_expect: dict[tuple[int, str], tuple[Check, ...]] = {}
        """Expectations by node and scope: they use no vars, so a matrix parses them once."""

    def file(self, root: Node) -> list[_Loaded]:
        """The file's conversations: one mapping, a list, or ``conversations:``."""
        if isinstance(root, SequenceNode):
            return self.conversations(root, "", _NO_DEFAULTS)
        if isinstance(root, MappingNode):
            items = self.items(root, "")
            if "conversations" in items:
                for key, (key_node, _) in items.items():
                    if key in DEFAULTS_KEYS:
                        message = "not allowed beside 'conversations:'; move it under 'defaults:'"
                        raise self.error(key_node, key, message)
                self.check_keys(items, "", (*FILE_KEYS, SCHEMA_KEY))
                defaults = _NO_DEFAULTS
                if "defaults" in items:
                    node = items["defaults"][1]
                    self.settings(node, "defaults", DEFAULTS_KEYS, "a mapping")
                    variables = self.own_variables(cast(MappingNode, node), "defaults")
                    defaults = _Defaults(node, variables)  # settings() checked the type
                node = items["conversations"][1]
                if not isinstance(node, SequenceNode):
                    raise self.type_error(node, "conversations", "a list of conversations")
                return self.conversations(node, "conversations", defaults)
            if "turns" in items:
                return self.conversation(root, "", self.stem, _NO_DEFAULTS, top=True)
            self.check_keys(items, "", (*CONVERSATION_KEYS, *FILE_KEYS, SCHEMA_KEY))
        message = "expected a conversation (a mapping with 'turns') or 'conversations:'"
        raise self.error(root, "", message)

    def conversations(self, node: SequenceNode, field: str, defaults: _Defaults) -> list[_Loaded]:
        if not node.value:
            raise self.error(node, field, "no conversations; add at least one")
        loaded = []
        for i, item in enumerate(node.value):
            default_id = f"{self.stem}-{i + 1}" if len(node.value) > 1 else self.stem
            loaded.extend(self.conversation(item, f"{field}[{i}]", default_id, defaults))
            if len(loaded) > MAX_FILE_CONVERSATIONS:
                message = (
                    f"the file makes more than {MAX_FILE_CONVERSATIONS:,} conversations "
                    "once its vars matrices are expanded; split it into several files"
                )
                raise self.error(item, f"{field}[{i}]", message)
        return loaded

    def conversation(
        self, node: Node, field: str, default_id: str, defaults: _Defaults, *, top: bool = False
    ) -> list[_Loaded]:
        """The conversation, once for each combination of its matrix vars (see ``_matrix_ids``)."""
        allowed = (*CONVERSATION_KEYS, SCHEMA_KEY) if top else CONVERSATION_KEYS
        what = "a conversation (a mapping with 'turns')"
        if not isinstance(node, MappingNode):
            raise self.type_error(node, field, what)
        items = self.items(node, field)
        self.check_keys(items, field, allowed)
        self.user = field
        variables = {**defaults.variables, **self.own_variables(node, field)}
        names, combinations = self.matrix(variables)
        built = []
        for combination in combinations:
            self.values = {name: var.values[0] for name, var in variables.items()}
            self.values.update(zip(names, combination, strict=True))
            built.append(self.build(node, field, default_id, defaults, allowed, what))
        self.values = None
        if not names:
            return _per_model(built)
        base = built[0]
        ids = _matrix_ids(base.conversation.id, names, combinations)
        if len(ids[-1]) > MAX_ID_LENGTH:
            message = (
                f"too long to name the {len(ids):,} conversations of its vars matrix "
                f"('{ids[-1][-20:]}' is {len(ids[-1])} characters; at most {MAX_ID_LENGTH})"
            )
            raise error_at(self.display, base.mark, message, base.field)
        return _per_model(
            [
                item._replace(conversation=replace(item.conversation, id=conversation_id))
                for item, conversation_id in zip(built, ids, strict=True)
            ]
        )

    def build(
        self,
        node: MappingNode,
        field: str,
        default_id: str,
        defaults: _Defaults,
        allowed: Sequence[str],
        what: str,
    ) -> _Loaded:
        """One conversation, with ``self.values`` filled in."""
        base = _Settings()
        if defaults.node is not None:
            base = self.settings(defaults.node, "defaults", DEFAULTS_KEYS, "a mapping")
        settings = self.settings(node, field, allowed, what).over(base)
        items = self.items(node, field)
        turns = self.turns(self.require(node, items, field, "turns"), _join(field, "turns"))
        id_key: Node = node
        conversation_id = default_id
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
        return _Loaded(conversation, id_key.start_mark, _join(field, "id"), settings.models or ())

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
        models = None
        if "models" in given:
            if "model" in given:
                key_node = items["models"][0]
                raise self.error(key_node, given["models"][1], "give 'model' or 'models', not both")
            models = self.model_list(*given["models"])
        if "system" in given:
            system = self.filled(
                *given["system"], "must not be empty; write a system prompt or remove 'system'"
            )
        return _Settings(
            model=model,
            models=models,
            system=system,
            params=self.params(*given["params"]) if "params" in given else None,
            messages=self.messages(*given["messages"]) if "messages" in given else None,
            expect=self.expect(*given["expect"], "every_turn") if "expect" in given else None,
            expect_final=(
                self.expect(*given["expect_final"], "final") if "expect_final" in given else None
            ),
        )

    def model_list(self, node: Node, field: str) -> tuple[str, ...]:
        """``models:``: the conversation runs once per model, as ``ID@MODEL``."""
        if not isinstance(node, SequenceNode) or not node.value:
            raise self.type_error(node, field, "a non-empty list of model names")
        names = []
        for i, item in enumerate(node.value):
            name = self.nonblank(item, f"{field}[{i}]", "must not be empty; name a model")
            if name in names:
                raise self.error(item, f"{field}[{i}]", f"model {name!r} is listed twice")
            names.append(name)
        return tuple(names)

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
        if not isinstance(node, MappingNode) or _braced_name(node) is not None:
            expected = "a string or a mapping with 'content'"
            return Turn(content=self.filled(node, field, _EMPTY_TURN, expected), line=line)
        items = self.items(node, field)
        self.check_keys(items, field, TURN_KEYS)
        content_node = self.require(node, items, field, "content")
        content = self.filled(content_node, _join(field, "content"), _EMPTY_TURN)
        params: dict[str, Any] = {}
        if "params" in items:
            params = self.params(items["params"][1], _join(field, "params"))
        expect: tuple[Check, ...] = ()
        if "expect" in items:
            expect = self.expect(items["expect"][1], _join(field, "expect"), "turn")
        return Turn(content=content, params=params, line=line, expect=expect)

    def expect(self, node: Node, field: str, scope: str) -> tuple[Check, ...]:
        """Expectations, pointing any problem at the value it is about."""
        known = self.parsed_expect.get((id(node), scope))
        if known is not None:
            return known
        try:
            checks = parse_expect(self.plain(node, field), field=field, scope=scope)
        except CheckSpecError as exc:
            raise self.error(
                _locate(node, exc.field[len(field) :]), exc.field, exc.message
            ) from None
        self.parsed_expect[id(node), scope] = checks
        return checks

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
            content = self.filled(content_node, content_field, "must not be empty", expected)
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

    def own_variables(self, node: MappingNode, field: str) -> dict[str, _Var]:
        """The ``vars:`` of a conversation or of ``defaults:`` (empty when it has none)."""
        items = self.items(node, field)
        if "vars" not in items:
            return {}
        vars_node, field = items["vars"][1], _join(field, "vars")
        if not isinstance(vars_node, MappingNode):
            raise self.type_error(vars_node, field, "a mapping of variable names to values")
        variables: dict[str, _Var] = {}
        for name, (key_node, value_node) in self.items(vars_node, field).items():
            var_field = _join(field, name)
            if not _VAR_NAME.fullmatch(name):
                message = (
                    "not a variable name; use letters, digits and _, not starting with a digit"
                )
                raise self.error(key_node, var_field, message)
            if not isinstance(value_node, SequenceNode):
                value = self.var_text(value_node, var_field, "or a list of them")
                variables[name] = _Var((value,), False, value_node, var_field)
                continue
            if not value_node.value:
                message = "empty list; give at least one value (a list makes a matrix)"
                raise self.error(value_node, var_field, message)
            values = tuple(
                self.var_text(item, f"{var_field}[{i}]", "in a matrix list")
                for i, item in enumerate(value_node.value)
            )
            variables[name] = _Var(values, True, value_node, var_field)
        return variables

    def var_text(self, node: Node, field: str, hint: str) -> str:
        """A variable's value as the text it fills in: numbers as written, true or false."""
        if isinstance(node, ScalarNode) and node.tag != NULL_TAG:
            value = self.plain(node, field)
            if isinstance(value, bool):
                return "true" if value else "false"
            return str(node.value)
        raise self.type_error(node, field, f"a string, number or boolean {hint}")

    def matrix(self, variables: Mapping[str, _Var]) -> tuple[list[str], list[tuple[str, ...]]]:
        """The matrix variables' names and every combination of their values, in order."""
        names = [name for name, var in variables.items() if var.matrix]
        sizes = [len(variables[name].values) for name in names]
        if math.prod(sizes) > MAX_MATRIX:
            last = variables[names[-1]]
            message = (
                f"the vars matrix{self.used_by(last.field)} makes {math.prod(sizes):,} "
                f"conversations ({' x '.join(map(str, sizes))}); at most {MAX_MATRIX:,} "
                "per conversation: split it into several conversations"
            )
            raise self.error(last.node, last.field, message)
        return names, list(itertools.product(*(variables[name].values for name in names)))

    def filled(self, node: Node, field: str, empty: str, expected: str = "a string") -> str:
        """Text that may use vars: :meth:`nonblank`, then every ``{{name}}`` filled in."""
        name = _braced_name(node)
        if name is not None:
            hint = f'write "{{{{{name}}}}}" in quotes (bare {{{{...}}}} is a YAML mapping)'
            raise self.error(node, field, f"expected {expected}; {hint}")
        text = self.nonblank(node, field, empty, expected)
        try:
            value = _fill(text, self.values, self.used_by(field))
        except _FillError as exc:
            raise self.error(node, field, str(exc)) from None
        if self.values is not None and not value.strip():
            raise self.error(node, field, f"{empty} (it is blank once its vars are filled in)")
        return value

    def used_by(self, field: str) -> str:
        """`` in conversations[2]`` when ``field`` is in ``defaults:``, shared by all."""
        return f" in {self.user}" if field.startswith("defaults") and self.user else ""

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


# Variables and matrices: the syntax, the filling in, and the ids of a matrix.

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_VAR_NAME = re.compile(_NAME)
_REFERENCE = re.compile(rf"\\\{{\{{|\{{\{{(?:[ \t]*(?P<name>{_NAME})[ \t]*\}}\}})?")
_NOT_IN_IDS = re.compile(r"[^\w.+@-]+")


class _FillError(Exception):
    """A ``{{...}}`` that cannot be filled in; the message says why."""


def _fill(text: str, values: Mapping[str, str] | None, used_by: str = "") -> str:
    """``text`` with every ``{{name}}`` replaced by its value (only checked when values is None).

    A reference is ``{{name}}``, spaces or tabs allowed inside the braces, where
    the name is letters, digits and _ and does not start with a digit. Any other
    ``{{`` is an error, so a typo is never sent as text; ``\\{{`` writes a
    literal ``{{`` (``}}`` needs no escape). Values are inserted as they are,
    never scanned for references. The loader fills in ``system``, message
    ``content`` strings and turns; ``expect``, ``model``, ``params`` and message
    names are taken as written.
    """

    def one(match: re.Match[str]) -> str:
        name = match.group("name")
        if match.group(0) == "\\{{":
            return "{{"
        if name is None:
            end = text.find("}}", match.start())
            end = end + 2 if 0 <= end < match.start() + 40 else match.start() + 12
            raise _FillError(
                f"{text[match.start() : end]!r} is not a variable reference; "
                "write {{name}} (letters, digits and _) to use a var, or \\{{ for a literal {{"
            )
        if values is None:
            return match.group(0)
        if name in values:
            return values[name]
        close = difflib.get_close_matches(name, values, n=1)
        hint = f"did you mean '{close[0]}'?" if close else "define it under vars:"
        raise _FillError(f"undefined variable '{name}'{used_by}; {hint}")

    return _REFERENCE.sub(one, text)


def _matrix_ids(
    base: str, names: Sequence[str], combinations: Sequence[tuple[str, ...]]
) -> list[str]:
    """The ids of a matrix's conversations, in the order of ``combinations``.

    A variable whose value is a list makes a matrix: the conversation is
    repeated for every combination of the list variables' values, the first
    variable varying slowest, in the order the keys and values are written
    (``defaults:`` vars first; a conversation's own value for one of them keeps
    its place). Each copy's id is the conversation's id followed by
    ``--name=value`` for each list variable: ``trip--city=Paris--tone=formal``.
    In ids a value keeps its letters, digits and ``. _ + @ -``; any other run of
    characters becomes one ``_``, dropped at either end. When those ids would
    not be unique, or one would be longer than MAX_ID_LENGTH, every copy is
    numbered instead, from 1: ``trip--1``, ``trip--2``, ...
    """
    ids = [
        base
        + "".join(
            f"--{name}={_id_part(value)}" for name, value in zip(names, combination, strict=True)
        )
        for combination in combinations
    ]
    if len(set(ids)) < len(ids) or any(len(i) > MAX_ID_LENGTH for i in ids):
        return [f"{base}--{n}" for n in range(1, len(combinations) + 1)]
    return ids


def _id_part(value: str) -> str:
    """A variable's value as written in an id: no spaces, slashes, quotes or glob characters."""
    return _NOT_IN_IDS.sub("_", value).strip("_")


def _braced_name(node: Node) -> str | None:
    """``x`` when the node is what YAML makes of an unquoted ``{{x}}``: a mapping in a mapping."""
    if isinstance(node, MappingNode) and len(node.value) == 1:
        inner, value = node.value[0]
        if isinstance(inner, MappingNode) and len(inner.value) == 1 and value.tag == NULL_TAG:
            key, inner_value = inner.value[0]
            if isinstance(key, ScalarNode) and inner_value.tag == NULL_TAG:
                return str(key.value)
    return None


def _per_model(items: list[_Loaded]) -> list[_Loaded]:
    """Each conversation that lists ``models:`` once per model, as ``ID@MODEL``."""
    out = []
    for item in items:
        if not item.models:
            out.append(item)
            continue
        for model in item.models:
            out.append(item._replace(conversation=item.conversation.for_model(model), models=()))
    return out
