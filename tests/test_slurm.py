"""The job scripts in jobs/ against a real Slurm (slurmctld + slurmd + munge on this machine).

A module fixture starts a private single-node Slurm with tests/slurm/start_local_slurm.sh
(installing Debian's packages when missing) and stops its daemons at the end. Every job is
submitted with ``sbatch --wait`` at a tiny size (2 tasks); to keep the suite short, all jobs
are submitted together when the first test asks for one (Slurm runs them side by side on the
node's 4 advertised CPUs) and each test then waits for its own job and checks exit code,
output file, model and report. Where Slurm cannot be installed or run (not root, no
apt-get) the tests skip with the start script's reason; any other start failure is an error.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from mpirun import SRC, remove_stale_mpich_shm
from slurm.jobkit import JOBS, arrays_with_shape, check_model, write_datasets

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
START = ROOT / "tests" / "slurm" / "start_local_slurm.sh"
STOP = ROOT / "tests" / "slurm" / "stop_local_slurm.sh"
KM_ARGS = ("--tol", "0", "--max-iter", "30", "--seed", "3")  # k=8 on 300 random rows: many iterations
JOB_TIMEOUT = 150  # seconds from submission until a job counts as hung (then it is cancelled)
FAST = 60          # a failing job must end within this many seconds (all jobs run at once)
_names = itertools.count()


class Slurm:
    """The running local Slurm: its directory and the environment that reaches it."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.conf = directory / "slurm.conf"
        self.env = self._job_env()

    def _job_env(self) -> dict:
        env = {k: v for k, v in os.environ.items()
               # a test run inside a Slurm job must not leak that job's settings
               if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
        env.update({
            "SLURM_CONF": str(self.conf),
            # the job runs this checkout's code with this interpreter and its packages
            "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
            "PYTHONPATH": str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
            "UCX_NET_DEVICES": "lo", "HYDRA_IFACE": "lo", "PYTHONUNBUFFERED": "1",
        })
        if (Path(sys.prefix) / "bin" / "activate").exists():
            env["SHARDLEARN_VENV"] = sys.prefix  # the scripts' own activation hook
        return env

    def cmd(self, *args, timeout=20) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=self.env)

    def submit(self, script, *args, sbatch=(), env=None, cwd) -> "Job":
        """Start ``sbatch --wait [sbatch...] SCRIPT ARGS`` in ``cwd``; returns a :class:`Job`.

        Every job gets a unique name (so a hung one can be cancelled) and a 3-minute time
        limit (so Slurm ends it even if the test runner dies).
        """
        name = f"sl-t{os.getpid()}-{next(_names)}"
        run_env = dict(self.env)
        run_env.update(env or {})
        cmd = ["sbatch", "--wait", "--parsable", f"--job-name={name}", "--time=3", *sbatch,
               str(script), *map(str, args)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=run_env, cwd=cwd)
        job = Job(self, name, proc, Path(cwd))
        job.env = dict(env or {})
        return job


class Job:
    """One submitted job; :meth:`wait` blocks until ``sbatch --wait`` returns."""

    def __init__(self, slurm, name, proc, cwd):
        self.slurm, self.name, self.proc, self.cwd = slurm, name, proc, cwd
        self.t0 = time.monotonic()
        self.rc = self.id = self.seconds = None
        self.stderr = ""

    def wait(self) -> "Job":
        if self.rc is None:
            left = max(1.0, JOB_TIMEOUT - (time.monotonic() - self.t0))
            try:
                out, self.stderr = self.proc.communicate(timeout=left)
            except subprocess.TimeoutExpired:
                self.cancel()
                raise AssertionError(f"job {self.name} did not finish in {JOB_TIMEOUT}s:\n{self.output}") from None
            self.seconds = time.monotonic() - self.t0
            self.rc = self.proc.returncode
            self.id = out.strip().split(";")[0]
        return self

    def cancel(self) -> None:
        if self.proc.poll() is None:
            self.slurm.cmd("scancel", f"--name={self.name}")
            self.proc.kill()
            self.proc.communicate()

    def states(self) -> dict:
        """Job (and array task) id -> (state, exit code) from Slurm's completion log
        (``sacct -c``: there is no accounting daemon; jobcomp/filetxt records each end)."""
        # (sacct -c ignores --name and knows array tasks only by their own ids: filter here)
        proc = self.slurm.cmd("sacct", "-c", "-n", "-P", "-o", "jobid,state,exitcode,jobname")
        assert proc.returncode == 0, proc.stderr
        rows = [line.split("|") for line in proc.stdout.splitlines() if line.count("|") == 3]
        return {r[0]: (r[1], r[2]) for r in rows if r[3] == self.name}

    @property
    def output(self) -> str:
        """Everything the job (all array tasks) wrote to its output files."""
        files = sorted(self.cwd.glob(f"{self.name}-*.out"))
        return "\n".join(f"==> {f.name}\n{f.read_text(errors='replace')}" for f in files) or "(no output file)"

    def describe(self) -> str:
        return (f"job {self.name} ({self.id}) exited {self.rc} after {self.seconds:.1f}s\n"
                f"sbatch stderr: {self.stderr}\njob output:\n{self.output}")


# --------------------------------------------------------------------------- fixtures
SESSION_PREFIX = "shardlearn-slurm-test-"


def _sweep_stale_clusters() -> None:
    """Stop and remove the private clusters of earlier test runs that died without stopping
    them (their owner process is gone); clusters of test runs still going are left alone."""
    for d in Path(tempfile.gettempdir()).glob(SESSION_PREFIX + "*"):
        try:
            os.kill(int(d.name[len(SESSION_PREFIX):]), 0)  # the directory is named after its run
            continue  # that test run is still going
        except (OSError, ValueError):
            pass
        subprocess.run(["bash", str(STOP), "--quiet"], capture_output=True, timeout=120,
                       env={**os.environ, "SHARDLEARN_SLURM_DIR": str(d)})
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def slurm():
    """A private Slurm for this test run: its own directory, ports and job ids, so test runs
    side by side (or a person's own local Slurm) do not meet; stopped at the end."""
    if shutil.which("bash") is None or sys.platform != "linux":
        pytest.skip("a local Slurm needs Linux and bash")
    _sweep_stale_clusters()
    directory = Path(tempfile.gettempdir()) / f"{SESSION_PREFIX}{os.getpid()}"
    env = {**os.environ, "SHARDLEARN_SLURM_DIR": str(directory)}
    proc = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=300, env=env)
    if proc.returncode == 3:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, f"start_local_slurm.sh failed ({proc.returncode}):\n{proc.stderr}"
    cluster = Slurm(directory)
    try:
        yield cluster
    finally:
        # the directory stays for its logs; the next test run's sweep removes it
        subprocess.run(["bash", str(STOP)], capture_output=True, text=True, timeout=120, env=env)


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
ctx.mpi_comm.Barrier()   # with "fail": rank 0 waits here for a rank that never comes
ctx.log("all ranks passed the barrier")
"""


def _job_script(cwd: Path, name: str, body: str) -> Path:
    (cwd / "spmd_check.py").write_text(SPMD_CHECK)
    script = cwd / name
    script.write_text("#!/usr/bin/env bash\n#SBATCH --ntasks=2\n#SBATCH --output=%x-%j.out\n"
                      "set -euo pipefail\n" + body)
    return script


@pytest.fixture(scope="module")
def jobs(slurm, tmp_path_factory):
    """Submit every job at once; yields label -> Job (jobs of missing models are left out)."""
    data = write_datasets(tmp_path_factory.mktemp("slurm-data"))
    blobs, clf = data["blobs"], data["classification"]
    specs = {  # label: (model needed, script, args, sbatch options, environment)
        "kmeans": ("kmeans", JOBS / "kmeans.sbatch", (), ["--ntasks=2"],
                   {"DATA": blobs, "K": "3", "LABELS_OUT": "runs/labels.h5"}),
        "logistic": ("logistic", JOBS / "logistic.sbatch", (), ["--ntasks=2"],
                     {"DATA": clf, "TEST_DATA": clf}),
        "gbdt": ("gbdt", JOBS / "gbdt.sbatch", (), ["--ntasks=2"],
                 {"DATA": clf, "TREES": "4", "LEAVES": "4", "OUT": "{cwd}/m/gbdt.h5"}),
        "multinode": ("gbdt", JOBS / "multinode.sbatch", (),
                      ["--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1"],
                      {"DATA": clf, "TREES": "3", "LEAVES": "4", "TOPOLOGY": "native"}),
        "gpu": ("kmeans", JOBS / "gpu.sbatch", (), ["--ntasks-per-node=2", "--cpus-per-task=1"],
                {"DATA": blobs, "K": "3", "DEVICE": "cpu"}),
        "sweep": ("kmeans", JOBS / "sweep.sbatch", (), ["--array=0-2", "--ntasks=2"],
                  {"DATA": blobs, "VALUES": "2 3 4", "OUT_DIR": "sweep"}),
        "missing_data": (None, JOBS / "kmeans.sbatch", (), ["--ntasks=2"],
                         {"DATA": "{cwd}/no-such-data", "K": "3"}),
        "bad_option": (None, JOBS / "logistic.sbatch", ("--no-such-option", "7"), ["--ntasks=2"],
                       {"DATA": clf}),
        "sweep_no_value": (None, JOBS / "sweep.sbatch", (), ["--array=3", "--ntasks=1"],
                           {"VALUES": "2 3 4"}),
        "failing_rank": (None, "fail.sbatch", (), [], {}),
        "plain_srun": (None, "plain.sbatch", (), [], {}),
        # checkpoints: the same k-means run uninterrupted, stopped by SIGUSR1 (as Slurm sends
        # before a time limit) and requeued, and with a rank SIGKILLed (resumed by the test)
        "ckpt_plain": (None, JOBS / "kmeans.sbatch", KM_ARGS, ["--ntasks=2"], {"DATA": clf, "K": "8"}),
        "ckpt_requeue": (None, "requeue.sbatch", KM_ARGS, ["--requeue", "--open-mode=append"],
                         {"DATA": clf, "K": "8", "CHECKPOINT": "ckpt", "REQUEUE": "1"}),
        "ckpt_killed": (None, "killed.sbatch", KM_ARGS + ("--checkpoint-every", "1"), [],
                        {"DATA": clf, "K": "8", "CHECKPOINT": "ckpt", "OUT": "runs/km.h5"}),
    }
    submitted = {}
    for label, (model, script, args, sbatch, env) in specs.items():
        cwd = tmp_path_factory.mktemp(label)
        if label == "failing_rank":
            script = _job_script(cwd, script, "srun --mpi=pmi2 --kill-on-bad-exit=1 python spmd_check.py fail\n")
        elif label == "plain_srun":
            script = _job_script(cwd, script, "srun --mpi=pmi2 python spmd_check.py\n"
                                              "mpiexec -n $SLURM_NTASKS python spmd_check.py\n"
                                              "srun --mpi=pmi2 python -m shardlearn bench-comm "
                                              "--sizes 8,1K --repeats 3\n"
                                              "srun python -m shardlearn make-data blobs --rows 10 "
                                              "--features 2 --out x.h5\n"
                                              "echo not reached\n")
        elif label == "ckpt_requeue":  # the first start stops at its 3rd step boundary; the requeued one resumes
            script = _job_script(cwd, script, 'if [[ -z ${SLURM_RESTART_COUNT:-} ]]; then '
                                              'export SHARDLEARN_FAULT="step@1:usr1#3"; fi\n'
                                              f'bash {JOBS / "kmeans.sbatch"} "$@"\n')
        elif label == "ckpt_killed":
            script = _job_script(cwd, script, 'SHARDLEARN_FAULT="step@1:kill#4" '
                                              f'bash {JOBS / "kmeans.sbatch"} "$@"\n')
        env = {k: v.format(cwd=cwd) for k, v in env.items()}
        submitted[label] = slurm.submit(script, *args, sbatch=sbatch, env=env, cwd=cwd)
    try:
        yield submitted
    finally:
        for job in submitted.values():
            job.cancel()
        ids = [jid for job in submitted.values() if job.rc is not None for jid in job.states()]
        _remove_leaked_mpich_shm(ids)


def _fnv1a(text: str) -> int:
    h = 2166136261
    for b in text.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def _remove_leaked_mpich_shm(job_ids) -> None:
    """Delete the segments MPICH leaks when our failing-rank job aborts on purpose: under
    srun they are named after the FNV-1a hash of the PMI job name JOBID.STEP."""
    remove_stale_mpich_shm({f"{prefix}{_fnv1a(f'{jid}.{step}'):x}_0" for jid in job_ids
                            for step in range(4) for prefix in ("mpich_shm_", "mpich_vci_")}, min_age=0)


def finished(jobs, label) -> Job:
    return jobs[label].wait()


# ---------------------------------------------------------------------- the cluster
def test_local_slurm_is_up_and_restart_reuses_it(slurm):
    info = slurm.cmd("sinfo", "-h", "-N", "-o", "%N %c %G")
    assert info.returncode == 0, info.stderr
    node, cpus, gres = info.stdout.split()
    assert (node, gres) == ("localhost", "gpu:2") and int(cpus) >= 2, info.stdout
    # a second start (an earlier run left the daemons up) reuses them instead of failing
    again = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "SHARDLEARN_SLURM_DIR": str(slurm.dir)})
    assert again.returncode == 0, again.stderr
    assert "reusing" in again.stderr
    assert Path(again.stdout.strip()) == slurm.dir


# ------------------------------------------------------------------------ job scripts
def test_kmeans_sbatch(jobs):
    job = finished(jobs, "kmeans")
    assert job.rc == 0, job.describe()
    out, cwd = job.output, job.cwd
    assert "kmeans: 2 ranks on 1 node(s) (localhost), data " in out and ", k=3" in out
    assert (f"kmeans done: model runs/kmeans-{job.id}.h5, report runs/kmeans-{job.id}.json, "
            "labels runs/labels.h5") in out
    assert job.states() == {job.id: ("COMPLETED", "0:0")}
    facts = check_model(cwd / "runs" / f"kmeans-{job.id}.h5", "kmeans")
    assert arrays_with_shape(facts["arrays"], (3, 4)), f"no (3, 4) centroids in {sorted(facts['arrays'])}"
    import h5py

    with h5py.File(cwd / "runs" / "labels.h5") as h:
        labels = h["labels"][()]
    # the blobs lie far apart: rows of one generating cluster (row i is in i % 3) share a label
    assert labels.shape == (300,)
    assert len(set(labels[:3])) == 3
    assert np.array_equal(labels, np.tile(labels[:3], 100))


def test_logistic_sbatch_with_evaluation(jobs):
    job = finished(jobs, "logistic")
    assert job.rc == 0, job.describe()
    check_model(job.cwd / "runs" / f"logistic-{job.id}.h5", "logistic")
    assert f"logistic done: model runs/logistic-{job.id}.h5, report runs/logistic-{job.id}.json" in job.output
    assert "accuracy=" in job.output, job.output  # the evaluate step's metric line


def test_gbdt_sbatch(jobs):
    job = finished(jobs, "gbdt")
    assert job.rc == 0, job.describe()
    check_model(job.cwd / "m" / "gbdt.h5", "gbdt")
    assert f"gbdt done: model {job.cwd}/m/gbdt.h5, report {job.cwd}/m/gbdt.json" in job.output
    assert "4 trees x 4 leaves, binary" in job.output


def test_multinode_sbatch_on_one_node(jobs):
    """The multi-node example with its node and task counts overridden to fit one node."""
    job = finished(jobs, "multinode")
    assert job.rc == 0, job.describe()
    facts = check_model(job.cwd / "runs" / f"gbdt-{job.id}.h5", "gbdt")
    assert facts["report"]["runtime"]["topology"] == "native"
    assert "topology native" in job.output


def test_gpu_sbatch_binds_one_gpu_per_rank(jobs):
    """Slurm schedules the GPU script on the node's two pretend GPUs and gives each task its
    own; the ranks compute on CPU here (DEVICE=cpu: no CUDA on this machine)."""
    job = finished(jobs, "gpu")
    assert job.rc == 0, job.describe()
    bound = sorted(line.split("CUDA_VISIBLE_DEVICES=")[1] for line in job.output.splitlines()
                   if line.startswith("task ") and "CUDA_VISIBLE_DEVICES=" in line)
    assert bound == ["0", "1"], job.output  # each rank sees exactly one, different GPU
    check_model(job.cwd / "runs" / f"kmeans-gpu-{job.id}.h5", "kmeans")


def test_sweep_array_writes_one_model_per_task(jobs):
    job = finished(jobs, "sweep")
    assert job.rc == 0, job.describe()
    assert len(list(job.cwd.glob(f"{job.name}-*_*.out"))) == 3, job.output
    assert set(job.states().values()) == {("COMPLETED", "0:0")} and len(job.states()) == 3, job.states()
    for task, k in enumerate((2, 3, 4)):
        text = (job.cwd / f"{job.name}-{job.id}_{task}.out").read_text()
        assert f"sweep task {task} done: model sweep/kmeans-k-{k}.h5, report sweep/kmeans-k-{k}.json" in text
        facts = check_model(job.cwd / "sweep" / f"kmeans-k-{k}.h5", "kmeans")
        assert arrays_with_shape(facts["arrays"], (k, 4)), f"no ({k}, 4) centroids"


# ------------------------------------------------------------------------- failures
def test_missing_data_fails_fast_with_message(jobs):
    job = finished(jobs, "missing_data")
    assert job.rc != 0, job.describe()
    out = job.output
    assert "shardlearn: error:" in out, out
    assert "no-such-data" in out, out  # the message names the missing path
    assert "kmeans done" not in out
    assert job.seconds < FAST, job.describe()


def test_invalid_option_fails_fast_with_message(jobs):
    job = finished(jobs, "bad_option")
    assert job.rc != 0, job.describe()
    assert "shardlearn: error:" in job.output
    assert "unrecognized arguments: --no-such-option 7" in job.output, job.output
    assert "logistic done" not in job.output
    assert job.seconds < FAST, job.describe()


def test_sweep_task_without_value_fails(jobs):
    job = finished(jobs, "sweep_no_value")
    assert job.rc == 2, job.describe()
    assert "array task 3 has no value: VALUES has 3 (2 3 4); submit with --array=0-2" in job.output


def test_failing_rank_ends_the_job(jobs):
    """One rank raises while the other waits in a barrier: the abort hook ends the job."""
    job = finished(jobs, "failing_rank")
    out = job.output
    assert job.rc != 0, job.describe()
    assert "world 2 sum 3" in out, out
    assert "shardlearn: rank 1: unexpected error, aborting all 2 ranks" in out
    assert "RuntimeError: rank 1 breaks on purpose" in out
    assert "all ranks passed the barrier" not in out
    assert job.seconds < FAST, job.describe()
    state, code = job.states()[job.id]
    assert state == "FAILED" and code != "0:0", (state, code)


def test_srun_pmi2_connects_and_plain_srun_is_refused(jobs):
    """srun --mpi=pmi2 and mpiexec give one world of 2 (and bench-comm runs under srun); plain
    srun (MpiDefault=none) gives two worlds of size 1, which runtime.init refuses with a
    message (SLURM_STEP_NUM_TASKS=2)."""
    job = finished(jobs, "plain_srun")
    out = job.output
    assert job.rc != 0, job.describe()
    assert out.count("world 2 sum 3") == 2, out             # srun --mpi=pmi2, then mpiexec
    assert out.count("all ranks passed the barrier") == 2, out
    assert "world 1" not in out, out
    assert "allreduce float64 sum, 2 ranks" in out, out    # bench-comm, as jobs/README.md says
    assert "Slurm started 2 tasks but each sees an MPI world of size 1" in out, out
    assert "srun --mpi=pmi2" in out and "not reached" not in out


# ------------------------------------------------------------------------ checkpoints
def _centers(path):
    import h5py

    with h5py.File(path) as h:
        return h["cluster_centers"][()]


def test_time_limit_signal_checkpoints_requeues_and_resumes(jobs):
    """SIGUSR1 on one rank (what --signal=USR1@120 sends): every rank checkpoints, the job
    exits 3 and requeues itself (REQUEUE=1), the restarted job resumes, and the model equals
    the uninterrupted run's bit for bit."""
    plain = finished(jobs, "ckpt_plain")
    job = jobs["ckpt_requeue"]
    # Slurm holds a requeued job for two minutes (EligibleTime) before it may start again;
    # the test lets it start at once
    deadline = time.monotonic() + JOB_TIMEOUT / 2
    while job.proc.poll() is None and time.monotonic() < deadline:
        q = job.slurm.cmd("squeue", "-h", f"--name={job.name}", "-o", "%i %T %r").stdout.split()
        if q[1:3] == ["PENDING", "BeginTime"]:
            job.slurm.cmd("scontrol", "update", f"JobId={q[0]}", "StartTime=now")
            break
        time.sleep(0.5)
    job.wait()
    assert plain.rc == 0 and job.rc == 0, job.describe()
    out = job.output
    assert "shardlearn: stopped: stopped by SIGUSR1 at step 3" in out, out
    assert f"shardlearn: requeued Slurm job {job.id}" in out, out
    assert f"kmeans done: model runs/kmeans-{job.id}.h5" in out
    report = json.loads((job.cwd / "runs" / f"kmeans-{job.id}.json").read_text())
    assert report["checkpoint"]["resumed_from_step"] == 3, report["checkpoint"]
    np.testing.assert_array_equal(_centers(job.cwd / "runs" / f"kmeans-{job.id}.h5").view(np.uint8),
                                  _centers(plain.cwd / "runs" / f"kmeans-{plain.id}.h5").view(np.uint8))


def test_killed_rank_ends_the_job_and_a_resubmitted_job_resumes(jobs, slurm):
    """SIGKILL of one rank under srun: the step ends within seconds, no model is written,
    and the same job submitted again resumes from the last checkpoint to the same model."""
    plain = finished(jobs, "ckpt_plain")
    job = finished(jobs, "ckpt_killed")
    assert job.rc != 0, job.describe()
    # the rank dies right after writing checkpoint 3; Slurm records the job's end (seconds)
    killed_at = (job.cwd / "ckpt" / "ckpt-00000003.h5").stat().st_mtime
    ends = [r.split("|") for r in job.slurm.cmd("sacct", "-c", "-n", "-P", "-o", "jobid,end").stdout.split()]
    end = [time.mktime(time.strptime(e, "%Y-%m-%dT%H:%M:%S")) for i, e in ends if i == job.id][-1]
    assert end - killed_at < 10, (end - killed_at, job.describe())
    assert not (job.cwd / "runs" / "km.h5").exists()
    assert sorted(p.name for p in (job.cwd / "ckpt").iterdir()) == ["ckpt-00000002.h5", "ckpt-00000003.h5"]
    again = slurm.submit(JOBS / "kmeans.sbatch", *KM_ARGS, "--checkpoint-every", "1", sbatch=["--ntasks=2"],
                         env=job.env, cwd=job.cwd).wait()
    assert again.rc == 0, again.describe()
    report = json.loads((job.cwd / "runs" / "km.json").read_text())
    assert report["checkpoint"]["resumed_from_step"] == 3
    np.testing.assert_array_equal(_centers(job.cwd / "runs" / "km.h5").view(np.uint8),
                                  _centers(plain.cwd / "runs" / f"kmeans-{plain.id}.h5").view(np.uint8))
