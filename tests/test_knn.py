"""k nearest neighbours: equal to scikit-learn's brute force for P = 1..4 (both ways of moving
the queries, every metric and weighting, empty ranks, fewer training rows than ranks), the
NumPy path equal to the compiled one, model files that refer to their data, and the CLI."""
import json

import h5py
import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier as SkKNN
from sklearn.neighbors import KNeighborsRegressor as SkKNNReg

from mpirun import json_lines, run_cli, run_script
from shardlearn.errors import ShardlearnError
from shardlearn.models.knn import KNeighborsClassifier, KNeighborsRegressor
from shardlearn.models.knn._local import LocalIndex, unpack
from shardlearn.models.knn._search import choose_strategy
from shardlearn.runtime import init

ctx = init(topology="native", verbose=False)


def _data(n=1500, q=300, d=6, seed=0):
    g = np.random.default_rng(seed)
    X = g.standard_normal((n, d))
    y = (X[:, 0] + 0.7 * g.standard_normal(n) > 0).astype(int) + (X[:, 1] > 1)
    return X, y, g.standard_normal((q, d))


def test_numpy_path_equals_the_compiled_kernel():
    X, y, Q = _data()
    for metric in ("euclidean", "manhattan", "cosine"):
        a = LocalIndex(X, 100, metric, y)
        b = LocalIndex(X, 100, metric, y)
        b.kernels = None
        np.testing.assert_array_equal(a.topk(Q, 9), b.topk(Q, 9))
    # with counts (rows of count 0 left out, the rest taking count slots)
    w = np.random.default_rng(2).integers(0, 5, len(X))
    for metric in ("euclidean", "cosine"):
        a = LocalIndex(X, 100, metric, y, w)
        b = LocalIndex(X, 100, metric, y, w)
        b.kernels = None
        np.testing.assert_array_equal(a.topk(Q, 9), b.topk(Q, 9))
        _, rows, _ = unpack(a.topk(Q, 9), 9)
        assert np.all(np.isin(rows, 100 + np.flatnonzero(w)))
    # exact ties (duplicated rows) go to the lower global row
    Xd = np.repeat(X[:50], 3, axis=0)
    for idx in (LocalIndex(Xd, 0, "euclidean", np.zeros(150)),):
        _, rows, _ = unpack(idx.topk(X[:50], 3), 3)
        np.testing.assert_array_equal(rows, 3 * np.arange(50)[:, None] + np.arange(3))


def test_single_rank_matches_scikit_learn_and_errors():
    X, y, Q = _data(seed=1)
    for weights in ("uniform", "distance"):
        ours = KNeighborsClassifier(5, weights=weights, comm=ctx).fit(X, y)
        ref = SkKNN(5, weights=weights, algorithm="brute").fit(X, y)
        np.testing.assert_allclose(ours.predict_proba(Q), ref.predict_proba(Q), atol=1e-12)
        assert ours.score(Q, ref.predict(Q)) == 1.0
    # a query equal to a training row: distance 0 takes all the weight, as scikit-learn
    ours = KNeighborsRegressor(4, weights="distance", comm=ctx).fit(X, X[:, 0])
    ref = SkKNNReg(4, weights="distance", algorithm="brute").fit(X, X[:, 0])
    np.testing.assert_allclose(ours.predict(X[:20]), ref.predict(X[:20]), atol=1e-12)
    for kw, words in (({"n_neighbors": 0}, "n_neighbors"), ({"weights": "x"}, "weights"),
                      ({"metric": "cheb"}, "metric"), ({"strategy": "x"}, "strategy")):
        with pytest.raises(ShardlearnError, match=words):
            KNeighborsClassifier(**kw, comm=ctx).fit(X, y)
    with pytest.raises(ShardlearnError, match="more than the 1500 training rows"):
        KNeighborsClassifier(1501, comm=ctx).fit(X, y)
    m = KNeighborsClassifier(3, comm=ctx).fit(X, y)
    with pytest.raises(ShardlearnError, match="6 features"):
        m.predict(Q[:, :4])
    with pytest.raises(ShardlearnError, match="NaN"):
        m.predict(np.full((2, 6), np.nan))
    with pytest.raises(ShardlearnError, match="data_path"):
        m.to_model()


def test_strategy_rule():
    assert choose_strategy("auto", np.array([5000, 5000]), 20000, 4096) == "ring"
    assert choose_strategy("auto", np.array([5000, 5000]), 200000, 4096) == "broadcast"   # few queries
    assert choose_strategy("auto", np.array([9000, 100]), 20000, 4096) == "broadcast"     # one rank short
    assert choose_strategy("ring", np.array([1, 0]), 20000, 4096) == "ring"


SCRIPT = r"""
import numpy as np
from sklearn.neighbors import KNeighborsClassifier as SkKNN, KNeighborsRegressor as SkKNNReg
from shardlearn.util.blocks import block_bounds
from shardlearn.errors import ShardlearnError
from shardlearn.runtime import init
from shardlearn.models.knn import KNeighborsClassifier, KNeighborsRegressor

ctx = init(topology="native", verbose=False)
P, r = ctx.size, ctx.rank
g = np.random.default_rng(0)
X = g.standard_normal((1200, 6)); y = (X[:, 0] + 0.7 * g.standard_normal(1200) > 0).astype(int) + (X[:, 1] > 1)
Q = g.standard_normal((257, 6))

def gather(a):
    return np.concatenate(ctx.coll.allgather_obj(a))

def check(case, est, sk, Xt, yt, Xq, qslice, tslice):
    est.fit(Xt[tslice], yt[tslice])
    d, i = est.kneighbors(Xq[qslice])
    out = est.predict_proba(Xq[qslice]) if hasattr(est, "predict_proba") else est.predict(Xq[qslice])
    D, I, OUT = gather(d), gather(i), gather(out)
    sk.fit(Xt, yt)
    sd, si = sk.kneighbors(Xq)
    ref = sk.predict_proba(Xq) if hasattr(sk, "predict_proba") else sk.predict(Xq)
    ok = bool(np.array_equal(I, si) and np.allclose(D, sd, rtol=1e-9, atol=1e-9) and np.allclose(OUT, ref, atol=1e-12))
    if r == 0:
        emit({"case": case, "ok": ok, "strategy": est.strategy_, "bad": int((I != si).sum()) if I.shape == si.shape else -1})

tr, qs = slice(*block_bounds(1200, P, r)), slice(*block_bounds(257, P, r))
for j, metric in enumerate(("euclidean", "manhattan", "cosine")):
    for strategy in ("broadcast", "ring"):
        weights = ("uniform", "distance")[(j + (strategy == "ring")) % 2]
        check(f"{metric}-{weights}-{strategy}", KNeighborsClassifier(7, weights=weights, metric=metric,
              strategy=strategy, block_rows=50, comm=ctx), SkKNN(7, weights=weights, metric=metric,
              algorithm="brute"), X, y, Q, qs, tr)
check("regressor-ring", KNeighborsRegressor(5, weights="distance", strategy="ring", block_rows=40, comm=ctx),
      SkKNNReg(5, weights="distance", algorithm="brute"), X, X[:, 0] * 2 + X[:, 2], Q, qs, tr)
# every query on the last rank; three training rows (ranks without any when P = 4)
last = slice(0, 257) if r == P - 1 else slice(0, 0)
check("queries-on-one-rank", KNeighborsClassifier(4, block_rows=64, comm=ctx), SkKNN(4, algorithm="brute"),
      X, y, Q, last, tr)
check("three-training-rows", KNeighborsClassifier(2, strategy="ring", block_rows=16, comm=ctx),
      SkKNN(2, algorithm="brute"), X[:3], y[:3], Q, qs, slice(*block_bounds(3, P, r)))
# sample weights as resampling counts: equal to scikit-learn on the materialised data (each
# row repeated count times, rows of count 0 removed); its neighbour indices map back to rows
def checkw(case, est, sk, w, yt, tslice, qslice):
    est.fit(X[tslice], yt[tslice], sample_weight=None if est.resample else w[tslice])
    d, i = est.kneighbors(Q[qslice])
    out = est.predict_proba(Q[qslice]) if hasattr(est, "predict_proba") else est.predict(Q[qslice])
    D, I, OUT = gather(d), gather(i), gather(out)
    src = np.repeat(np.arange(len(w)), w.astype(int))
    sk.fit(X[src], yt[src])
    sd, si = sk.kneighbors(Q)
    ref = sk.predict_proba(Q) if hasattr(sk, "predict_proba") else sk.predict(Q)
    ok = bool(np.array_equal(I, src[si]) and np.allclose(D, sd, rtol=1e-9, atol=1e-9)
              and np.allclose(OUT, ref, atol=1e-12))
    if r == 0:
        emit({"case": case, "ok": ok, "weighted": int(w.sum()), "w_hash": int((w * np.arange(len(w))).sum())})

from shardlearn.models.resample import resample_weights
# rank 0 holds no training rows (P > 1), the rest share them; one rank's rows all of count 0
empty0 = slice(0, 0) if (P > 1 and r == 0) else slice(*(np.array(block_bounds(1200, max(1, P - 1), max(0, r - 1)))))
wc = g.integers(0, 4, 1200).astype(float)
wc[:100] = 0
for strategy in ("broadcast", "ring"):
    checkw(f"counts-{strategy}", KNeighborsClassifier(6, weights="distance" if strategy == "ring" else "uniform",
           strategy=strategy, block_rows=40, comm=ctx), SkKNN(6, weights="distance" if strategy == "ring" else
           "uniform", algorithm="brute"), wc, y, empty0, qs)
checkw("counts-regressor", KNeighborsRegressor(5, weights="distance", metric="manhattan", block_rows=64, comm=ctx),
       SkKNNReg(5, weights="distance", metric="manhattan", algorithm="brute"), wc, X[:, 0] * 2 + X[:, 2], empty0, qs)
yi = (X[:, 0] > 1.2).astype(int)          # imbalanced, about 1:8
for spec in ("under", "over:2"):
    kind, _, ratio = spec.partition(":")
    w = gather(resample_weights(ctx, yi[tr], kind, float(ratio or 1), seed=3, row_offset=tr.start))
    checkw(f"resample-{spec}", KNeighborsClassifier(5, resample=spec, random_state=3, block_rows=64, comm=ctx),
           SkKNN(5, algorithm="brute"), w, yi, tr, qs)
auto = KNeighborsClassifier(3, block_rows=64, comm=ctx).fit(X[tr], y[tr])
auto.predict(X[tr])
if r == 0:
    emit({"case": "auto-on-training-rows", "strategy": auto.strategy_})
msgs = []
for fn in (lambda: KNeighborsClassifier(5000, comm=ctx).fit(X[tr], y[tr]),
           lambda: auto.predict(Q[qs][:, :3] if r == P - 1 else Q[qs]),
           lambda: KNeighborsClassifier(3, comm=ctx).fit(X[tr], y[tr], sample_weight=np.where(tr.start == 0, 0.5, 1)
                                                          * np.ones(len(X[tr]))),
           lambda: KNeighborsClassifier(3, comm=ctx).fit(X[tr], y[tr], sample_weight=np.zeros(len(X[tr]))
                                                          + (np.arange(len(X[tr])) < 1) * (r == 0))):
    try:
        fn()
        msgs.append(None)
    except ShardlearnError as exc:
        msgs.append(str(exc))
every = ctx.coll.allgather_obj(msgs)
if r == 0:
    emit({"case": "errors", "errors": every})
"""


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("knn")
    return {P: json_lines(run_script(P, SCRIPT, tmp, timeout=240).stdout) for P in (1, 2, 3, 4)}


@pytest.mark.parametrize("P", [1, 2, 3, 4])
def test_equal_to_scikit_learn_brute_force_for_any_P(worlds, P):
    rows = {r["case"]: r for r in worlds[P]}
    checked = [r for r in rows.values() if "ok" in r]
    assert len(checked) == 14
    for row in checked:
        assert row["ok"], row
        if P > 1 and "strategy" in row and row["case"].endswith(("broadcast", "ring")):
            assert row["strategy"] == row["case"].rsplit("-", 1)[1]
    # the counts (drawn per global row for resample) do not depend on P
    for case in ("counts-ring", "resample-under", "resample-over:2"):
        assert rows[case]["w_hash"] == {x["case"]: x for x in worlds[1]}[case]["w_hash"]
    assert rows["resample-under"]["weighted"] < 1200 < rows["resample-over:2"]["weighted"]
    # the training rows as queries: as many as the training set, a full block per rank
    assert rows["auto-on-training-rows"]["strategy"] == ("ring" if P > 1 else "broadcast")
    errors = rows["errors"]["errors"]
    assert len(errors) == P
    assert all("more than the 1200 training rows" in e[0] for e in errors)
    assert len({e[1] for e in errors}) == 1 and "6 features" in errors[0][1]
    # a fractional count on rank 0 only, and a single slot for k = 3: the same error on every rank
    assert len({e[2] for e in errors}) == 1 and "whole numbers >= 0" in errors[0][2]
    assert len({e[3] for e in errors}) == 1 and "more than the 1 weighted training rows" in errors[0][3]


@pytest.mark.slow
def test_cli_train_predict_evaluate_and_moved_data(tmp_path):
    X, y, Q = _data(n=2000, q=500, seed=4)
    train, test = tmp_path / "train.h5", tmp_path / "test.h5"
    yq = (Q[:, 0] > 0).astype(int) + (Q[:, 1] > 1)
    for path, a, b in ((train, X, y), (test, Q, yq)):
        with h5py.File(path, "w") as h:
            h["X"], h["y"] = a, b.astype(np.float64)
    model = tmp_path / "knn.h5"
    proc = run_cli(2, "train", "knn", "--data", train, "--out", model, "--n-neighbors", 9, "--weights", "distance")
    assert "k=9" in proc.stdout and json.loads((tmp_path / "knn.json").read_text())["n_samples_fit"] == 2000
    run_cli(3, "predict", "--model", model, "--data", test, "--out", tmp_path / "p.h5")
    ref = SkKNN(9, weights="distance", algorithm="brute").fit(X, y)
    with h5py.File(tmp_path / "p.h5") as h:
        np.testing.assert_allclose(h["proba"][:], ref.predict_proba(Q), atol=1e-12)
        np.testing.assert_array_equal(h["prediction"][:], ref.predict(Q))
    ev = run_cli(2, "evaluate", "--model", model, "--data", test)
    assert abs(float(ev.stdout.split("accuracy=")[1].split()[0]) - ref.score(Q, yq)) < 1e-9
    # --resample: the model file records the draw; predict on 3 ranks draws the same counts
    from shardlearn.models.resample import resample_weights
    run_cli(2, "train", "knn", "--data", train, "--out", tmp_path / "u.h5", "--n-neighbors", 5, "--resample", "under",
            "--seed", 7)
    run_cli(3, "predict", "--model", tmp_path / "u.h5", "--data", test, "--out", tmp_path / "pu.h5")
    src = np.repeat(np.arange(len(y)), resample_weights(ctx, y.astype(np.float64), "under", seed=7).astype(int))
    assert len(src) < len(y)
    with h5py.File(tmp_path / "pu.h5") as h:
        np.testing.assert_allclose(h["proba"][:], SkKNN(5, algorithm="brute").fit(X[src], y[src]).predict_proba(Q),
                                   atol=1e-12)
    train.rename(tmp_path / "moved.h5")
    bad = run_cli(2, "predict", "--model", model, "--data", test, "--out", tmp_path / "p2.h5", check=False)
    assert bad.returncode == 2 and "train.h5" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
