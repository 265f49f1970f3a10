"""``benchmark.py --baseline REV``: the build and its cache, the twin clients, their targets.

The build runs on a tiny git repository made here, with git itself; the steps that would
make a virtualenv and install into it go to a fake runner that records them, so no test
builds a virtualenv.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from bench_baseline import (
    Baseline,
    accepted,
    build,
    options_of,
    run_command,
    with_baseline,
)
from bench_targets import judge
from bench_workloads import Target, Workload, workloads
from benchmark import client_kinds, listing
from benchmark import main as benchmark_main

from runner.cli import main

HELP = """Usage: mtrun run [OPTIONS] FILES...

Options:
  -o, --output FILE             Transcript file (JSONL). Default: a new file
  --mock                        Use the built-in offline backend (same as
                                --base-url mock://).
  -j, --concurrency N|auto      Ceiling on requests in flight
  -q, --quiet                   Print nothing but errors.
"""
"""A click help of an mtrun that had no --summary-json, --base-url or --model."""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with two commits of ``runner/__init__.py``, the second one HEAD."""
    repo = tmp_path / "repo"
    (repo / "runner").mkdir(parents=True)
    _git(repo, "init", "-q")
    for version in ("old", "new"):
        (repo / "runner" / "__init__.py").write_text(f"VERSION = {version!r}\n")
        _git(repo, "add", "-A")
        _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", version)
    return repo


class FakeRunner:
    """Runs git for real; records the virtualenv, pip and mtrun steps and fakes their output."""

    def __init__(self, runner_at: str = "venv") -> None:
        self.calls: list[list[str]] = []
        self.runner_at = runner_at

    def __call__(self, cmd: list[str], cwd: Path | None = None) -> str:
        if cmd[0] == "git":
            return run_command(cmd, cwd)
        self.calls.append(cmd)
        if cmd[1:3] == ["-m", "venv"]:
            (Path(cmd[3]) / "bin").mkdir(parents=True)
        if cmd[1] == "-c":  # where its runner is imported from
            assert cwd is not None
            return str(cwd / self.runner_at / "lib" / "runner" / "__init__.py") + "\n"
        return HELP if cmd[1:] == ["run", "--help"] else ""


def test_the_build_is_the_commits_files_installed_once_and_reused(
    repo: Path, tmp_path: Path
) -> None:
    (repo / "runner" / "__init__.py").write_text("VERSION = 'edited, not committed'\n")
    status = _git(repo, "status", "--porcelain")
    fake = FakeRunner()
    first = build("HEAD~1", repo, tmp_path / "cache", run=fake, python="py")
    home = first.mtrun.parents[2] if first.mtrun else tmp_path
    assert first.commit == _git(repo, "rev-parse", "HEAD~1").strip()
    assert home.name.startswith(first.commit)
    assert (home / "src" / "runner" / "__init__.py").read_text() == "VERSION = 'old'\n"
    steps = [c[1:3] for c in fake.calls]
    assert steps[:3] == [
        ["-m", "venv"],
        ["-m", "pip"],
        ["-c", "import runner; print(runner.__file__)"],
    ]
    assert fake.calls[1][-1] == str(home / "src")  # not -e: a plain install of the files
    assert "-e" not in fake.calls[1]
    assert fake.calls[-1] == [str(first.mtrun), "run", "--help"]
    # The working tree, its index and its edits are as they were.
    assert _git(repo, "status", "--porcelain") == status
    assert (repo / "runner" / "__init__.py").read_text() == "VERSION = 'edited, not committed'\n"

    again = FakeRunner()
    second = build(first.commit[:7], repo, tmp_path / "cache", run=again, python="py")
    assert second.mtrun == first.mtrun
    assert again.calls == [[str(first.mtrun), "run", "--help"]]  # the build is reused


def test_a_build_cut_short_is_made_again(repo: Path, tmp_path: Path) -> None:
    first = build("HEAD", repo, tmp_path / "cache", run=FakeRunner(), python="py")
    assert first.mtrun is not None
    home = first.mtrun.parents[2]
    (home / "ready").unlink()  # as if it had stopped before its end
    (home / "stale").write_text("")
    fake = FakeRunner()
    build("HEAD", repo, tmp_path / "cache", run=fake, python="py")
    assert [c[1:3] for c in fake.calls][:2] == [["-m", "venv"], ["-m", "pip"]]
    assert not (home / "stale").exists() and (home / "ready").is_file()


def test_a_build_that_imports_another_runner_is_refused(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"its runner is .*elsewhere"):
        build("HEAD", repo, tmp_path / "cache", run=FakeRunner("elsewhere"), python="py")
    assert not list((tmp_path / "cache").glob("*/ready"))


def test_an_unknown_revision_is_one_line(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(
        SystemExit, match=r"^benchmark: --baseline: git .* nope\^\{commit\} failed: fatal"
    ):
        build("nope", repo, tmp_path / "cache", run=FakeRunner(), python="py")


def test_options_are_read_from_the_option_lines_of_a_help() -> None:
    assert options_of(HELP) == {"-o", "--output", "--mock", "-j", "--concurrency", "-q", "--quiet"}
    today = CliRunner().invoke(main, ["run", "--help"]).output
    assert {"-q", "-o", "--summary-json", "--base-url", "--model", "-j", "--mock", "--timeout"} <= (
        options_of(today)
    )


def test_options_it_lacks_are_left_out_with_their_values() -> None:
    old = Baseline("v1", options=options_of(HELP))
    args = ["-q", "-o", "out", "--summary-json", "s.json", "--base-url", "u", "-j", "32"]
    assert accepted(args, old.accepts) == (
        ["-q", "-o", "out", "-j", "32"],
        ["--summary-json", "--base-url"],
    )
    assert accepted(args, Baseline("v1").accepts) == (args, [])  # options unknown: all kept


def _workload(**over: Any) -> Workload:
    fourth = [Target("span_ratio", "<=", 1.23 * 1.05, "4th run", ("(d) mtrun (defaults)",))]
    return Workload(
        "mtbench",
        "",
        [],
        ["--capacity", "32"],
        [
            ("(d) mtrun (defaults)", "mtrun", 0, 1),
            ("(d) mtrun -j 32", "mtrun", 32, 1),
            ("(e) floor", "e", 32, 1),
        ],
        [*fourth, Target("failed", "==", 0, "4th run")],
        **{"fourth_run": fourth, **over},
    )


def test_each_mtrun_row_gets_a_twin_and_the_fourth_runs_figures_a_target_against_it() -> None:
    w = with_baseline(_workload(), Baseline("ba5c3eb"))
    assert [(c[0], c[1], c[2]) for c in w.clients] == [
        ("(d) mtrun (defaults)", "mtrun", 0),
        ("(f) mtrun at ba5c3eb (defaults)", "f", 0),
        ("(d) mtrun -j 32", "mtrun", 32),
        ("(f) mtrun at ba5c3eb -j 32", "f", 32),
        ("(e) floor", "e", 32),
    ]
    added = w.targets[2:]
    assert added == [
        Target(
            "span_ratio",
            "<=",
            1.05,
            "ba5c3eb, same run",
            ("(d) mtrun (defaults)",),
            against="(f) mtrun at ba5c3eb (defaults)",
        )
    ]
    assert w.targets[:2] == _workload().targets  # beside the fourth run's own, not instead
    plain = _workload(fourth_run=[])
    assert with_baseline(plain, Baseline("ba5c3eb")) is plain


def test_a_twin_without_an_option_says_so() -> None:
    old = Baseline("v1", options=options_of(HELP))
    labels = [c[0] for c in with_baseline(_workload(), old).clients if c[1] == "f"]
    assert labels == [
        "(f) mtrun at v1 (defaults) (no --summary-json, --base-url, --model)",
        "(f) mtrun at v1 -j 32 (no --summary-json, --base-url, --model)",
    ]


def _rows(today: float, twin: float) -> list[dict[str, Any]]:
    common = {"kind": "mtrun", "exit_code": 0, "summary_read": True, "failed": 0}
    return [
        {**common, "client": "(d) mtrun (defaults)", "span_ratio": today},
        {**common, "client": "(f) mtrun at ba5c3eb (defaults)", "kind": "f", "span_ratio": twin},
    ]


def test_a_target_against_the_twin_is_its_figure_with_the_noise_allowance() -> None:
    w = with_baseline(_workload(), Baseline("ba5c3eb"))
    verdicts = [v for v in judge(w, _rows(1.30, 1.25)) if v["source"] == "ba5c3eb, same run"]
    assert [(v["client"], v["result"], v["target"]) for v in verdicts] == [
        ("(d) mtrun (defaults)", "PASS", "<= 1.31 (1.05 x 1.25)")  # 1.30 <= 1.25 x 1.05
    ]
    verdicts = judge(w, _rows(1.32, 1.25))
    assert [(v["source"], v["result"]) for v in verdicts if v["figure"] == "span_ratio"] == [
        ("4th run", "MISS"),  # 1.32 > 1.23 x 1.05: the absolute figure stays
        ("ba5c3eb, same run", "MISS"),  # 1.32 > 1.3125
    ]
    assert verdicts[-1]["against"] == "(f) mtrun at ba5c3eb (defaults)"
    # The twins themselves are judged by nothing.
    assert not [v for v in verdicts if v["client"].startswith("(f)")]


def test_no_twin_in_the_run_no_verdict_and_a_broken_twin_is_a_miss() -> None:
    w = with_baseline(_workload(), Baseline("ba5c3eb"))
    rows = _rows(1.0, 1.25)
    assert not [v for v in judge(w, rows[:1]) if v["source"].endswith("same run")]
    crashed = [rows[0], {**rows[1], "exit_code": 4}]
    stopped = [rows[0], {**rows[1], "cut_off_at_s": 90.0}]
    results = [
        [v["result"] for v in judge(w, r) if v["source"].endswith("same run")]
        for r in (crashed, stopped)
    ]
    assert results == [["MISS (reference crashed: exit 4)"], ["MISS (reference stopped)"]]


def test_clients_f_needs_a_baseline_and_mtrun_has_its_mock_rows() -> None:
    assert client_kinds("mtrun,f", "ba5c3eb") == {"mtrun", "mock", "f"}
    assert client_kinds("mtrun", "ba5c3eb") == {"mtrun", "mock", "f"}
    assert "f" not in client_kinds("all", None)
    assert "f" in client_kinds("all", "HEAD")
    assert client_kinds("e", None) == {"e"}
    with pytest.raises(SystemExit, match="client f is --baseline's mtrun"):
        client_kinds("mtrun,f", None)
    assert client_kinds("g", None) == {"g"}  # the raw floor
    with pytest.raises(SystemExit, match="no client h"):
        client_kinds("mtrun,h", None)


@pytest.fixture(scope="module")
def quick() -> dict[str, Workload]:
    """The quick workloads with twins of ``main`` (sizing them takes a moment: once)."""
    return {n: with_baseline(w, Baseline("main")) for n, w in workloads(quick=True).items()}


def test_the_workloads_with_fourth_run_figures_get_twins(quick: dict[str, Workload]) -> None:
    twinned = {n for n, w in quick.items() if any(c[1] == "f" for c in w.clients)}
    assert twinned == {"mtbench", "skewed", "zerolat", "mock"}
    assert [c[0] for c in quick["skewed"].clients if c[1] == "f"] == [
        "(f) mtrun at main -j 32",
        "(f) mtrun at main -j auto",
    ]
    same_run = [(t.figure, t.clients, t.against) for t in quick["mock"].targets]
    assert same_run == [("rss_mb", ("(d) mtrun --mock",), "(f) mtrun at main --mock")]
    shown = listing({"mock": quick["mock"]}).splitlines()
    assert shown[1:] == ["    mock  (d) mtrun --mock", "    f     (f) mtrun at main --mock"]


def test_list_shows_the_twins_without_building_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    benchmark_main(["--quick", "--list", "--baseline", "v9", "--baseline-dir", str(tmp_path / "c")])
    shown = capsys.readouterr().out.splitlines()
    assert "    f     (f) mtrun at v9 (defaults)" in shown
    assert "    f     (f) mtrun at v9 -j auto" in shown
    assert not (tmp_path / "c").exists()


def test_a_revision_without_an_mtrun_command_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"^benchmark: --baseline: .*/mtrun run --help: No such"):
        run_command([str(tmp_path / "venv" / "bin" / "mtrun"), "run", "--help"])
