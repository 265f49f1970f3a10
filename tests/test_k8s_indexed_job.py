"""docs/scale-out/k8s-indexed-job.yaml: valid for a current Kubernetes, and its pods' command works.

No cluster runs here, so the manifest is checked in two halves: against the
newest Kubernetes schema that ``kubernetes-validate`` ships (strict: an
unknown field is an error), and by running its container's command, exactly
as the manifest writes it, once per completion index with the env the
manifest sets. Each "pod" is a fresh virtualenv standing for the image
(``tests/slurm/install.py``); the volumes are folders: the wheel built by the
header's line, the conversations, the shared results. Only the endpoint is
replaced, by a loopback chat server. The header's merge line then combines
the outputs, which must equal one run of the whole batch.
"""

from __future__ import annotations

import base64
import copy
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from faultserver import FaultServer
from slurm.batch import first_turn, messages_by_id, write_batch
from slurm.install import BUILD_LINE, image_venv, wheel_folder

MANIFEST = Path(__file__).resolve().parent.parent / "docs" / "scale-out" / "k8s-indexed-job.yaml"
TEXT = MANIFEST.read_text()
JOB: dict[str, Any] = yaml.safe_load(TEXT)
CONTAINER: dict[str, Any] = JOB["spec"]["template"]["spec"]["containers"][0]
CONFIGMAP_LIMIT = 1024 * 1024


def test_the_manifest_is_valid_for_the_newest_kubernetes_schema() -> None:
    version = kubernetes_validate.latest_version()
    assert tuple(int(n) for n in version.split(".")[:2]) >= (1, 33)
    kubernetes_validate.validate(JOB, version, strict=True)
    typo = copy.deepcopy(JOB)
    typo["spec"]["completion"] = typo["spec"].pop("completions")
    with pytest.raises(kubernetes_validate.ValidationError):  # the check can fail
        kubernetes_validate.validate(typo, version, strict=True)


def test_the_shard_count_is_the_number_of_completions() -> None:
    env = {e["name"]: e["value"] for e in CONTAINER["env"]}
    assert JOB["spec"]["completionMode"] == "Indexed"
    assert int(env["MTRUN_SHARD_COUNT"]) == JOB["spec"]["completions"]


def test_the_wheel_fits_in_a_configmap_as_the_header_says() -> None:
    assert re.search(rf"^#   {re.escape(BUILD_LINE)}$", TEXT, re.MULTILINE)
    (wheel,) = wheel_folder().glob("mtrun-*.whl")
    assert len(base64.b64encode(wheel.read_bytes())) < CONFIGMAP_LIMIT


def volumes(tmp_path: Path) -> dict[str, Path]:
    """Each mount path of the container, and the folder that stands for it."""
    folders = {"wheels": wheel_folder(), "conversations": tmp_path / "conversations"}
    folders["results"] = tmp_path / "results"
    folders["results"].mkdir()
    mounts = CONTAINER["volumeMounts"]
    assert sorted(m["name"] for m in mounts) == sorted(folders)
    return {m["mountPath"]: folders[m["name"]] for m in mounts}


def on_folders(line: str, mounts: dict[str, Path]) -> str:
    """The command with each mount path replaced by its folder."""
    for path, folder in mounts.items():
        line = re.sub(rf"{re.escape(path)}(?=/|\"|$)", str(folder), line)
    return line


def pod(index: int, tmp_path: Path, base_url: str, command: list[str]) -> subprocess.Popen[str]:
    """Start the container's command as pod ``index`` would run it."""
    home = tmp_path / f"pod-{index}"
    bin_folder = image_venv(home / "venv")
    env = {e["name"]: e["value"] for e in CONTAINER["env"]}
    env |= {
        "JOB_COMPLETION_INDEX": str(index),
        "MTRUN_BASE_URL": base_url,  # the one change: the endpoint is the test's
        "HOME": str(home),
        "PATH": f"{bin_folder}:/usr/bin:/bin",
    }
    return subprocess.Popen(
        command,
        cwd=home,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_every_index_runs_the_command_as_written_and_the_merge_is_one_run(
    tmp_path: Path,
) -> None:
    completions = JOB["spec"]["completions"]
    ids = write_batch(tmp_path / "conversations", completions)
    mounts = volumes(tmp_path)
    (script,) = CONTAINER["args"]
    command = [*CONTAINER["command"], on_folders(script, mounts)]
    with FaultServer() as server:
        pods = [pod(i, tmp_path, server.base_url, command) for i in range(completions)]
        outputs = [p.communicate(timeout=120)[0] for p in pods]
        assert [p.returncode for p in pods] == [0] * completions, outputs
        assert server.violations == []
        assert server.per_turn == Counter({(first_turn(c), t): 1 for c in ids for t in range(3)})
    for i in range(completions):  # each pod used the mtrun its command installed
        assert (tmp_path / f"pod-{i}" / "venv" / "bin" / "mtrun").exists()
    merge = re.search(r"afterwards with:\s+(mtrun merge .+)$", TEXT, re.MULTILINE)
    assert merge is not None
    done = subprocess.run(
        on_folders(merge.group(1), mounts),
        shell=True,
        cwd=tmp_path,
        env={"PATH": f"{tmp_path}/pod-0/venv/bin:/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    with FaultServer() as server:
        single = subprocess.run(
            [f"{tmp_path}/pod-0/venv/bin/mtrun", "-q", "-o", "single.jsonl", "conversations/"],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "MTRUN_BASE_URL": server.base_url},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert single.returncode == 0, single.stderr
    combined = messages_by_id(tmp_path / "merged.jsonl")
    assert combined == messages_by_id(tmp_path / "single.jsonl")
    assert sorted(combined) == sorted(ids)
    assert {status for status, _ in combined.values()} == {"completed"}
