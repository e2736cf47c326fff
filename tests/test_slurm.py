"""The job scripts in jobs/ against a real Slurm (slurmctld + slurmd + munge on this machine).

A module fixture starts a private single-node Slurm with tests/slurm/start_local_slurm.sh
(installing Debian's packages when missing), every test submits a script with
``sbatch --wait`` at a tiny size (2 tasks), and the fixture stops the daemons at the end.
Where Slurm cannot be installed or run (not root, no apt-get) the tests skip with the
start script's reason; any other start failure is an error.
"""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mpirun import SRC
from slurm.jobkit import JOBS, arrays_with_shape, check_model, model_available, need_model, write_datasets

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
START = ROOT / "tests" / "slurm" / "start_local_slurm.sh"
STOP = ROOT / "tests" / "slurm" / "stop_local_slurm.sh"
JOB_TIMEOUT = 90  # seconds one sbatch --wait may take before the test fails (and cancels it)
_names = itertools.count()


class Slurm:
    """The running local Slurm: its directory and the environment that reaches it."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.conf = directory / "slurm.conf"
        self.env = self._job_env()

    def _job_env(self) -> dict:
        env = dict(os.environ)
        bindir = str(Path(sys.executable).parent)
        env.update({
            "SLURM_CONF": str(self.conf),
            # the job runs this checkout's code with this interpreter's packages
            "PATH": bindir + os.pathsep + env.get("PATH", ""),
            "PYTHONPATH": str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
            "UCX_NET_DEVICES": "lo", "HYDRA_IFACE": "lo", "PYTHONUNBUFFERED": "1",
        })
        if (Path(sys.prefix) / "bin" / "activate").exists():
            env["SHARDLEARN_VENV"] = sys.prefix
        for var in [k for k in env if k.startswith(("SLURM_", "SBATCH_", "SRUN_"))]:
            if var != "SLURM_CONF":  # a test run inside a Slurm job must not leak its job's settings
                del env[var]
        return env

    def cmd(self, *args, timeout=20) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=self.env)

    def submit(self, script, *args, sbatch=(), env=None, cwd, timeout=JOB_TIMEOUT):
        """``sbatch --wait [sbatch...] SCRIPT ARGS`` in ``cwd``; returns a :class:`Job`.

        Every job gets a unique name (so a timed-out one can be cancelled) and a 2-minute
        time limit (so Slurm ends a hung job even if the test runner dies).
        """
        name = f"sl-t{os.getpid()}-{next(_names)}"
        run_env = dict(self.env)
        run_env.update(env or {})
        cmd = ["sbatch", "--wait", "--parsable", f"--job-name={name}", "--time=2", *sbatch,
               str(script), *map(str, args)]
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env=run_env, cwd=cwd)
        except subprocess.TimeoutExpired:
            self.cmd("scancel", f"--name={name}")
            raise AssertionError(f"job {script} did not finish in {timeout}s:\n"
                                 + _read_outputs(Path(cwd), name)) from None
        return Job(name, proc, time.monotonic() - t0, Path(cwd))


class Job:
    def __init__(self, name, proc, seconds, cwd):
        self.name, self.proc, self.seconds, self.cwd = name, proc, seconds, cwd
        self.rc = proc.returncode
        self.id = proc.stdout.strip().split(";")[0]

    @property
    def output(self) -> str:
        """Everything the job (all array tasks) wrote to its output files."""
        return _read_outputs(self.cwd, self.name)

    def describe(self) -> str:
        return (f"job {self.name} ({self.id}) exited {self.rc} after {self.seconds:.1f}s\n"
                f"sbatch stderr: {self.proc.stderr}\njob output:\n{self.output}")


def _read_outputs(cwd: Path, name: str) -> str:
    files = sorted(cwd.glob(f"{name}-*.out"))
    return "\n".join(f"==> {f.name}\n{f.read_text(errors='replace')}" for f in files) or "(no output file)"


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def slurm():
    if shutil.which("bash") is None or sys.platform != "linux":
        pytest.skip("local Slurm needs Linux and bash")
    proc = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=300)
    if proc.returncode == 3:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, f"start_local_slurm.sh failed ({proc.returncode}):\n{proc.stderr}"
    cluster = Slurm(Path(proc.stdout.strip().splitlines()[-1]))
    try:
        yield cluster
    finally:
        subprocess.run(["bash", str(STOP)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_datasets(tmp_path_factory.mktemp("slurm-data"))


# ---------------------------------------------------------------------- the cluster
def test_local_slurm_is_up_and_restart_reuses_it(slurm):
    info = slurm.cmd("sinfo", "-h", "-N", "-o", "%N %T %c %G")
    assert info.returncode == 0, info.stderr
    node, state, cpus, gres = info.stdout.split()
    assert (node, state, gres) == ("localhost", "idle", "gpu:2"), info.stdout
    assert int(cpus) >= 2
    # a second start (an earlier run left the daemons up) reuses them instead of failing
    again = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "reusing" in again.stderr
    assert Path(again.stdout.strip()) == slurm.dir


# ------------------------------------------------------------------------ job scripts
def test_kmeans_sbatch(slurm, data, tmp_path):
    need_model("kmeans")
    job = slurm.submit(JOBS / "kmeans.sbatch", sbatch=["--ntasks=2"], cwd=tmp_path,
                       env={"DATA": data["blobs"], "K": "3", "LABELS_OUT": "runs/labels.h5"})
    assert job.rc == 0, job.describe()
    out = job.output
    assert f"kmeans: 2 ranks on 1 node(s) (localhost), data {data['blobs']}, k=3" in out
    model = tmp_path / "runs" / f"kmeans-{job.id}.h5"
    assert f"kmeans done: model runs/kmeans-{job.id}.h5, report runs/kmeans-{job.id}.json, labels runs/labels.h5" in out
    facts = check_model(model, "kmeans")
    assert arrays_with_shape(facts["arrays"], (3, 4)), f"no (3, 4) centroids in {sorted(facts['arrays'])}"
    import h5py

    with h5py.File(tmp_path / "runs" / "labels.h5") as h:
        labels = [h[k][()] for k in h if h[k].shape[:1] == (300,)]
    assert labels and set(np.unique(labels[0])) <= {0, 1, 2}


def test_logistic_sbatch_with_evaluation(slurm, data, tmp_path):
    need_model("logistic")
    job = slurm.submit(JOBS / "logistic.sbatch", sbatch=["--ntasks=2"], cwd=tmp_path,
                       env={"DATA": data["classification"], "TEST_DATA": data["classification"]})
    assert job.rc == 0, job.describe()
    check_model(tmp_path / "runs" / f"logistic-{job.id}.h5", "logistic")
    assert f"logistic done: model runs/logistic-{job.id}.h5, report runs/logistic-{job.id}.json" in job.output
    assert "accuracy=" in job.output, job.output  # the evaluate step's metric line


def test_gbdt_sbatch(slurm, data, tmp_path):
    need_model("gbdt")
    job = slurm.submit(JOBS / "gbdt.sbatch", sbatch=["--ntasks=2"], cwd=tmp_path,
                       env={"DATA": data["classification"], "TREES": "4", "LEAVES": "4",
                            "OUT": str(tmp_path / "m" / "gbdt.h5")})
    assert job.rc == 0, job.describe()
    facts = check_model(tmp_path / "m" / "gbdt.h5", "gbdt")
    assert f"gbdt done: model {tmp_path}/m/gbdt.h5, report {tmp_path}/m/gbdt.json" in job.output
    assert "4 trees x 4 leaves, binary" in job.output
    assert facts["report"]["runtime"]["ranks"] == 2


def test_multinode_sbatch_on_one_node(slurm, data, tmp_path):
    """The multi-node example with its node/task counts overridden to fit one node."""
    need_model("gbdt")
    job = slurm.submit(JOBS / "multinode.sbatch", cwd=tmp_path,
                       sbatch=["--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1"],
                       env={"DATA": data["classification"], "TREES": "3", "LEAVES": "4",
                            "TOPOLOGY": "native"})
    assert job.rc == 0, job.describe()
    facts = check_model(tmp_path / "runs" / f"gbdt-{job.id}.h5", "gbdt")
    assert facts["report"]["runtime"]["topology"] == "native"
    assert "topology native" in job.output


def test_gpu_sbatch_binds_one_gpu_per_rank(slurm, data, tmp_path):
    """Slurm schedules the GPU script (two pretend GPUs), gives each task its own device;
    the ranks compute on CPU here (DEVICE=cpu: no CUDA on this machine)."""
    need_model("kmeans")
    job = slurm.submit(JOBS / "gpu.sbatch", cwd=tmp_path,
                       sbatch=["--ntasks-per-node=2", "--cpus-per-task=1"],
                       env={"DATA": data["blobs"], "K": "3", "DEVICE": "cpu"})
    assert job.rc == 0, job.describe()
    out = job.output
    bound = sorted(line.split("CUDA_VISIBLE_DEVICES=")[1] for line in out.splitlines()
                   if line.startswith("task ") and "CUDA_VISIBLE_DEVICES=" in line)
    assert bound == ["0", "1"], out  # each rank sees exactly one, different GPU
    check_model(tmp_path / "runs" / f"kmeans-gpu-{job.id}.h5", "kmeans")


def test_sweep_array_writes_one_model_per_task(slurm, data, tmp_path):
    need_model("kmeans")
    job = slurm.submit(JOBS / "sweep.sbatch", cwd=tmp_path,
                       sbatch=["--array=0-2", "--ntasks=2"],
                       env={"DATA": data["blobs"], "VALUES": "2 3 4", "OUT_DIR": "sweep"})
    assert job.rc == 0, job.describe()
    outputs = sorted(tmp_path.glob(f"{job.name}-*_*.out"))
    assert len(outputs) == 3, job.output
    for task, k in enumerate((2, 3, 4)):
        text = (tmp_path / f"{job.name}-{job.id}_{task}.out").read_text()
        assert f"sweep task {task} done: model sweep/kmeans-k-{k}.h5, report sweep/kmeans-k-{k}.json" in text
        facts = check_model(tmp_path / "sweep" / f"kmeans-k-{k}.h5", "kmeans")
        assert arrays_with_shape(facts["arrays"], (k, 4)), f"no ({k}, 4) centroids"


# ------------------------------------------------------------------------- failures
def test_missing_data_fails_fast_with_message(slurm, tmp_path):
    job = slurm.submit(JOBS / "kmeans.sbatch", sbatch=["--ntasks=2"], cwd=tmp_path,
                       env={"DATA": str(tmp_path / "no-such-data"), "K": "3"})
    assert job.rc != 0, job.describe()
    out = job.output
    assert "shardlearn: error:" in out, out
    if model_available("kmeans"):
        assert "no-such-data" in out, out  # the message names the missing path
    assert "kmeans done" not in out
    assert job.seconds < 30, job.describe()


def test_invalid_option_fails_fast_with_message(slurm, data, tmp_path):
    job = slurm.submit(JOBS / "logistic.sbatch", "--no-such-option", "7", sbatch=["--ntasks=2"],
                       cwd=tmp_path, env={"DATA": data["classification"]})
    assert job.rc != 0, job.describe()
    assert "shardlearn: error:" in job.output
    if model_available("logistic"):
        assert "unrecognized arguments: --no-such-option 7" in job.output, job.output
    assert "logistic done" not in job.output
    assert job.seconds < 30, job.describe()


def test_sweep_task_without_value_fails(slurm, tmp_path):
    job = slurm.submit(JOBS / "sweep.sbatch", cwd=tmp_path, sbatch=["--array=3", "--ntasks=1"],
                       env={"VALUES": "2 3 4"})
    assert job.rc == 2, job.describe()
    assert "array task 3 has no value: VALUES has 3 (2 3 4); submit with --array=0-2" in job.output


SPMD_CHECK = """\
import sys
from shardlearn.runtime import install_abort_hook, init
install_abort_hook()
ctx = init(verbose=True)
import numpy as np
total = ctx.coll.allreduce(np.array([ctx.rank + 1.0]))
ctx.log(f"world {ctx.size} sum {total[0]:g}")
if sys.argv[1:] == ["fail"] and ctx.rank == 1:
    raise RuntimeError("rank 1 breaks on purpose")
ctx.mpi_comm.Barrier()   # rank 0 waits here for a rank that never comes
ctx.log("all ranks passed the barrier")
"""


def _job_script(tmp_path, name: str, body: str) -> Path:
    (tmp_path / "spmd_check.py").write_text(SPMD_CHECK)
    script = tmp_path / name
    script.write_text("#!/usr/bin/env bash\n#SBATCH --ntasks=2\n#SBATCH --output=%x-%j.out\n"
                      "set -euo pipefail\n" + body)
    return script


def test_failing_rank_ends_the_job(slurm, tmp_path):
    """One rank raises while the other waits in a barrier: the abort hook ends the job."""
    script = _job_script(tmp_path, "fail.sbatch",
                         f"srun --mpi=pmi2 --kill-on-bad-exit=1 python {tmp_path}/spmd_check.py fail\n")
    job = slurm.submit(script, cwd=tmp_path)
    out = job.output
    assert job.rc != 0, job.describe()
    assert "world 2 sum 3" in out, out
    assert "shardlearn: rank 1: unexpected error, aborting all 2 ranks" in out
    assert "RuntimeError: rank 1 breaks on purpose" in out
    assert "all ranks passed the barrier" not in out
    assert job.seconds < 30, job.describe()


def test_srun_pmi2_connects_and_plain_srun_is_refused(slurm, tmp_path):
    """srun --mpi=pmi2 gives one world of 2; plain srun (MpiDefault=none) gives two worlds
    of size 1, which runtime.init refuses with a message (SLURM_STEP_NUM_TASKS=2)."""
    script = _job_script(tmp_path, "plain.sbatch",
                         f"srun --mpi=pmi2 python {tmp_path}/spmd_check.py\n"
                         f"mpiexec -n $SLURM_NTASKS python {tmp_path}/spmd_check.py\n"
                         "srun python -m shardlearn make-data blobs --rows 10 --features 2 --out x.h5\n"
                         "echo not reached\n")
    job = slurm.submit(script, cwd=tmp_path)
    out = job.output
    assert job.rc != 0, job.describe()
    assert out.count("world 2 sum 3") == 2, out             # srun --mpi=pmi2 and mpiexec
    assert out.count("all ranks passed the barrier") == 2, out
    assert "world 1" not in out, out                       # no rank trained alone
    assert "Slurm started 2 tasks but each sees an MPI world of size 1" in out, out
    assert "srun --mpi=pmi2" in out and "not reached" not in out
