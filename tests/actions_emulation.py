"""A minimal GitHub-hosted runner for the tests of the workflows in docs/, offline.

What it does as GitHub does: a job's ``run:`` steps are run as GitHub runs them
(``bash --noprofile --norc -eo pipefail`` on a script file, in the workspace),
with GitHub's variables (``CI``, ``GITHUB_ACTIONS``, ``GITHUB_WORKSPACE``,
``GITHUB_EVENT_NAME``, ``GITHUB_BASE_REF``, ``GITHUB_HEAD_REF``, ``RUNNER_TEMP``,
and a fresh ``GITHUB_STEP_SUMMARY``, ``GITHUB_OUTPUT`` and ``GITHUB_ENV`` file per
step), the workflow's, job's and step's ``env:`` layered in that order, and
``${{ ... }}`` expressions replaced by the values the test gives for its case.
A step runs while every earlier one succeeded, or when its ``if:`` is
``always()``; any other ``if:`` takes the value the test gives for it.

What it emulates, minimally:
- ``actions/checkout``: a clone of the test's repository at the case's branch,
  only that branch and one commit deep unless ``fetch-depth: 0`` (then every
  branch, as ``origin/NAME``), like the action; GitHub would check out the pull
  request's merge commit, the emulation its head branch;
- ``actions/setup-python``: puts the test's Python (a fresh virtualenv, see
  ``ci_emulation``) first on PATH, whatever ``python-version`` asks;
- ``actions/upload-artifact`` / ``download-artifact``: copying a folder per
  artifact name (a name uploaded twice fails, as from v4 on);
- ``mikepenz/action-junit-report``: reads the report as JUnit XML.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ci_emulation as ci
import yaml

EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


@dataclass
class StepRun:
    """What one step did."""

    name: str
    outcome: str
    """'success', 'failure' or 'skipped'."""
    output: str = ""


@dataclass
class JobRun:
    """What one job did, step by step."""

    workspace: Path
    steps: list[StepRun] = field(default_factory=list)
    skipped: bool = False
    """Whether the job's ``if:`` (or a failed job it needs) kept it from running."""

    @property
    def ok(self) -> bool:
        """Whether the job passed (no step failed)."""
        return all(step.outcome != "failure" for step in self.steps)

    def step(self, name: str) -> StepRun:
        """The step named (or starting with) ``name``."""
        (found,) = [s for s in self.steps if s.name.startswith(name)]
        return found


@dataclass
class Case:
    """The values one case gives a workflow's expressions and conditions."""

    ref: str
    """The branch checked out (a pull request's head)."""
    contexts: dict[str, str]
    """``${{ expression }}`` -> its value."""
    conditions: dict[str, bool] = field(default_factory=dict)
    """An ``if:`` other than always() -> whether it holds."""
    event: str = "pull_request"
    base_ref: str = "main"
    runner_env: dict[str, str] = field(default_factory=dict)
    """The runner machine's own environment (a self-hosted runner's .env file)."""


class Runner:
    """Runs the jobs of one workflow file, sharing one artifact store."""

    def __init__(self, workflow: Path, repo: Path, tmp: Path, python_bin: Path) -> None:
        self.workflow: dict[str, Any] = yaml.safe_load(workflow.read_text(encoding="utf-8"))
        self.repo, self.tmp, self.python_bin = repo, tmp, python_bin
        self.artifacts = tmp / "artifacts"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.jobs_run = 0
        self.results: dict[str, list[JobRun]] = {}

    def run_job(self, name: str, case: Case, matrix: dict[str, str] | None = None) -> JobRun:
        """Run job ``name`` for ``case`` (one ``matrix`` combination) on a fresh runner."""
        job = self.workflow["jobs"][name]
        contexts = case.contexts | {f"matrix.{k}": v for k, v in (matrix or {}).items()}
        self.jobs_run += 1
        home = self.tmp / f"runner-{self.jobs_run}"
        run = JobRun(workspace=home / "work" / self.repo.name / self.repo.name)
        run.workspace.mkdir(parents=True)
        (home / "temp").mkdir()
        self.results.setdefault(name, []).append(run)
        if not self.wanted(job, case):
            run.skipped = True
            return run
        env = ci.base_environ(home / "home") | case.runner_env
        env |= self.github_env(case, run.workspace, home / "temp")
        env |= substitute_all(self.workflow.get("env", {}), contexts)
        env |= substitute_all(job.get("env", {}), contexts)
        for number, step in enumerate(job["steps"]):
            failed = not run.ok
            name_ = step.get("name") or step.get("uses") or step["run"].splitlines()[0]
            condition = step.get("if")
            wanted = (condition is None and not failed) or (
                condition is not None and self.holds(condition, case, failed)
            )
            if not wanted:
                run.steps.append(StepRun(name_, "skipped"))
                continue
            outcome, output = self.run_step(step, number, env, contexts, case, run)
            run.steps.append(StepRun(name_, outcome, output))
        return run

    def wanted(self, job: dict[str, Any], case: Case) -> bool:
        """Whether a job runs: its ``if:`` holds, given how the jobs it needs (run first) did."""
        needs = job.get("needs", [])
        needs = [needs] if isinstance(needs, str) else needs
        for needed in needs:
            assert needed in self.results, f"run the job {needed} first: this one needs it"
        failed = any(not run.ok or run.skipped for n in needs for run in self.results[n])
        if "if" not in job:
            return not failed
        return self.holds(job["if"], case, failed)

    def holds(self, condition: str | bool, case: Case, failed: bool = False) -> bool:
        """Whether an ``if:`` holds: always() does; others as the case says, after no failure."""
        text = str(condition).strip()
        inner = EXPRESSION.fullmatch(text)
        expression = inner.group(1) if inner else text
        if expression == "always()":
            return True
        assert expression in case.conditions, f"the case does not say whether {expression!r}"
        return case.conditions[expression] and not failed

    def github_env(self, case: Case, workspace: Path, temp: Path) -> dict[str, str]:
        """The variables GitHub sets for every step of a job."""
        env = {
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": str(workspace),
            "GITHUB_EVENT_NAME": case.event,
            "GITHUB_REF_NAME": case.ref,
            "RUNNER_TEMP": str(temp),
            "RUNNER_OS": "Linux",
        }
        if case.event == "pull_request":
            env |= {"GITHUB_BASE_REF": case.base_ref, "GITHUB_HEAD_REF": case.ref}
        return env

    def run_step(
        self,
        step: dict[str, Any],
        number: int,
        env: dict[str, str],
        contexts: dict[str, str],
        case: Case,
        job: JobRun,
    ) -> tuple[str, str]:
        """Run one step; (outcome, what it printed). An action may change the job's ``env``."""
        if "uses" in step:
            inputs = substitute_all(step.get("with", {}), contexts)
            return self.use(step["uses"], inputs, case, job, env)
        env = env | substitute_all(step.get("env", {}), contexts)
        files = Path(env["RUNNER_TEMP"]) / "_runner_file_commands"
        files.mkdir(exist_ok=True)
        for variable in ("GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT", "GITHUB_ENV"):
            env[variable] = str(files / f"{variable.lower()}_{number}")
            Path(env[variable]).touch()
        script = Path(env["RUNNER_TEMP"]) / f"step-{number}.sh"
        script.write_text(substitute(step["run"], contexts), encoding="utf-8")
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=job.workspace / step.get("working-directory", "."),
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        return ("success" if done.returncode == 0 else "failure"), done.stdout + done.stderr

    def use(
        self, action: str, inputs: dict[str, str], case: Case, job: JobRun, env: dict[str, str]
    ) -> tuple[str, str]:
        """Emulate the action ``action`` (see the module docstring)."""
        name = action.split("@")[0]
        if name == "actions/checkout":
            self.checkout(case.ref, inputs, job.workspace)
        elif name == "actions/setup-python":
            env["PATH"] = f"{self.python_bin}:{env['PATH']}"
        elif name == "actions/upload-artifact":
            return self.upload(inputs, job.workspace)
        elif name == "actions/download-artifact":
            return self.download(inputs, job.workspace)
        elif name == "mikepenz/action-junit-report":
            report = job.workspace / inputs["report_paths"]
            if not report.is_file():
                return "failure", f"no JUnit report at {inputs['report_paths']}"
            return "success", f"{len(list(ET.parse(report).getroot().iter('testcase')))} testcases"
        else:
            raise AssertionError(f"no emulation of {action}")
        return "success", ""

    def checkout(self, ref: str, inputs: dict[str, str], workspace: Path) -> None:
        """Clone the repository into the workspace, as deep as ``fetch-depth`` says."""
        assert set(inputs) <= {"fetch-depth"}, f"no emulation of checkout inputs {inputs}"
        depth = [] if inputs.get("fetch-depth") == "0" else ["--depth", "1", "--single-branch"]
        ci.git(self.tmp, "clone", "-q", *depth, "--branch", ref, self.repo.as_uri(), str(workspace))

    def upload(self, inputs: dict[str, str], workspace: Path) -> tuple[str, str]:
        """Keep ``path`` (a file or a folder's contents) as the artifact ``name``."""
        store = self.artifacts / inputs["name"]
        if store.exists():
            return "failure", f"an artifact named {inputs['name']} already exists"
        source = workspace / inputs["path"]
        if not source.exists():
            return "success", f"No files were found with the provided path: {inputs['path']}"
        if source.is_dir():
            shutil.copytree(source, store)
        else:
            store.mkdir()
            shutil.copy2(source, store / source.name)
        return "success", ""

    def download(self, inputs: dict[str, str], workspace: Path) -> tuple[str, str]:
        """Copy the artifact ``name`` (or those matching ``pattern``) into ``path``."""
        target = workspace / inputs.get("path", ".")
        if "name" in inputs:
            if not (self.artifacts / inputs["name"]).is_dir():
                return "failure", f"Artifact not found: {inputs['name']}"
            shutil.copytree(self.artifacts / inputs["name"], target, dirs_exist_ok=True)
            return "success", ""
        merge = inputs.get("merge-multiple") == "true"
        for store in sorted(self.artifacts.iterdir()):
            if fnmatch.fnmatch(store.name, inputs.get("pattern", "*")):
                into = target if merge else target / store.name
                shutil.copytree(store, into, dirs_exist_ok=True)
        return "success", ""


def substitute(text: str, contexts: dict[str, str]) -> str:
    """``text`` with each ``${{ expression }}`` replaced by its value in ``contexts``."""

    def value(match: re.Match[str]) -> str:
        expression = match.group(1)
        assert expression in contexts, f"the case gives no value for ${{{{ {expression} }}}}"
        return contexts[expression]

    return EXPRESSION.sub(value, text)


def substitute_all(values: dict[str, Any], contexts: dict[str, str]) -> dict[str, str]:
    """A mapping's values as strings (YAML's true as GitHub's 'true'), expressions replaced."""
    return {
        key: substitute(str(value).lower() if isinstance(value, bool) else str(value), contexts)
        for key, value in values.items()
    }
