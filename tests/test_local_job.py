"""jobs/local.sh: the batch jobs' twin for one machine (mpiexec, no Slurm)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


from mpirun import mpi_env, run_group
from slurm.jobkit import JOBS, arrays_with_shape, check_model, write_datasets

LOCAL = JOBS / "local.sh"


def run_local(*args, env=None, cwd, timeout=120) -> subprocess.CompletedProcess:
    """``jobs/local.sh ARGS`` with this interpreter first on PATH (its mpiexec, its packages)."""
    run_env = mpi_env(env)
    run_env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + run_env.get("PATH", "")
    run_env.pop("OMP_NUM_THREADS", None)  # local.sh sets threads per rank itself
    return run_group(["bash", str(LOCAL), *map(str, args)], timeout=timeout, env=run_env, cwd=cwd)


def test_local_kmeans_writes_model_and_report(tmp_path):
    data = write_datasets(tmp_path)
    proc = run_local("kmeans", env={"NP": "2", "K": "3", "DATA": data["blobs"]}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "kmeans done: model runs/kmeans-local.h5, report runs/kmeans-local.json" in proc.stdout
    facts = check_model(tmp_path / "runs" / "kmeans-local.h5", "kmeans", ranks=2)
    assert arrays_with_shape(facts["arrays"], (3, 4))


def test_local_usage_and_bad_input(tmp_path):
    proc = run_local(cwd=tmp_path)
    assert proc.returncode == 2 and "usage: jobs/local.sh" in proc.stderr
    proc = run_local("kmeans", env={"DATA": str(tmp_path / "missing")}, cwd=tmp_path)
    assert proc.returncode != 0
    assert "shardlearn: error:" in proc.stderr, proc.stderr
    assert f"{tmp_path / 'missing'}: no such file" in proc.stderr, proc.stderr
    assert "kmeans done" not in proc.stdout


def test_batch_scripts_refuse_to_run_outside_slurm(tmp_path):
    """Run by mistake with bash, a batch script says to use sbatch (or local.sh) at once."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    for script in sorted(JOBS.glob("*.sbatch")):
        proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=20,
                              env=env, cwd=tmp_path)
        assert proc.returncode != 0, script
        assert "submit this script with sbatch (jobs/local.sh runs the same job without Slurm)" in proc.stderr
    assert not (tmp_path / "runs").exists()
