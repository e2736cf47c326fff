"""Emulated nodes on one machine: MPICH hydra's host list with the fork launcher.

``mpiexec -launcher fork -hosts node0:2,node1:2 -n 4 ...`` starts every rank on this
machine (fork, no ssh), but hydra groups the ranks by the host name it was given: the
ranks listed under one name form one "node".

What the emulation reproduces (checked in tests/test_cluster.py):

* ``Split_type(COMM_TYPE_SHARED)`` returns one group per host name, so ``local_rank`` /
  ``local_size`` (and everything computed from them: threads per rank, the GPU a rank
  binds to) are those of a multi-node job, also for uneven layouts (``node0:3,node1:1``).
* MPICH's own shared-memory module is per node: the ranks of one name map one
  ``/dev/shm/mpich_shm_*`` segment and ranks of different names share none, so messages
  between "nodes" go through the network module (UCX) instead.
* MPI collectives see a multi-node communicator (MPICH may pick node-aware algorithms).

What it does not reproduce:

* No real network. UCX sees that both ends are on one host and carries the "inter-node"
  messages over its own shared-memory transports (sysv / cma, as ``UCX_PROTO_INFO=y``
  shows); forcing ``UCX_TLS=self,tcp`` fails in MPI_Init here ("Destination is
  unreachable"). Latency, bandwidth, network failures and partitions are not emulated.
* One machine's cores, memory and GPUs are shared by all "nodes": the host names share
  ``os.cpu_count()``; per-node thread counts and GPU counts are pretended in the tests.
* ``MPI.Get_processor_name()`` / ``socket.gethostname()`` still return the real host name
  on every rank; only hydra's grouping changes. The names need not resolve (fork never
  contacts them), and all traffic, including hydra's control connections, stays on
  loopback (``HYDRA_IFACE=lo``, ``UCX_NET_DEVICES=lo`` from :func:`mpirun.mpi_env`).
* Files, the file system and environment variables are shared (no per-node disks).

Every launch runs in a process group of its own (:func:`mpirun.run_group`): a timeout
kills mpiexec, the proxies and every rank, and removes the MPICH segments they leaked.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from mpirun import PRELUDE, mpi_env, mpiexec, remove_stale_mpich_shm, run_group


def hosts(layout) -> str:
    """``(3, 1)`` -> ``"node0:3,node1:1"``: ranks per emulated node, in rank order."""
    layout = tuple(int(r) for r in layout)
    if not 1 <= len(layout) <= 8 or min(layout) < 1:
        raise ValueError(f"layout {layout}: 1 to 8 nodes of at least one rank each")
    return ",".join(f"node{i}:{r}" for i, r in enumerate(layout))


def command(layout, argv) -> list:
    """The mpiexec command line that runs ``argv`` on ``layout`` emulated nodes."""
    return [mpiexec(), "-launcher", "fork", "-hosts", hosts(layout), "-n", str(sum(layout)),
            *map(str, argv)]


def run_nodes(layout, argv, *, timeout: float = 120, check: bool = True, env: dict | None = None,
              cwd=None) -> subprocess.CompletedProcess:
    """Run ``argv`` (a program and its arguments) on every rank of ``layout``."""
    cmd = command(layout, argv)
    proc = run_group(cmd, timeout=timeout, env=mpi_env(env), cwd=cwd)
    if proc.returncode != 0:
        remove_stale_mpich_shm(min_age=0)  # an aborted world leaks its segments
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
                             f"stderr:\n{proc.stderr}")
    return proc


def run_cli_nodes(layout, *args, **kw) -> subprocess.CompletedProcess:
    """``python -m shardlearn ARGS`` on ``layout`` emulated nodes."""
    return run_nodes(layout, [sys.executable, "-m", "shardlearn", *args], **kw)


def run_script_nodes(layout, code: str, tmp_path, **kw) -> subprocess.CompletedProcess:
    """A Python snippet on ``layout`` emulated nodes; ``emit(obj)`` reports a ``RESULT``
    line (parse with :func:`mpirun.json_lines`), as in :func:`mpirun.run_script`."""
    script = Path(tmp_path) / f"cluster_{hosts(layout).replace(':', '-').replace(',', '_')}_{abs(hash(code)) % 10**8}.py"
    script.write_text(PRELUDE + textwrap.dedent(code))
    return run_nodes(layout, [sys.executable, str(script)], **kw)
