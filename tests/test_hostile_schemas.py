"""Hostile JSON Schemas in ``expect:``: a load error or a check result, never worse.

A generated set of schemas that try to reach outside themselves (``file:``,
``http:`` and relative ``$ref``, ``$id`` rebasing, ``$dynamicRef``, unknown
``$schema`` URLs), loop (self-references at every depth), blow up (in-place
fan-out, catastrophic or huge regexes, deep nesting) or are not schemas at
all. Each goes through ``mtrun validate`` and a ``--mock`` run: either one
``file:line:column: field`` error line with exit 2, or a run whose answer is
on disk with the check's result. A secret file beside the conversation and a
loopback HTTP server stand for what must never be read or fetched.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import read_jsonl

from runner.cli import main

SECRET = "TOP-SECRET-7f3a"
"""The contents of files and URLs a schema points at: must appear in no output."""
ERROR_LINE = re.compile(
    r"mtrun: error: conv\.yaml:\d+:\d+: turns\[0\]\.expect\.json_schema[^\s:]*: \S.*\n"
)


class Fetches:
    """A loopback HTTP server that answers every GET with a schema holding SECRET, counting."""

    def __init__(self) -> None:
        owner = self
        self.count = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.count += 1
                data = json.dumps({"const": SECRET}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fetches() -> Iterator[Fetches]:
    server = Fetches()
    yield server
    server.close()


def nest(depth: int, inner: Any) -> Any:
    """``inner`` under ``depth`` levels of ``properties.a``."""
    for _ in range(depth):
        inner = {"type": "object", "properties": {"a": inner}}
    return inner


def pointer(depth: int) -> str:
    """The JSON pointer of the schema at ``depth`` levels of ``properties.a``."""
    return "#" + "/properties/a" * depth


def hostile_schemas(secret: Path, url: str) -> Iterator[tuple[str, Any]]:
    """Every hostile schema, named."""
    outside = [
        secret.as_uri(),
        f"{secret.as_uri()}#/const",
        "secret.json",
        "./secret.json",
        "../secret.json",
        f"{url}/schema.json",
        f"{url}/schema.json#/const",
        "//127.0.0.1/x",
        "urn:example:secret",
        "https://json-schema.org/draft/2020-12/schema",
        "#anchor",
        "",
        "http://[",
    ]
    for ref in outside:
        yield f"ref {ref!r}", {"$ref": ref}
        yield f"nested ref {ref!r}", nest(3, {"$ref": ref})
        yield f"ref {ref!r} in $defs", {"$defs": {"x": {"$ref": ref}}, "$ref": "#/$defs/x"}
    for depth in range(0, 40, 3):
        yield f"self ref at depth {depth}", nest(depth, {"$ref": "#"})
        yield f"own ref at depth {depth}", nest(depth, {"$ref": pointer(depth)})
        yield f"own allOf at depth {depth}", nest(depth, {"allOf": [{"$ref": pointer(depth)}]})
        yield f"ref into itself at depth {depth}", nest(depth, {"not": {"$ref": pointer(depth)}})
    yield "mutual defs", {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}}
    yield "if-then loop", {"if": {"$ref": "#"}, "then": {}}
    yield "dependentSchemas loop", {"dependentSchemas": {"a": {"$ref": "#"}}}
    chain: dict[str, Any] = {
        f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 2} for i in range(40)
    }
    chain["d40"] = {"type": "object"}
    yield "exponential fan-out", {"$defs": chain, "$ref": "#/$defs/d0"}
    long_chain: dict[str, Any] = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(2000)}
    yield "long ref chain", {"$defs": {**long_chain, "d2000": {}}, "$ref": "#/$defs/d0"}
    yield "$id rebasing", {"$id": f"{url}/", "$ref": "schema.json"}
    yield "$id in a subschema", {"properties": {"a": {"$id": secret.as_uri(), "$ref": "#"}}}
    yield "draft-04 id", {"$schema": "http://json-schema.org/draft-04/schema#", "id": url}
    yield "$dynamicRef", {"$dynamicRef": "#meta"}
    yield "$dynamicRef outside", {"$dynamicRef": f"{url}/schema.json"}
    yield "$recursiveRef", {"$recursiveRef": "#"}
    yield "unknown $schema URL", {"$schema": f"{url}/meta.json"}
    yield "file $schema", {"$schema": secret.as_uri()}
    yield "nested $schema", {"properties": {"a": {"$schema": f"{url}/meta.json"}}}
    yield "ref to nothing", {"$ref": "#/$defs/missing"}
    yield "ref to data", {"required": ["a"], "$ref": "#/required"}
    yield "catastrophic pattern", {"properties": {"answer": {"pattern": "^(a+)+$"}}}
    yield "catastrophic patternProperties", {"patternProperties": {"(x*)*y": {}}}
    yield "huge pattern", {"pattern": "a" * 5000}
    yield "huge repeat", {"pattern": "a{99999999999}"}
    yield "invalid pattern", {"pattern": "(unclosed"}
    yield "format", {"format": "uri", "properties": {"answer": {"format": "hostname"}}}
    yield "not a schema: list", [{"type": "object"}]
    yield "not a schema: string", "#"
    yield "not a schema: number", 7
    yield "boolean false", False
    yield "deep nesting", nest(45, {"type": "string"})
    yield "productive recursion", {"type": "object", "additionalProperties": {"$ref": "#"}}


def test_hostile_schemas_are_load_errors_or_check_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fetches: Fetches
) -> None:
    monkeypatch.chdir(tmp_path)
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"const": SECRET}))
    refused = ran = 0
    for n, (name, schema) in enumerate(hostile_schemas(secret, fetches.url)):
        conversation = {
            "id": "c",
            "params": {"response_format": {"type": "json_object"}},
            "turns": [{"content": "Answer in JSON.", "expect": {"json_schema": schema}}],
        }
        (tmp_path / "conv.yaml").write_text(json.dumps(conversation))
        validated = CliRunner().invoke(main, ["validate", "conv.yaml"])
        out = f"out{n}.jsonl"
        junit = f"junit{n}.xml"
        run = CliRunner().invoke(main, ["--mock", "-q", "-o", out, "--junit", junit, "conv.yaml"])
        shown = validated.output + run.output
        assert SECRET not in shown, name
        assert "Traceback" not in shown, name
        assert run.exception is None or isinstance(run.exception, SystemExit), (name, run.output)
        if validated.exit_code == 2:
            assert ERROR_LINE.fullmatch(validated.stderr), (name, validated.stderr)
            assert run.exit_code == 2 and run.stderr == validated.stderr, name
            assert not (tmp_path / out).exists()
            refused += 1
            continue
        assert validated.exit_code == 0, (name, validated.output)
        assert run.exit_code in (0, 1), (name, run.output)
        (record,) = read_jsonl(tmp_path / out)
        assert record["messages"][-1]["role"] == "assistant", name
        (check,) = record["turns"][0]["checks"]
        assert check["kind"] == "json_schema"
        for written in (out, junit):
            assert SECRET not in (tmp_path / written).read_text(), (name, written)
        ran += 1
    assert fetches.count == 0
    assert refused > 80 and ran >= 3  # the set holds both kinds
