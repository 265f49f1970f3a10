"""Installing mtrun the way the scale-out examples say, with no network.

The examples build a wheel in a checkout (``pip wheel --no-deps -w dist .``)
and install it with pip. The tests run those lines as written; two things
make them work offline:

- the wheel is built once per test process, in a copy of the sources (the
  work tree is never written to), by the setuptools and wheel already
  installed (``PIP_NO_BUILD_ISOLATION=0``: pip fetches no build tools);
- a virtualenv gets mtrun's dependencies from the tests' own environment
  before the line runs: a ``.pth`` file in its site-packages names a folder
  of links to everything the tests' environment holds except mtrun itself.
  pip then finds every dependency already satisfied and installs only the
  wheel, so what runs afterwards is the mtrun the example installed, not the
  one the tests import.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD_LINE = "pip wheel --no-deps -w dist ."
"""How the examples say to build the wheel, in a checkout of mtrun."""
_NOT_DEPENDENCIES = (
    "mtrun-",
    "__editable__",
    "pip",
    "setuptools",
    "_distutils_hack",
    "pkg_resources",
)
"""Left out of the dependencies: mtrun itself, and what a new virtualenv brings (ensurepip)."""


def tool_path() -> str:
    """A PATH with this environment's python3 and pip first, then the system's."""
    return os.pathsep.join([str(Path(sys.executable).parent), "/usr/sbin", "/usr/bin", "/bin"])


@functools.cache
def wheel_folder() -> Path:
    """A folder holding mtrun's wheel, built by the examples' line in a copy of the sources."""
    build = Path(tempfile.mkdtemp(prefix="mtrun-wheel-"))
    atexit.register(shutil.rmtree, build, True)
    checkout = build / "mtrun"
    checkout.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, checkout / name)
    shutil.copytree(
        ROOT / "runner", checkout / "runner", ignore=shutil.ignore_patterns("__pycache__")
    )
    done = subprocess.run(
        BUILD_LINE,
        shell=True,
        cwd=checkout,
        env={**os.environ, "PATH": tool_path(), "PIP_NO_BUILD_ISOLATION": "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{BUILD_LINE!r} failed in a copy of the sources:\n{done.stderr}")
    return checkout / "dist"


@functools.cache
def _dependencies() -> Path:
    """A folder of links to this environment's packages, mtrun's own left out."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    folder = Path(tempfile.mkdtemp(prefix="mtrun-deps-"))
    atexit.register(shutil.rmtree, folder, True)
    for entry in purelib.iterdir():
        if entry.name.startswith(_NOT_DEPENDENCIES) or entry.suffix == ".pth":
            continue
        (folder / entry.name).symlink_to(entry)
    return folder


def seed_venv(venv: Path) -> Path:
    """Give the virtualenv at ``venv`` (now or later) mtrun's dependencies; its site-packages."""
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    site.mkdir(parents=True, exist_ok=True)
    (site / "mtrun-test-dependencies.pth").write_text(f"{_dependencies()}\n")
    return site


def image_venv(venv: Path) -> Path:
    """A virtualenv standing for a container image: python3 and pip, with mtrun's dependencies.

    Made without ensurepip (a second less per venv); its ``pip`` is the tests'
    pip run by the venv's own python, so it installs into the venv.
    """
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60
    )
    seed_venv(venv)
    pip = venv / "bin" / "pip"
    pip.write_text(
        f"#!{venv}/bin/python\nimport sys\nsys.path.append({str(_pip_only())!r})\n"
        "from pip._internal.cli.main import main\nsys.exit(main())\n"
    )
    pip.chmod(0o755)
    return venv / "bin"


@functools.cache
def _pip_only() -> Path:
    """A folder holding only a link to the tests' pip."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    folder = Path(tempfile.mkdtemp(prefix="mtrun-pip-"))
    atexit.register(shutil.rmtree, folder, True)
    (folder / "pip").symlink_to(purelib / "pip")
    return folder
