"""Launch multi-rank runs from tests: ``mpiexec -n P`` as a subprocess with a timeout.

A deadlock fails the test (TimeoutExpired) instead of hanging CI. All MPI traffic stays
on loopback (UCX_NET_DEVICES=lo, HYDRA_IFACE=lo), and each rank uses one BLAS thread.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
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
    env.update({"UCX_NET_DEVICES": "lo", "HYDRA_IFACE": "lo", "OMP_NUM_THREADS": "1",
                "OPENBLAS_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")})
    if extra:
        env.update(extra)
    return env


def run_cli(nprocs: int, *args, timeout: float = 120, check: bool = True, env: dict | None = None,
            cwd=None) -> subprocess.CompletedProcess:
    """``mpiexec -n nprocs python -m shardlearn ARGS``; returns the finished process."""
    cmd = [mpiexec(), "-n", str(nprocs), sys.executable, "-m", "shardlearn", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=mpi_env(env), cwd=cwd)
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
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=mpi_env(env))
    if check and proc.returncode != 0:
        raise AssertionError(f"{nprocs} ranks of {script} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def json_lines(stdout: str, tag: str = "RESULT ") -> list:
    """Parse lines ``RESULT {json}`` printed by a script (one or more ranks)."""
    return [json.loads(line[len(tag):]) for line in stdout.splitlines() if line.startswith(tag)]
