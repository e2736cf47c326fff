"""Checkpoints of the tree models: stopped (signal) or killed, then resumed, bit for bit.

A step is one boosting iteration (gbdt: its K trees) or one tree (forest). The checkpoint
holds the trees, the bins, the initial score and the early-stopping state; the boosting
scores of every row are rebuilt from the trees on resume, so a run may also resume on
another number of ranks (then equal up to the rounding of histogram sums).

Launches are few: one script on 2 ranks runs every variant (uninterrupted, stopped by
SIGUSR1 on rank 1, resumed), one on 3 ranks resumes the 2-rank checkpoints and writes
its own, which this process (1 rank) resumes; the command line is tested for a killed
rank, a signal (exit status 3), a refused --resume and an injected MemoryError.
"""
import json
import os
import signal
import time

import h5py
import numpy as np
import pytest

from mpirun import SRC, json_lines, run_cli, run_script

# the variants, their data and helpers: run by the multi-rank scripts and in this process
COMMON = r"""
import os, shutil, signal
import numpy as np
from sklearn.datasets import make_classification
from shardlearn.checkpoint import Checkpoint
from shardlearn.errors import ShardlearnError, TrainingInterrupted
from shardlearn.models.trees import (GradientBoostingClassifier, GradientBoostingRegressor,
                                     RandomForestClassifier, RandomForestRegressor)
from shardlearn.util.blocks import block_bounds

X, y3 = make_classification(1600, 6, n_informative=4, n_classes=3, random_state=4)
X[::7, 1] = np.nan                                            # missing values
X[:, 5] = np.abs(np.round(X[:, 5] * 3)) + (y3 == 2) * 2        # a categorical column (codes 0..~12)
yb = (y3 == 1).astype(np.int64)
yr = X[:, 0] * 2.0 - np.nan_to_num(X[:, 1]) + 0.5 * X[:, 5] + np.random.default_rng(0).normal(size=len(X))

VARIANTS = {
    # bagging re-drawn every 2 iterations (a resume at 3 is mid-round), features drawn per
    # tree, a validation hold-out with early stopping, a categorical feature
    "gbdt-binary": (lambda c: GradientBoostingClassifier(
        n_estimators=40, learning_rate=0.6, num_leaves=12, min_child_samples=5, bagging_fraction=0.7,
        bagging_freq=2, feature_fraction=0.8, validation_fraction=0.25, early_stopping_rounds=3,
        categorical_features=[5], min_data_per_group=20, comm=c), yb),
    "gbdt-multiclass": (lambda c: GradientBoostingClassifier(
        n_estimators=6, growth="depthwise", max_depth=3, hist_reduce="reduce_scatter", comm=c), y3),
    "gbdt-regression": (lambda c: GradientBoostingRegressor(
        n_estimators=8, num_leaves=8, validation_fraction=0.2, metric="rmse", comm=c), yr),
    "forest-classifier": (lambda c: RandomForestClassifier(
        n_estimators=6, max_depth=6, categorical_features=[5], min_data_per_group=20, comm=c), y3),
    "forest-regressor": (lambda c: RandomForestRegressor(
        n_estimators=6, max_depth=6, max_features=0.6, hist_reduce="reduce_scatter", comm=c), yr),
}
STOP = 3     # the step at which SIGUSR1 reaches the last rank


class StopAt(Checkpoint):
    # a Checkpoint whose last rank receives SIGUSR1 just before step STOP's boundary
    def step(self, step, state_fn):
        if step == STOP and self._ctx.rank == self._ctx.size - 1:
            os.kill(os.getpid(), signal.SIGUSR1)
        return super().step(step, state_fn)


def rows(ctx, a):
    return a[slice(*block_bounds(len(a), ctx.size, ctx.rank))]


def fit(ctx, name, checkpoint=None):
    make, y = VARIANTS[name]
    return make(ctx).fit(rows(ctx, X), rows(ctx, y), checkpoint=checkpoint)


def flat(m):
    # every array of the model file, by path
    out = {}
    def walk(prefix, d):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(prefix + k + "/", v)
            else:
                out[prefix + k] = np.asarray(v)
    walk("", m.to_model()[0])
    return out


def bit_identical(a, b):
    # the same model file arrays (dtype, shape, bytes) and the same fit history
    fa, fb = flat(a), flat(b)
    same = set(fa) == set(fb) and all(fa[k].dtype == fb[k].dtype and fa[k].shape == fb[k].shape
                                      and fa[k].tobytes() == fb[k].tobytes() for k in fa)
    metrics = lambda m: [{k: v for k, v in r.items() if k.startswith(("train_", "valid_", "leaves"))}
                         for r in m.history_]
    return bool(same and a.n_iter_ == b.n_iter_ and a.best_iteration_ == b.best_iteration_
                and metrics(a) == metrics(b))


def outputs(m):
    # predictions of every row (class probabilities for classifiers)
    return m.predict_proba(X) if hasattr(m, "predict_proba") else m.predict(X)[:, None]
"""

P2 = COMMON + r"""
from shardlearn.runtime import init
ctx = init(topology="native", verbose=False)
for name in VARIANTS:
    ref = fit(ctx, name)
    d = os.path.join(base, "p2", name)
    try:
        fit(ctx, name, StopAt(d, every=2 if name.startswith("forest") else None))
        msg = None
    except TrainingInterrupted as exc:
        msg = str(exc)
    msgs = ctx.coll.allgather_obj(msg)
    files = sorted(os.listdir(d))
    if ctx.rank == 0:                                   # kept for the resume on 3 ranks
        shutil.copytree(d, os.path.join(base, "from2", name))
    ctx.mpi_comm.Barrier()
    ck = Checkpoint(d, resume=True)
    res = fit(ctx, name, ck)
    emit({"case": name, "rank": ctx.rank, "stopped": msgs, "files": files, "resumed_from": ck.resumed_from,
           "same": bit_identical(ref, res), "n_iter": ref.n_iter_, "n_estimators": ref.n_estimators})
    if ctx.rank == 0:
        np.save(os.path.join(base, f"ref2-{name}.npy"), outputs(ref))
# --resume with an empty directory starts afresh
ck = Checkpoint(os.path.join(base, "empty"), resume=True)
res = fit(ctx, "gbdt-regression", ck)
emit({"case": "empty", "rank": ctx.rank, "resumed_from": ck.resumed_from,
       "same": bit_identical(fit(ctx, "gbdt-regression"), res)})
"""

P3 = COMMON + r"""
from shardlearn.runtime import init
ctx = init(topology="native", verbose=False)
for name in VARIANTS:
    ref = fit(ctx, name)
    ck = Checkpoint(os.path.join(base, "from2", name), resume=True)
    res = fit(ctx, name, ck)
    ref2 = np.load(os.path.join(base, f"ref2-{name}.npy"))
    a, b = flat(ref), flat(res)
    emit({"case": name, "rank": ctx.rank, "resumed_from": ck.resumed_from, "n_iter": [ref.n_iter_, res.n_iter_],
           "structure": all(np.array_equal(a[k], b[k]) for k in a if k.split("/")[-1] in
                            ("feature", "bin", "missing_left", "left", "tree_offsets", "cat_bits")),
           "diff_ref3": float(np.abs(outputs(res) - outputs(ref)).max()),
           "diff_ref2": float(np.abs(outputs(res) - ref2).max())})
    try:                                                # checkpoints for the resume on 1 rank
        fit(ctx, name, StopAt(os.path.join(base, "from3", name)))
    except TrainingInterrupted:
        pass
    if ctx.rank == 0:
        np.save(os.path.join(base, f"ref3-{name}.npy"), outputs(ref))
"""


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """The 2-rank and 3-rank scripts' results (the second resumes the first's checkpoints)."""
    base = tmp_path_factory.mktemp("ckpt_trees")
    p2 = json_lines(run_script(2, f"base = {str(base)!r}\n" + P2, base, timeout=180).stdout)
    p3 = json_lines(run_script(3, f"base = {str(base)!r}\n" + P3, base, timeout=180).stdout)
    return base, p2, p3


VARIANT_NAMES = ("gbdt-binary", "gbdt-multiclass", "gbdt-regression", "forest-classifier", "forest-regressor")


def test_signal_stops_every_rank_and_resume_is_bit_identical(worlds):
    _, p2, _ = worlds
    for name in VARIANT_NAMES:
        rows = [r for r in p2 if r["case"] == name]
        assert len(rows) == 2, (name, p2)
        for r in rows:
            # both ranks stopped at the same step with the same message, after a save there
            assert len(set(r["stopped"])) == 1 and r["stopped"][0] is not None, r
            assert "stopped by SIGUSR1 at step 3" in r["stopped"][0] and "--resume" in r["stopped"][0]
            assert r["resumed_from"] == 3 and "ckpt-00000003.h5" in r["files"], r
            assert r["same"], f"{name}: the resumed model differs from the uninterrupted one"
    # forests saved every 2 trees too (the stop at 3 adds one); boosting only on the stop
    assert [r["files"] for r in p2 if r["case"] == "forest-classifier"][0] == ["ckpt-00000002.h5",
                                                                             "ckpt-00000003.h5"]
    assert [r["files"] for r in p2 if r["case"] == "gbdt-binary"][0] == ["ckpt-00000003.h5"]
    # early stopping happened after the resume: the restored best/rounds-without-improvement state counted
    r = [r for r in p2 if r["case"] == "gbdt-binary"][0]
    assert 3 < r["n_iter"] < r["n_estimators"], r


def test_resume_with_an_empty_directory_starts_afresh(worlds):
    _, p2, _ = worlds
    rows = [r for r in p2 if r["case"] == "empty"]
    assert len(rows) == 2 and all(r["resumed_from"] is None and r["same"] for r in rows), rows


def test_recomputed_boosting_scores_are_bit_identical_to_the_accumulated_ones(monkeypatch):
    """The boosting scores a resumed fit rebuilds from the trees (tree by tree, in fit order)
    are the very bits the fit accumulated; summing the trees first (``raw_sum``) is not."""
    from sklearn.datasets import make_classification

    from shardlearn.models.trees import GradientBoostingClassifier
    from shardlearn.models.trees import grower as grower_mod
    from shardlearn.models.trees.predict import replay_scores
    from shardlearn.runtime import init

    ctx = init(topology="native", verbose=False)
    X, y = make_classification(1500, 6, n_informative=4, n_classes=3, random_state=1)
    X[::5, 1] = np.nan
    X[:, 4] = np.abs(np.round(X[:, 4] * 3))
    seen = []
    add = grower_mod.TreeGrower.add_leaf_values

    def spy(self, scores, k, values, leaf_rows):
        if not seen:
            seen.append(scores)        # the fit's own score array, updated in place
        return add(self, scores, k, values, leaf_rows)

    monkeypatch.setattr(grower_mod.TreeGrower, "add_leaf_values", spy)
    cases = [("c", {}), ("c", {"bagging_fraction": 0.6, "bagging_freq": 3, "feature_fraction": 0.7}),
             ("c", {"categorical_features": [4], "min_data_per_group": 20}),
             ("numpy", {"bagging_fraction": 0.6, "bagging_freq": 3})]   # the NumPy kernels' sums too
    for kernels, kw in cases:
        monkeypatch.setenv("SHARDLEARN_KERNELS", kernels)
        seen.clear()
        m = GradientBoostingClassifier(n_estimators=15, comm=ctx, **kw).fit(X, y)
        F = np.tile(m.init_score_, (len(X), 1))
        replay_scores(m.ensemble_, m.bin_mapper_.encode(X), F)
        assert F.tobytes() == seen[0].tobytes(), (kernels, kw)
        # what the shortcut would give: off in the last bits (measured 2.2e-15 here)
        assert 0 < np.abs(m.raw_predict(X) - F).max() < 1e-12


def test_resume_on_another_number_of_ranks(worlds):
    """2 -> 3 and 3 -> 1 ranks: the same trees (features, bins, shapes) and the same number of
    iterations; leaf values, hence predictions, equal up to the rounding of histogram sums
    over ranks (the gradient sums are added in another order)."""
    from shardlearn.checkpoint import Checkpoint
    from shardlearn.runtime import init

    base, _, p3 = worlds
    # max |difference| of the predictions measured against the uninterrupted runs on the old
    # and the new rank count: 6.8e-14 (forest-regressor, predictions up to 19), 2.8e-14
    # (gbdt-binary probabilities), 0 (forest-classifier); a little above the largest
    tol = 2e-13
    for name in VARIANT_NAMES:
        rows = [r for r in p3 if r["case"] == name]
        assert len(rows) == 3, (name, p3)
        for r in rows:
            assert r["resumed_from"] == 3 and r["structure"], r
            assert r["n_iter"][0] == r["n_iter"][1], r
            assert r["diff_ref3"] <= tol and r["diff_ref2"] <= tol, r
    # 3 -> 1, in this process
    ns = {}
    exec(COMMON, ns)
    ctx = init(topology="native", verbose=False)
    for name in VARIANT_NAMES:
        ref = ns["fit"](ctx, name)
        ck = Checkpoint(str(base / "from3" / name), resume=True)
        res = ns["fit"](ctx, name, ck)
        assert ck.resumed_from == 3
        a, b = ns["flat"](ref), ns["flat"](res)
        for k in a:
            if k.split("/")[-1] in ("feature", "bin", "missing_left", "left", "tree_offsets", "cat_bits"):
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}: {k}")
        out = ns["outputs"](res)
        assert np.abs(out - ns["outputs"](ref)).max() <= tol, name
        assert np.abs(out - np.load(base / f"ref3-{name}.npy")).max() <= tol, name


# ----------------------------------------------------------------------- CLI
GBDT = ["gbdt", "--objective", "binary", "--n-estimators", 12, "--num-leaves", 8, "--bagging-fraction", 0.7,
        "--bagging-freq", 2, "--feature-fraction", 0.8, "--validation-fraction", 0.2, "--categorical", 5,
        "--min-data-per-group", 20]
FOREST = ["forest", "--n-estimators", 8, "--max-depth", 6, "--categorical", 5, "--min-data-per-group", 20]


@pytest.fixture(scope="module")
def cli_data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt_trees_cli")
    ns = {}
    exec(COMMON, ns)
    with h5py.File(tmp / "d.h5", "w") as h:
        h["X"], h["y"] = ns["X"], ns["yb"].astype(np.float64)
    return tmp


def model_arrays(path):
    """Every dataset of a model file, by path, plus its parameters."""
    out = {}
    with h5py.File(path) as h:
        h.visititems(lambda k, v: out.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset) else None)
        out["params"] = h.attrs["params"]
    return out


def assert_same_model(a, b):
    ma, mb = model_arrays(a), model_arrays(b)
    assert set(ma) == set(mb)
    for k in ma:
        x, y = np.asarray(ma[k]), np.asarray(mb[k])
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), k


def train(tmp, model, out, *extra, **kw):
    return run_cli(2, "train", *model, "--data", tmp / "d.h5", "--out", tmp / out, "--quiet", *extra, **kw)


# the forest variant is marked slow: the kill is the same for both models (and the forest's
# resume is checked bit for bit by the 2-rank script), three more launches
@pytest.mark.parametrize("model", [GBDT, pytest.param(FOREST, marks=pytest.mark.slow)], ids=["gbdt", "forest"])
def test_cli_killed_rank_ends_the_job_and_resume_is_bit_identical(cli_data, model):
    tmp = cli_data
    name = model[0]
    train(tmp, model, f"ref-{name}.h5")
    ck = tmp / f"kill-{name}"
    t0 = time.time()
    dead = train(tmp, model, f"m-{name}.h5", "--checkpoint", ck, "--checkpoint-every", 1, check=False,
                 env={"SHARDLEARN_FAULT": "step@1:kill"}, timeout=60)
    end = time.time()
    assert dead.returncode != 0, dead.stdout + dead.stderr
    assert not (tmp / f"m-{name}.h5").exists()
    # rank 1 died right after the checkpoint of step 1 (its mtime is the moment of the kill);
    # mpiexec ended rank 0 well before 10 s (measured: under 0.1 s)
    assert sorted(os.listdir(ck)) == ["ckpt-00000001.h5"]
    assert end - os.path.getmtime(ck / "ckpt-00000001.h5") < 10 and end - t0 < 60
    proc = train(tmp, model, f"m-{name}.h5", "--checkpoint", ck, "--checkpoint-every", 1, "--resume")
    report = json.loads((tmp / f"m-{name}.json").read_text())
    assert report["checkpoint"]["resumed_from_step"] == 1, proc.stdout
    assert_same_model(tmp / f"ref-{name}.h5", tmp / f"m-{name}.h5")


SITECUSTOMIZE = """
import os, signal
if os.environ.get("PMI_RANK") == "1":        # the last of 2 ranks gets SIGUSR1 at its 3rd step
    from shardlearn.util import faults
    _check, _n = faults.check, [0]
    def check(site):
        if site == "step":
            _n[0] += 1
            if _n[0] == 3:
                os.kill(os.getpid(), signal.SIGUSR1)
        _check(site)
    faults.check = check
"""


def test_cli_signal_exits_3_other_options_refuse_and_resume_is_bit_identical(cli_data):
    tmp = cli_data
    hook = tmp / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    if not (tmp / "ref-gbdt.h5").exists():
        train(tmp, GBDT, "ref-gbdt.h5")
    ck = tmp / "sig"
    stopped = train(tmp, GBDT, "s.h5", "--checkpoint", ck, check=False,
                    env={"PYTHONPATH": f"{SRC}{os.pathsep}{hook}"})
    # every rank exits 3 (mpiexec passes the status on), one message, a checkpoint of step 4
    # (the signal arrived after step 3's boundary: the next one saves and stops)
    assert stopped.returncode == 3, stopped.stdout + stopped.stderr
    msg = [ln for ln in stopped.stderr.splitlines() if "SIGUSR1" in ln]
    assert len(msg) == 1 and "at step 4" in msg[0] and "--resume" in msg[0], stopped.stderr
    assert sorted(os.listdir(ck)) == ["ckpt-00000004.h5"] and not (tmp / "s.h5").exists()
    # --resume with another option: one line, exit status 2 on every rank, nothing written
    bad = train(tmp, [*GBDT, "--learning-rate", 0.2], "s.h5", "--checkpoint", ck, "--resume", check=False)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    err = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and "other parameters" in err[0] and "learning_rate: 0.1 then, 0.2 now" in err[0], err
    assert not (tmp / "s.h5").exists()
    train(tmp, GBDT, "s.h5", "--checkpoint", ck, "--resume")
    assert_same_model(tmp / "ref-gbdt.h5", tmp / "s.h5")


def test_cli_memory_error_on_one_rank_ends_the_job(cli_data):
    tmp = cli_data
    t0 = time.time()
    proc = train(tmp, GBDT, "mem.h5", check=False, env={"SHARDLEARN_FAULT": "step@1:memory"}, timeout=60)
    assert proc.returncode != 0 and time.time() - t0 < 60
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("shardlearn:")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("shardlearn: rank 1: MemoryError in GradientBoostingClassifier.fit"), lines
    assert not (tmp / "mem.h5").exists()


def test_stop_signals_get_their_handlers_back_after_a_fit(tmp_path):
    """After a checkpointed fit, also one stopped by a signal, Ctrl-C works again."""
    from shardlearn.checkpoint import Checkpoint
    from shardlearn.errors import TrainingInterrupted
    from shardlearn.models.trees import RandomForestRegressor
    from shardlearn.runtime import init

    ctx = init(topology="native", verbose=False)
    X = np.random.default_rng(0).normal(size=(300, 3))
    before = signal.getsignal(signal.SIGINT)

    class Stop(Checkpoint):
        def step(self, step, state_fn):
            if step == 2:
                os.kill(os.getpid(), signal.SIGUSR1)
            return super().step(step, state_fn)

    with pytest.raises(TrainingInterrupted, match="SIGUSR1 at step 2"):
        RandomForestRegressor(n_estimators=4, max_depth=3, comm=ctx).fit(X, X[:, 0], checkpoint=Stop(tmp_path))
    assert signal.getsignal(signal.SIGINT) is before
    m = RandomForestRegressor(n_estimators=4, max_depth=3, comm=ctx).fit(
        X, X[:, 0], checkpoint=Checkpoint(tmp_path, resume=True))
    assert signal.getsignal(signal.SIGINT) is before and m.n_iter_ == 4
