"""k-means checkpoints: a fit stopped (signal) or killed (SIGKILL of one rank) at a step
boundary and resumed ends with the model of an uninterrupted run, bit for bit on the same
number of ranks, within a stated tolerance on another; a mismatched resume refuses; an
injected MemoryError on one rank ends the job with one report.

Launches are batched: a module fixture runs the CLI's ``main`` several times inside one
launch per rank count (2, then 3, then 1), with ``shardlearn.util.faults.check`` wrapped so
that rank 1 sends itself SIGUSR1 at a chosen step boundary (deterministic). SIGKILL and
MemoryError use ``SHARDLEARN_FAULT`` with the real command line (``python -m shardlearn``).
"""
import json
import os
import time

import h5py
import numpy as np
import pytest

from mpirun import json_lines, run_cli, run_script

# name -> (CLI options, boundaries before rank 1 sends SIGUSR1). The signal sent at
# boundary b - 1 is seen at the next one: the fit stops at step b with a checkpoint.
# Steps: a run's initialisation (the first run's is step 0), then each Lloyd iteration;
# with --tol 0 --max-iter 10 a run takes 11 steps unless its labels settle earlier.
VARIANTS = {
    # k-means++ with two runs: stopped in the second run (best so far = the first)
    "kpp2": (["--k", "5", "--init", "k-means++", "--n-init", "2", "--max-iter", "10", "--tol", "0"], 14),
    # k-means|| in float32: stopped in the middle of the Lloyd iterations
    "par32": (["--k", "5", "--init", "k-means||", "--dtype", "float32", "--max-iter", "10", "--tol", "0"], 4),
    # random rows, two runs: stopped at the first run's last step (the run is done)
    "random2": (["--k", "5", "--init", "random", "--n-init", "2", "--max-iter", "10", "--tol", "0"], 10),
    # centers from a file with a duplicate: an empty cluster re-seeded at iteration 1,
    # stopped right after it; default tolerance
    "file32": (["--k", "5", "--init-file", "{T}/init.h5", "--dtype", "float32"], 1),
}
CROSS = ("kpp2", "file32")  # resumed on another rank count: 2 -> 3 and 3 -> 1
# what each stop's checkpoint holds (run, run done, Lloyd iterations of the run in progress)
STOPPED_AT = {"kpp2": (1, False, 3), "par32": (0, False, 4), "random2": (0, True, None), "file32": (0, False, 1)}

# Measured (MPICH on this 2-core machine, topology auto): the largest |resumed - uninterrupted|
# over the centers, relative to the largest |center|:
#   kpp2 (float64)   2 -> 3: 0.0 against the P=2 run, 2.3e-16 against the P=3 run
#                    3 -> 1: 0.0 against the P=3 run, 6.6e-16 against the P=1 run
#   file32 (float32) 0.0 in all four comparisons (sums are float64; the centers round alike)
# inertia: 0.0 relative in all eight; iterations equal. The bounds leave room for the
# reassociated float64 sums (about 15x the largest measured) and, in float32, for centers a
# few ulps (6e-8 relative each) apart: centers 1e-14 / 1e-6, inertia 1e-12 / 1e-6 relative.
CROSS_TOL = {"float64": (1e-14, 1e-12), "float32": (1e-6, 1e-6)}

SCRIPT = r"""
import os, shutil, signal
import numpy as np
from mpi4py import MPI
from shardlearn.util import faults
from shardlearn.cli.main import main

rank, P = MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()
T = {T!r}
VARIANTS = {variants!r}
CROSS = {cross!r}
_armed = [None]
_check = faults.check

def check(site):  # rank 1 signals itself after the given number of step boundaries
    if site == "step" and rank == 1 and _armed[0] is not None:
        _armed[0] -= 1
        if _armed[0] == 0:
            os.kill(os.getpid(), signal.SIGUSR1)
    _check(site)

faults.check = check

def train(name, out, *extra, opts=None):
    args = opts if opts is not None else [a.format(T=T) for a in VARIANTS[name][0]]
    return main(["train", "kmeans", "--data", T + "/data.h5", "--quiet", "--seed", "3", *args,
                 "--out", out, *extra])

def interrupt(name, ck):
    _armed[0] = VARIANTS[name][1]
    rc = train(name, f"{{T}}/{{name}}-int{{P}}.h5", "--checkpoint", ck)
    _armed[0] = None
    return rc

def barrier():
    MPI.COMM_WORLD.Barrier()

for name in (VARIANTS if P == 2 else CROSS):
    res = {{"name": name, "P": P, "rank": rank}}
    res["ref"] = train(name, f"{{T}}/{{name}}-ref{{P}}.h5")
    if P > 1:
        ck = f"{{T}}/{{name}}-ck{{P}}"
        res["interrupted"] = interrupt(name, ck)
        barrier()
        res["model_after_stop"] = os.path.exists(f"{{T}}/{{name}}-int{{P}}.h5")
        res["files"] = sorted(os.listdir(ck))
        if rank == 0:
            shutil.copytree(ck, ck + "-copy")  # for the resume on another rank count
        barrier()
        res["resumed"] = train(name, f"{{T}}/{{name}}-int{{P}}.h5", "--checkpoint", ck, "--resume")
    if P == 2 and name == "kpp2":
        # the same checkpoint, other parameters: refused on every rank
        opts = [a.replace("10", "11") for a in VARIANTS[name][0]]  # --max-iter 11
        res["mismatch"] = train(name, T + "/mismatch.h5", "--checkpoint", ck, "--resume", opts=opts)
        res["mismatch_model"] = os.path.exists(T + "/mismatch.h5")
        # --resume with an empty directory starts afresh
        os.makedirs(T + "/empty", exist_ok=True)
        res["empty"] = train(name, f"{{T}}/{{name}}-empty.h5", "--checkpoint", T + "/empty", "--resume")
    if P == 3 and name in CROSS:
        res["cross"] = train(name, f"{{T}}/{{name}}-2to3.h5", "--checkpoint", f"{{T}}/{{name}}-ck2-copy", "--resume")
    if P == 1 and name in CROSS:
        res["cross"] = train(name, f"{{T}}/{{name}}-3to1.h5", "--checkpoint", f"{{T}}/{{name}}-ck3-copy", "--resume")
    emit(res)
"""


def blobs(n=1200, d=4, k=5, std=4.0, seed=3):
    g = np.random.default_rng(seed)
    centers = g.uniform(-10, 10, (k, d))
    return centers[g.integers(0, k, n)] + std * g.standard_normal((n, d))


def write_data(T):
    X = blobs()
    with h5py.File(T / "data.h5", "w") as h:
        h["X"] = X
    with h5py.File(T / "init.h5", "w") as h:
        h["centers"] = X[[0, 1, 2, 3, 3]]  # a duplicate: one cluster is empty at iteration 1


def model(path):
    """(arrays, info) of a model file."""
    with h5py.File(path, "r") as h:
        arrays = {k: h[k][()] for k in h.keys()}
        return arrays, json.loads(h.attrs["info"])


def report(path):
    return json.loads(open(str(path)[:-3] + ".json").read())


def assert_same_model(a, b):
    """Bit for bit: every array's bytes, and the fit's facts."""
    (xa, ia), (xb, ib) = model(a), model(b)
    assert sorted(xa) == sorted(xb)
    for k in xa:
        assert xa[k].dtype == xb[k].dtype and xa[k].shape == xb[k].shape, k
        assert np.array_equal(xa[k].view(np.uint8), xb[k].view(np.uint8)), (a, b, k)
    assert (ia["n_iter"], ia["inertia"]) == (ib["n_iter"], ib["inertia"]), (a, b)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    T = tmp_path_factory.mktemp("ckpt_kmeans")
    write_data(T)
    code = SCRIPT.format(T=str(T), variants=VARIANTS, cross=CROSS)
    out = {"T": T, "stderr": {}}
    for P in (2, 3, 1):  # 3 resumes what 2 left, 1 what 3 left
        proc = run_script(P, code, T, timeout=240)
        out[P] = json_lines(proc.stdout)
        out["stderr"][P] = proc.stderr
    return out


def _rows(runs, P, name):
    rows = [r for r in runs[P] if r["name"] == name]
    assert len(rows) == P, (P, name, runs[P])
    return rows


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_signal_stops_every_rank_and_resume_is_bit_identical(runs, name):
    T = runs["T"]
    rows = _rows(runs, 2, name)
    # SIGUSR1 on rank 1: every rank stops with exit status 3, no model written
    assert all(r["ref"] == 0 and r["interrupted"] == 3 and r["resumed"] == 0 for r in rows), rows
    assert not any(r["model_after_stop"] for r in rows)
    stop = VARIANTS[name][1]
    assert rows[0]["files"] == [f"ckpt-{stop:08d}.h5"]  # signals only: the one saved at the stop
    with h5py.File(T / f"{name}-ck2" / rows[0]["files"][0], "r") as h:
        st = json.loads(h["state"].attrs["json"])
        assert (st["run"], st["done"], st.get("iter")) == STOPPED_AT[name], st
        assert ("best" in h["state"]) == (st["run"] > 0 or st["done"])  # the best finished run so far
    # one message (rank 0), naming the signal, the step and how to resume
    lines = [ln for ln in runs["stderr"][2].splitlines() if ln.startswith("shardlearn: stopped:")
             and f"{name}-ck2" in ln]
    assert len(lines) == 1 and f"SIGUSR1 at step {stop};" in lines[0] and "--resume" in lines[0], lines
    assert_same_model(T / f"{name}-int2.h5", T / f"{name}-ref2.h5")
    rep = report(T / f"{name}-int2.h5")
    assert rep["checkpoint"]["resumed_from_step"] == stop and rep["checkpoint"]["saved"] == 0


def test_resume_with_other_parameters_refuses_and_empty_directory_starts_afresh(runs):
    T = runs["T"]
    rows = _rows(runs, 2, "kpp2")
    assert [r["mismatch"] for r in rows] == [2, 2] and not any(r["mismatch_model"] for r in rows)
    errs = [ln for ln in runs["stderr"][2].splitlines() if ln.startswith("shardlearn: error:")]
    assert len(errs) == 1, errs  # one line, from one rank
    assert "other parameters (max_iter: 10 then, 11 now)" in errs[0] and "--checkpoint" in errs[0], errs
    assert [r["empty"] for r in rows] == [0, 0]
    assert_same_model(T / "kpp2-empty.h5", T / "kpp2-ref2.h5")
    assert report(T / "kpp2-empty.h5")["checkpoint"]["resumed_from_step"] is None


@pytest.mark.parametrize("name", CROSS)
def test_resume_on_another_rank_count(runs, name):
    T = runs["T"]
    three, one = _rows(runs, 3, name), _rows(runs, 1, name)
    assert all(r["interrupted"] == 3 and r["cross"] == 0 for r in three), three
    assert one[0]["cross"] == 0
    assert_same_model(T / f"{name}-int3.h5", T / f"{name}-ref3.h5")  # 3 -> 3: bit for bit
    for resumed, refs in (("2to3", (2, 3)), ("3to1", (3, 1))):
        got, ginfo = model(T / f"{name}-{resumed}.h5")
        c = got["cluster_centers"]
        ctol, itol = CROSS_TOL[str(c.dtype)]
        for P in refs:  # close to the uninterrupted run on the first and on the second count
            ref, rinfo = model(T / f"{name}-ref{P}.h5")
            r = ref["cluster_centers"]
            scale = float(np.abs(r).max())
            diff = float(np.abs(c.astype(np.float64) - r).max()) / scale
            assert diff <= ctol, (name, resumed, P, diff)
            assert ginfo["n_iter"] == rinfo["n_iter"], (name, resumed, P)
            assert abs(ginfo["inertia"] - rinfo["inertia"]) <= itol * rinfo["inertia"], (name, resumed, P)
    assert report(T / f"{name}-3to1.h5")["checkpoint"]["resumed_from_step"] == VARIANTS[name][1]


@pytest.mark.parametrize("name", ["kpp2", "file32"])
def test_sigkill_of_one_rank_ends_the_job_and_resume_is_bit_identical(runs, tmp_path, name):
    T = runs["T"]
    args = ["train", "kmeans", "--data", T / "data.h5", "--quiet", "--seed", "3",
            *[a.format(T=T) for a in VARIANTS[name][0]], "--out", tmp_path / "m.h5",
            "--checkpoint", tmp_path / "ck", "--checkpoint-every", "1"]
    # rank 1 dies (SIGKILL) at its first step boundary, after the initialisation's checkpoint
    proc = run_cli(2, *args, env={"SHARDLEARN_FAULT": "step@1:kill"}, check=False, timeout=60)
    ended = time.time()
    assert proc.returncode != 0
    assert not (tmp_path / "m.h5").exists() and not (tmp_path / "m.json").exists()
    assert sorted(os.listdir(tmp_path / "ck")) == ["ckpt-00000000.h5"]
    # the job ended soon after the kill (the checkpoint was written just before it)
    assert ended - os.path.getmtime(tmp_path / "ck" / "ckpt-00000000.h5") < 10
    run_cli(2, *args, "--resume", timeout=60)
    assert_same_model(tmp_path / "m.h5", T / f"{name}-ref2.h5")
    assert report(tmp_path / "m.h5")["checkpoint"]["resumed_from_step"] == 0


def test_memory_error_on_one_rank_ends_the_job_with_one_report(tmp_path):
    write_data(tmp_path)
    proc = run_cli(2, "train", "kmeans", "--data", tmp_path / "data.h5", "--k", "3", "--out", tmp_path / "m.h5",
                   env={"SHARDLEARN_FAULT": "step@1:memory"}, check=False, timeout=60)
    assert proc.returncode != 0
    assert proc.stderr.count("shardlearn: rank 1: MemoryError in KMeans.fit") == 1, proc.stderr
    assert "shardlearn: rank 0" not in proc.stderr and "shardlearn: error" not in proc.stderr, proc.stderr
    assert not (tmp_path / "m.h5").exists()


# ----------------------------------------------------------------- library: every step
EVERY = r"""
import glob, os, shutil
import numpy as np
from shardlearn.checkpoint import Checkpoint
from shardlearn.runtime import init
from shardlearn.models.kmeans import KMeans

ctx = init(topology="native", verbose=False)
P, r = ctx.size, ctx.rank
T = {T!r}
g = np.random.default_rng(3)
C = g.uniform(-10, 10, (5, 4))
X = C[g.integers(0, 5, 600)] + 4.0 * g.standard_normal((600, 4))
Xb = X[r * 600 // P:(r + 1) * 600 // P]
dup = X[[0, 1, 2, 3, 3]]
CASES = {{
    "k-means++ n_init=2": dict(init="k-means++", n_init=2),
    "k-means|| n_init=2 float32": dict(init="k-means||", n_init=2, dtype="float32"),
    "random tol=0 max_iter=4 n_init=2": dict(init="random", n_init=2, tol=0.0, max_iter=4),
    "given with an empty cluster": dict(init=dup),
}}

def same(a, b):
    return (np.array_equal(a.cluster_centers_.view(np.uint8), b.cluster_centers_.view(np.uint8))
            and np.array_equal(a.labels_, b.labels_) and a.inertia_ == b.inertia_ and a.n_iter_ == b.n_iter_
            and [x["inertia"] for x in a.iteration_log_] == [x["inertia"] for x in b.iteration_log_])

for i, (case, kw) in enumerate(CASES.items()):
    kw = dict(kw)
    Xc = Xb.astype(kw.pop("dtype", "float64"))
    ref = KMeans(5, random_state=7, comm=ctx, **kw).fit(Xc)
    d = f"{{T}}/every{{i}}"
    full = KMeans(5, random_state=7, comm=ctx, **kw).fit(Xc, checkpoint=Checkpoint(d, every=1, keep=10 ** 6))
    files = sorted(glob.glob(d + "/ckpt-*.h5"))
    bad = []
    for f in files:  # resume from each step, alone in a directory
        one = f"{{d}}-{{os.path.basename(f)}}"
        if r == 0:
            os.makedirs(one)
            shutil.copy(f, one)
        ctx.mpi_comm.Barrier()
        got = KMeans(5, random_state=7, comm=ctx, **kw).fit(Xc, checkpoint=Checkpoint(one, resume=True))
        if not same(got, ref):
            bad.append(os.path.basename(f))
    emit(dict(case=case, rank=r, with_checkpoint=same(full, ref), steps=len(files), bad=bad,
              n_iter=ref.n_iter_))
"""


def test_resume_from_every_step_is_bit_identical_library(tmp_path):
    # every variant, resumed from each of its checkpoints on 2 ranks: the uninterrupted model
    # (centers' bytes, labels, inertia, iterations, the iteration log's inertias)
    res = json_lines(run_script(2, EVERY.format(T=str(tmp_path)), tmp_path, timeout=120).stdout)
    assert len(res) == 8, res
    for row in res:
        assert row["with_checkpoint"] and row["bad"] == [], row
        assert row["steps"] >= 1 + row["n_iter"], row  # initialisation + each iteration, every run
    runs2 = [r for r in res if "n_init=2" in r["case"]]
    assert all(r["steps"] > r["n_iter"] + 1 for r in runs2)  # the second run's steps too
