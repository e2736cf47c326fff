"""Launch multi-rank runs from tests: ``mpiexec -n P`` as a subprocess with a timeout.

A deadlock fails the test (TimeoutExpired) instead of hanging CI: ``mpiexec`` starts in a
process group of its own, and on a timeout the whole group (launcher, proxies and every
rank) is killed, so no rank is left spinning. All MPI traffic stays on loopback
(UCX_NET_DEVICES=lo, HYDRA_IFACE=lo), and each rank uses one BLAS thread.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def mpiexec() -> str:
    """The mpiexec beside this Python (the venv's MPICH), else the one on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    if here.exists():
        return str(here)
    found = shutil.which("mpiexec")
    if not found:
        raise RuntimeError("no mpiexec: run 'make setup' (pip-installs MPICH into .venv)")
    return found


def mpi_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    # the stall watchdog is on in the tests: a hang prints every rank's stack and ends
    env.update({"UCX_NET_DEVICES": "lo", "HYDRA_IFACE": "lo", "OMP_NUM_THREADS": "1",
                "OPENBLAS_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "SHARDLEARN_STALL_TIMEOUT": "90",
                "PYTHONPATH": str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")})
    if extra:
        env.update(extra)
    return env


def remove_stale_mpich_shm(names=None, min_age: float = 5.0) -> int:
    """Delete MPICH shared-memory segments in /dev/shm that no live process maps.

    A world that ends in MPI_Abort (the error tests do that on purpose) leaks its
    segments; MPICH names them after the launcher's job id (the mpiexec PID, or the Slurm
    JOBID.STEP), so once a PID is reused a later run can attach to stale contents and fail
    in MPI_Init. Only this user's segments older than ``min_age`` seconds (not one a
    starting job has just created) and mapped by no process are removed. ``names``
    restricts the removal to those file names. Returns how many were removed.
    """
    shm = Path("/dev/shm")
    if not shm.is_dir():
        return 0
    candidates = [p for p in shm.glob("mpich_*") if names is None or p.name in names]
    now, uid = time.time(), os.getuid()
    candidates = [p for p in candidates if _owned_and_old(p, uid, now - min_age)]
    if not candidates:
        return 0
    mapped = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            mapped.update(line.rsplit("/", 1)[-1].strip() for line in maps.read_text().splitlines()
                          if "/dev/shm/mpich_" in line)
        except OSError:  # the process ended, or is not ours to read
            pass
    removed = 0
    for path in candidates:
        if path.name not in mapped:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _owned_and_old(path: Path, uid: int, before: float) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_uid == uid and st.st_mtime < before


def run_group(cmd: list, *, timeout: float, env: dict, cwd=None) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True, timeout=...)`` with the command
    in a new process group (session) that is killed whole on a timeout, before
    ``TimeoutExpired`` is raised."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=cwd, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        remove_stale_mpich_shm(min_age=0)
        raise subprocess.TimeoutExpired(cmd, timeout, output=out, stderr=err) from None
    except BaseException:
        kill_group(proc)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``'s process group and every descendant of ``proc``.

    Hydra's proxies and the ranks start sessions of their own, so the group alone does not
    reach them: the descendants are found by walking /proc (parent pids) first.
    """
    for pid in [*descendants(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def descendants(root: int) -> list:
    """Pids of every process below ``root`` (children first found, then theirs)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def run_cli(nprocs: int, *args, timeout: float = 120, check: bool = True, env: dict | None = None,
            cwd=None) -> subprocess.CompletedProcess:
    """``mpiexec -n nprocs python -m shardlearn ARGS``; returns the finished process."""
    cmd = [mpiexec(), "-n", str(nprocs), sys.executable, "-m", "shardlearn", *map(str, args)]
    proc = run_group(cmd, timeout=timeout, env=mpi_env(env), cwd=cwd)
    if proc.returncode != 0:
        remove_stale_mpich_shm(min_age=0)  # an aborted world leaks its segments
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


PRELUDE = (
    "import json as _json, sys as _sys\n"
    "def emit(obj):\n"
    "    # one write per line, so lines from several ranks never interleave\n"
    "    _sys.stdout.write('RESULT ' + _json.dumps(obj) + '\\n')\n"
    "    _sys.stdout.flush()\n"
)


def run_script(nprocs: int, code: str, tmp_path, *, timeout: float = 120, check: bool = True,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a Python snippet on ``nprocs`` ranks (written to a file in ``tmp_path``).

    The snippet can call ``emit(obj)`` to report a ``RESULT {json}`` line as one write
    (parse them with :func:`json_lines`); a bare ``print`` may interleave across ranks.
    """
    script = Path(tmp_path) / f"script_{abs(hash(code)) % 10**8}.py"
    script.write_text(PRELUDE + textwrap.dedent(code))
    cmd = [mpiexec(), "-n", str(nprocs), sys.executable, str(script)]
    proc = run_group(cmd, timeout=timeout, env=mpi_env(env))
    if proc.returncode != 0:
        remove_stale_mpich_shm(min_age=0)  # an aborted world leaks its segments
    if check and proc.returncode != 0:
        raise AssertionError(f"{nprocs} ranks of {script} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def json_lines(stdout: str, tag: str = "RESULT ") -> list:
    """Parse lines ``RESULT {json}`` printed by a script (one or more ranks)."""
    return [json.loads(line[len(tag):]) for line in stdout.splitlines() if line.startswith(tag)]
