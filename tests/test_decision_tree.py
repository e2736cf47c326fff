"""Decision trees: vs scikit-learn's DecisionTree, the same tree for any P, weights, CLI.

Multi-rank checks run one script per world size P = 1..4 (module fixture), with 2 training
rows (ranks without rows) among the cases; the same script checks that the ``--resample``
weights do not depend on P (tests/test_resample.py reads them).
"""
import json

import h5py
import numpy as np
import pytest
from sklearn.datasets import make_classification, make_friedman1
from sklearn.tree import DecisionTreeClassifier as SkTree
from sklearn.tree import DecisionTreeRegressor as SkTreeReg
from sklearn.tree import export_text as sk_export_text

from mpirun import json_lines, run_cli, run_script
from shardlearn.errors import ShardlearnError
from shardlearn.models.trees import DecisionTreeClassifier, DecisionTreeRegressor, export_text
from shardlearn.runtime import init

ctx = init(topology="native", verbose=False)


def _grid_data(n=3000, d=6, seed=0, levels=12):
    """Classification data on an integer grid: at most ``levels`` values per feature, so every
    value has its own bin and the candidate splits are exactly scikit-learn's."""
    X, y = make_classification(n, d, n_informative=4, random_state=seed)
    return np.clip(np.round(X * 2), -levels // 2, levels // 2), y


# ------------------------------------------------------------------ vs scikit-learn
@pytest.mark.parametrize("criterion", ["gini", "entropy"])
def test_accuracy_within_half_a_percent_of_scikit_learn(criterion):
    """Mean held-out accuracy over three datasets (and, for scikit-learn, three random_states:
    a tree's accuracy moves by ~0.2-0.3 % with scikit-learn's feature order alone), within
    the issue's 0.5 %. On these 4500 continuous training rows the default bins are exact
    (every distinct value, uint16 codes): measured -0.48 % (gini, fully grown) to +0.19 %;
    with 255 quantile bins it was -1.09 % to -0.04 % (README.md, "Decision trees")."""
    for kw in ({}, {"max_depth": 8}, {"max_leaf_nodes": 40}):
        ours, ref = [], []
        for seed in range(3):
            X, y = make_classification(6000, 8, n_informative=6, random_state=seed)
            Xt, yt, Xv, yv = X[:4500], y[:4500], X[4500:], y[4500:]
            ours.append(DecisionTreeClassifier(criterion=criterion, comm=ctx, **kw).fit(Xt, yt).score(Xv, yv))
            ref += [SkTree(criterion=criterion, random_state=rs, **kw).fit(Xt, yt).score(Xv, yv) for rs in range(3)]
        assert np.mean(ours) >= np.mean(ref) - 0.005, (kw, np.mean(ours), np.mean(ref))


def test_regression_within_half_a_percent_of_scikit_learn():
    X, y = make_friedman1(8000, 8, noise=0.5, random_state=0)
    for kw in ({"max_depth": 8}, {"max_leaf_nodes": 64}, {"min_samples_leaf": 10}):
        ours = DecisionTreeRegressor(comm=ctx, **kw).fit(X[:6000], y[:6000]).score(X[6000:], y[6000:])
        ref = SkTreeReg(random_state=0, **kw).fit(X[:6000], y[:6000]).score(X[6000:], y[6000:])
        assert ours >= ref - 0.005, (kw, ours, ref)


def test_exact_bins_give_scikit_learns_tree_text_and_importances():
    """With one bin per distinct value the candidates are scikit-learn's: the same tree,
    thresholds (midpoints), rendering and feature importances."""
    X, y = _grid_data()
    for criterion in ("gini", "entropy"):
        ours = DecisionTreeClassifier(criterion=criterion, max_depth=3, comm=ctx).fit(X, y)
        ref = SkTree(criterion=criterion, max_depth=3, random_state=0).fit(X, y)
        assert export_text(ours) == sk_export_text(ref).replace("class: ", "class: "), criterion
        np.testing.assert_allclose(ours.feature_importances_, ref.feature_importances_, atol=1e-12)
        np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-12)
    Xr = np.round(make_friedman1(3000, 5, random_state=1)[0] * 20)
    yr = make_friedman1(3000, 5, random_state=1)[1]
    ours = DecisionTreeRegressor(max_depth=4, comm=ctx).fit(Xr, yr)
    ref = SkTreeReg(max_depth=4, random_state=0).fit(Xr, yr)
    np.testing.assert_allclose(ours.predict(Xr), ref.predict(Xr), rtol=1e-10)
    assert export_text(ours, decimals=3) == sk_export_text(ref, decimals=3)


def _assert_same_tree(ours, ref):
    """The same tree node by node: features, thresholds bit for bit, leaf sizes."""
    t, s = ours.ensemble_.trees[0], ref.tree_

    def rec(i, j):
        if t["feature"][i] < 0:
            assert s.children_left[j] == -1, (i, j)
            assert t["count"][i] == s.n_node_samples[j]
            return
        assert s.children_left[j] != -1 and t["feature"][i] == s.feature[j], (i, j)
        assert t["threshold"][i] == s.threshold[j], (i, j, t["threshold"][i], s.threshold[j])
        rec(int(t["left"][i]), int(s.children_left[j]))
        rec(int(t["right"][i]), int(s.children_right[j]))

    rec(0, 0)


def test_exact_bins_give_scikit_learns_tree_on_continuous_features():
    """Default bins on continuous features (up to 8192 distinct values each): every midpoint
    is a candidate (uint16 codes, models/trees/exact.py), so where no two splits tie the tree
    is scikit-learn's node for node, thresholds bit for bit; with NaN its predictions (two
    features may make the same partition of a node: a tie with the same predictions); max_bin
    above 255 does the same. (scikit-learn bins float32 copies of X: the data are float32 values.)"""
    X, y = make_classification(1500, 6, n_informative=6, n_redundant=0, random_state=3)
    X = X.astype(np.float32).astype(np.float64)
    for kw in ({"max_depth": 4}, {"max_depth": 4, "criterion": "entropy"}):
        ours = DecisionTreeClassifier(comm=ctx, **kw).fit(X, y)
        ref = SkTree(random_state=0, **kw).fit(X, y)
        # no tie: scikit-learn's feature order (random_state) does not change its tree (deeper,
        # nodes of a few rows tie, and scikit-learn's trees differ by random_state)
        other = SkTree(random_state=3, **kw).fit(X, y).tree_
        assert (other.feature == ref.tree_.feature).all() and (other.threshold == ref.tree_.threshold).all()
        _assert_same_tree(ours, ref)
        np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-12)
        np.testing.assert_allclose(ours.feature_importances_, ref.feature_importances_, atol=1e-12)
    assert len(ours.bin_mapper_.thresholds_[0]) == 1499
    assert export_text(DecisionTreeClassifier(max_depth=4, max_bin=2048, comm=ctx).fit(X, y)) == \
        sk_export_text(SkTree(max_depth=4, random_state=0).fit(X, y))
    Xr, yr = make_friedman1(1200, 5, random_state=3)
    Xr = Xr.astype(np.float32).astype(np.float64)
    Xr[::7, 1] = np.nan
    ours = DecisionTreeRegressor(max_depth=6, comm=ctx).fit(Xr, yr)
    ref = SkTreeReg(max_depth=6, random_state=0).fit(Xr, yr)
    np.testing.assert_allclose(ours.predict(Xr), ref.predict(Xr), rtol=1e-10)
    # the 255-bin tree is not scikit-learn's here (its splits fall on quantile edges)
    assert not np.allclose(DecisionTreeRegressor(max_depth=6, max_bin=255, comm=ctx).fit(Xr, yr).predict(Xr),
                           ref.predict(Xr), rtol=1e-10)


def test_exact_codes_and_quantile_fallback():
    """uint16 codes: code <= b exactly when x <= t[b], NaN -> n_bins; a feature with more
    distinct values than max_bin gets quantile_bins quantile bins."""
    from shardlearn.models.trees.exact import ExactBinMapper

    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=3000), np.round(rng.normal(size=3000) * 100), rng.integers(0, 3, 3000)])
    X[::9, 1] = np.nan
    m = ExactBinMapper(1000, quantile_bins=255).fit(X, np.arange(len(X)), len(X), ctx)
    codes = m.transform(X)
    assert codes.dtype == np.uint16 and codes.shape == (3, 3000)
    assert len(m.thresholds_[0]) <= 254                        # 3000 distinct values > 1000: quantiles
    assert len(m.thresholds_[1]) == len(np.unique(X[~np.isnan(X[:, 1]), 1])) - 1 > 254
    assert m.n_bins_[2] == 3 and list(m.offsets_[1:] - m.offsets_[:-1]) == list(m.n_bins_ + 1)
    for f in range(3):
        t, x = m.thresholds_[f], X[:, f]
        nan = np.isnan(x)
        assert np.array_equal(codes[f] == m.n_bins_[f], nan)
        for b in range(0, len(t), 17):
            assert np.array_equal(codes[f][~nan] <= b, x[~nan] <= t[b])


def test_exact_kernels_match_numpy(monkeypatch):
    """The compiled exact-bin loops (_exact_kernels.c) grow the NumPy path's trees."""
    X, y = make_classification(800, 5, n_informative=4, n_redundant=0, n_classes=3, random_state=5)
    X[::5, 2] = np.nan
    Xr, yr = make_friedman1(600, 5, random_state=5)
    fits = [lambda: DecisionTreeClassifier(comm=ctx).fit(X, y),
            lambda: DecisionTreeClassifier(criterion="entropy", max_leaf_nodes=30, comm=ctx).fit(X, y),
            lambda: DecisionTreeRegressor(min_samples_leaf=3, comm=ctx).fit(Xr, yr)]
    compiled = [f() for f in fits]
    monkeypatch.setenv("SHARDLEARN_KERNELS", "numpy")
    for a, f in zip(compiled, fits):
        b = f()
        ta, tb = a.ensemble_.trees[0], b.ensemble_.trees[0]
        for key in ("feature", "bin", "missing_left", "left", "right", "threshold"):
            np.testing.assert_array_equal(ta[key], tb[key], err_msg=key)
        np.testing.assert_allclose(ta["value"], tb["value"], rtol=1e-12, atol=1e-12)


def test_weights_class_weight_and_missing_values():
    X, y = _grid_data(seed=3)
    w = np.random.default_rng(0).integers(0, 3, len(y)).astype(float)
    rep = np.repeat(np.arange(len(y)), w.astype(int))
    a = DecisionTreeClassifier(max_depth=6, comm=ctx).fit(X, y, sample_weight=w)
    b = DecisionTreeClassifier(max_depth=6, comm=ctx).fit(X[rep], y[rep])
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))    # integer weight = copies
    yi = (y & (X[:, 0] > 1)).astype(int)                                     # imbalanced
    for cw in ("balanced", {0: 1.0, 1: 4.0}):
        ours = DecisionTreeClassifier(max_depth=4, class_weight=cw, comm=ctx).fit(X, yi)
        ref = SkTree(max_depth=4, class_weight=cw, random_state=0).fit(X, yi)
        np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-12)
    Xn = X.copy()
    Xn[::5, 1] = np.nan
    ours = DecisionTreeClassifier(max_depth=6, comm=ctx).fit(Xn, y)
    ref = SkTree(max_depth=6, random_state=0).fit(Xn, y)                    # scikit-learn >= 1.3
    assert abs(ours.score(Xn, y) - ref.score(Xn, y)) < 0.01
    assert "or NaN" in export_text(ours)


def test_growth_feature_importances_and_model_file(tmp_path):
    from shardlearn.models.io import load_estimator, save_estimator

    X, y = make_classification(3000, 6, n_informative=4, n_classes=3, random_state=2)
    labels = np.array(["ant", "bee", "cat"])[y]
    a = DecisionTreeClassifier(comm=ctx).fit(X, labels)
    b = DecisionTreeClassifier(growth="bestfirst", comm=ctx).fit(X, labels)
    assert a.get_n_leaves() == b.get_n_leaves()                 # without a leaf limit: the same tree
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    m = DecisionTreeClassifier(max_leaf_nodes=10, comm=ctx).fit(X, labels)
    assert m.get_n_leaves() == 10 and abs(m.feature_importances_.sum() - 1) < 1e-12
    save_estimator(m, str(tmp_path / "t.h5"), ctx)
    back = load_estimator(str(tmp_path / "t.h5"), ctx)
    np.testing.assert_array_equal(back.predict(X), m.predict(X))
    assert type(back) is DecisionTreeClassifier and export_text(back) == export_text(m)
    json.dumps(m.to_json())


def test_bad_parameters_are_clear_errors():
    X, y = _grid_data(n=200)
    for kw, words in (({"criterion": "squared_error"}, "criterion"), ({"max_depth": 0}, "max_depth"),
                      ({"min_samples_leaf": 0}, "min_samples_leaf"), ({"max_leaf_nodes": 1}, "max_leaf_nodes"),
                      ({"growth": "sideways"}, "growth"), ({"class_weight": {7: 2.0}}, "label 7")):
        with pytest.raises(ShardlearnError, match=words):
            DecisionTreeClassifier(comm=ctx, **kw).fit(X, y)
    with pytest.raises(ShardlearnError, match="class_weight is for classifiers"):
        DecisionTreeRegressor(class_weight="balanced", comm=ctx).fit(X, y.astype(float))
    with pytest.raises(ShardlearnError, match="sample_weight"):
        DecisionTreeClassifier(comm=ctx).fit(X, y, sample_weight=-np.ones(len(y)))
    with pytest.raises(ShardlearnError, match="not fitted"):
        DecisionTreeClassifier(comm=ctx).predict(X)


# ------------------------------------------------------------------ multi-rank
SCRIPT = r"""
import numpy as np
from sklearn.datasets import make_classification, make_friedman1
from shardlearn.util.blocks import block_bounds
from shardlearn.errors import ShardlearnError
from shardlearn.runtime import init
from shardlearn.models.trees import DecisionTreeClassifier, DecisionTreeRegressor, export_text
from shardlearn.models.resample import resample_weights

ctx = init(topology="native", verbose=False)
P, r = ctx.size, ctx.rank
import shardlearn.models.trees.histogram as H
H.PAIR_MIN_ROWS, H.SMALL_NODE_ROWS = 700, 150

def local(n):
    return slice(*block_bounds(n, P, r))

def out(case, m, Xq):
    a = m.ensemble_.to_arrays()
    pred = m.predict_proba(Xq) if hasattr(m, "predict_proba") else m.predict(Xq)
    if r == 0:
        emit({"case": case, "feature": a["feature"].tolist(), "bin": a["bin"].tolist(),
              "missing_left": a["missing_left"].tolist(), "pred": np.asarray(pred).tolist(),
              "text": export_text(m)})

X, y = make_classification(2400, 8, n_informative=5, n_classes=3, random_state=7)
X[::6, 2] = np.nan
s = local(len(X))
w = np.arange(len(X))[s] % 3 * 0.5
for case, kw in (("gini", {}), ("entropy", {"criterion": "entropy"}), ("bestfirst", {"max_leaf_nodes": 20}),
                 ("rs-balanced", {"hist_reduce": "reduce_scatter", "class_weight": "balanced", "max_depth": 6})):
    out(case, DecisionTreeClassifier(comm=ctx, **kw).fit(X[s], y[s]), X[:300])
out("weighted", DecisionTreeClassifier(max_depth=5, comm=ctx).fit(X[s], y[s], sample_weight=w), X[:300])
out("wide-bins", DecisionTreeClassifier(max_depth=8, max_bin=1024, comm=ctx).fit(X[s], y[s]), X[:300])
Xr, yr = make_friedman1(2000, 6, random_state=9)
s = local(len(Xr))
out("regression", DecisionTreeRegressor(max_depth=7, min_samples_leaf=5, comm=ctx).fit(Xr[s], yr[s]), Xr[:300])
s = local(2)
out("rows-2", DecisionTreeRegressor(comm=ctx).fit(Xr[:2][s], yr[:2][s]), Xr[:5])
# the resample weights of every row, gathered in row order
yi = (np.arange(5000) % 51 == 0).astype(int)
s = local(len(yi))
for kind, ratio in (("under", 1.0), ("over", 1.0), ("under", 3.0), ("over", 2.5)):
    wts = resample_weights(ctx, yi[s], kind, ratio, seed=3)
    allw = np.concatenate(ctx.coll.allgather_obj(wts))
    if r == 0:
        emit({"case": f"resample-{kind}-{ratio}", "weights": allw.tolist()})
try:
    DecisionTreeClassifier(comm=ctx).fit(X[local(len(X))], np.zeros(len(X))[local(len(X))])
    msg = None
except ShardlearnError as exc:
    msg = str(exc)
msgs = ctx.coll.allgather_obj(msg)
if r == 0:
    emit({"case": "one-class", "errors": msgs})
"""


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dtree")
    return {P: {row["case"]: row for row in json_lines(run_script(P, SCRIPT, tmp, timeout=240).stdout)}
            for P in (1, 2, 3, 4)}


@pytest.mark.parametrize("P", [2, 3, 4])
def test_same_tree_for_any_rank_count(worlds, P):
    ref, got = worlds[1], worlds[P]
    cases = [c for c in ref if "feature" in ref[c]]
    assert len(cases) == 8
    for case in cases:
        a, b = ref[case], got[case]
        assert (a["feature"], a["bin"], a["missing_left"]) == (b["feature"], b["bin"], b["missing_left"]), case
        assert a["text"] == b["text"], case
        # the same splits; leaf values are float sums over the ranks' rows (unquantized
        # histograms), so they agree to rounding: 1e-13 relative measured with exact bins
        np.testing.assert_allclose(b["pred"], a["pred"], rtol=1e-12, atol=1e-12, err_msg=case)
    assert len(got["one-class"]["errors"]) == P and all("only one class" in e for e in got["one-class"]["errors"])


def test_resample_weights_do_not_depend_on_P(worlds):
    for case in [c for c in worlds[1] if c.startswith("resample-")]:
        for P in (2, 3, 4):
            assert worlds[P][case]["weights"] == worlds[1][case]["weights"], (case, P)


# ----------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_train_tree_predict_evaluate(tmp_path):
    X, y = make_classification(2000, 5, n_informative=3, random_state=11)
    X[::7, 0] = np.nan
    data = tmp_path / "d.h5"
    with h5py.File(data, "w") as h:
        h["X"], h["y"] = X, y.astype(np.float64)
    model, text, dump = tmp_path / "t.h5", tmp_path / "t.txt", tmp_path / "t-dump.json"
    proc = run_cli(3, "train", "tree", "--data", data, "--out", model, "--criterion", "entropy", "--max-depth", 5,
                   "--text-dump", text, "--json-dump", dump, "--feature-names", "a,b,c,d,e", "--resample", "over")
    assert "tree: " in proc.stdout and "leaves" in proc.stdout and "resample over" in proc.stdout
    report = json.loads((tmp_path / "t.json").read_text())
    assert report["depth"] <= 5 and report["n_leaves"] >= 2 and report["params"]["criterion"] == "entropy"
    assert text.read_text().startswith("|--- ") and "class: " in text.read_text()
    assert len(json.loads(dump.read_text())["trees"]) == 1
    run_cli(2, "predict", "--model", model, "--data", data, "--out", tmp_path / "p.h5")
    ev = run_cli(1, "evaluate", "--model", model, "--data", data)
    assert float(ev.stdout.split("accuracy=")[1].split()[0]) > 0.85
    bad = run_cli(2, "train", "tree", "--data", data, "--out", tmp_path / "r.h5", "--objective", "regression",
                  "--resample", "under", check=False)
    assert bad.returncode == 2 and "--resample is for classifiers" in bad.stderr
    assert not (tmp_path / "r.h5").exists()
