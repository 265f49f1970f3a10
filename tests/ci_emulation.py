"""What the CI tests of docs/ci and docs/scale-out share: tools, repositories, a clean Python.

The examples are run as a user's CI would run them, offline:

- the *user's repository* is a temporary git repository holding this project's
  ``conversations/`` and fixtures recorded from the offline backend
  (``mtrun --mock --record tests/fixtures/mtrun``), committed on ``main``;
- *mtrun's source* is a temporary git repository of this work tree's tracked
  files, so the examples' install line gets a real git URL (``git+file://``);
- *the runner's Python* is a fresh virtualenv with no mtrun in it: it sees this
  environment's other packages (httpx, click, ..., pip, setuptools) through a
  ``.pth`` file, so pip resolves mtrun's dependencies offline (``PIP_NO_INDEX``)
  and builds it without an isolated build environment (which would download
  setuptools). Whatever ``mtrun`` a step runs was installed by that step.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GIT_IDENTITY = ("-c", "user.name=CI test", "-c", "user.email=ci@example.invalid")
NOT_MTRUN = ("mtrun", "__editable__", "runner", "__pycache__")


def require_tool(name: str, install: str) -> str:
    """The tool's path; missing, the test fails under CI (which installs it) and skips elsewhere."""
    found = shutil.which(name)
    if found is None:
        reason = f"{name} not found ({install}; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run this test: {reason}")
        pytest.skip(reason)
    return found


def plain(text: str) -> str:
    """``text`` without terminal colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def build_wheel(tmp: Path, bin_dir: Path, source: str) -> Path:
    """mtrun's wheel built from ``source`` offline, as the matrix workflow's build job does."""
    out = tmp / "wheel"
    done = subprocess.run(
        [str(bin_dir / "pip"), "wheel", "-q", "--no-deps", "-w", str(out), source],
        env=base_environ(tmp / "home", bin_dir),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = out.glob("mtrun-*.whl")
    return wheel


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` and return its output (a failure raises, with git's message)."""
    done = subprocess.run(
        ["git", *GIT_IDENTITY, *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout


def commit_all(repo: Path, message: str) -> None:
    """Commit everything in ``repo``'s work tree."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)


def mtrun_source(tmp: Path) -> str:
    """A git URL of mtrun as this work tree has it (tracked files only), for pip."""
    repo = tmp / "mtrun-src"
    repo.mkdir()
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            target = repo / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "mtrun as tested")
    return f"git+{repo.as_uri()}"


def python_env(tmp: Path) -> Path:
    """A fresh virtualenv without mtrun that resolves its dependencies offline; its bin folder."""
    venv = tmp / "runner-python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    view = tmp / "site-view"
    view.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(NOT_MTRUN) and entry.suffix != ".pth":
            (view / entry.name).symlink_to(entry)
    (site_packages(venv) / "outer-packages.pth").write_text(f"{view}\n", encoding="utf-8")
    pip = venv / "bin" / "pip"
    pip.write_text('#!/bin/sh\nexec "$(dirname "$0")/python" -m pip "$@"\n', encoding="utf-8")
    pip.chmod(0o755)
    return venv / "bin"


def site_packages(venv: Path) -> Path:
    """The site-packages folder of ``venv`` (one Python version inside)."""
    (found,) = (venv / "lib").glob("python3*/site-packages")
    return found


def base_environ(home: Path, bin_dir: Path | None = None) -> dict[str, str]:
    """A clean environment like a runner's: no keys, no mtrun settings, pip offline."""
    path = "/usr/local/bin:/usr/bin:/bin"
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": f"{bin_dir}:{path}" if bin_dir else path,
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PIP_NO_INDEX": "1",
        "PIP_NO_BUILD_ISOLATION": "0",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_CACHE_DIR": "1",
    }


def user_repo(tmp: Path) -> Path:
    """A user's repository on ``main``: conversations/ and fixtures recorded offline."""
    repo = tmp / "user-repo"
    shutil.copytree(ROOT / "conversations", repo / "conversations")
    recording = str(tmp / "recording.jsonl")
    run_mtrun(repo, "conversations/", "--mock", "--record", "tests/fixtures/mtrun", "-o", recording)
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "conversations and their fixtures")
    return repo


def run_mtrun(cwd: Path, *args: str) -> None:
    """Run this environment's mtrun in ``cwd``; it must exit 0."""
    done = subprocess.run(
        [sys.executable, "-m", "runner", *args, "-q"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def branch(repo: Path, name: str, edit: str | None) -> None:
    """Commit a branch ``name`` off ``main``; ``edit`` 'regress' makes an expectation fail."""
    git(repo, "checkout", "-q", "-b", name, "main")
    if edit == "regress":
        tighten_expectation(repo)
    elif edit == "harmless":
        with (repo / "conversations" / "list_form.yaml").open("a", encoding="utf-8") as f:
            f.write("# a comment: the conversations are unchanged\n")
    commit_all(repo, f"branch {name}")
    git(repo, "checkout", "-q", "main")


def conversation_ids() -> list[str]:
    """The ids of this project's conversations/, which every user repository here holds."""
    from runner.spec.loader import load_conversations

    return sorted(c.id for c in load_conversations([str(ROOT / "conversations")]))


def tighten_expectation(repo: Path) -> None:
    """capital-of-france now allows 10 characters an answer: its recorded answers fail it."""
    path = repo / "conversations" / "with_expectations.yaml"
    text = path.read_text(encoding="utf-8")
    assert "max_chars: 3000" in text
    path.write_text(text.replace("max_chars: 3000", "max_chars: 10"), encoding="utf-8")
