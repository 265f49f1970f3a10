"""A one-node Slurm cluster in a folder: munged, slurmctld and slurmd as child processes.

The tests submit the documented job array to it, so the example is run by
the real scheduler (Debian's ``slurm-wlm`` and ``munge``), not by a reading
of its ``#SBATCH`` lines. Nothing is installed or started system-wide: the
munge key and socket, the configuration, the state and spool folders and
the logs all live in the folder given, the daemons listen on free loopback
ports, run in the foreground and are ended when the cluster is closed. No
systemd is needed.

The node offers 32 CPUs and 40 GB (``config_overrides``: whatever the
machine has), so the whole 16-task array, 2 CPUs and 2 GB a task, runs at
once.

Standalone, for a look by hand: ``python tests/slurm/cluster.py DIR`` starts
it, prints the ``SLURM_CONF=...`` to export, and serves until Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from helpers import free_port

DAEMONS = ("munged", "slurmctld", "slurmd")
CRED_EXPIRE_S = 10
"""How long a job's credential lives, so how long a requeued job waits to start again."""
CLIENTS = ("sbatch", "squeue", "scontrol", "sinfo")
NODE = "mtrun-node"
START_TIMEOUT_S = 30.0


class ClusterError(Exception):
    """The cluster could not be started (the reason says why)."""


def missing_programs() -> list[str]:
    """The Slurm and munge programs this machine lacks."""
    return [name for name in (*DAEMONS, *CLIENTS) if _which(name) is None]


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def slurm_conf(folder: Path, ctld_port: int, slurmd_port: int) -> str:
    """A minimal slurm.conf: one node, one partition, no accounting, no cgroups.

    The main scheduling loop runs every 2 s (Slurm's default is 60 s): a requeued task,
    eligible again once its credential expires, is started by that loop, not by an event.
    """
    host = socket.gethostname().split(".")[0]
    return f"""\
ClusterName=mtrun
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge/socket,cred_expire={CRED_EXPIRE_S}
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=5
MinJobAge=600
NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs=32 RealMemory=40000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    """One controller and one node, in ``folder``; use as a context manager."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.conf = folder / "slurm.conf"
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def env(self) -> dict[str, str]:
        """What a client (sbatch, squeue, scontrol) needs to find this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def __enter__(self) -> SlurmCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Write the key and configuration, start the daemons, wait for an idle node."""
        missing = missing_programs()
        if missing:
            raise ClusterError(f"not installed: {', '.join(missing)} (apt-get install slurm-wlm)")
        for name in ("munge", "state", "spool"):
            (self.folder / name).mkdir(mode=0o700, parents=True, exist_ok=True)
        key = self.folder / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.conf.write_text(slurm_conf(self.folder, free_port(), free_port()))
        munge = self.folder / "munge"
        self._spawn(
            "munged",
            "--foreground",
            "--force",
            f"--key-file={key}",
            f"--socket={munge}/socket",
            f"--pid-file={munge}/munged.pid",
            f"--log-file={munge}/munged.log",
            f"--seed-file={munge}/munged.seed",
        )
        self._wait(lambda: (munge / "socket").exists(), "munged made no socket")
        self._spawn("slurmctld", "-D", "-c", "-f", str(self.conf))
        self._spawn("slurmd", "-D", "-N", NODE, "-f", str(self.conf))
        self._wait(lambda: self.node_state() == "idle", "the node never became idle")

    def _spawn(self, program: str, *args: str) -> None:
        path = _which(program)
        assert path is not None
        log = (self.folder / f"{program}.out").open("wb")
        self.processes.append(
            subprocess.Popen([path, *args], stdout=log, stderr=subprocess.STDOUT, env=self._env())
        )
        log.close()

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            for process in self.processes:
                if process.poll() is not None:
                    raise ClusterError(
                        f"{process.args[0]} exited {process.returncode}; {self.logs()}"
                    )
            if time.monotonic() > deadline:
                raise ClusterError(f"{what} within {START_TIMEOUT_S:.0f} s; {self.logs()}")
            time.sleep(0.1)  # polling a real daemon: there is no event to wait on

    def node_state(self) -> str:
        """The node's state as sinfo reports it ('' while the controller is not up)."""
        done = self.run("sinfo", "-h", "-n", NODE, "-o", "%T", check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client against this cluster."""
        path = _which(args[0]) or args[0]
        return subprocess.run(
            [path, *args[1:]],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=check,
        )

    def logs(self, lines: int = 15) -> str:
        """The last lines of every daemon's log, for a failure message."""
        parts = []
        for log in sorted(self.folder.glob("*.log")) + sorted(self.folder.glob("*.out")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def close(self) -> None:
        """End the daemons this cluster started (and only those)."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.processes.clear()


def main(argv: list[str]) -> int:
    """Start a cluster in the folder given and keep it up until Ctrl-C."""
    folder = Path(argv[1]).resolve()
    with SlurmCluster(folder) as cluster:
        print(f"export SLURM_CONF={cluster.conf}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
