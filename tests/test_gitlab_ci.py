"""docs/ci/gitlab-ci.yml run by gitlab-ci-local on its shell executor, offline.

The pipeline file is copied unchanged to a user's repository (``ci_emulation``:
this project's conversations with fixtures recorded from the offline backend)
as ``.gitlab-ci.yml``, and run with ``gitlab-ci-local --force-shell-executor
--shell-isolation``: the job's ``image: python:3.12`` is not pulled (no Docker
here); its Python is a fresh virtualenv without mtrun, first on PATH, and the
script's ``pip install`` installs mtrun from the CI/CD variable MTRUN_PACKAGE,
given a git URL of this work tree (or the wheel built from it). Each job runs
in a copy of the repository's tracked files, and the artifacts it exports
(``.gitlab-ci-local/artifacts/mtrun/``) are what GitLab would keep.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import ci_emulation as ci
import pytest

PIPELINE = ci.ROOT / "docs" / "ci" / "gitlab-ci.yml"
CONVERSATIONS = ci.conversation_ids()


@pytest.fixture(scope="module")
def gitlab_ci_local() -> str:
    """gitlab-ci-local's path (fails under CI when missing, skips elsewhere)."""
    return ci.require_tool("gitlab-ci-local", "npm install -g gitlab-ci-local@4.64.1")


@pytest.fixture(scope="module")
def runner_python(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """The job's Python (a fresh virtualenv's bin), a git URL of mtrun and a wheel of it."""
    tmp = tmp_path_factory.mktemp("gitlab")
    bin_dir, source = ci.python_env(tmp), ci.mtrun_source(tmp)
    return bin_dir, source, str(ci.build_wheel(tmp, bin_dir, source))


def run_pipeline(
    tool: str, repo: Path, bin_dir: Path, package: str
) -> subprocess.CompletedProcess[str]:
    """Run the pipeline's mtrun job in ``repo`` as docs/ci/gitlab-ci.yml has it."""
    shutil.copy(PIPELINE, repo / ".gitlab-ci.yml")
    ci.commit_all(repo, "add the mtrun job")
    return subprocess.run(
        [
            tool,
            "--force-shell-executor",
            "--shell-isolation",
            "--variable",
            f"MTRUN_PACKAGE={package}",
            "mtrun",
        ],
        cwd=repo,
        env=ci.base_environ(repo.parent / "home", bin_dir),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def artifacts(repo: Path) -> Path:
    """The folder gitlab-ci-local exported the job's artifacts to."""
    return repo / ".gitlab-ci-local" / "artifacts" / "mtrun" / "outputs"


def statuses(transcript: Path) -> dict[str, str]:
    """Each conversation's status in a JSONL transcript."""
    records = [json.loads(line) for line in transcript.read_text().splitlines()]
    return {record["id"]: record["status"] for record in records}


def junit_counts(path: Path) -> tuple[int, int]:
    """(testcases, failed testcases) in a JUnit report."""
    cases = ET.parse(path).getroot().iter("testcase")
    listed = [case.find("failure") is not None or case.find("error") is not None for case in cases]
    return len(listed), sum(listed)


def test_the_pipeline_passes_and_keeps_its_reports(
    gitlab_ci_local: str, runner_python: tuple[Path, str, str], tmp_path: Path
) -> None:
    bin_dir, source, _ = runner_python
    repo = ci.user_repo(tmp_path)
    done = run_pipeline(gitlab_ci_local, repo, bin_dir, source)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Successfully installed mtrun-0.1.0" in done.stdout
    kept = artifacts(repo)
    assert junit_counts(kept / "junit.xml") == (11, 0)
    assert statuses(kept / "run.jsonl") == dict.fromkeys(CONVERSATIONS, "completed")
    summary = json.loads((kept / "summary.json").read_text())
    assert (summary["completed"], summary["exit_code"]) == (11, 0)


def test_a_regressing_change_fails_the_pipeline_and_still_keeps_the_reports(
    gitlab_ci_local: str, runner_python: tuple[Path, str, str], tmp_path: Path
) -> None:
    bin_dir, _, wheel = runner_python
    repo = ci.user_repo(tmp_path)
    ci.tighten_expectation(repo)
    done = run_pipeline(gitlab_ci_local, repo, bin_dir, wheel)
    assert done.returncode == 1, done.stdout + done.stderr
    said = ci.plain(done.stdout + done.stderr)
    assert re.search(r"^mtrun finished in .* FAIL 1 $", said, re.MULTILINE), said
    kept = artifacts(repo)
    assert junit_counts(kept / "junit.xml") == (11, 1)
    expected = dict.fromkeys(CONVERSATIONS, "completed")
    assert statuses(kept / "run.jsonl") == expected | {"capital-of-france": "checks_failed"}


def test_without_mtrun_package_the_job_says_what_to_set(
    gitlab_ci_local: str, runner_python: tuple[Path, str, str], tmp_path: Path
) -> None:
    bin_dir, _, _ = runner_python
    repo = ci.user_repo(tmp_path)
    done = run_pipeline(gitlab_ci_local, repo, bin_dir, "")
    assert done.returncode == 1
    assert "set the CI/CD variable MTRUN_PACKAGE to a git URL or wheel of mtrun" in done.stdout


def test_a_missing_gitlab_ci_local_fails_under_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run this test: gitlab-ci-local"):
        ci.require_tool("gitlab-ci-local", "npm install -g gitlab-ci-local@4.64.1")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=r"gitlab-ci-local not found \(npm"):
        ci.require_tool("gitlab-ci-local", "npm install -g gitlab-ci-local@4.64.1")
