"""Hostile transcript records through every renderer: never an exception, always valid output.

Records come out of :func:`runner.transcripts.reader.read_transcript` as dicts of any
shape: every field of the transcript schema may hold the wrong type, None,
huge or deeply nested values, control characters, escape sequences, lone
surrogates or HTML. Each renderer (show, export as Markdown, the HTML report
and comparison, diff as text and JSON, JUnit) is driven through its Python
function and through the command line, and its output must be encodable
UTF-8, parse where it is a format (JSON, XML), and keep model text as text.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tool_records import tool_record

from runner.cli import main
from runner.review.diff import diff_runs, render_json
from runner.review.diff_text import render_text
from runner.review.junit import junit_xml
from runner.review.markdown import render_markdown
from runner.review.report import build_comparison, build_report
from runner.review.show import render_records, summary_line
from runner.transcripts.fields import TOO_DEEP, to_json
from runner.transcripts.jsonio import MAX_DEPTH

FAST = settings(
    max_examples=40,
    database=None,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NASTY = [
    "\ud800",
    "\udfff",
    "a\udc80b",
    "\x1b[2J\x1b]0;pwned\x07",
    "\x00\x08\x0b\x0c\r\x7f\x85\x9b",
    "\u202e\u2066\u2028\u2029\ufeff\ufffe\uffff",
    '<script>window.__pwned=1</script><img src=x onerror="alert(1)">',
    "</script><!--",
    "]]>&amp;&#0;",
    "```\n~~~\n<details>",
    "@everyone #123 [x](javascript:alert(1))",
    "🏳️‍🌈 e\u0301",
    "",
    " ",
]

texts = st.one_of(st.sampled_from(NASTY), st.text(max_size=40))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


def nested(depth: int) -> Any:
    """A value ``depth`` levels deep, as deep as the transcript reader still parses."""
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


odd = st.one_of(
    values,
    # Deeper lines are refused by the reader (tests/test_transcript_reader.py), so
    # they never reach a renderer from a file; the record's own levels leave room.
    st.integers(min_value=100, max_value=MAX_DEPTH - 10).map(nested),
    st.integers(min_value=1_000, max_value=5_000).map(lambda n: "x\x1b " * n),
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A plausible value, or anything at all."""
    return st.one_of(strategy, odd)


statuses = st.sampled_from(["completed", "checks_failed", "failed", "interrupted", "\ud800"])
checks = st.fixed_dictionaries(
    {},
    optional={
        "kind": maybe(st.sampled_from(["contains", "judge", "<b>"])),
        "scope": maybe(st.sampled_from(["turn", "final"])),
        "passed": maybe(st.booleans()),
        "expected": odd,
        "seen": odd,
        "message": maybe(texts),
        "details": maybe(
            st.fixed_dictionaries(
                {}, optional={"model": odd, "verdict": odd, "error": odd, "usage": odd}
            )
        ),
    },
)
attempts = st.fixed_dictionaries(
    {},
    optional={
        key: maybe(strategy)
        for key, strategy in {
            "attempt": st.integers(1, 5),
            "outcome": texts,
            "status": st.integers(100, 599),
            "latency_ms": st.floats(0, 1e6),
            "message": texts,
            "retry_after_s": st.floats(0, 100),
            "wait_s": st.floats(0, 100),
            "resumed": st.booleans(),
        }.items()
    },
)
usage = st.fixed_dictionaries(
    {},
    optional={
        k: maybe(st.integers(0, 10**6))
        for k in ("prompt_tokens", "completion_tokens", "total_tokens")
    },
)
arguments = st.one_of(
    texts,
    values.map(json.dumps),
    st.integers(min_value=100, max_value=900).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=10_000, max_value=50_000).map(lambda n: json.dumps({"q": "x" * n})),
)
tool_calls = st.lists(
    maybe(
        st.fixed_dictionaries(
            {},
            optional={
                "id": maybe(st.sampled_from(["call_1", "call_2", "\ud800"])),
                "type": odd,
                "function": maybe(
                    st.fixed_dictionaries(
                        {}, optional={"name": maybe(texts), "arguments": maybe(arguments)}
                    )
                ),
            },
        )
    ),
    max_size=3,
)
steps = st.lists(
    maybe(
        st.fixed_dictionaries(
            {},
            optional={
                "step": maybe(st.integers(0, 3)),
                "message_index": maybe(st.integers(-1, 6)),
                "latency_ms": odd,
                "usage": maybe(usage),
                "finish_reason": odd,
                "tool_results": odd,
                "reasoning": maybe(st.dictionaries(texts, odd, max_size=2)),
            },
        )
    ),
    max_size=3,
)
turns = st.fixed_dictionaries(
    {},
    optional={
        "steps": maybe(steps),
        "index": maybe(st.integers(0, 4)),
        "message_index": maybe(st.integers(-1, 6)),
        "latency_ms": maybe(st.floats(0, 1e6)),
        "usage": maybe(usage),
        "finish_reason": maybe(texts),
        "response_id": odd,
        "model": odd,
        "extra": maybe(st.dictionaries(texts, odd, max_size=2)),
        "params": odd,
        "error": maybe(st.fixed_dictionaries({"kind": odd, "message": odd, "status": odd})),
        "attempts": maybe(st.lists(maybe(attempts), max_size=3)),
        "checks": maybe(st.lists(maybe(checks), max_size=3)),
        "first_token_ms": odd,
        "tokens_per_s": odd,
    },
)
messages = st.fixed_dictionaries(
    {},
    optional={
        "role": maybe(st.sampled_from(["system", "user", "assistant", "tool"])),
        "content": maybe(
            st.one_of(
                texts,
                st.lists(
                    st.fixed_dictionaries({"type": st.just("text"), "text": maybe(texts)}),
                    max_size=2,
                ),
            )
        ),
        "name": odd,
        "tool_calls": maybe(tool_calls),
        "tool_call_id": maybe(st.sampled_from(["call_1", "call_2", "\x1b[2J"])),
    },
)
TIMES = st.sampled_from(["2026-11-24T10:15:00.123Z", "2026-11-24T10:16:00Z", "yesterday", ""])
records = st.fixed_dictionaries(
    {"id": maybe(st.sampled_from(["a", "b", "\ud800", "<i>x</i>"]))},
    optional={
        "schema": odd,
        "run_id": odd,
        "source": maybe(st.sampled_from(["c.yaml", "../x/y.yaml", "\x1b.yaml"])),
        "model": maybe(texts),
        "base_url": odd,
        "params": odd,
        "status": maybe(statuses),
        "messages": maybe(st.lists(maybe(messages), max_size=5)),
        "turns": maybe(st.lists(maybe(turns), max_size=4)),
        "totals": maybe(usage),
        "started_at": maybe(TIMES),
        "finished_at": maybe(TIMES),
        "fingerprint": odd,
        "error": maybe(st.fixed_dictionaries({"kind": odd, "message": odd, "turn": odd})),
        "group": odd,
        "repeat": odd,
        "shard": odd,
        "variant_of": odd,
    },
)
runs = st.lists(records, min_size=1, max_size=3)


def as_read_back(run: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records as JSON Lines would hold them (the reader's output: plain JSON values)."""
    return [json.loads(json.dumps(record)) for record in run]


def encodable(text: str) -> str:
    text.encode("utf-8")  # raises on a lone surrogate
    return text


class _Elements(HTMLParser):
    """The tags of a page, to prove no model text became markup."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def page_tags(page: str) -> list[str]:
    parser = _Elements()
    parser.feed(page)
    return parser.tags


PAGE_TAGS = page_tags(build_report([], title="t", source="s"))


def check_page(page: str) -> None:
    """The page is encodable, has exactly the template's elements, and its data parses."""
    encodable(page)
    assert page_tags(page) == PAGE_TAGS
    data = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    assert data is not None
    json.loads(data.group(1))


@FAST
@given(run=runs, other=runs)
def test_every_renderer_survives_hostile_records(
    run: list[dict[str, Any]], other: list[dict[str, Any]]
) -> None:
    run, other = as_read_back(run), as_read_back(other)
    shown = "\n".join([*render_records(run, color=True, width=60), summary_line(run)])
    assert "\x1b[2J" not in encodable(shown) and "\x1b]" not in shown
    encodable(render_markdown(run, title="t\ud800"))
    for diff in (diff_runs(run, other), diff_runs(other, run), diff_runs(run, run)):
        encodable(render_text(diff, color=True))
        json.loads(encodable(to_json(render_json(diff))))
    ET.fromstring(junit_xml(run))
    check_page(build_report(run, title="<t>\ud800", source="s\x1b"))
    check_page(build_comparison(run, other, title="c", base_source="b", new_source="n"))


@FAST
@given(run=runs, other=runs)
def test_every_command_survives_hostile_records(
    tmp_path_factory: Any, run: list[dict[str, Any]], other: list[dict[str, Any]]
) -> None:
    folder: Path = tmp_path_factory.mktemp("hostile")
    base, new = folder / "base.jsonl", folder / "new.jsonl"
    for path, records_ in ((base, run), (new, other)):
        path.write_text("".join(json.dumps(r) + "\n" for r in records_), encoding="utf-8")
    runner = CliRunner()
    for args in (
        ["show", "--no-pager", "--color", str(base)],
        ["show", "--failed", "--turn", "1", str(base)],
        ["export", str(base)],
        ["diff", "--fail-on", "never", str(base), str(new)],
        ["diff", "--json", "--fail-on", "never", str(base), str(new)],
        ["report", str(base), "-o", str(folder / "one.html")],
        ["report", str(base), str(new), "-o", str(folder / "two.html")],
    ):
        result = runner.invoke(main, args, catch_exceptions=True)
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            args,
            result.exception,
        )
        assert result.exit_code == 0, (args, result.stderr)
        encodable(result.stdout)
        if "--json" in args:
            json.loads(result.stdout)
    for page in ("one.html", "two.html"):
        check_page((folder / page).read_text(encoding="utf-8"))


def test_values_nested_too_deeply_are_cut_not_recursed() -> None:
    record = {
        "id": "deep",
        "status": "checks_failed",
        "messages": [{"role": "user", "content": nested(950)}],
        "turns": [{"index": 0, "message_index": 0, "checks": [{"kind": "k", "seen": nested(950)}]}],
    }
    (record,) = as_read_back([record])
    assert TOO_DEEP in "\n".join(render_records([record], color=False))
    assert TOO_DEEP in render_markdown([record])
    ET.fromstring(junit_xml([record]))
    check_page(build_report([record], title="t", source="s"))
    other = {**record, "turns": [{**record["turns"][0], "checks": []}]}
    assert TOO_DEEP in to_json(render_json(diff_runs([record], [other])))


def sound_record() -> dict[str, Any]:
    """A record with every field of the transcript schema, as the engine writes it."""
    check = {
        "kind": "judge",
        "scope": "turn",
        "passed": False,
        "expected": "a rubric",
        "seen": "an answer",
        "message": "the judge says no",
        "details": {"model": "m", "verdict": {"pass": False}, "error": None, "usage": {}},
    }
    attempt = {
        "attempt": 1,
        "outcome": "http_429",
        "status": 429,
        "latency_ms": 3.0,
        "message": "slow down",
        "retry_after_s": 1.0,
        "wait_s": 1.0,
        "resumed": False,
    }
    turn = {
        "index": 0,
        "message_index": 1,
        "latency_ms": 10.0,
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        "finish_reason": "stop",
        "response_id": "r",
        "model": "m2",
        "extra": {"reasoning_content": "hmm"},
        "params": {"temperature": 0},
        "error": None,
        "attempts": [attempt, {**attempt, "attempt": 2, "outcome": "ok"}],
        "checks": [check],
        "first_token_ms": 1.0,
        "tokens_per_s": 2.0,
    }
    return {
        "schema": "mtrun.transcript/1",
        "run_id": "r",
        "id": "sound",
        "source": "c.yaml",
        "model": "m",
        "base_url": "http://x",
        "params": {},
        "status": "checks_failed",
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "q", "name": "n"},
            {"role": "assistant", "content": "a"},
        ],
        "turns": [turn, {**turn, "index": 1, "error": {"kind": "http_500", "message": "x"}}],
        "totals": {
            "turns": 1,
            "prompt_tokens": 1,
            "completion_tokens": 2,
            "total_tokens": 3,
            "attempts": 2,
            "retries": 1,
        },
        "started_at": "2026-11-24T10:15:00.123Z",
        "finished_at": "2026-11-24T10:15:03.456Z",
        "fingerprint": "sha256:0",
        "error": {"turn": 1, "kind": "http_500", "message": "x"},
        "group": "g",
        "repeat": 1,
        "shard": {"index": 1, "count": 2},
        "variant_of": "v",
    }


ODD_VALUES = [
    None,
    True,
    -1,
    10**20,
    1.5,
    float("nan"),
    float("-inf"),
    "a\udc80b",
    "\x1b[2J\x1b]0;pwned\x07\x00\u202e",
    "<script>window.__pwned=1</script>]]>&#0;",
    "",
    "x" * 20_000,
    [],
    {},
    [None, 1, "\ud800"],
    {"\ud800": {"<b>": [float("inf")]}},
    nested(300),
]


def field_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in ``value``, containers included."""
    paths = [path] if path else []
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        paths.extend(field_paths(item, (*path, key)))
    return paths


def with_value(record: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(record))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copy


def every_field_with_every_odd_value(sound: dict[str, Any]) -> list[str]:
    """Each field of ``sound`` set to each odd value in turn, through every renderer: failures."""
    failures: list[str] = []
    for path in field_paths(sound):
        for value in ODD_VALUES:
            run = [with_value(sound, path, value)]
            context = (path, repr(value)[:60])
            try:
                encodable(
                    "\n".join([*render_records(run, color=True, width=80), summary_line(run)])
                )
                encodable(render_markdown(run))
                for diff in (diff_runs([sound], run), diff_runs(run, [sound])):
                    encodable(render_text(diff))
                    json.loads(to_json(render_json(diff)))
                ET.fromstring(junit_xml(run))
                build_report(run, title="t", source="s").encode("utf-8")
                build_comparison([sound], run, title="t", base_source="b", new_source="n")
            except Exception as exc:  # the message says which field and value
                failures.append(f"{context}: {exc!r}"[:300])
    return failures


def test_every_field_with_every_odd_value_through_every_renderer() -> None:
    """Not random: each field of the schema in turn, set to each odd value."""
    sound = sound_record()
    assert len(field_paths(sound)) > 80
    assert every_field_with_every_odd_value(sound) == []


def test_every_tool_field_with_every_odd_value_through_every_renderer() -> None:
    """The same for a tool-call conversation: its calls, tool messages and steps."""
    sound = tool_record()
    assert len(field_paths(sound)) > 40
    assert every_field_with_every_odd_value(sound) == []


def test_huge_and_deep_tool_arguments_are_shown_bounded() -> None:
    deep, huge = "[" * 900 + "]" * 900, json.dumps({"q": "x\x1b" * 2_000_000})
    record = tool_record()
    calls = record["messages"][1]["tool_calls"]
    calls[0]["function"]["arguments"], calls[1]["function"]["arguments"] = deep, huge
    shown = "\n".join(render_records([record], color=False))
    assert TOO_DEEP in shown and "\x1b" not in shown.replace("\\x1b", "")
    assert TOO_DEEP in render_markdown([record])
    system_out = ET.fromstring(junit_xml([record])).find("testsuite/testcase/system-out")
    assert system_out is not None and system_out.text is not None
    assert len(system_out.text) < 5_000


def test_run_junit_survives_hostile_prompts_and_answers(tmp_path: Path, monkeypatch: Any) -> None:
    """The offline backend echoes the prompt, so hostile text reaches every JUnit field."""
    monkeypatch.chdir(tmp_path)
    hostile = "\\x1b[2J\\x00 ]]> <script>alert(1)</script> &amp; \\ufffe \\u202e end"
    (tmp_path / "h.yaml").write_text(  # an id with control characters is refused at load
        "conversations:\n"
        '  - id: "h <b>&amp; ]]>"\n'
        "    turns:\n"
        f'      - content: "{hostile}"\n'
        f'        expect: {{contains: "{hostile} NEVER", max_chars: 1}}\n',
        encoding="utf-8",
    )
    args = ["--mock", "-q", "--junit", "j.xml", "-o", "t.jsonl", "h.yaml"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.stderr
    data = (tmp_path / "j.xml").read_bytes()
    root = ET.fromstring(data)
    (case,) = root.iter("testcase")
    assert case.attrib["name"] == "h <b>&amp; ]]>"
    (failure,) = root.iter("failure")
    assert failure.attrib["message"].startswith("2 checks failed: turn 1: contains: ")
    assert b"\x1b" not in data and b"\x00" not in data and b"<script>" not in data
    assert "<script>alert(1)</script>" in (failure.text or "")
