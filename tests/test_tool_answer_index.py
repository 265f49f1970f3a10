"""Where a turn's answer is: one rule (``fields.answer_index``) and the report's copy agree.

The HTML report draws its chats in the browser from the embedded records,
so its script keeps a copy of the rule (``answerIndexOf``). Node runs that
function, cut out of ``report.js`` as shipped, on the same turns, embedded
as the report embeds them; both must give the same index for every turn,
hostile ones included. Without ``node`` the test is skipped on a developer's
machine and fails under CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from runner.review import view
from runner.review.report import asset, embed_json
from runner.transcripts.fields import answer_index
from runner.transcripts.records import TurnRecord

CALLS = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
TURNS: list[Any] = [
    {"message_index": 0},
    {"message_index": 2},
    {"message_index": 0, "steps": [{"step": 0, "message_index": 1}, {"message_index": 3}]},
    {"message_index": 0, "steps": "nonsense"},
    {"message_index": 0, "steps": []},
    {"message_index": 0, "steps": [{"message_index": "3"}]},
    {"message_index": 0, "steps": [{"message_index": 3}, "junk", 7]},
    {"message_index": 0, "steps": [None, {"message_index": 5}]},
    {"message_index": 0, "steps": [{"message_index": 3}, {"message_index": None}]},
    {"message_index": 0, "steps": [{"message_index": 2.0}]},
    {"message_index": 0, "steps": [{"message_index": 2.5}]},
    {"message_index": 1.0},
    {"message_index": True},
    {"message_index": "0"},
    {"message_index": -1},
    {"message_index": 10**9},
    {"message_index": None},
    {},
    {"steps": [{"message_index": 4}]},
]

HELPERS = ("isInt", "isObj", "arr")


def script_copy() -> str:
    """``answerIndexOf`` and the helpers it uses, cut out of the shipped report.js."""
    source = asset("report.js")
    parts = []
    for name in HELPERS:
        match = re.search(rf"^  const {name} = .*;$", source, re.MULTILINE)
        assert match, f"report.js has no one-line helper {name}"
        parts.append(match.group().strip())
    match = re.search(r"^  function answerIndexOf\(turn\) \{\n.*?^  \}$", source, re.M | re.S)
    assert match, "report.js has no answerIndexOf(turn)"
    parts.append(match.group())
    return "\n".join(parts)


def node() -> str:
    found = shutil.which("node")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("node must be installed in CI (it is in the image: apt nodejs)")
        pytest.skip("node is not installed")
    return found


def in_the_report(turns: list[Any], tmp_path: Path) -> list[Any]:
    """What the report's script says of each turn, read as the page reads its data."""
    program = tmp_path / "answer_index.js"
    program.write_text(
        script_copy()
        + "\nconst turns = JSON.parse(require('fs').readFileSync(0, 'utf8'));\n"
        + "process.stdout.write(JSON.stringify(turns.map(answerIndexOf)));\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [node(), str(program)],
        input=embed_json(turns),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def test_the_report_and_the_rule_agree_on_every_turn(tmp_path: Path) -> None:
    python = [answer_index(json.loads(json.dumps(t))) for t in TURNS]
    assert python == in_the_report(TURNS, tmp_path)
    assert python[:3] == [1, 3, 3]  # the plain rule, then the last step's message
    assert python.count(None) > 3  # and hostile turns say nowhere, in both


def test_every_reader_takes_the_one_rule() -> None:
    assert view.answer_index is answer_index
    record = TurnRecord.from_dict({"index": 0, "message_index": 0, "steps": [{"message_index": 5}]})
    assert record.answer_index == 5
    hostile = TurnRecord.from_dict(
        {"index": 0, "message_index": 0, "steps": [{"message_index": "x"}]}
    )
    assert hostile.answer_index == 1  # resume refuses such steps anyway
