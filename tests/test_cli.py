"""The mtrun command end to end: exit codes, messages, files on disk, signals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import LoopbackServer, read_jsonl

from runner.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "conversations"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh folder holding a copy of the example conversations."""
    shutil.copytree(EXAMPLES, tmp_path / "conversations")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def write_batch(folder: Path, count: int, turns: int) -> Path:
    path = folder / "batch.yaml"
    items = [
        {"id": f"conv-{i:03d}", "turns": [f"conv {i} turn {t}" for t in range(turns)]}
        for i in range(count)
    ]
    path.write_text(json.dumps({"conversations": items}))  # JSON is YAML
    return path


def test_mock_run_writes_a_new_file_under_outputs(workdir: Path) -> None:
    result = invoke("--mock", "conversations/")
    assert result.exit_code == 0, result.output
    (out,) = (workdir / "outputs").glob("mtrun-*.jsonl")
    records = read_jsonl(out)
    assert len(records) == 11
    assert {r["status"] for r in records} == {"completed"}
    assert all(r["base_url"] == "mock://offline" for r in records)
    lines = result.stderr.splitlines()
    assert lines[0].startswith("run ") and lines[0].endswith(
        f"11 conversations -> {out.relative_to(workdir)}"
    )
    assert "11 conversations: 11 completed, 0 failed" in lines
    assert lines[-1] == f"transcripts: {out.relative_to(workdir)}"
    assert result.stdout == ""


def test_quiet_prints_nothing(workdir: Path) -> None:
    result = invoke("-q", "--mock", "-o", "out.jsonl", "conversations/small_language_models.yaml")
    assert result.exit_code == 0
    assert result.stderr == "" and result.stdout == ""
    assert len(read_jsonl(workdir / "out.jsonl")) == 1


def test_existing_output_without_resume_is_exit_2(workdir: Path) -> None:
    (workdir / "out.jsonl").write_text("keep me\n")
    result = invoke("--mock", "-o", "out.jsonl", "conversations/")
    assert result.exit_code == 2
    assert result.stderr == (
        "mtrun: error: out.jsonl already exists; pass --resume to continue it, "
        "or choose another -o\n"
    )
    assert (workdir / "out.jsonl").read_text() == "keep me\n"


def test_resume_needs_an_output(workdir: Path) -> None:
    result = invoke("--mock", "--resume", "conversations/")
    assert result.exit_code == 2
    assert result.stderr == "mtrun: error: --resume needs -o PATH: the output to continue\n"


def test_resume_continues_to_the_same_file(workdir: Path) -> None:
    assert invoke("--mock", "-o", "out.jsonl", "conversations/list_form.yaml").exit_code == 0
    result = invoke("--mock", "--resume", "-o", "out.jsonl", "conversations/")
    assert result.exit_code == 0
    assert "resuming: 2 already completed, 0 to continue" in result.stderr
    ids = [r["id"] for r in read_jsonl(workdir / "out.jsonl")]
    assert len(ids) == 11 == len(set(ids))


def test_a_glob_that_matches_nothing_is_exit_2(workdir: Path) -> None:
    result = invoke("--mock", "nothing/*.yaml")
    assert result.exit_code == 2
    assert result.stderr.startswith("mtrun: error: nothing/*.yaml")
    assert len(result.stderr.splitlines()) == 1
    assert not (workdir / "outputs").exists()


def test_invalid_file_is_one_line_exit_2_and_sends_nothing(workdir: Path) -> None:
    bad = workdir / "bad.yaml"
    bad.write_text("id: x\nturns:\n  - fine\n  - [not, a, turn]\n")
    result = invoke("validate", "bad.yaml")
    assert result.exit_code == 2
    assert result.stderr == (
        "mtrun: error: bad.yaml:4:5: turns[1]: expected a string or a mapping with 'content'\n"
    )
    result = invoke("--mock", "conversations/", "bad.yaml")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert not (workdir / "outputs").exists()


def test_validate_reports_what_it_found(workdir: Path) -> None:
    result = invoke("validate", "conversations/")
    assert result.exit_code == 0
    assert result.stdout == "ok: 11 conversations, 24 turns in 7 files\n"


def test_no_key_for_the_default_endpoint_is_exit_2(workdir: Path) -> None:
    result = invoke("conversations/")
    assert result.exit_code == 2
    assert result.stderr.startswith("mtrun: error: no API key for https://api.arcee.ai/api/v1")
    assert "--mock" in result.stderr


def test_api_key_env_must_name_a_set_variable(workdir: Path) -> None:
    result = invoke("--api-key-env", "MY_KEY", "conversations/")
    assert result.exit_code == 2
    assert "MY_KEY" in result.stderr


def test_params_and_model_flags_reach_the_request(workdir: Path) -> None:
    with LoopbackServer() as server:
        result = invoke(
            "--base-url",
            server.base_url,
            "--model",
            "other-model",
            "--param",
            "temperature=0",
            "--param",
            "stop=[END]",
            "--param",
            "seed=null",
            "-o",
            "out.jsonl",
            "conversations/support_agent.yaml",
        )
    assert result.exit_code == 0, result.stderr
    body = server.bodies[0]
    assert body["model"] == "other-model"
    assert body["temperature"] == 0 and body["stop"] == ["END"]
    assert "seed" not in body
    assert server.auth[0] is None  # loopback: no key needed, none sent


def test_bad_param_is_exit_2(workdir: Path) -> None:
    result = invoke("--mock", "--param", "temperature", "conversations/")
    assert result.exit_code == 2
    assert result.stderr == (
        "mtrun: error: --param 'temperature': expected KEY=VALUE, e.g. --param temperature=0.2\n"
    )


def test_a_failed_conversation_is_exit_3_and_the_key_is_never_written(workdir: Path) -> None:
    secret = "sk-DISTINCTIVE-never-log-me-42"

    def rules(body: dict[str, Any]) -> tuple[int, Any] | None:
        if body["messages"][-1]["content"] == "How do they differ from LLMs?":
            return 401, {"error": {"message": "Invalid API key", "code": "invalid_api_key"}}
        return None

    with LoopbackServer(rules) as server:
        result = invoke(
            "--base-url",
            server.base_url,
            "-o",
            "out.jsonl",
            "conversations/",
            env={"MTRUN_API_KEY": secret},
        )
    assert result.exit_code == 3
    assert server.auth[0] == f"Bearer {secret}"
    assert (
        "  failed: small-language-models (conversations/small_language_models.yaml) turn 2: "
        "HTTP 401: Invalid API key"
    ) in result.stderr.splitlines()
    assert "to continue: run the same command with --resume -o out.jsonl" in result.stderr
    assert secret not in result.output
    for path in workdir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_help_documents_exit_codes(workdir: Path) -> None:
    for args in (["--help"], ["run", "--help"]):
        text = invoke(*args).stdout
        for code in ("0 ", "1 ", "2 ", "3 ", "130 "):
            assert f"\n    {code}" in text


# -- real processes: signals and kill -9 ------------------------------------------


def start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.endswith("API_KEY")}
    full_env.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        env=full_env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for_requests(server: LoopbackServer, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while len(server.bodies) < count:
        assert time.monotonic() < deadline, "the run did not send enough requests"
        time.sleep(0.01)


def check_complete(path: Path, count: int, turns: int) -> None:
    records = read_jsonl(path)
    assert sorted(r["id"] for r in records) == [f"conv-{i:03d}" for i in range(count)]
    for record in records:
        assert record["status"] == "completed"
        msgs = record["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant"] * turns
        n = int(record["id"].split("-")[1])
        assert [m["content"] for m in msgs[::2]] == [f"conv {n} turn {t}" for t in range(turns)]


def test_ctrl_c_interrupts_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    batch = write_batch(tmp_path, count=12, turns=3)
    with LoopbackServer(delay=0.05) as server:
        args = ["--base-url", server.base_url, "-j", "4", "-o", "out.jsonl", str(batch)]
        proc = start(args, tmp_path)
        wait_for_requests(server, 10)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "stopping: interrupted by Ctrl-C" in err
        records = read_jsonl(tmp_path / "out.jsonl")
        assert "interrupted" in {r["status"] for r in records}
        assert not (tmp_path / "out.jsonl.journal").exists()
        done_turns = sum(sum(1 for t in r["turns"] if "error" not in t) for r in records)
        before = len(server.bodies)

        proc = start([*args, "--resume"], tmp_path)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    check_complete(tmp_path / "out.jsonl", 12, 3)
    # Completed turns are never sent again: only the rest, plus turns that were in flight.
    resent = len(server.bodies) - before - (12 * 3 - done_turns)
    assert 0 <= resent <= 4


def test_second_ctrl_c_exits_at_once_leaving_a_resumable_file(tmp_path: Path) -> None:
    batch = write_batch(tmp_path, count=8, turns=3)
    with LoopbackServer(delay=0.3) as server:
        args = ["--base-url", server.base_url, "-j", "4", "-o", "out.jsonl", str(batch)]
        proc = start(args, tmp_path)
        wait_for_requests(server, 6)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        out = tmp_path / "out.jsonl"
        if out.exists():
            read_jsonl(out)  # every line is whole JSON
        proc = start([*args, "--resume"], tmp_path)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    check_complete(out, 8, 3)


def test_kill_9_loses_only_requests_in_flight(tmp_path: Path) -> None:
    count, turns, jobs = 10, 4, 3
    batch = write_batch(tmp_path, count=count, turns=turns)
    out = tmp_path / "out.jsonl"
    with LoopbackServer(delay=0.02) as server:
        args = ["--base-url", server.base_url, "-j", str(jobs), "-o", "out.jsonl", str(batch)]
        kills = 0
        for threshold in (8, 20, 30):
            proc = start([*args, "--resume"], tmp_path)
            wait_for_requests(server, threshold)
            proc.kill()
            proc.communicate()
            kills += 1
        proc = start([*args, "--resume"], tmp_path)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    check_complete(out, count, turns)
    assert not (tmp_path / "out.jsonl.journal").exists()
    sent = server.sent()
    # Every (conversation, turn) was sent at least once; repeats only for
    # requests in flight at a kill: at most `jobs` per kill.
    assert len(set(sent)) == count * turns
    assert len(sent) - count * turns <= jobs * kills


def test_a_yaml_date_in_param_is_sent_as_written(workdir: Path) -> None:
    with LoopbackServer() as server:
        args = ["--base-url", server.base_url, "-o", "out.jsonl"]
        result = invoke(*args, "--param", "not_before=2024-05-01", "conversations/list_form.yaml")
    assert result.exit_code == 0, result.stderr
    assert server.bodies[0]["not_before"] == "2024-05-01"
    result = invoke("--mock", "--param", "temperature=.nan", "conversations/")
    assert result.exit_code == 2
    assert result.stderr == (
        "mtrun: error: --param temperature: .nan is not representable in JSON; "
        "use a finite number\n"
    )


KEY = "sk-internal-error-key-1234"
INTERNAL = (
    "mtrun: internal error: RuntimeError: boom near [redacted]; "
    "this is a bug in mtrun, please report it with the traceback in "
)


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError(f"boom near {KEY}")


@pytest.mark.parametrize(
    ("target", "args"),
    [
        ("runner.spec.loader.load_conversations", ["--mock", "c.yaml"]),
        ("runner.spec.loader.load_conversations", ["run", "--mock", "c.yaml"]),
        ("runner.spec.loader.check_files", ["validate", "c.yaml"]),
        ("runner.transcripts.reader.read_transcript", ["show", "t.jsonl"]),
        ("runner.transcripts.reader.read_transcript", ["export", "t.jsonl"]),
        ("runner.transcripts.reader.read_transcript", ["report", "t.jsonl"]),
        ("runner.transcripts.reader.read_transcript", ["diff", "t.jsonl", "t.jsonl"]),
        ("runner.transcripts.merge.merge_shards", ["merge", "m.jsonl", "t.jsonl"]),
    ],
)
def test_an_internal_error_exits_4_with_one_line_and_the_traceback_in_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setattr(target, _boom)
    (tmp_path / "c.yaml").write_text("turns: [hi]\n")
    (tmp_path / "t.jsonl").write_text("")
    result = CliRunner().invoke(main, args, env={"MTRUN_API_KEY": KEY, "MTRUN_DEBUG": None})
    assert result.exit_code == 4, result.output
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(INTERNAL)
    (crash,) = tmp_path.glob("mtrun-crash-*.txt")
    assert line == INTERNAL + str(crash)
    trace = crash.read_text()
    assert "Traceback (most recent call last)" in trace
    assert "RuntimeError: boom near [redacted]" in trace
    assert KEY not in trace


def test_mtrun_debug_prints_the_traceback_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setattr("runner.spec.loader.load_conversations", _boom)
    env = {"MTRUN_DEBUG": "1", "MY_VAR": KEY}
    result = CliRunner().invoke(main, ["--api-key-env", "MY_VAR", "c.yaml"], env=env)
    assert result.exit_code == 4
    assert result.stderr.startswith("Traceback (most recent call last)")
    assert result.stderr.splitlines()[-1].startswith(INTERNAL)
    assert KEY not in result.stderr


def test_an_internal_error_exits_4_from_the_installed_command(tmp_path: Path) -> None:
    code = (
        "import sys, runner.spec.loader as loader\n"
        "def boom(*a, **k): raise RuntimeError('boom near ' + 'x')\n"
        "loader.check_files = boom\n"
        "from runner.cli import main\n"
        "sys.argv = ['mtrun', 'validate', 'c.yaml']\n"
        "main()\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env.pop("MTRUN_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.startswith("mtrun: internal error: RuntimeError: boom near x; ")
    assert "Traceback" not in proc.stderr
    assert len(list(tmp_path.glob("mtrun-crash-*.txt"))) == 1


def test_validate_reports_every_broken_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "convs"
    folder.mkdir()
    for i in range(12):
        (folder / f"bad{i:02d}.yaml").write_text(f"id: bad{i}\ntutns: [hi]\n")
    (folder / "good.yaml").write_text("id: good\nturns: [hi]\n")
    (folder / "twin.yaml").write_text("id: good\nturns: [hi]\n")
    result = invoke("validate", "convs/", "missing/*.yaml")
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[:12] == [
        f"mtrun: error: convs/bad{i:02d}.yaml:2:1: tutns: unknown key; did you mean 'turns'?"
        for i in range(12)
    ]
    assert lines[12:] == [
        "mtrun: error: convs/twin.yaml:1:1: id: duplicate conversation id 'good' "
        "(first defined at convs/good.yaml:1:1); give each conversation a unique 'id'",
        "mtrun: error: missing/*.yaml: no conversation files match",
    ]


def test_validate_stops_listing_at_50_errors_and_says_how_many_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for i in range(60):
        (tmp_path / f"bad{i:02d}.yaml").write_text("turns: []\n")
    result = invoke("validate", "*.yaml")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 51
    assert lines[49] == "mtrun: error: bad49.yaml:1:8: turns: no turns; add at least one user turn"
    assert lines[50] == "mtrun: error: ... and 10 more (60 in all)"


def test_validate_of_good_files_counts_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.yaml").write_text("turns: [hi, there]\n")
    (tmp_path / "b.yaml").write_text("- turns: [x]\n- turns: [y]\n")
    result = invoke("validate", "a.yaml", "b.yaml", "a.yaml")
    assert (result.exit_code, result.stdout) == (0, "ok: 3 conversations, 4 turns in 2 files\n")
    single = invoke("validate", "a.yaml")  # one of each: no plural
    assert (single.exit_code, single.stdout) == (0, "ok: 1 conversation, 2 turns in 1 file\n")


def test_run_help_is_unchanged_by_the_options_refactor() -> None:
    """``mtrun run --help`` as it was before RunOptions (tests/data/run_help.txt, from git)."""
    expected = (Path(__file__).parent / "data" / "run_help.txt").read_text(encoding="utf-8")
    result = CliRunner().invoke(main, ["run", "--help"], terminal_width=80)
    assert result.stdout == expected


@pytest.mark.parametrize(
    ("args", "target"),
    [
        (["show", "--no-pager", "t.jsonl"], "runner.transcripts.reader.read_transcript"),
        (["validate", "c.yaml"], "runner.spec.loader.check_files"),
    ],
)
def test_ctrl_c_in_any_command_exits_130_not_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], target: str
) -> None:
    """Exit 1 means an expectation failed: an interrupted review or validation is not that."""
    monkeypatch.chdir(tmp_path)

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupted)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 130
    assert result.stderr == "mtrun: interrupted\n"
