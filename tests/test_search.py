"""Parameter search and cross-validation on groups of ranks (models/selection, ``search``).

One mpiexec launch per rank count P = 1..4 runs the searches for every group count
G in {1, 2, P}; the scores must not depend on P or G, and equal scikit-learn's
GridSearchCV on the same folds (logistic, ridge; LinearSVC, decision tree and kNN in one
more launch on 3 ranks, which also checks that a fit on a row subset, ``rows=``, is the
fit on the copy). Further launches: a failing candidate
(recorded, the search goes on; error_score='raise' stops every rank alike), halving
(scikit-learn's schedule), the CLI end to end and bad grids (one clear error).
"""
import csv
import json

import h5py
import numpy as np
import pytest

from mpirun import json_lines, run_cli, run_script

SEARCH_SCRIPT = """
import numpy as np
from shardlearn.runtime import init
from shardlearn.util.blocks import block_bounds
from shardlearn.models.linear import LogisticRegression, Ridge
from shardlearn.models.trees import GradientBoostingClassifier
from shardlearn.models.selection import GridSearch, cross_validate
from shardlearn.models.selection._folds import assign_folds
ctx = init(topology="native", verbose=False)
D = np.load({path!r})
def part(a):
    lo, hi = block_bounds(len(a), ctx.size, ctx.rank)
    return a[lo:hi]
Xc, yc, Xr, yr = (part(D[k]) for k in ("Xc", "yc", "Xr", "yr"))
def lanes_check():
    # lanes with different numbers and kinds of collectives and an agreed error in one of
    # them give what the same calls give one lane after another on the real context
    from shardlearn.errors import ShardlearnError
    from shardlearn.models.selection._lockstep import agreed_value, run_lanes
    def lane(i):
        def fn(c):
            out = []
            for j in range(i + 1):
                out.append(c.coll.allreduce(np.full(3, float(c.rank + i + j))).tolist())
                out.append(c.coll.allreduce(np.array([c.rank * 10 + i], dtype=np.int64), op="max").tolist())
            out.append(c.coll.allgather_obj((c.rank, i)))
            def bad():
                with c.collective_errors():
                    if i == 1 and c.rank == c.size - 1:
                        raise ShardlearnError("lane 1 fails on the last rank")
                return "fine"
            out.append(agreed_value(c, bad))
            return out
        return fn
    vals, facts = run_lanes(ctx, [lane(i) for i in range(3)])
    seq = [lane(i)(ctx) for i in range(3)]
    return [vals == seq, vals[1][-1], facts["rounds"], sum(len(v) for v in seq)]
def splits(s, k):
    return [[float(s.cv_results_[f"split{{f}}_test_score"][i]) for f in range(k)]
            for i in range(len(s.cv_results_["params"]))]
out = {{}}
for G in sorted({{1, 2, ctx.size}} & set(range(1, ctx.size + 1))):
    r = {{}}
    grid = {{"C": [0.01, 0.1, 1.0, 10.0]}}
    s = GridSearch(LogisticRegression(tol=1e-10, max_iter=1000), grid, scoring="neg_log_loss", cv=4,
                   n_groups=G, refit=True, comm=ctx).fit(Xc, yc)
    r["logistic"] = splits(s, 4)
    r["best"] = [s.best_params_, s.best_index_, s.best_score_, s.best_estimator_.coef_.ravel().tolist()]
    r["rank"] = s.cv_results_["rank_test_score"].tolist()
    if G == 1:   # one by one: G > 1 is covered by ridge_seq and gbdt
        s = GridSearch(LogisticRegression(tol=1e-10, max_iter=1000), grid, scoring="neg_log_loss", cv=4,
                       n_groups=G, refit=False, multi_alpha=False, comm=ctx).fit(Xc, yc)
        r["logistic_seq"] = splits(s, 4)
    if G == ctx.size:
        s = GridSearch(LogisticRegression(tol=1e-10, max_iter=1000), grid, scoring="accuracy", cv=4,
                       n_groups=G, refit=False, comm=ctx).fit(Xc, yc)
        r["logistic_acc"] = splits(s, 4)
    s = GridSearch(Ridge(), {{"alpha": [0.01, 1.0, 100.0], "fit_intercept": [True, False]}}, cv=3,
                   n_groups=G, refit=False, comm=ctx).fit(Xr, yr)
    r["ridge"] = splits(s, 3)
    r["ridge_params"] = s.cv_results_["params"]
    s = GridSearch(Ridge(), {{"alpha": [0.01, 1.0, 100.0]}}, cv=3, n_groups=G, refit=False,
                   multi_alpha=False, comm=ctx).fit(Xr, yr)
    r["ridge_seq"] = splits(s, 3)
    s = GridSearch(GradientBoostingClassifier(n_estimators=4, min_child_samples=5), {{"num_leaves": [4, 8]}},
                   cv=3, n_groups=G, refit=False, lockstep="auto", comm=ctx).fit(Xc, yc)
    r["gbdt"] = splits(s, 3)
    r["gbdt_lockstep"] = [s.lockstep_, s.lockstep_stats_]
    if G == 1:   # one fit after another (lockstep=1, the default) against the folds side by side (auto)
        s = GridSearch(GradientBoostingClassifier(n_estimators=4, min_child_samples=5), {{"num_leaves": [4, 8]}},
                       cv=3, n_groups=G, refit=False, lockstep=1, comm=ctx).fit(Xc, yc)
        r["gbdt_seq"] = splits(s, 3)
        # float32 rows: every fit converts its own copy (the bins' cache must not key on it)
        r["gbdt32"] = [splits(GridSearch(GradientBoostingClassifier(n_estimators=3, min_child_samples=5),
                                         {{"num_leaves": [4, 8]}}, cv=3, refit=False, lockstep=ls, comm=ctx)
                              .fit(Xc.astype(np.float32), yc), 3) for ls in ("auto", 1)]
        r["lanes"] = lanes_check()
    cvr = cross_validate(Ridge(alpha=1.0), Xr, yr, cv=5, n_groups=G, comm=ctx)
    r["cross_validate"] = cvr["test_score"].tolist()
    # fewer rows than ranks: 3 rows, some ranks empty
    lo, hi = block_bounds(3, ctx.size, ctx.rank)
    tiny = cross_validate(Ridge(alpha=1.0), D["Xr"][:3][lo:hi], D["yr"][:3][lo:hi], cv=3, n_groups=G,
                          scoring="neg_mean_squared_error", comm=ctx)
    r["tiny"] = tiny["test_score"].tolist()
    out[str(G)] = r
folds_c = np.concatenate(ctx.coll.allgather_obj(assign_folds(ctx, yc, 4, 0, True)))
folds_r = np.concatenate(ctx.coll.allgather_obj(assign_folds(ctx, yr, 3, 0, False)))
folds_5 = np.concatenate(ctx.coll.allgather_obj(assign_folds(ctx, yr, 5, 0, False)))
out["folds"] = [folds_c.tolist(), folds_r.tolist(), folds_5.tolist()]
if ctx.rank == 0:
    emit(out)
"""

FAIL_SCRIPT = """
import numpy as np
from shardlearn.errors import ShardlearnError
from shardlearn.runtime import init
from shardlearn.util.blocks import block_bounds
from shardlearn.models.linear import Ridge
from shardlearn.models.selection import GridSearch
ctx = init(topology="native", verbose=False)
D = np.load({path!r})
lo, hi = block_bounds(len(D["Xr"]), ctx.size, ctx.rank)
X = np.column_stack([D["Xr"], D["Xr"][:, :1]])[lo:hi]      # a duplicated column: alpha=0 is singular
y = D["yr"][lo:hi]
out = {{}}
for G in (1, ctx.size):
    for multi in (True, False):
        s = GridSearch(Ridge(), {{"alpha": [0.0, 1.0, 10.0]}}, cv=3, n_groups=G, multi_alpha=multi,
                       error_score=-1.0, comm=ctx).fit(X, y)
        out[f"{{G}}-{{multi}}"] = [s.cv_results_["mean_test_score"].tolist(), s.cv_results_["error"],
                                   s.best_params_, s.cv_results_["rank_test_score"].tolist()]
try:
    GridSearch(Ridge(), {{"alpha": [0.0, 1.0]}}, cv=3, n_groups=ctx.size, error_score="raise",
               multi_alpha=False, comm=ctx).fit(X, y)
    out["raise"] = None
except ShardlearnError as exc:
    out["raise"] = [str(exc), bool(getattr(exc, "agreed", False))]
for bad in ({{"alpha": []}}, {{"alpah": [1.0]}}, {{"alpha": [-1.0]}}, {{"alpha": ["x"]}}, []):
    try:
        GridSearch(Ridge(), bad, cv=3, comm=ctx).fit(X, y)
        out.setdefault("bad", []).append(None)
    except ShardlearnError as exc:
        out.setdefault("bad", []).append(str(exc))
if ctx.rank == 0:
    emit(out)
"""

HALVING_SCRIPT = """
import numpy as np
from shardlearn.runtime import init
from shardlearn.util.blocks import block_bounds
from shardlearn.models.linear import LogisticRegression
from shardlearn.models.selection import GridSearch, RandomSearch
ctx = init(topology="native", verbose=False)
D = np.load({path!r})
lo, hi = block_bounds(len(D["Xc"]), ctx.size, ctx.rank)
X, y = D["Xc"][lo:hi], D["yc"][lo:hi]
out = {{}}
for G in (1, ctx.size):
    s = GridSearch(LogisticRegression(tol=1e-10), {{"C": [1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0, 100.0]}},
                   cv=3, halving=True, factor=3, n_groups=G, scoring="neg_log_loss", refit=False, comm=ctx).fit(X, y)
    r = s.cv_results_
    out[str(G)] = {{"iter": r["iter"].tolist(), "n_resources": r["n_resources"].tolist(),
                   "mean": r["mean_test_score"].tolist(), "params": r["params"], "best": s.best_params_,
                   "n_resources_": s.n_resources_, "n_candidates_": s.n_candidates_}}
    rs = RandomSearch(LogisticRegression(), {{"C": [0.01, 0.1, 1.0, 10.0], "fit_intercept": [True, False]}}, n_iter=3,
                      cv=3, n_groups=G, refit=False, random_state=5, comm=ctx).fit(X, y)
    out["random" + str(G)] = [rs.cv_results_["params"], rs.cv_results_["mean_test_score"].tolist()]
if ctx.rank == 0:
    emit(out)
"""

MODELS_SCRIPT = """
import numpy as np
from shardlearn.runtime import init
from shardlearn.util.blocks import block_bounds
from shardlearn.models.linear import LinearSVC
from shardlearn.models.trees import DecisionTreeClassifier, GradientBoostingRegressor, RandomForestClassifier
from shardlearn.models.knn import KNeighborsClassifier
from shardlearn.models.kmeans import KMeans
from shardlearn.models.selection import GridSearch
ctx = init(topology="native", verbose=False)
D = np.load({path!r})
lo, hi = block_bounds(len(D["Xc"]), ctx.size, ctx.rank)
X, y, yr = D["Xc"][lo:hi], D["yc"][lo:hi], D["yr"][lo:hi]
out = {{}}
for G in (1, ctx.size):
    for name, est, grid, sc in (
            ("svm", LinearSVC(tol=1e-8, max_iter=2000), {{"C": [0.01, 1.0]}}, "roc_auc"),
            ("tree", DecisionTreeClassifier(), {{"max_depth": [2, 4], "min_samples_leaf": [1, 10]}}, "accuracy"),
            ("knn", KNeighborsClassifier(), {{"n_neighbors": [1, 5, 15], "weights": ["uniform", "distance"]}},
             "accuracy")):
        s = GridSearch(est, grid, cv=4, scoring=sc, n_groups=G, refit=False, comm=ctx).fit(X, y)
        out[f"{{name}}{{G}}"] = [[float(s.cv_results_[f"split{{f}}_test_score"][i]) for f in range(4)]
                                 for i in range(len(s.cv_results_["params"]))]
        out[name + "_params"] = s.cv_results_["params"]
# a fit on rows= is the fit on the copy, bit for bit (trees and k-means: the search's folds)
mask = np.random.default_rng(ctx.rank).random(len(X)) < 0.7
same = []
for make, yy in ((lambda: GradientBoostingRegressor(n_estimators=3, num_leaves=6, bagging_fraction=0.5,
                                                    bagging_freq=1, validation_fraction=0.2, comm=ctx), yr),
                 (lambda: GradientBoostingRegressor(n_estimators=3, num_leaves=6, quantized_grad=True,
                                                    comm=ctx), yr),
                 (lambda: RandomForestClassifier(n_estimators=2, comm=ctx), y),
                 (lambda: DecisionTreeClassifier(max_depth=4, comm=ctx), y)):
    a, b = make().fit(X[mask], yy[mask]), make().fit(X, yy, rows=mask)
    ta, tb = a.ensemble_.to_arrays(), b.ensemble_.to_arrays()
    same.append(all(np.array_equal(ta[k], tb[k], equal_nan=True) for k in ta))
for exact in (False, True) if ctx.device == "cpu" else (False,):   # exact_reduce runs on the CPU only
    a = KMeans(3, random_state=1, exact_reduce=exact, comm=ctx).fit(X[mask])
    b = KMeans(3, random_state=1, exact_reduce=exact, comm=ctx).fit(X, rows=np.flatnonzero(mask))
    same.append(bool(np.array_equal(a.cluster_centers_, b.cluster_centers_) and np.array_equal(a.labels_, b.labels_)))
out["rows_same"], out["device"] = same, ctx.device
if ctx.rank == 0:
    emit(out)
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("search")
    rs = np.random.default_rng(3)
    n = 240
    Xc = rs.normal(size=(n, 5))
    yc = (Xc @ rs.normal(size=5) + 0.8 * rs.normal(size=n) > 0.3).astype(np.float64)
    Xr = rs.normal(size=(n, 4))
    yr = Xr @ rs.normal(size=4) + 0.5 * rs.normal(size=n) + 2.0
    np.savez(d / "data.npz", Xc=Xc, yc=yc, Xr=Xr, yr=yr)
    with h5py.File(d / "c.h5", "w") as h:
        h["X"], h["y"] = Xc, yc.astype(np.int64)
    return d


def _launch(P, data, tmp):
    proc = run_script(P, SEARCH_SCRIPT.format(path=str(data / "data.npz")), tmp, timeout=240)
    return json_lines(proc.stdout)[0]


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search_runs")
    return {P: _launch(P, data, tmp) for P in (1, 2)}


def _close(a, b, tol):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape and np.allclose(a, b, rtol=tol, atol=tol), (a, b)


def _same_scores(runs):
    ref = runs[1]["1"]
    for P, res in runs.items():
        assert res["folds"] == runs[1]["folds"], f"folds differ on {P} ranks"
        for G, r in res.items():
            if G == "folds":
                continue
            for key, tol in (("logistic", 1e-7), ("logistic_seq", 1e-7), ("ridge", 1e-9), ("ridge_seq", 1e-9),
                             ("cross_validate", 1e-9), ("tiny", 1e-9), ("gbdt", 1e-12), ("logistic_acc", 0)):
                if key in r:
                    _close(r[key], ref[key], tol)
            assert r["best"][:2] == ref["best"][:2] and r["rank"] == ref["rank"]
            _close(r["best"][3], ref["best"][3], 1e-6)   # the refit on all rows with all ranks


def test_scores_do_not_depend_on_ranks_or_groups(runs):
    _same_scores(runs)


@pytest.mark.slow
def test_scores_do_not_depend_on_ranks_or_groups_on_3_and_4_ranks(runs, data, tmp_path):
    _same_scores({**runs, **{P: _launch(P, data, tmp_path) for P in (3, 4)}})


def test_the_many_alpha_pass_gives_the_one_by_one_scores(runs):
    r = runs[1]["1"]
    _close(runs[2]["1"]["logistic"], r["logistic_seq"], 1e-7)    # lockstep L-BFGS on a 2-rank group
    _close([row for row, p in zip(r["ridge"], r["ridge_params"]) if p["fit_intercept"]], r["ridge_seq"], 1e-9)


def test_lockstep_fits_give_the_one_by_one_scores(runs):
    for P in (1, 2):
        r = runs[P]["1"]
        assert r["gbdt"] == r["gbdt_seq"]          # bit for bit (P = 2: a + b whatever the packing)
        assert r["gbdt32"][0] == r["gbdt32"][1]
        same, msg, rounds, calls = r["lanes"]
        assert same and "lane 1 fails on the last rank" in msg
        assert rounds < calls                      # packed: fewer rounds than calls one by one
    lanes, stats = runs[2]["1"]["gbdt_lockstep"]
    assert lanes == 3 and stats["units"] == 2 and stats["fits"] == 6 and 0 < stats["rounds"] < stats["collectives"] * 3
    assert stats["bin_misses"] == 3 and stats["bin_hits"] == 3        # each fold binned once
    assert runs[1]["1"]["gbdt_lockstep"][0] == 1 and runs[2]["2"]["gbdt_lockstep"][0] == 1   # 1-rank groups


def test_folds_are_stratified_and_balanced(runs, data):
    D = np.load(data / "data.npz")
    folds = np.array(runs[1]["folds"][0])
    for c in (0.0, 1.0):
        counts = np.bincount(folds[D["yc"] == c], minlength=4)
        assert counts.max() - counts.min() <= 1, counts
    assert np.bincount(np.array(runs[1]["folds"][1])).tolist() == [80, 80, 80]


def test_equal_to_scikit_learn_on_the_same_folds(runs, data):
    from sklearn.linear_model import LogisticRegression as SkLogistic, Ridge as SkRidge
    from sklearn.model_selection import GridSearchCV, PredefinedSplit, cross_val_score

    D = np.load(data / "data.npz")
    r = runs[1]["1"]
    fc, fr, f5 = (np.array(f) for f in runs[1]["folds"])
    sk = GridSearchCV(SkLogistic(tol=1e-10, max_iter=5000), {"C": [0.01, 0.1, 1.0, 10.0]},
                      scoring="neg_log_loss", cv=PredefinedSplit(fc)).fit(D["Xc"], D["yc"])
    ours = np.array(r["logistic"])
    _close(ours, np.array([[sk.cv_results_[f"split{f}_test_score"][i] for f in range(4)] for i in range(4)]), 1e-5)
    assert r["best"][0] == sk.best_params_ and np.isclose(r["best"][2], sk.best_score_, rtol=1e-5)
    _close(r["best"][3], sk.best_estimator_.coef_.ravel(), 1e-4)
    sk = GridSearchCV(SkLogistic(tol=1e-10, max_iter=5000), {"C": [0.01, 0.1, 1.0, 10.0]},
                      cv=PredefinedSplit(fc)).fit(D["Xc"], D["yc"])
    _close(r["logistic_acc"], [[sk.cv_results_[f"split{f}_test_score"][i] for f in range(4)] for i in range(4)], 1e-12)
    sk = GridSearchCV(SkRidge(), {"alpha": [0.01, 1.0, 100.0], "fit_intercept": [True, False]},
                      cv=PredefinedSplit(fr)).fit(D["Xr"], D["yr"])
    assert r["ridge_params"] == sk.cv_results_["params"]
    _close(r["ridge"], [[sk.cv_results_[f"split{f}_test_score"][i] for f in range(3)] for i in range(6)], 1e-8)
    _close(r["cross_validate"], cross_val_score(SkRidge(alpha=1.0), D["Xr"], D["yr"], cv=PredefinedSplit(f5)), 1e-8)


def test_a_failing_candidate_is_recorded_and_the_search_goes_on(data, tmp_path):
    proc = run_script(3, FAIL_SCRIPT.format(path=str(data / "data.npz")), tmp_path, timeout=120)
    out = json_lines(proc.stdout)[0]
    for key in ("1-True", "1-False", "3-True", "3-False"):
        mean, errors, best, rank = out[key]
        assert mean[0] == -1.0 and "singular" in errors[0], (key, errors)
        assert errors[1:] == [None, None] and mean[1] > 0.5 and mean[2] > 0.5
        assert best in ({"alpha": 1.0}, {"alpha": 10.0}) and rank[0] == 3
    msg, agreed = out["raise"]
    assert agreed and "singular" in msg and "error_score='raise'" in msg
    bad = out["bad"]
    assert "'alpha': the list of values is empty" in bad[0]
    assert "unknown parameter 'alpah' for Ridge" in bad[1] and "alpha" in bad[1]
    assert "alpha must be >= 0" in bad[2]
    assert "invalid value" in bad[3] or "alpha" in bad[3]
    assert "empty" in bad[4]


def test_halving_follows_scikit_learns_schedule(data, tmp_path):
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.linear_model import LogisticRegression as SkLogistic
    from sklearn.model_selection import HalvingGridSearchCV

    proc = run_script(2, HALVING_SCRIPT.format(path=str(data / "data.npz")), tmp_path, timeout=120)
    out = json_lines(proc.stdout)[0]
    D = np.load(data / "data.npz")
    grid = {"C": [1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0, 100.0]}
    sk = HalvingGridSearchCV(SkLogistic(), grid, cv=3, factor=3).fit(D["Xc"], D["yc"])
    for G in ("1", "2"):
        r = out[G]
        assert r["n_resources_"] == sk.n_resources_ and r["n_candidates_"] == sk.n_candidates_
        assert r["iter"] == [i for i, n in enumerate(sk.n_candidates_) for _ in range(n)]
        last = [m for m, it in zip(r["mean"], r["iter"]) if it == r["iter"][-1]]
        assert max(last) == pytest.approx(max(m for m, it in zip(r["mean"], r["iter"]) if it == r["iter"][-1]))
        _close(r["mean"], out["1"]["mean"], 1e-7)
        assert r["params"] == out["1"]["params"] and r["best"] == out["1"]["best"]
        assert out["random" + G] == out["random1"] and len(out["random1"][0]) == 3


def test_cli_end_to_end(data, tmp_path):
    res = tmp_path / "res.json"
    p = run_cli(2, "search", "logistic", "--data", data / "c.h5", "--param", "C=log:1e-2:1e1:4",
                "--param", "fit_intercept=true,false", "--cv", "3", "--groups", "2", "--refit",
                "--scoring", "roc_auc", "--out", res, "--report", tmp_path / "rep.json", timeout=120)
    assert "search: 24/24 fits" in p.stdout and "best so far" in p.stdout
    out = json.loads(res.read_text())
    cv = out["cv_results"]
    assert len(cv["params"]) == 8 and cv["params"][0] == {"C": 0.01, "fit_intercept": True}
    for key in ("mean_test_score", "std_test_score", "rank_test_score", "split0_test_score",
                "split2_test_score", "mean_fit_time", "param_C"):
        assert key in cv and len(cv[key]) == 8
    best = int(np.argmin(cv["rank_test_score"]))
    assert out["best_params"] == cv["params"][best] and out["best_score"] == cv["mean_test_score"][best]
    rows = list(csv.DictReader(open(tmp_path / "res.csv")))
    assert len(rows) == 8 and float(rows[best]["mean_test_score"]) == pytest.approx(out["best_score"])
    with h5py.File(tmp_path / "res.h5") as h:      # the refitted best model, as 'train' writes it
        assert h.attrs or len(h)
    ev = run_cli(2, "evaluate", "--model", tmp_path / "res.h5", "--data", data / "c.h5", timeout=60)
    assert "accuracy" in ev.stdout
    # k-means and trees run through the same command
    run_cli(2, "search", "kmeans", "--data", data / "c.h5", "--param", "n_clusters=2,3", "--cv", "2",
            "--groups", "1", "--lockstep", "2", "--out", tmp_path / "k.json", "--quiet", timeout=120)
    k = json.loads((tmp_path / "k.json").read_text())
    assert len(k["cv_results"]["params"]) == 2 and k["lockstep"] == 2 and k["lockstep_stats"]["fits"] == 4
    # kNN refits with its training data's path (its model file refers to the rows)
    run_cli(2, "search", "knn", "--data", data / "c.h5", "--param", "n_neighbors=1,7", "--cv", "3", "--groups", "auto",
            "--refit", "--out", tmp_path / "n.json", "--quiet", timeout=120)
    out = json.loads((tmp_path / "n.json").read_text())
    assert len(out["cv_results"]["params"]) == 2 and (tmp_path / "n.h5").exists()


def test_svm_tree_and_knn_match_scikit_learn_on_the_same_folds(runs, data, tmp_path):
    """LinearSVC, DecisionTreeClassifier and KNeighborsClassifier searched on 3 ranks with
    G = 1 and 3; fits on a row subset (rows=) equal fits on the copy."""
    from sklearn.model_selection import GridSearchCV, PredefinedSplit
    from sklearn.neighbors import KNeighborsClassifier as SkKNN
    from sklearn.svm import LinearSVC as SkSVC
    from sklearn.tree import DecisionTreeClassifier as SkTree

    proc = run_script(3, MODELS_SCRIPT.format(path=str(data / "data.npz")), tmp_path, timeout=180)
    out = json_lines(proc.stdout)[0]
    assert out["rows_same"] == [True] * (6 if out["device"] == "cpu" else 5)   # a device run: no exact_reduce
    D = np.load(data / "data.npz")
    fc = np.array(runs[1]["folds"][0])      # the folds of cv=4, seed 0: the same on any P
    for name, sk, grid, sc, tol in (
            ("svm", SkSVC(tol=1e-8, max_iter=100000), {"C": [0.01, 1.0]}, "roc_auc", 2e-3),
            # binned splits (each feature's 240 values get their own bin) break ties unlike scikit-learn's
            ("tree", SkTree(random_state=0), {"max_depth": [2, 4], "min_samples_leaf": [1, 10]}, "accuracy", 0.05),
            ("knn", SkKNN(), {"n_neighbors": [1, 5, 15], "weights": ["uniform", "distance"]}, "accuracy", 0)):
        ref = GridSearchCV(sk, grid, cv=PredefinedSplit(fc), scoring=sc).fit(D["Xc"], D["yc"])
        assert out[name + "_params"] == ref.cv_results_["params"]
        want = [[ref.cv_results_[f"split{f}_test_score"][i] for f in range(4)] for i in range(len(ref.cv_results_["params"]))]
        _close(out[name + "1"], want, tol)
        _close(out[name + "3"], out[name + "1"], 1e-6 if name == "svm" else 0)   # any number of groups


def test_cli_model_names_map_to_the_estimators():
    from argparse import Namespace

    from shardlearn.cli.search import MODELS, _estimator

    expect = {("svm", "classification"): "LinearSVC", ("tree", "classification"): "DecisionTreeClassifier",
              ("tree", "regression"): "DecisionTreeRegressor", ("knn", "classification"): "KNeighborsClassifier",
              ("knn", "regression"): "KNeighborsRegressor", ("forest", "regression"): "RandomForestRegressor"}
    for (model, objective), name in expect.items():
        assert model in MODELS
        est = _estimator(Namespace(model=model, objective=objective, fixed=[], seed=3))
        assert type(est).__name__ == name
        assert getattr(est, "random_state", 3) == 3


@pytest.mark.parametrize("args, message", [
    (["--param", "C=log:1:x:3"], "expected log:LOW:HIGH:N"),
    (["--param", "C="], "no values for C"),
    (["--param", "nope=1,2"], "unknown parameter 'nope'"),
    (["--param", "C=-1,1"], "C must be > 0"),
    (["--param", "C=1", "--groups", "3"], "groups must be"),
    (["--param", "C=1", "--set", "C=1,2"], "one value expected"),
])
def test_cli_bad_grid_is_one_clear_error(data, tmp_path, args, message):
    p = run_cli(2, "search", "logistic", "--data", data / "c.h5", "--out", tmp_path / "r.json", *args,
                check=False, timeout=60)
    assert p.returncode == 2 and p.stderr.count("shardlearn: error:") == 1 and message in p.stderr, p.stderr
    assert not (tmp_path / "r.json").exists()


def test_grids_ranges_and_order_match_scikit_learn():
    from sklearn.model_selection import ParameterGrid

    from shardlearn.errors import ShardlearnError
    from shardlearn.models.linear import LogisticRegression
    from shardlearn.models.selection._grid import (check_candidates, expand_grid, parse_param,
                                                   sample_candidates)
    from shardlearn.models.selection._groups import auto_groups

    assert parse_param("C=log:1e-3:1e2:6") == ("C", [0.001, 0.01, 0.1, 1.0, 10.0, 100.0])
    assert parse_param("num-leaves=int:8:64:4") == ("num_leaves", [8, 27, 45, 64])
    assert parse_param("x=1,2.5,true,none,l2") == ("x", [1, 2.5, True, None, "l2"])
    grid = [{"C": [1, 10], "penalty": ["l2"], "fit_intercept": [True, False]}, {"C": [0.5]}]
    assert expand_grid(grid) == list(ParameterGrid(grid))
    draws = sample_candidates({"C": [1, 2, 3, 4], "tol": [1e-4, 1e-6]}, 5, seed=1)
    assert len(draws) == 5 and len({tuple(sorted(d.items())) for d in draws}) == 5
    assert draws == sample_candidates({"C": [1, 2, 3, 4], "tol": [1e-4, 1e-6]}, 5, seed=1)
    for bad, msg in (({"C": []}, "empty"), ({"CC": [1]}, "unknown parameter 'CC'"),
                     ({"C": [0.0]}, "C must be > 0"), ({"solver": ["newton"]}, "solver 'newton'")):
        with pytest.raises(ShardlearnError, match=msg):
            check_candidates(LogisticRegression(), expand_grid(bad))
    assert auto_groups(4, 1000, 10, 8, n_tasks=100) == 4          # small data: one rank per candidate
    assert auto_groups(4, 1000, 10, 8, n_tasks=2) == 2             # no group without a task
    assert auto_groups(4, 10**14, 10, 8, n_tasks=100) == 1         # too big to copy: pure data parallelism


# the working memory of a search is sized from the rows held; none of it changes the folds,
# the scores, or (beyond the order of the sums in the many-C blocks) the fitted models
CHUNK_SCRIPT = """
import numpy as np
from shardlearn.runtime import init
from shardlearn.util.blocks import block_bounds
from shardlearn.models.linear import LogisticRegression
from shardlearn.models.selection import _folds, _groups, _multi_alpha, _scoring
ctx = init(topology="native", verbose=False)
rs = np.random.default_rng(5)
n = 1500
X = rs.normal(size=(n, 6))
y = np.where(X @ rs.normal(size=6) + rs.normal(size=n) > 0, 3.0, -1.0)   # labels -1 and 3
lo, hi = block_bounds(n, ctx.size, ctx.rank)
X, y = X[lo:hi], y[lo:hi]
out = {{}}
# folds and class codes: the same for any block size (rows counted across blocks)
classes, codes = _folds.class_codes(ctx, y)
out["codes"] = [classes.tolist(), str(codes.dtype), bool((classes[codes] == y).all())]
ref = _folds.assign_folds(ctx, y, 5, 0, True)
_folds._CHUNK, _folds._MIN_CHUNK = 7, 7
out["folds_same"] = bool(np.array_equal(ref, _folds.assign_folds(ctx, y, 5, 0, True)))
_folds._CHUNK, _folds._MIN_CHUNK = 16384, 1024
# the many-C pass: a boolean mask is the 0/1 weights bit for bit; any block size gives the
# same optimum (only the order of the block sums differs), the same block size the same bits
train = ref != 1
cands = [{{"C": c}} for c in (0.01, 0.3, 10.0)]
def many(weight, block):
    _multi_alpha._BLOCK = _multi_alpha._MIN_BLOCK = block
    got = _multi_alpha.fit_many(LogisticRegression(tol=1e-10, max_iter=500), cands, ctx, X, y, weight)
    return np.array([np.r_[e.coef_.ravel(), e.intercept_, e.loss_] for e, _ in got])
a, b = many(train, 8192), many(train.astype(np.float64), 8192)
c, d = many(train, 37), many(train, 37)
out["many"] = [bool(np.array_equal(a, b)), bool(np.array_equal(c, d)), float(np.abs(a - c).max())]
_multi_alpha._BLOCK, _multi_alpha._MIN_BLOCK = 8192, 256
# the score of the test rows: the same whatever the chunk of rows gathered at a time
est = LogisticRegression(C=0.3, tol=1e-10, comm=ctx).fit(X, y, sample_weight=train.astype(np.float64))
rows = np.flatnonzero(~train)
s1 = _scoring.score(est, "neg_log_loss", ctx, X, y, rows=rows)
keep = _scoring.chunk_rows
_scoring.chunk_rows = lambda n: 5
s2 = _scoring.score(est, "neg_log_loss", ctx, X, y, rows=rows)
_scoring.chunk_rows = keep
out["score_same"] = s1 == s2
# one group: the result channel rides on the world's communicator (no Dup)
ch = _groups.ResultChannel(ctx, senders=False)
out["channel"] = [ch.comm is ctx.mpi_comm, _groups.ResultChannel(ctx).own == (ctx.size > 1)]
ch.free()
if ctx.rank == 0:
    emit(out)
"""


@pytest.mark.parametrize("P", [1, 2])
def test_working_memory_sizes_do_not_change_results(tmp_path, P):
    out = json_lines(run_script(P, CHUNK_SCRIPT.format(), tmp_path, timeout=120).stdout)[0]
    assert out["codes"] == [[-1.0, 3.0], "uint8", True]
    assert out["folds_same"] and out["score_same"]
    same_mask, deterministic, diff = out["many"]
    assert same_mask and deterministic and diff < 1e-8, out["many"]
    assert out["channel"] == [True, True]


def test_block_sizes_follow_the_rows_held():
    from shardlearn.models.selection._folds import chunk_rows
    from shardlearn.models.selection._multi_alpha import block_rows

    # the many-C temporaries (4 float64 and 1 bool x rows x runs) stay within 1/16 of the rows held
    for n, d, M in ((50_000, 20, 12), (200_000, 20, 12), (12_500, 20, 12), (10 ** 6, 50, 3), (40_000, 5, 100)):
        B = block_rows(n, d * 8, M)
        assert 256 <= B <= 8192
        assert B == 256 or B == 8192 or B * M * (4 * 8 + 1) <= n * d * 8 / 16
    assert block_rows(50_000, 160, 12) < block_rows(200_000, 160, 12) < block_rows(10 ** 6, 160, 12) == 8192
    assert block_rows(100, 160, 12) == 256       # a floor (a rank with fewer rows makes one block)
    assert chunk_rows(50_000) == 1562 and chunk_rows(10) == 1024 and chunk_rows(10 ** 7) == 16384


MEMORY_SCRIPT = """
import tracemalloc
import numpy as np
from shardlearn.runtime import init
from shardlearn.models.linear import LogisticRegression
from shardlearn.models.selection import _multi_alpha
ctx = init(topology="native", verbose=False, device="cpu")   # the host path's memory
rs = np.random.default_rng(ctx.rank)
n, d = 60000, 10
X = rs.normal(size=(n, d))
y = (X[:, 0] + rs.normal(size=n) > 0).astype(np.float64)
train = np.arange(n) % 5 != 1
cands = [{{"C": c}} for c in np.logspace(-3, 2, 12)]
est = LogisticRegression(tol=1e-6, max_iter=50)
_multi_alpha.fit_many(est, cands[:2], ctx, X[:100], y[:100], train[:100])     # imports, caches
tracemalloc.start()
base = tracemalloc.get_traced_memory()[0]
_multi_alpha.fit_many(est, cands, ctx, X, y, train)
peak = tracemalloc.get_traced_memory()[1] - base
if ctx.rank == 0:
    emit({{"peak": peak, "X": X.nbytes, "n": n}})
"""


def test_the_many_c_pass_holds_little_next_to_the_rows():
    # what the pass allocates on top of X, y and the fold's mask (tracemalloc counts NumPy's
    # buffers): the targets (1 byte a row), the weights as float64 for one X^T s (8 bytes a
    # row, freed before the blocks) and the block buffers (1/32 of X); it used to hold
    # float64 targets and class codes besides 12-column block temporaries of 8192 rows
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = json_lines(run_script(2, MEMORY_SCRIPT.format(), tmp, timeout=120).stdout)[0]
    assert out["peak"] < 10 * out["n"] + out["X"] / 32 + (256 << 10), out
