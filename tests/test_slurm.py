"""docs/scale-out/slurm-array.sbatch, submitted to a real one-node Slurm cluster.

The cluster is Debian's ``slurm-wlm`` and ``munge``, started in a temporary
folder by ``tests/slurm/cluster.py`` (``.ci/run`` installs the packages).
mtrun is installed by the lines the file's header gives, the file is
submitted by its own submit line with only the endpoint (a loopback chat
server) and PATH coming from the environment, and its merge line combines
the 16 outputs, which must equal one run of the whole batch. Then the
preemption the file promises: a task requeued while it waits for an answer
is killed, starts again and ``--resume`` finishes its output with nothing
lost and no answered turn asked again.

Without Slurm the tests skip, saying why; under ``CI`` they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from faultserver import FaultServer
from slurm.batch import first_turn, messages_by_id, write_batch
from slurm.cluster import ClusterError, SlurmCluster
from slurm.install import BUILD_LINE, seed_venv, tool_path, wheel_folder

SBATCH = Path(__file__).resolve().parent.parent / "docs" / "scale-out" / "slurm-array.sbatch"
TEXT = SBATCH.read_text()
HEADER_COMMANDS = re.findall(r"^#   (.+)$", TEXT, re.MULTILINE)
MERGE_LINE = re.search(r"^# Afterwards: (mtrun merge .+)$", TEXT, re.MULTILINE)
TASKS = 16
WAIT_S = 120.0
"""The longest any one wait on the scheduler may take (a requeue took over 60 s once, on a
machine running four test suites at once); a pass takes a few seconds of it."""
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}
"""Job states a task does not leave (REQUEUED, PENDING, RUNNING, COMPLETING do)."""


def unavailable(reason: str) -> None:
    """Skip with the reason; under CI, fail: CI must run these."""
    if os.environ.get("CI"):
        pytest.fail(f"Slurm tests must run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    if os.geteuid() != 0:
        unavailable("a private Slurm cluster needs root (SlurmUser=root)")
    try:
        with SlurmCluster(tmp_path_factory.mktemp("slurm")) as started:
            yield started
    except ClusterError as error:
        unavailable(f"Slurm could not be started: {error}")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home folder where mtrun was installed by the file's own install lines."""
    home = tmp_path_factory.mktemp("home")
    build, install, _submit = HEADER_COMMANDS
    assert build == BUILD_LINE  # the line wheel_folder() ran in a checkout
    seed_venv(home / "mtrun-venv")
    done = subprocess.run(
        install,
        shell=True,
        executable="/bin/bash",
        cwd=wheel_folder().parent,
        env={**os.environ, "HOME": str(home), "PATH": tool_path()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (home / "mtrun-venv" / "bin" / "mtrun").exists()
    return home


def project(folder: Path) -> list[str]:
    """A folder to submit from: conversations/ and the example file; the conversation ids."""
    ids = write_batch(folder / "conversations", TASKS)
    shutil.copy2(SBATCH, folder / SBATCH.name)
    return ids


def clean(env: Mapping[str, str]) -> dict[str, str]:
    """The environment without a scheduler's, an endpoint's or a key's variables."""
    prefixes = ("SLURM_", "MTRUN_", "ARCEE_", "OPENAI_")
    return {k: v for k, v in env.items() if not k.startswith(prefixes)}


def user_env(home: Path, server: FaultServer, cluster: SlurmCluster) -> dict[str, str]:
    """The submitting user's environment: the endpoint, PATH (and where the cluster is)."""
    return {
        **clean(os.environ),
        **cluster.env,
        "HOME": str(home),
        "PATH": tool_path().split(os.pathsep, 1)[1],  # not the tests' environment
        "MTRUN_BASE_URL": server.base_url,
    }


def shell(line: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        line,
        shell=True,
        executable="/bin/bash",
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def submit(folder: Path, env: dict[str, str]) -> str:
    """Submit the example by the file's own submit line; the array's job id."""
    done = shell(HEADER_COMMANDS[2], folder, env)
    assert done.returncode == 0, done.stderr
    found = re.fullmatch(r"Submitted batch job (\d+)\n", done.stdout)
    assert found, done.stdout
    return found.group(1)


def tasks(cluster: SlurmCluster, job: str) -> dict[int, dict[str, str]]:
    """Each array task's fields as ``scontrol -o show job`` gives them."""
    shown = cluster.run("scontrol", "-o", "show", "job", job).stdout
    fields = [dict(re.findall(r"(\w+)=(\S*)", line)) for line in shown.splitlines()]
    return {int(f["ArrayTaskId"]): f for f in fields if f.get("ArrayTaskId", "").isdigit()}


def wait_until(ready: Callable[[], bool], what: str, cluster: SlurmCluster) -> None:
    """Poll the real scheduler (there is no event to wait on), at most WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {WAIT_S:.0f} s\n{cluster.logs()}")
        time.sleep(0.2)


def finish(cluster: SlurmCluster, job: str, folder: Path) -> dict[int, dict[str, str]]:
    """Wait for the whole array to end; every task must have completed."""

    def ended() -> bool:
        found = tasks(cluster, job)
        return len(found) == TASKS and all(f["JobState"] in ENDED for f in found.values())

    wait_until(ended, f"job array {job} did not end", cluster)
    found = tasks(cluster, job)
    failed = {
        k: (f["JobState"], f["Reason"]) for k, f in found.items() if f["JobState"] != "COMPLETED"
    }
    logs = "\n".join(p.read_text() for p in sorted(folder.glob("slurm-*.log")))
    assert not failed, f"{failed}\n{logs}\n{cluster.logs()}"
    return found


def completed_in(output: Path) -> set[str]:
    """The ids an output already records as completed (none while it does not exist)."""
    done = set()
    if output.exists():
        for line in output.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line being written
            if isinstance(record, dict) and record.get("status") == "completed":
                done.add(str(record.get("id")))
    return done


def merged(folder: Path, env: dict[str, str]) -> dict[str, object]:
    """Run the file's merge line; the merged output's conversations."""
    assert MERGE_LINE is not None
    done = shell(
        MERGE_LINE.group(1), folder, {**env, "PATH": f"{env['HOME']}/mtrun-venv/bin:{env['PATH']}"}
    )
    assert done.returncode == 0, done.stderr
    return messages_by_id(folder / "results" / "merged.jsonl")


@pytest.fixture(scope="module")
def single_run(tmp_path_factory: pytest.TempPathFactory, home: Path) -> dict[str, object]:
    """The whole batch in one mtrun process, against a server of its own."""
    folder = tmp_path_factory.mktemp("single")
    write_batch(folder / "conversations", TASKS)
    with FaultServer() as server:
        done = subprocess.run(
            [
                str(home / "mtrun-venv" / "bin" / "mtrun"),
                "-q",
                "-o",
                "single.jsonl",
                "conversations/",
            ],
            cwd=folder,
            env={**clean(os.environ), "MTRUN_BASE_URL": server.base_url},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    return messages_by_id(folder / "single.jsonl")


def test_the_array_as_documented_merges_into_one_run(
    cluster: SlurmCluster, home: Path, single_run: dict[str, object], tmp_path: Path
) -> None:
    ids = project(tmp_path)
    with FaultServer() as server:
        env = user_env(home, server, cluster)
        job = submit(tmp_path, env)
        found = finish(cluster, job, tmp_path)
        assert sorted(found) == list(range(1, TASKS + 1))
        combined = merged(tmp_path, env)
        assert server.violations == []
        assert server.per_turn == Counter({(first_turn(c), t): 1 for c in ids for t in range(3)})
    assert combined == single_run
    assert sorted(combined) == sorted(ids)
    assert all(status == "completed" for status, _ in single_run.values())
    for k in range(1, TASKS + 1):  # every task ran its own shard, and only that
        assert (tmp_path / "results" / f"shard-{k}.jsonl").read_text().count('"id"') == 3
        assert (tmp_path / f"slurm-{job}_{k}.log").exists()


def test_a_task_requeued_mid_run_resumes_without_loss_or_resend(
    cluster: SlurmCluster, home: Path, single_run: dict[str, object], tmp_path: Path
) -> None:
    ids = project(tmp_path)
    target, shard = ids[4 * 3], 5  # the first conversation of shard 5
    key = first_turn(target)

    def hang_first_ask_of_turn_2(body: object, k: str, turn: int, attempt: int) -> str | None:
        return "hang" if (k, turn, attempt) == (key, 1, 0) else None

    with FaultServer(rule=hang_first_ask_of_turn_2, hang_s=WAIT_S) as server:
        env = user_env(home, server, cluster)
        job = submit(tmp_path, env)
        wait_until(lambda: server.per_turn[(key, 1)] == 1, "turn 2 was never asked", cluster)
        # The shard's other two conversations run beside it: kill the task once they are
        # recorded, or their requests in flight at the kill are asked again (rightly).
        others = set(ids[4 * 3 + 1 : 4 * 3 + 3])
        output = tmp_path / "results" / f"shard-{shard}.jsonl"
        wait_until(
            lambda: others <= completed_in(output),
            "the other conversations never finished",
            cluster,
        )
        task = f"{job}_{shard}"
        cluster.run("scontrol", "requeue", task)
        wait_until(
            lambda: tasks(cluster, job)[shard]["JobState"] == "PENDING",
            f"{task} was not requeued",
            cluster,
        )
        # Slurm holds a requeued job until its old credential expires (cred_expire: 2
        # minutes by default, CRED_EXPIRE_S here), then its next scheduling pass starts it
        # again (sched_interval: 60 s by default, 2 s here). (Forcing
        # it to start sooner races slurmd, which refuses to launch a job it killed
        # while that credential lives: "already killed, do not launch batch job".)
        found = finish(cluster, job, tmp_path)
        combined = merged(tmp_path, env)
        assert server.violations == []
        expected = Counter({(first_turn(c), t): 1 for c in ids for t in range(3)})
        expected[(key, 1)] = 2  # the one request in flight when the task was killed
        assert server.per_turn == expected
    assert found[shard]["Restarts"] == "1"
    assert {k for k, f in found.items() if f["Restarts"] != "0"} == {shard}
    assert combined == single_run
