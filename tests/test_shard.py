"""Sharding a batch across processes or machines, and merging the outputs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import read_jsonl

from runner.cli import main
from runner.errors import ConfigError, OutputError
from runner.run.shard import Shard, parse_shard, shard_of
from runner.spec.loader import load_conversations
from runner.transcripts.merge import merge_shards

EXAMPLES = Path(__file__).resolve().parent.parent / "conversations"


def test_every_id_lands_in_exactly_one_shard() -> None:
    ids = [f"conversation-{i}" for i in range(1000)]
    shards = [Shard(k, 4) for k in range(1, 5)]
    owners = [[s.index for s in shards if s.holds(cid)] for cid in ids]
    assert all(len(o) == 1 for o in owners)
    sizes = [sum(1 for o in owners if o == [k]) for k in range(1, 5)]
    assert min(sizes) > 200  # roughly even


def test_the_split_is_stable_across_machines_and_versions() -> None:
    # Golden values from SHA-256 of the id: they must never change between releases,
    # or shards of one batch run by different mtrun versions would overlap.
    assert shard_of("alpha", 7) == 1
    assert shard_of("beta", 7) == 4
    assert shard_of("small-language-models", 3) == 2


@pytest.mark.parametrize(
    ("value", "env", "shard"),
    [
        ("2/8", {}, Shard(2, 8)),
        ("auto", {"MTRUN_SHARD": "3/4"}, Shard(3, 4)),
        (
            "auto",
            {
                "SLURM_ARRAY_TASK_ID": "5",
                "SLURM_ARRAY_TASK_COUNT": "10",
                "SLURM_ARRAY_TASK_MIN": "1",
            },
            Shard(5, 10),
        ),
        ("auto", {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4"}, Shard(1, 4)),
        ("auto/6", {"JOB_COMPLETION_INDEX": "5"}, Shard(6, 6)),
        ("auto", {"JOB_COMPLETION_INDEX": "0", "MTRUN_SHARD_COUNT": "3"}, Shard(1, 3)),
    ],
)
def test_parse_shard(value: str, env: dict[str, str], shard: Shard) -> None:
    assert parse_shard(value, env) == shard


@pytest.mark.parametrize(
    ("value", "env", "message"),
    [
        ("0/4", {}, "--shard '0/4': expected K/N with 1 <= K <= N"),
        ("5/4", {}, "--shard '5/4': expected K/N"),
        ("two", {}, "--shard 'two': expected K/N"),
        ("auto", {}, "--shard auto found no shard in the environment"),
        ("auto", {"JOB_COMPLETION_INDEX": "2"}, "needs the shard count"),
    ],
)
def test_bad_shards_are_config_errors(value: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_shard(value, env)


def test_shards_as_separate_processes_merge_into_exactly_one_run(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "conversations")

    def mtrun(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "runner", *args],
            cwd=tmp_path,
            text=True,
            capture_output=True,
            timeout=60,
        )

    assert mtrun("--mock", "-q", "-o", "single.jsonl", "conversations/").returncode == 0
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runner",
                "--mock",
                "-q",
                "--shard",
                f"{k}/3",
                "-o",
                f"shard{k}.jsonl",
                "conversations/",
            ],
            cwd=tmp_path,
        )
        for k in (1, 2, 3)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    merged = mtrun(
        "merge",
        "merged.jsonl",
        "shard1.jsonl",
        "shard2.jsonl",
        "shard3.jsonl",
        "--conversations",
        "conversations/",
    )
    assert merged.returncode == 0, merged.stderr
    single = {r["id"]: r for r in read_jsonl(tmp_path / "single.jsonl")}
    combined = {r["id"]: r for r in read_jsonl(tmp_path / "merged.jsonl")}
    assert sorted(combined) == sorted(single)
    for cid, record in combined.items():
        assert record["messages"] == single[cid]["messages"]
        assert record["shard"]["count"] == 3
    sizes = [len(read_jsonl(tmp_path / f"shard{k}.jsonl")) for k in (1, 2, 3)]
    assert sum(sizes) == len(single)


def test_merge_reports_missing_and_duplicated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "conversations")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for k in (1, 2):
        args = ["--mock", "-q", "--shard", f"{k}/3", "-o", f"s{k}.jsonl", "conversations/"]
        assert runner.invoke(main, args).exit_code == 0
    result = runner.invoke(
        main,
        [
            "merge",
            "m.jsonl",
            "s1.jsonl",
            "s2.jsonl",
            "s1.jsonl",
            "--conversations",
            "conversations/",
        ],
    )
    assert result.exit_code == 3
    assert "missing shard: 3/3" in result.stderr
    assert "duplicated: " in result.stderr and "missing conversation: " in result.stderr
    again = runner.invoke(main, ["merge", "m.jsonl", "s1.jsonl"])
    assert again.exit_code == 2 and "m.jsonl already exists" in again.stderr


def test_a_shard_holding_none_of_the_batch_is_not_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty shard's output is empty; with --conversations, merge knows it held nothing."""
    shutil.copytree(EXAMPLES, tmp_path / "conversations")
    monkeypatch.chdir(tmp_path)
    ids = [c.id for c in load_conversations(["conversations/"])]
    count = len(ids) + 5  # more shards than conversations: some are sure to be empty
    empty = [k for k in range(1, count + 1) if all(shard_of(cid, count) != k for cid in ids)]
    assert empty
    runner = CliRunner()
    outputs = []
    for k in range(1, count + 1):
        out = f"s{k}.jsonl"
        args = ["--mock", "-q", "--shard", f"{k}/{count}", "-o", out, "conversations/"]
        assert runner.invoke(main, args).exit_code == 0
        outputs.append(out)
    assert all(not Path(f"s{k}.jsonl").read_text() for k in empty)
    merged = runner.invoke(
        main, ["merge", "m.jsonl", *outputs, "--conversations", "conversations/"]
    )
    assert merged.exit_code == 0, merged.stderr
    assert "missing shard" not in merged.stderr
    assert len(read_jsonl(tmp_path / "m.jsonl")) == len(ids)
    # Without the conversation files an empty output cannot be told from a missing shard.
    blind = runner.invoke(main, ["merge", "b.jsonl", *outputs])
    assert blind.exit_code == 3 and f"missing shard: {empty[0]}/{count}" in blind.stderr
    # And a shard that does hold conversations is still missed when its output is absent.
    full = next(k for k in range(1, count + 1) if k not in empty)
    rest = [o for o in outputs if o != f"s{full}.jsonl"]
    gone = runner.invoke(main, ["merge", "g.jsonl", *rest, "--conversations", "conversations/"])
    assert gone.exit_code == 3 and f"missing shard: {full}/{count}" in gone.stderr


def test_merge_never_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    with pytest.raises(OutputError, match="already exists"):
        merge_shards(out, [])
    assert out.read_text() == "precious\n"
