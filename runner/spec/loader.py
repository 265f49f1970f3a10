"""Load conversation files: YAML in, validated :class:`~runner.spec.model.Conversation` out.

``yamlsafe.py`` turns each file into a bounded tree of YAML nodes; this
module finds the files, walks each file's conversations and ``defaults:``,
expands matrices and ``models:``, and keeps ids unique. Reading the nodes is
``nodes.py``, the parts of a conversation ``parts.py``, variables and
matrices ``variables.py``. Nodes keep the line and column of every value, so
every message can point at it.

Every problem is an :class:`~runner.errors.InputError` rendered as
``path:line:column: field: what is wrong``; the first one found is raised.
"""

from __future__ import annotations

import glob
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple, cast

from yaml.error import Mark
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from runner.errors import InputError
from runner.spec.model import MAX_ID_LENGTH, Conversation, Turn
from runner.spec.nodes import NodeReader, join
from runner.spec.parts import (
    CONVERSATION_KEYS,
    DEFAULTS_KEYS,
    MESSAGE_KEYS,
    RESERVED_PARAMS,
    TURN_KEYS,
    PartsReader,
    Settings,
)
from runner.spec.tools import DEFAULT_MAX_TOOL_STEPS, EMPTY
from runner.spec.toolspec import tool_names, undeclared
from runner.spec.variables import MAX_MATRIX, Var, Variables, matrix_ids
from runner.spec.yamlsafe import NULL_TAG, TOO_DEEP, error_at, os_reason, read_document

__all__ = [
    "CONVERSATION_KEYS",
    "DEFAULTS_KEYS",
    "FILE_KEYS",
    "MAX_FILE_CONVERSATIONS",
    "MAX_ID_LENGTH",
    "MAX_MATRIX",
    "MESSAGE_KEYS",
    "RESERVED_PARAMS",
    "SCHEMA_KEY",
    "TURN_KEYS",
    "CheckedFiles",
    "check_files",
    "expand_paths",
    "load_conversations",
]

SCHEMA_KEY = "$schema"
"""Allowed, and ignored, at the top level of a file: editors read it."""
FILE_KEYS = ("conversations", "defaults")
MAX_FILE_CONVERSATIONS = 100_000
"""Most conversations one file may hold once its matrices are expanded."""


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


def load_conversations(patterns: Sequence[str]) -> list[Conversation]:
    """Every conversation named by ``patterns``, with ids unique across the batch."""
    first: dict[str, _Loaded] = {}
    conversations: list[Conversation] = []
    for path in expand_paths(patterns):
        for item in _load(path):
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
                loaded = _load(path)
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


class _Defaults(NamedTuple):
    """``defaults:``: its node, read again for each conversation to fill in vars, and its vars."""

    node: Node | None
    variables: Mapping[str, Var]


_NO_DEFAULTS = _Defaults(None, {})


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


def _load(path: Path) -> list[_Loaded]:
    """The conversations of one file, named in messages as the pattern that found it."""
    display = str(path)
    root = read_document(path, display)
    if root is None or (isinstance(root, ScalarNode) and root.tag == NULL_TAG):
        raise InputError("file is empty; expected a conversation with 'turns'", path=display)
    try:
        loaded = _FileBuilder(display, path.stem).file(root)
    except RecursionError:  # not expected after _check_bounds; never a traceback though
        raise InputError(TOO_DEEP, path=display) from None
    first: dict[str, _Loaded] = {}
    for item in loaded:
        _register(first, item)
    return loaded


class _FileBuilder:
    """Builds the conversations of one file from its nodes, failing at the first problem."""

    def __init__(self, display: str, stem: str) -> None:
        self.display = display
        self.stem = stem
        self.read = NodeReader(display)
        self.variables = Variables(self.read)
        self.parts = PartsReader(self.read, self.variables)

    def file(self, root: Node) -> list[_Loaded]:
        """The file's conversations: one mapping, a list, or ``conversations:``."""
        if isinstance(root, SequenceNode):
            return self.conversations(root, "", _NO_DEFAULTS)
        if isinstance(root, MappingNode):
            items = self.read.items(root, "")
            if "conversations" in items:
                return self.under_conversations(items)
            if "turns" in items:
                return self.conversation(root, "", self.stem, _NO_DEFAULTS, top=True)
            self.read.check_keys(items, "", (*CONVERSATION_KEYS, *FILE_KEYS, SCHEMA_KEY))
        message = "expected a conversation (a mapping with 'turns') or 'conversations:'"
        raise self.read.error(root, "", message)

    def under_conversations(self, items: dict[str, tuple[Node, Node]]) -> list[_Loaded]:
        """A file of ``conversations:``, perhaps with ``defaults:`` beside them."""
        for key, (key_node, _) in items.items():
            if key in DEFAULTS_KEYS:
                message = "not allowed beside 'conversations:'; move it under 'defaults:'"
                raise self.read.error(key_node, key, message)
        self.read.check_keys(items, "", (*FILE_KEYS, SCHEMA_KEY))
        defaults = _NO_DEFAULTS
        shared = Settings()
        if "defaults" in items:
            node = items["defaults"][1]
            shared = self.parts.settings(node, "defaults", DEFAULTS_KEYS, "a mapping")
            variables = self.variables.read(cast(MappingNode, node), "defaults")
            defaults = _Defaults(node, variables)  # settings() checked the type
        node = items["conversations"][1]
        if not isinstance(node, SequenceNode):
            raise self.read.type_error(node, "conversations", "a list of conversations")
        loaded = self.conversations(node, "conversations", defaults)
        turns = [turn for item in loaded for turn in item.conversation.turns]
        self.check_results_declared(shared, turns, "no conversation of the file declares")
        return loaded

    def conversations(self, node: SequenceNode, field: str, defaults: _Defaults) -> list[_Loaded]:
        """Every conversation of a list, numbered ``STEM-1``, ... when they have no id."""
        if not node.value:
            raise self.read.error(node, field, "no conversations; add at least one")
        loaded = []
        for i, item in enumerate(node.value):
            default_id = f"{self.stem}-{i + 1}" if len(node.value) > 1 else self.stem
            loaded.extend(self.conversation(item, f"{field}[{i}]", default_id, defaults))
            if len(loaded) > MAX_FILE_CONVERSATIONS:
                message = (
                    f"the file makes more than {MAX_FILE_CONVERSATIONS:,} conversations "
                    "once its vars matrices are expanded; split it into several files"
                )
                raise self.read.error(item, f"{field}[{i}]", message)
        return loaded

    def conversation(
        self, node: Node, field: str, default_id: str, defaults: _Defaults, *, top: bool = False
    ) -> list[_Loaded]:
        """The conversation, once for each combination of its matrix vars (see ``matrix_ids``)."""
        allowed = (*CONVERSATION_KEYS, SCHEMA_KEY) if top else CONVERSATION_KEYS
        what = "a conversation (a mapping with 'turns')"
        if not isinstance(node, MappingNode):
            raise self.read.type_error(node, field, what)
        self.read.check_keys(self.read.items(node, field), field, allowed)
        self.variables.user = field
        variables = {**defaults.variables, **self.variables.read(node, field)}
        names, combinations = self.variables.combinations(variables)
        built = []
        for combination in combinations:
            values = {name: var.values[0] for name, var in variables.items()}
            values.update(zip(names, combination, strict=True))
            self.variables.values = values
            built.append(self.build(node, field, default_id, defaults, allowed, what))
        self.variables.values = None
        if not names:
            return _per_model(built)
        return _per_model(self.named_by_matrix(built, names, combinations))

    def named_by_matrix(
        self, built: list[_Loaded], names: list[str], combinations: list[tuple[str, ...]]
    ) -> list[_Loaded]:
        """A matrix's conversations, each with its id (see ``matrix_ids``)."""
        base = built[0]
        ids = matrix_ids(base.conversation.id, names, combinations)
        if len(ids[-1]) > MAX_ID_LENGTH:
            message = (
                f"too long to name the {len(ids):,} conversations of its vars matrix "
                f"('{ids[-1][-20:]}' is {len(ids[-1])} characters; at most {MAX_ID_LENGTH})"
            )
            raise error_at(self.display, base.mark, message, base.field)
        return [
            item._replace(conversation=replace(item.conversation, id=conversation_id))
            for item, conversation_id in zip(built, ids, strict=True)
        ]

    def build(
        self,
        node: MappingNode,
        field: str,
        default_id: str,
        defaults: _Defaults,
        allowed: Sequence[str],
        what: str,
    ) -> _Loaded:
        """One conversation, with the variables' current values filled in."""
        base = Settings()
        if defaults.node is not None:
            base = self.parts.settings(defaults.node, "defaults", DEFAULTS_KEYS, "a mapping")
        settings = self.parts.settings(node, field, allowed, what).over(base)
        items = self.read.items(node, field)
        turns_node = self.read.require(node, items, field, "turns")
        turns = self.parts.turns(turns_node, join(field, "turns"), settings)
        # The defaults' results need only be declared somewhere in the file (checked later).
        self.check_results_declared(
            settings, turns, "the conversation does not declare", skip="defaults"
        )
        id_key: Node = node
        conversation_id = default_id
        if "id" in items:
            id_key, id_node = items["id"]
            conversation_id = self.parts.conversation_id(id_node, join(field, "id"))
        conversation = Conversation(
            id=conversation_id,
            source=self.display,
            turns=turns,
            model=settings.model,
            system=settings.system,
            messages=settings.messages or (),
            params=dict(settings.params) if settings.params else EMPTY,
            line=node.start_mark.line + 1,
            expect=settings.expect or (),
            expect_final=settings.expect_final or (),
            max_tool_steps=settings.max_tool_steps or DEFAULT_MAX_TOOL_STEPS,
            reasoning=settings.reasoning or "tool_chain",
        )
        return _Loaded(conversation, id_key.start_mark, join(field, "id"), settings.models or ())

    def check_results_declared(
        self, settings: Settings, turns: Sequence[Turn], scope: str, skip: str = "\0"
    ) -> None:
        """Refuse results for a tool that none of ``turns`` declares (``skip``: by field)."""
        declared = sorted({name for turn in turns for name in tool_names(turn.tools.tools)})
        for name, (_, key_node, where) in (settings.tool_results or {}).items():
            if name not in declared and not where.startswith(skip):
                raise self.read.error(key_node, where, undeclared(name, declared, scope))


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
