"""Pipeline: fitted at P = 3 it predicts as scikit-learn's pipeline; its model file loads
in a new process and predicts the same bits; ``train --preprocess`` stores the chain and
``predict``/``evaluate`` apply it."""
import json

import h5py
import numpy as np
import pytest

from mpirun import json_lines, run_cli, run_script

FIT = """
import numpy as np
from shardlearn.runtime import init
from shardlearn.util.blocks import block_bounds
from shardlearn.models.pipeline import Pipeline
from shardlearn.models.preprocessing import SimpleImputer, StandardScaler, OneHotEncoder, PCA
from shardlearn.models.linear import LogisticRegression, Ridge
from shardlearn.models.io import save_estimator
ctx = init(topology="native", verbose=False)
D = np.load({path!r})
lo, hi = block_bounds(D["X"].shape[0], ctx.size, ctx.rank)
X, y, yr = D["X"][lo:hi], D["y"][lo:hi], D["yr"][lo:hi]
clf = Pipeline([("impute", SimpleImputer(strategy="median")), ("onehot", OneHotEncoder(columns=[0])),
                ("scale", StandardScaler()), ("clf", LogisticRegression(C=0.5, tol=1e-10, max_iter=1000))],
               comm=ctx).fit(X, y)
reg = Pipeline([("impute", SimpleImputer()), ("pca", PCA(3)), ("ridge", Ridge(alpha=2.0))], comm=ctx).fit(X, yr)
save_estimator(clf, {model!r}, ctx)
emit({{"rank": ctx.rank, "lo": lo, "hi": hi, "proba": clf.predict_proba(X).tolist(), "label": clf.predict(X).tolist(),
       "score": clf.score(X, y), "metrics": clf.evaluate(X, y), "reg": reg.predict(X).tolist(),
       "n_features_in": clf.n_features_in_}})
"""

LOAD = """
import numpy as np
from shardlearn.runtime import init
from shardlearn.models.io import load_estimator
ctx = init(verbose=False)
D = np.load({path!r})
m = load_estimator({model!r}, ctx)
emit({{"kinds": [type(s).__name__ for _, s in m.steps],
       "proba": [m.predict_proba(D["X"][lo:hi]).tolist() for lo, hi in {blocks!r}]}})
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from sklearn.datasets import make_classification

    X, y = make_classification(240, 5, n_informative=3, n_redundant=0, random_state=4)
    X[:, 0] = np.floor(np.abs(X[:, 0]) * 2)  # a categorical column: codes 0..k
    X[:, 1] = X[:, 1] * 50 + 1000
    yr = X[:, 2] * 3 - X[:, 3] + 0.1 * np.random.default_rng(0).normal(size=240)
    X[np.random.default_rng(1).random(X.shape) < 0.08] = np.nan
    X[:, 0][np.isnan(X[:, 0])] = 1.0  # the categorical column has no missing values
    tmp = tmp_path_factory.mktemp("pipe")
    np.savez(tmp / "d.npz", X=X, y=y, yr=yr)
    with h5py.File(tmp / "d.h5", "w") as h:
        h["X"], h["y"] = X, y.astype(np.float64)
    return tmp


@pytest.fixture(scope="module")
def fitted(data):
    proc = run_script(3, FIT.format(path=str(data / "d.npz"), model=str(data / "pipe.h5")), data, timeout=240)
    return sorted(json_lines(proc.stdout), key=lambda r: r["rank"])


@pytest.mark.slow
def test_pipeline_at_three_ranks_predicts_as_scikit_learn(fitted, data):
    from sklearn.compose import ColumnTransformer
    from sklearn.decomposition import PCA
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    D = np.load(data / "d.npz")
    ref = Pipeline([("impute", SimpleImputer(strategy="median")),
                    ("onehot", ColumnTransformer([("oh", OneHotEncoder(sparse_output=False), [0])],
                                                 remainder="passthrough")),
                    ("scale", StandardScaler()), ("clf", LogisticRegression(C=0.5, tol=1e-10, max_iter=1000))])
    ref.fit(D["X"], D["y"])
    proba = np.concatenate([np.array(r["proba"]).reshape(-1, 2) for r in fitted])
    np.testing.assert_allclose(proba, ref.predict_proba(D["X"]), atol=1e-5)
    labels = np.concatenate([r["label"] for r in fitted])
    assert (labels == ref.predict(D["X"])).mean() >= 0.99
    assert abs(fitted[0]["score"] - ref.score(D["X"], D["y"])) <= 1 / 240 + 1e-12
    assert fitted[0]["metrics"]["accuracy"] == fitted[0]["score"]
    assert fitted[0]["n_features_in"] == 5
    reg = Pipeline([("impute", SimpleImputer()), ("pca", PCA(3)), ("ridge", Ridge(alpha=2.0))]).fit(D["X"], D["yr"])
    np.testing.assert_allclose(np.concatenate([r["reg"] for r in fitted]), reg.predict(D["X"]), rtol=1e-8, atol=1e-8)


@pytest.mark.slow
def test_model_file_loads_in_a_new_process_and_predicts_the_same_bits(fitted, data):
    blocks = [(r["lo"], r["hi"]) for r in fitted]
    proc = run_script(1, LOAD.format(path=str(data / "d.npz"), model=str(data / "pipe.h5"), blocks=blocks),
                      data, timeout=120)
    got = json_lines(proc.stdout)[0]
    assert got["kinds"] == ["SimpleImputer", "OneHotEncoder", "StandardScaler", "LogisticRegression"]
    for r, p in zip(fitted, got["proba"]):
        assert np.array_equal(np.array(p).reshape(-1, 2), np.array(r["proba"]).reshape(-1, 2))  # bit for bit
    with h5py.File(data / "pipe.h5", "r") as h:
        assert h.attrs["estimator"] == "pipeline"
        assert [s[1] for s in json.loads(h.attrs["params"])["steps"]] == \
            ["simple_imputer", "onehot_encoder", "standard_scaler", "logistic"]


@pytest.mark.slow
def test_cli_train_preprocess_stores_the_chain_and_predict_applies_it(data):
    model, pred = data / "cli.h5", data / "cli_pred.h5"
    spec = data / "steps.json"
    spec.write_text(json.dumps([{"transformer": "SimpleImputer", "params": {"strategy": "median"}},
                                {"transformer": "StandardScaler"}]))
    run_cli(2, "train", "logistic", "--data", data / "d.h5", "--preprocess", "impute:median,onehot:0,standardize",
            "--out", model, "--quiet")
    ev = run_cli(3, "evaluate", "--model", model, "--data", data / "d.h5")
    assert "accuracy=" in ev.stdout
    run_cli(3, "predict", "--model", model, "--data", data / "d.h5", "--out", pred)
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    D = np.load(data / "d.npz")
    ref = Pipeline([("impute", SimpleImputer(strategy="median")),
                    ("onehot", ColumnTransformer([("oh", OneHotEncoder(sparse_output=False), [0])],
                                                 remainder="passthrough")),
                    ("scale", StandardScaler()), ("clf", LogisticRegression(tol=1e-8, max_iter=1000))])
    ref.fit(D["X"], D["y"])
    with h5py.File(pred, "r") as h:
        np.testing.assert_allclose(h["proba"][:], ref.predict_proba(D["X"]), atol=1e-3)
    report = json.loads((data / "cli.json").read_text())
    assert report["preprocess"][0] == ["impute0", "SimpleImputer"]
    # the JSON form, and a spec error is one clear message
    run_cli(2, "train", "ridge", "--data", data / "d.h5", "--preprocess", spec, "--out", data / "r.h5", "--quiet")
    bad = run_cli(2, "train", "ridge", "--data", data / "d.h5", "--preprocess", "standardize,frobnicate",
                  "--out", data / "r2.h5", check=False)
    assert bad.returncode == 2 and "unknown step 'frobnicate'" in bad.stderr
    nan = run_cli(2, "train", "ridge", "--data", data / "d.h5", "--preprocess", "standardize",
                  "--out", data / "r3.h5", check=False)
    assert nan.returncode == 2 and "NaN" in nan.stderr
