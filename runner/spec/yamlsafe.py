"""Reading YAML safely: bytes in, a bounded tree of PyYAML nodes out.

A conversation file is read as bytes (size-capped, strictly UTF-8) and
composed into YAML *nodes*, never constructed into Python objects by PyYAML:
nodes keep the line and column of every value, and let us bound the work
before doing it. One pass over the distinct nodes checks tags, nesting depth
and the size the document would have once its aliases were expanded, so an
alias bomb ("billion laughs") is refused without being expanded, and no tag
can construct anything but plain data.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.error import Mark
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from runner.errors import InputError

MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_NODES = 1_000_000
"""Most nodes a document may hold once its aliases are expanded."""
MAX_DEPTH = 100

_YAML = "tag:yaml.org,2002:"
NULL_TAG, MERGE_TAG = _YAML + "null", _YAML + "merge"
_COLLECTION_TAGS: Mapping[type[Node], set[str]] = {
    SequenceNode: {_YAML + "seq"},
    MappingNode: {_YAML + "map"},
}
# Timestamps, a lone '=' and a stray '<<' stay the text they were written as.
TEXT_TAGS = frozenset(_YAML + t for t in ("str", "timestamp", "value", "merge"))
_CONSTRUCTOR = SafeConstructor()
SCALARS: Mapping[str, Callable[[ScalarNode], Any]] = {
    NULL_TAG: _CONSTRUCTOR.construct_yaml_null,
    _YAML + "bool": _CONSTRUCTOR.construct_yaml_bool,
    _YAML + "int": _CONSTRUCTOR.construct_yaml_int,
    _YAML + "float": _CONSTRUCTOR.construct_yaml_float,
}
_SCALAR_TAGS = TEXT_TAGS | SCALARS.keys()
TOO_DEEP = f"nesting too deep (more than {MAX_DEPTH} levels)"


def error_at(display: str, mark: Mark, message: str, field: str = "") -> InputError:
    """An InputError at a node's mark (PyYAML counts lines and columns from 0)."""
    line, column = mark.line + 1, mark.column + 1  # PyYAML counts from 0
    return InputError(message, path=display, line=line, column=column, field=field)


def os_reason(exc: OSError) -> str:
    """The OS error's reason in lower case: 'no such file or directory'."""
    reason = exc.strerror or type(exc).__name__
    return reason[:1].lower() + reason[1:]


def _read_text(path: Path, display: str) -> str:
    """The file's text, refusing huge files and bytes that are not UTF-8."""
    try:
        # Non-blocking, so a FIFO opens at once and is refused below instead of waiting forever.
        handle = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise InputError(f"cannot read file: {os_reason(exc)}", path=display) from None
    mode = os.fstat(handle).st_mode
    if not stat.S_ISREG(mode):
        os.close(handle)
        if stat.S_ISDIR(mode):
            raise InputError("cannot read file: is a directory", path=display)
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise InputError(f"not a regular file ({kind}); give a .yaml file", path=display)
    with os.fdopen(handle, "rb") as stream:
        try:
            data = stream.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise InputError(f"cannot read file: {os_reason(exc)}", path=display) from None
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
        raise error_at(display, Mark(display, exc.start, line, column, None, 0), message) from None


_FAST_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's composer when PyYAML has it: the same nodes, many times faster."""


def _compose(text: str, display: str) -> Node | None:
    """The file's single YAML document as nodes (None when it has none).

    Composed by libyaml when available; a file it refuses is composed again by
    PyYAML's own composer, whose error messages say more (the offending
    character, the alias's name, where the second document starts).

    libyaml's composer recurses in C and can overflow the stack (a crash, not
    an error) on very deep nesting, so text that might nest deeply goes to
    PyYAML's composer, whose recursion ends in a RecursionError we report.
    """
    deep = _deep_bracket(text)
    if _FAST_LOADER is yaml.SafeLoader or deep is not None or _deeply_indented(text):
        try:
            return _compose_with(yaml.SafeLoader, text, display)
        except InputError as error:
            if error.message != TOO_DEEP or error.line is not None or deep is None:
                raise
            line = text.count("\n", 0, deep)
            column = deep - (text.rfind("\n", 0, deep) + 1)
            raise error_at(display, Mark(display, deep, line, column, None, 0), TOO_DEEP) from None
    try:
        return _compose_with(_FAST_LOADER, text, display)
    except InputError as fast_error:
        try:
            _compose_with(yaml.SafeLoader, text, display)
        except InputError as error:
            raise error from None
        raise fast_error from None


_BRACKETS = re.compile(r"[\[\]{}]")
_INDICATOR_RUN = re.compile(rf"(?:[-?:][ \t]+){{{MAX_DEPTH}}}")


def _deep_bracket(text: str) -> int | None:
    """Offset of a bracket opened more than MAX_DEPTH deep, counting naively, or None.

    Brackets inside strings count too, so this can point at a harmless file;
    that only costs the slower composer.
    """
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return None
    depth = 0
    for found in _BRACKETS.finditer(text):
        if found.group() in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return found.start()
        elif depth:
            depth -= 1
    return None


def _deeply_indented(text: str) -> bool:
    """Block nesting that could go deep: very deep indentation, or a long run of
    compact block indicators on one line (``- - - - x``, ``? ? ? x``)."""
    if _INDICATOR_RUN.search(text):
        return True
    return any(len(line) - len(line.lstrip(" ")) > 4 * MAX_DEPTH for line in text.splitlines())


def _compose_with(loader_class: type[yaml.SafeLoader], text: str, display: str) -> Node | None:
    loader: yaml.SafeLoader | None = None
    try:
        loader = loader_class(text)
        root = loader.get_node() if loader.check_node() else None
        if loader.check_node():
            mark = loader.peek_event().start_mark  # type: ignore[no-untyped-call]  # untyped stub
            message = "several YAML documents in one file; use a list or 'conversations:'"
            raise error_at(display, mark, message)
        return root
    except ReaderError as exc:  # characters YAML forbids; position counts characters
        line = text.count("\n", 0, exc.position)
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1)
        message = f"character U+{exc.character:04X} is not allowed in YAML; remove it"
        raise error_at(
            display, Mark(display, exc.position, line, column, None, 0), message
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if problem == "second occurrence" and exc.context and exc.context_mark:  # anchor reused
            problem = f"{exc.context.split(';')[0]} (first at line {exc.context_mark.line + 1})"
        message = f"YAML syntax error: {' '.join(problem.split())}"
        if problem.startswith("found unknown escape character '{'"):
            message += "; inside double quotes write \\\\{{ for a literal {{, or use single quotes"
        if mark is None:
            raise InputError(message, path=display) from None
        raise error_at(display, mark, message) from None
    except yaml.YAMLError as exc:
        raise InputError(f"YAML syntax error: {' '.join(str(exc).split())}", path=display) from None
    except RecursionError:
        raise InputError(TOO_DEEP, path=display) from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_bounds(root: Node, display: str) -> None:
    """Refuse unsupported tags, deep nesting and alias bombs before building anything."""
    _Bounds(display).visit(root, 0)


class _Bounds:
    """One document's walk for :func:`_check_bounds`.

    An alias reuses its anchor's node, so sizes are memoised per node: a
    document that would expand to billions of nodes costs one visit per
    distinct node. A class, not a recursive closure: a closure that calls
    itself is a reference cycle, so its memo (hundreds of bytes per
    conversation) would outlive the walk until a full garbage collection,
    which a long batch rarely runs.
    """

    def __init__(self, display: str) -> None:
        self.display = display
        self.sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, height)
        self.open_nodes: set[int] = set()

    def visit(self, node: Node, depth: int) -> tuple[int, int]:
        """``node``'s expanded size and height; raises on what the document may not hold."""
        display = self.display
        if id(node) in self.open_nodes:
            raise error_at(display, node.start_mark, "an anchor is used inside itself")
        known = self.sizes.get(id(node))
        if known is None:
            if node.tag not in (_COLLECTION_TAGS.get(type(node)) or _SCALAR_TAGS):
                tag = node.tag.replace(_YAML, "!!", 1) if node.tag.startswith(_YAML) else node.tag
                raise error_at(display, node.start_mark, f"unsupported YAML tag '{tag}'")
            if depth > MAX_DEPTH:
                raise error_at(display, node.start_mark, TOO_DEEP)
            self.open_nodes.add(id(node))
            size, height = 1, 0
            children = node.value if isinstance(node, SequenceNode) else ()
            if isinstance(node, MappingNode):
                children = [child for pair in node.value for child in pair]
            for child in children:
                child_size, child_height = self.visit(child, depth + 1)
                size, height = size + child_size, max(height, child_height + 1)
            self.open_nodes.discard(id(node))
            if size > MAX_NODES:
                raise error_at(display, node.start_mark, "too many YAML nodes (alias expansion?)")
            known = self.sizes[id(node)] = (size, height)
        if depth + known[1] > MAX_DEPTH:
            raise error_at(display, node.start_mark, TOO_DEEP)
        return known


def read_document(path: Path, display: str) -> Node | None:
    """The file's single YAML document as checked nodes; None when it has none."""
    root = _compose(_read_text(path, display), display)
    if root is not None:
        _check_bounds(root, display)
    return root
