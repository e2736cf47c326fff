"""--resample: per-row integer weights keyed by global row (Bernoulli keep / 1 + Poisson copies).

That the weights do not depend on the number of ranks is checked in the P = 1..4 worlds of
tests/test_decision_tree.py (one launch per P for both files).
"""
import h5py
import numpy as np
import pytest
from sklearn.datasets import make_classification

from mpirun import run_cli
from shardlearn.errors import ShardlearnError
from shardlearn.models.linear import LogisticRegression
from shardlearn.models.resample import class_rates, parse_resample, poisson, resample_weights
from shardlearn.runtime import init

ctx = init(topology="native", verbose=False)


def test_parse_and_rates():
    assert parse_resample("under") == ("under", 1.0) and parse_resample("over:2.5") == ("over", 2.5)
    for bad in ("sideways", "under:0.5", "over:x", "over:inf"):
        with pytest.raises(ShardlearnError, match="resample"):
            parse_resample(bad)
    np.testing.assert_allclose(class_rates("under", [1000, 20, 100]), [0.02, 1.0, 0.2])
    np.testing.assert_allclose(class_rates("under", [1000, 20], 5.0), [0.1, 1.0])
    np.testing.assert_allclose(class_rates("over", [1000, 20, 100]), [0.0, 49.0, 9.0])
    np.testing.assert_allclose(class_rates("over", [1000, 20], 2.0), [0.0, 24.0])


def test_poisson_draws_have_the_right_law():
    u = np.random.default_rng(0).random(200_000)
    for lam in (0.3, 1.0, 9.0, 49.0):
        k = poisson(lam, u)
        assert abs(k.mean() - lam) < 0.02 * lam + 0.01 and abs(k.var() - lam) < 0.05 * lam + 0.01
        assert np.array_equal(k, np.round(k))


def test_weights_balance_the_classes_in_expectation():
    y = (np.arange(51_000) % 51 == 0).astype(int)               # 1:50
    n1 = y.sum()
    under = resample_weights(ctx, y, "under", seed=1)
    assert set(np.unique(under)) == {0.0, 1.0} and under[y == 1].sum() == n1   # the minority is kept
    assert abs(under[y == 0].sum() / n1 - 1) < 0.1
    over = resample_weights(ctx, y, "over", seed=1)
    assert (over[y == 0] == 1).all() and (over >= 1).all()
    assert abs(over[y == 1].sum() / (y == 0).sum() - 1) < 0.05
    over2 = resample_weights(ctx, y, "over", 2.0, seed=1)
    assert abs(over2[y == 1].sum() / (y == 0).sum() - 0.5) < 0.05
    assert not np.array_equal(over, resample_weights(ctx, y, "over", seed=2))      # the seed matters
    np.testing.assert_array_equal(over, resample_weights(ctx, y, "over", seed=1))   # and only the seed
    labels = np.array(["a", "b"])[y]                                                # any label type
    np.testing.assert_array_equal(under, resample_weights(ctx, labels, "under", seed=1))
    with pytest.raises(ShardlearnError, match="two classes"):
        resample_weights(ctx, np.zeros(10), "under")


def test_integer_weights_train_as_copied_rows():
    X, y = make_classification(3000, 6, weights=[0.95], random_state=0)
    w = resample_weights(ctx, y, "over", seed=0)
    rep = np.repeat(np.arange(len(y)), w.astype(int))
    a = LogisticRegression(C=1.0, tol=1e-10, max_iter=1000, comm=ctx).fit(X, y, w)
    b = LogisticRegression(C=1.0, tol=1e-10, max_iter=1000, comm=ctx).fit(X[rep], y[rep])
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_cli_resample_for_each_classifier(tmp_path):
    X, y = make_classification(3000, 5, weights=[0.96], random_state=3)
    data = tmp_path / "d.h5"
    with h5py.File(data, "w") as h:
        h["X"], h["y"] = X, y.astype(np.float64)
    for model, extra in (("logistic", []), ("svm", []), ("gbdt", ["--n-estimators", "5"]), ("forest", ["--n-estimators", "3"]),
                         ("tree", ["--max-depth", "4"])):
        proc = run_cli(2, "train", model, "--data", data, "--out", tmp_path / f"{model}.h5", "--resample",
                       "under:2", *extra)
        assert "resample under:2:" in proc.stdout, proc.stdout
    bad = run_cli(2, "train", "gbdt", "--data", data, "--out", tmp_path / "r.h5", "--objective", "regression",
                  "--resample", "over", check=False)
    assert bad.returncode == 2 and "--resample is for classifiers" in bad.stderr
    bad = run_cli(1, "train", "logistic", "--data", data, "--out", tmp_path / "r.h5", "--resample", "over:0.5",
                  check=False)
    assert bad.returncode == 2 and "RATIO must be a number >= 1" in bad.stderr
