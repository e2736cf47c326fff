"""The device code paths of every model, run in CI with NumPy as the array module
(``SHARDLEARN_FAKE_GPU=1``: the ``gpu`` device without CuPy), against the CPU path on
the same data and ranks; plus the promise that the CPU path never imports CuPy.

One mpiexec launch (P = 3, one rank with no rows; the CLI test runs P = 2)
fits every model on both devices and emits the differences and which device functions
ran (counters around the kernels' NumPy references and the device passes).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mpirun import SRC, json_lines, mpi_env, run_cli, run_script

SCRIPT = r'''
import numpy as np
from mpi4py import MPI
from shardlearn.runtime import init
from shardlearn import (KMeans, LinearRegression, Ridge, Lasso, LogisticRegression, LinearSVC,
                        GradientBoostingClassifier, GradientBoostingRegressor, RandomForestRegressor)
from shardlearn.models.kmeans import _gpu as km
from shardlearn.models.linear import _gpu as lin
from shardlearn.models.trees import _gpu as tr

comm = MPI.COMM_WORLD
rank, P = comm.Get_rank(), comm.Get_size()
calls = {}
def count(mod, name):
    fn = getattr(mod, name)
    def wrapped(*a, **k):
        calls[name] = calls.get(name, 0) + 1
        return fn(*a, **k)
    setattr(mod, name, wrapped)
for mod, name in ((km, "lloyd_accumulate_reference"), (km, "init_kmeanspp"), (km, "init_kmeans_parallel"),
                  (km, "predict_rows"), (lin, "local_sums"), (lin, "gram"), (lin, "decision"),
                  (tr, "node_histogram_reference")):
    count(mod, name)

def block(n):  # rank order; the last rank of three gets no rows
    if P == 3:
        cuts = [0, n // 3, n, n]
    else:
        cuts = [n * r // P for r in range(P + 1)]
    return slice(cuts[rank], cuts[rank + 1])

cpu, gpu = init(comm, device="cpu", verbose=False), init(comm, device="gpu", verbose=False)
rng = np.random.default_rng(0)
out = {"rank": rank}

# k-means: every init, both dtypes, a center far from the data's mean (centred rows)
B = np.concatenate([rng.normal(c * 3, 1.0, size=(400, 4)) for c in range(5)]) + 50.0
for dt in ("float32", "float64"):
    X = B.astype(dt)[block(len(B))]
    for init_ in ("k-means++", "k-means||", "random"):
        a = KMeans(5, init=init_, n_init=2, random_state=4, comm=cpu).fit(X)
        b = KMeans(5, init=init_, n_init=2, random_state=4, comm=gpu).fit(X)
        rel = float(np.abs(a.cluster_centers_ - b.cluster_centers_).max() / np.abs(a.cluster_centers_).max())
        out[f"kmeans/{dt}/{init_}"] = {"rel": rel, "inertia": abs(a.inertia_ - b.inertia_) / a.inertia_,
                                       "labels": bool(np.array_equal(a.labels_, b.labels_)),
                                       "iters": [a.n_iter_, b.n_iter_],
                                       "predict": bool(np.array_equal(a.predict(X), b.predict(X))),
                                       "score": abs(a.score(X) - b.score(X)) / abs(a.score(X))}
# k-means: an empty cluster is re-seeded (explicit far-away initial center)
X = B[block(len(B))]
init_c = np.vstack([B[:4], np.full((1, 4), 1e4)])
a = KMeans(5, init=init_c, comm=cpu).fit(X)
b = KMeans(5, init=init_c, comm=gpu).fit(X)
out["kmeans/relocate"] = float(np.abs(a.cluster_centers_ - b.cluster_centers_).max())
# k-means on a row subset (rows=, as a search's folds): the device copies the rows
sub = np.flatnonzero(np.arange(len(X)) % 3 != 0)
a = KMeans(5, random_state=2, comm=cpu).fit(X, rows=sub)
b = KMeans(5, random_state=2, comm=gpu).fit(X, rows=sub)
out["kmeans/rows"] = float(np.abs(a.cluster_centers_ - b.cluster_centers_).max() / np.abs(a.cluster_centers_).max())
# k-means: exact_reduce is CPU-only: one clear error on every rank, the ranks still in step
from shardlearn.errors import ShardlearnError
try:
    KMeans(5, exact_reduce=True, comm=gpu).fit(X)
    out["kmeans/exact_on_device"] = "no error"
except ShardlearnError as exc:
    out["kmeans/exact_on_device"] = str(exc)

# linear and logistic models
X = rng.normal(size=(1500, 5)); X[:, 0] += 3
w = rng.normal(size=5)
yr = X @ w + rng.normal(size=1500)
yb = (yr > np.median(yr)).astype(float)
ym = np.digitize(yr, np.quantile(yr, [0.3, 0.6])).astype(float)
s = block(len(X))
for name, est, y in (("ridge", lambda c: Ridge(alpha=2.0, comm=c), yr),
                     ("linear-lbfgs", lambda c: LinearRegression(solver="lbfgs", standardize=True, comm=c), yr),
                     ("lasso", lambda c: Lasso(alpha=0.05, comm=c), yr),
                     ("logistic", lambda c: LogisticRegression(C=0.5, validation_fraction=0.2, comm=c), yb),
                     ("multinomial", lambda c: LogisticRegression(C=1.0, comm=c), ym),
                     ("sgd", lambda c: LogisticRegression(solver="sgd", epochs=2, batch_size=50,
                                                          learning_rate=0.1, comm=c), yb),
                     # the SVM's own losses on the device (its objective's, not the logistic one)
                     ("svm-sqhinge", lambda c: LinearSVC(C=0.05, tol=1e-8, comm=c), yb),
                     ("svm-hinge", lambda c: LinearSVC(C=0.05, loss="hinge", solver="sgd", epochs=2, batch_size=50,
                                                         learning_rate=0.05, comm=c), yb),
                     ("svm-ovr", lambda c: LinearSVC(C=0.5, class_weight={0.0: 2.0}, tol=1e-8, comm=c), ym)):
    for dt in ("float32", "float64"):
        Xd = X.astype(dt)[s]
        a, b = est(cpu).fit(Xd, y[s]), est(gpu).fit(Xd, y[s])
        scale = float(np.abs(a.coef_).max())
        out[f"linear/{name}/{dt}"] = {"rel": float(np.abs(np.asarray(a.coef_) - b.coef_).max()) / scale,
                                      "pred": float(np.abs(np.asarray(a.predict(Xd), float) - b.predict(Xd)).max(initial=0.0)),
                                      "iters": [int(a.n_iter_), int(b.n_iter_)]}

# trees: NaN as missing, bagging and feature sampling, multiclass, forests
X = rng.normal(size=(3000, 6)); X[rng.random(X.shape) < 0.05] = np.nan
y = np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) ** 2 + 0.3 * rng.normal(size=3000)
yb = (y > np.median(y)).astype(float)
ym = np.digitize(y, np.quantile(y, [0.33, 0.66])).astype(float)
s = block(len(X))
for name, est, yy in (("gbdt-reg", lambda c: GradientBoostingRegressor(n_estimators=8, comm=c), y),
                      ("gbdt-bin", lambda c: GradientBoostingClassifier(n_estimators=8, bagging_fraction=0.7,
                                                                        bagging_freq=1, feature_fraction=0.8,
                                                                        random_state=1, comm=c), yb),
                      ("gbdt-mc", lambda c: GradientBoostingClassifier(n_estimators=4, comm=c), ym),
                      # a bounded histogram pool: parents without a histogram, children built on the device
                      ("gbdt-pool", lambda c: GradientBoostingClassifier(n_estimators=4, num_leaves=20,
                                                                         histogram_pool_size=0.05, comm=c), yb),
                      ("forest", lambda c: RandomForestRegressor(n_estimators=4, max_depth=6, random_state=2,
                                                                 comm=c), y)):
    a, b = est(cpu).fit(X[s], yy[s]), est(gpu).fit(X[s], yy[s])
    pa, pb = np.asarray(a.predict(X), float), np.asarray(b.predict(X), float)
    out[f"trees/{name}"] = {"pred": float(np.abs(pa - pb).max()),
                            "same_structure": all(np.array_equal(ta["feature"], tb["feature"])
                                                  and np.array_equal(ta["bin"], tb["bin"])
                                                  for ta, tb in zip(a.ensemble_.trees, b.ensemble_.trees))}
out["calls"] = calls
emit(out)
'''


@pytest.fixture(scope="module", params=[3])
def world(request, tmp_path_factory):
    proc = run_script(request.param, SCRIPT, tmp_path_factory.mktemp("gpumodels"),
                      env={"SHARDLEARN_FAKE_GPU": "1"}, timeout=300)
    rows = json_lines(proc.stdout)
    assert len(rows) == request.param
    return request.param, rows


def test_device_paths_ran(world):
    _, rows = world
    for r in rows:
        c = r["calls"]
        for name in ("lloyd_accumulate_reference", "init_kmeanspp", "init_kmeans_parallel", "local_sums",
                     "gram", "decision", "predict_rows"):
            assert c.get(name, 0) > 0 or (name == "lloyd_accumulate_reference" and r["rank"] == 2), name
        assert c.get("node_histogram_reference", 0) > 0 or r["rank"] == 2


def test_kmeans_device_equals_cpu(world):
    """Float64: the same labels and centers to 1e-12; float32: to float32's rounding of
    the CPU path's per-chunk float32 sums (the device sums are exact fixed point)."""
    _, rows = world
    for r in rows:
        for dt, tol in (("float32", 1e-5), ("float64", 1e-12)):
            for init_ in ("k-means++", "k-means||", "random"):
                v = r[f"kmeans/{dt}/{init_}"]
                assert v["rel"] < tol and v["inertia"] < tol and v["score"] < tol, (dt, init_, v)
                assert v["labels"] and v["predict"] and v["iters"][0] == v["iters"][1], (dt, init_, v)
        assert r["kmeans/relocate"] < 1e-9
        assert r["kmeans/rows"] < 1e-12
        assert "exact_reduce=True runs on the CPU only" in r["kmeans/exact_on_device"]


def test_linear_device_equals_cpu(world):
    _, rows = world
    for r in rows:
        for key, v in r.items():
            if key.startswith("linear/"):
                assert v["rel"] < 1e-9 and v["pred"] < 1e-8 and v["iters"][0] == v["iters"][1], (key, v)


def test_trees_device_equal_cpu(world):
    """The same splits; leaf values within the fixed-point histogram's rounding."""
    _, rows = world
    for r in rows:
        for key, v in r.items():
            if key.startswith("trees/"):
                assert v["same_structure"] and v["pred"] < 1e-9, (key, v)


def test_cli_device_gpu_trains_and_predicts(tmp_path):
    """``--device gpu`` end to end on 2 ranks (fake GPU): the model equals the CPU one's,
    and the run report says how device buffers travel."""
    import h5py
    import numpy as np

    env = {"SHARDLEARN_FAKE_GPU": "1"}
    run_cli(2, "make-data", "blobs", "--rows", "3000", "--features", "4", "--centers", "3", "--seed", "1",
            "--out", tmp_path / "b.h5", env=env)
    for dev in ("cpu", "gpu"):
        run_cli(2, "train", "kmeans", "--data", tmp_path / "b.h5", "--k", "3", "--device", dev, "--quiet",
                "--out", tmp_path / f"{dev}.h5", env=env)
    run_cli(2, "predict", "--model", tmp_path / "gpu.h5", "--data", tmp_path / "b.h5", "--device", "gpu",
            "--out", tmp_path / "pred.h5", env=env)
    with h5py.File(tmp_path / "cpu.h5") as a, h5py.File(tmp_path / "gpu.h5") as b:
        assert np.allclose(a["cluster_centers"][()], b["cluster_centers"][()], rtol=1e-12)
    report = json.loads((tmp_path / "gpu.json").read_text())
    rt = report["runtime"]
    assert rt["device"] == "gpu" and rt["device_collectives"]["path"].startswith("host")
    with h5py.File(tmp_path / "pred.h5") as h:
        assert len(h["labels"]) == 3000


def test_cpu_path_never_imports_cupy():
    """Fits, predictions and the CLI's imports on the CPU: an import of CuPy would be
    recorded by a blocking finder (the test means something with or without CuPy)."""
    code = r"""
import sys, importlib.abc
tried = []
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("cupy", "cupyx"):
            tried.append(name)
            raise ImportError("blocked")
sys.meta_path.insert(0, Block())
import numpy as np
from shardlearn import KMeans, LogisticRegression, Ridge, GradientBoostingClassifier, RandomForestRegressor
from shardlearn.cli.main import build_parser
build_parser()
rng = np.random.default_rng(0)
X = rng.normal(size=(300, 4)); y = (X[:, 0] > 0).astype(float)
for est in (KMeans(3, random_state=0), LogisticRegression(), Ridge(), GradientBoostingClassifier(n_estimators=2),
            RandomForestRegressor(n_estimators=2)):
    est.fit(X, y).predict(X)
    if hasattr(est, "score"):
        est.score(X, y)
assert not tried and not any(m.split(".")[0] in ("cupy", "cupyx") for m in sys.modules), tried
print("OK")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**mpi_env(), "PYTHONPATH": str(SRC)})
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr
