"""A multi-node Slurm on one machine: one slurmd per network-namespace node, one slurmctld.

Built on tests/cluster.py's :class:`~cluster.NetnsCluster` (node ``i`` is a network
namespace with interface ``cl0`` = 10.213.0.(i+1), joined by a bridge). On top:

* one ``munged`` in the machine's namespace (its socket is a file: every node reaches it);
* in node 0's namespace ``slurmctld``, and in every node's namespace a ``slurmd -N nodeI``,
  each started in a UTS namespace of its own whose host name is ``nodeI`` (Slurm checks
  that a daemon's host name is the node's), and in a mount namespace of its own where
  ``/sys`` is that network namespace's sysfs (so UCX in the job sees ``cl0``) with the
  machine's ``/sys/fs/cgroup`` moved back on top (slurmd refuses to start without it);
* ``slurm.conf`` with ``NodeName=nodeI NodeAddr=10.213.0.(i+1)``, spool, pid and log files
  per node (``%n``), everything under the cluster's temporary directory. Since every
  daemon has its own address, all use the standard ports without meeting another Slurm.

Jobs are submitted from node 0 (``ip netns exec`` there) with the job environment of
:meth:`NetnsSlurm.env`: UCX on ``tcp`` over ``cl0`` as in the MPI emulation.

Cleanup: :meth:`NetnsSlurm.down` cancels the jobs, then the cluster's ``down`` kills every
process inside the namespaces (slurmctld, the slurmds, their slurmstepds and ranks) and
removes them; munged is ended by its recorded PID. A killed test run's leftovers are
removed by :func:`cluster.sweep_stale` (its munged is found by its socket's directory).
Raises :class:`Unavailable` (callers skip) where Slurm, munge or namespaces are missing.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from cluster import SUBNET, NetnsCluster, netns_unavailable
from mpirun import SRC, mpi_env, run_group


class Unavailable(RuntimeError):
    """This machine cannot run the multi-node Slurm (the message says why)."""


def unavailable() -> str | None:
    why = netns_unavailable()
    if why:
        return why
    missing = [p for p in ("slurmctld", "slurmd", "sbatch", "srun", "munged", "mungekey", "runuser",
                           "nsenter", "unshare", "sinfo") if not shutil.which(p)]
    if missing:
        return (f"{', '.join(missing)} not installed (tests/slurm/start_local_slurm.sh installs "
                "Slurm and munge)")
    if subprocess.run(["getent", "passwd", "munge"], capture_output=True).returncode:
        return "no 'munge' user"
    return None


def install_packages() -> None:
    """Slurm and munge from the distribution when they are missing (``start_local_slurm.sh
    --install-only``: root and apt-get; otherwise nothing happens and :func:`unavailable`
    says what is missing)."""
    if shutil.which("slurmd") and shutil.which("munged") and shutil.which("sbatch"):
        return
    subprocess.run(["bash", str(Path(__file__).resolve().parent / "start_local_slurm.sh"), "--install-only"],
                   capture_output=True, text=True, timeout=600)


class NetnsSlurm:
    """``n_nodes`` Slurm nodes ``node0..`` with ``cpus`` CPUs each, partition ``debug``."""

    def __init__(self, n_nodes: int = 2, cpus: int = 2, timeout: float = 60):
        self.n_nodes, self.cpus, self.timeout = n_nodes, cpus, timeout
        self.cluster = NetnsCluster((1,) * n_nodes)
        self.names = [f"node{i}" for i in range(n_nodes)]
        self.munged_pid = None
        self.dir = None

    def __enter__(self) -> "NetnsSlurm":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    # ------------------------------------------------------------- start
    def up(self) -> "NetnsSlurm":
        why = unavailable()
        if why:
            raise Unavailable(why)
        self.cluster.up()
        try:
            self._start()
        except BaseException:
            self.down()
            raise
        return self

    def _start(self) -> None:
        d = self.dir = self.cluster.dir / "slurm"
        for sub in ("state", "log", "munge", "jobs", *(f"spool/{n}" for n in self.names)):
            (d / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.cluster.dir, 0o755)
        os.chmod(d, 0o755)
        shutil.chown(d / "munge", "munge", "munge")
        os.chmod(d / "munge", 0o711)
        self.conf = d / "slurm.conf"
        sock = d / "munge" / "munge.socket"
        self._check(["runuser", "-u", "munge", "--", "mungekey", "--create", f"--keyfile={d}/munge/munge.key"],
                    "mungekey")
        self._check(["runuser", "-u", "munge", "--", "munged", f"--socket={sock}", f"--key-file={d}/munge/munge.key",
                     f"--pid-file={d}/munge/munged.pid", f"--seed-file={d}/munge/munged.seed",
                     f"--log-file={d}/munge/munged.log"], "munged")
        self._wait(lambda: (d / "munge" / "munged.pid").is_file() and sock.exists(), "munged's socket")
        self.munged_pid = int((d / "munge" / "munged.pid").read_text())
        nodes = "\n".join(f"NodeName={n} NodeAddr={SUBNET}.{i + 1} NodeHostname={n} CPUs={self.cpus} State=UNKNOWN"
                          for i, n in enumerate(self.names))
        self.conf.write_text(f"""# multi-node Slurm in network namespaces, written by tests/slurm/multinode.py
ClusterName=shlnetns
SlurmctldHost=node0({SUBNET}.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd-%n.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={d}/log/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SchedulerParameters=batch_sched_delay=0
MinJobAge=5
EnforcePartLimits=ALL
ReturnToService=2
KillWait=5
SlurmdParameters=config_overrides
{nodes}
PartitionName=debug Nodes={','.join(self.names)} Default=YES MaxTime=30 State=UP OverSubscribe=FORCE
""")
        for i, (ns, name) in enumerate(zip(self.cluster.nodes, self.names)):
            cg = d / f"cgroup-{name}"
            cg.mkdir()
            daemons = (f"slurmctld -i -f {self.conf} && " if i == 0 else "") + f"slurmd -N {name} -f {self.conf}"
            # own UTS (host name) and mount namespace: this netns's sysfs, the machine's cgroups
            self._check(["nsenter", f"--net=/run/netns/{ns}", "unshare", "--uts", "--mount", "--propagation",
                         "private", "sh", "-c",
                         f"mount --rbind /sys/fs/cgroup {cg} && mount -t sysfs sysfs /sys && "
                         f"mount --move {cg} /sys/fs/cgroup && hostname {name} && {daemons}"],
                        f"the daemons of {name}")
        self._wait(self._all_idle, f"nodes {','.join(self.names)} idle", self.timeout)

    def _check(self, cmd, what) -> None:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if proc.returncode:
            raise RuntimeError(f"{what} did not start (exit {proc.returncode}): {proc.stderr.strip()}\n{self.logs()}")

    def _wait(self, ok, what, timeout=15) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if ok():
                return
            time.sleep(0.3)
        raise RuntimeError(f"timed out waiting for {what}\n{self.logs()}")

    def _all_idle(self) -> bool:
        proc = self.run("sinfo", "-h", "-N", "-o", "%N %T", timeout=10, check=False)
        states = dict(line.split() for line in proc.stdout.splitlines() if len(line.split()) == 2)
        return all(states.get(n, "").startswith("idle") for n in self.names)

    def logs(self, lines: int = 15) -> str:
        if self.dir is None:
            return ""
        out = []
        for f in sorted(self.dir.glob("log/*.log")) + [self.dir / "munge" / "munged.log"]:
            if f.exists() and f.stat().st_size:
                out.append(f"---- {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)

    # ------------------------------------------------------------- use
    def env(self, extra: dict | None = None) -> dict:
        """The environment of a client command or job: this Slurm, this checkout's code,
        MPI over cl0 (UCX on tcp, as in the MPI emulation)."""
        env = {k: v for k, v in mpi_env().items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
        env.update(self.cluster.env())
        env.update({"SLURM_CONF": str(self.conf),
                    "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
                    "PYTHONPATH": str(SRC)})
        if (Path(sys.prefix) / "bin" / "activate").exists():
            env["SHARDLEARN_VENV"] = sys.prefix
        env.update(extra or {})
        return env

    def run(self, *cmd, timeout: float = 150, check: bool = True, env: dict | None = None,
            cwd=None) -> subprocess.CompletedProcess:
        """``cmd`` (a Slurm client: sbatch, srun, sinfo, ...) on node 0."""
        full = ["ip", "netns", "exec", self.cluster.nodes[0], *map(str, cmd)]
        proc = run_group(full, timeout=timeout, env=self.env(env), cwd=cwd)
        if check and proc.returncode:
            raise AssertionError(f"{' '.join(full)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def sbatch(self, script, *args, options=(), env=None, cwd, timeout: float = 150) -> subprocess.CompletedProcess:
        """``sbatch --wait --parsable --time=5 OPTIONS SCRIPT ARGS`` from node 0 (not checked)."""
        return self.run("sbatch", "--wait", "--parsable", "--time=5", *options, script, *args,
                        timeout=timeout, check=False, env=env, cwd=cwd)

    # ------------------------------------------------------------- stop
    def down(self) -> None:
        if self.cluster.is_up and self.dir is not None and self.conf.exists():
            try:
                self.run("scancel", "--full", "--quiet", "--user=root", timeout=10, check=False)
            except Exception:  # noqa: BLE001 - the namespaces go anyway
                pass
        self.cluster.down()  # kills slurmctld, slurmds, steps and ranks: all inside
        if self.munged_pid and _runs(self.munged_pid, "munged", str(self.dir)):
            os.kill(self.munged_pid, signal.SIGTERM)
        self.munged_pid = None


def _runs(pid: int, name: str, marker: str) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return name in cmd and marker in cmd
