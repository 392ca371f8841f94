"""A real single-node Slurm cluster on this machine, for the tests of the cluster path.

Debian's ``slurm-wlm`` and ``munge`` (installed on demand when running as root with apt, as CI does), configured
for localhost in a temporary directory: munged on a private socket, slurmctld and slurmd on private ports. Every
daemon is stopped when the context exits, so no service outlives the tests. When something is missing or a
daemon does not come up, :func:`start` raises ``ClusterUnavailable`` with the reason (the tests then skip, and
the same code path runs through submitit's local executor).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

DAEMONS = ("slurmctld", "slurmd", "munged")


class ClusterUnavailable(RuntimeError):
    pass


def _install() -> None:
    if all(shutil.which(d) for d in DAEMONS):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ClusterUnavailable("slurm-wlm / munge are not installed and this is not a root Debian machine")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "slurm-wlm", "munge"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    if done.returncode != 0:  # a fresh machine may need the package lists first
        subprocess.run(["apt-get", "update"], capture_output=True, timeout=600, env=env)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    if done.returncode != 0 or not all(shutil.which(d) for d in DAEMONS):
        raise ClusterUnavailable(f"apt-get could not install slurm-wlm/munge: {done.stderr.strip()[-300:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _conf(root: Path, host: str) -> str:
    cpus = os.cpu_count() or 1
    mem_mb = max(1024, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 - 1024)
    return "\n".join(
        [
            "ClusterName=harness-test",
            f"SlurmctldHost={host}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            f"AuthInfo=socket={root}/munge.socket",
            "CredType=cred/munge",
            f"StateSaveLocation={root}/state",
            f"SlurmdSpoolDir={root}/spool",
            f"SlurmctldPidFile={root}/slurmctld.pid",
            f"SlurmdPidFile={root}/slurmd.pid",
            f"SlurmctldLogFile={root}/slurmctld.log",
            f"SlurmdLogFile={root}/slurmd.log",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "ReturnToService=2",
            "MpiDefault=none",
            f"NodeName={host} CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN",
            f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def _stop(root: Path) -> None:
    for name in ("slurmd", "slurmctld", "munged"):
        pid_file = root / f"{name}.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def start(root: Path) -> Iterator[dict[str, str]]:
    """Start the cluster under ``root``; yields the environment (``SLURM_CONF``) clients and submitit need."""
    _install()
    if os.geteuid() != 0:
        raise ClusterUnavailable("the test cluster runs its daemons as root")
    root.mkdir(parents=True, exist_ok=True)
    (root / "state").mkdir(exist_ok=True)
    (root / "spool").mkdir(exist_ok=True)
    host = socket.gethostname().split(".")[0]
    (root / "slurm.conf").write_text(_conf(root, host))
    key = Path("/etc/munge/munge.key")
    if not key.is_file():
        raise ClusterUnavailable("no munge key at /etc/munge/munge.key (the munge package creates it)")
    env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
    try:
        munged = [
            "munged",
            "--force",
            f"--socket={root}/munge.socket",
            f"--key-file={key}",
            f"--pid-file={root}/munged.pid",
            f"--log-file={root}/munged.log",
            f"--seed-file={root}/munge.seed",
        ]
        # the wall-clock limits below are hang guards only (a busy machine must not make the cluster "unavailable")
        for cmd in (munged, ["slurmctld"], ["slurmd"]):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise ClusterUnavailable(f"{cmd[0]} did not start: {(done.stderr or done.stdout).strip()[-300:]}")
        deadline = time.monotonic() + 600  # the loop ends as soon as the node is up (seconds when idle)
        state = ""
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, timeout=300)
            state = out.stdout.strip()
            if state in ("idle", "mixed", "allocated"):
                break
            time.sleep(0.5)
        else:
            log = (root / "slurmctld.log").read_text()[-400:] if (root / "slurmctld.log").exists() else ""
            raise ClusterUnavailable(f"the node did not come up (state {state!r}); slurmctld.log: {log}")
        yield {"SLURM_CONF": env["SLURM_CONF"]}
    finally:
        _stop(root)
