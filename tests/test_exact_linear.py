"""Linear models with exact_reduce=True: bit-identical coefficients for any P and topology.

One launch per P (1, 2, 3, 4; at P = 4 one rank holds no rows) fits every case on every
topology of that world (native, ring, tree) and prints a digest of each model (coef_,
intercept_, n_iter_, loss_); the tests compare the digests across all of them, on the
compiled path and on the NumPy path (each against itself), and check the exact models
against the float path and scikit-learn with tests/test_linear.py's tolerances. Plus the
CLI's ``--exact-reduce`` on 3 ranks against a one-process fit, and the refusals.
"""
import hashlib
import json

import h5py
import numpy as np
import pytest

from mpirun import json_lines, run_cli, run_script

from shardlearn.errors import ShardlearnError
from shardlearn.models.linear import Lasso, LinearRegression, LinearSVC, LogisticRegression, Ridge

DATA = r"""
def linear_data():
    from sklearn.datasets import make_classification, make_regression
    Xb, yb = make_classification(300, 6, n_informative=4, n_redundant=0, random_state=0, weights=[0.7])
    Xm, ym = make_classification(300, 6, n_informative=4, n_redundant=0, n_classes=3, random_state=1)
    Xr, yr = make_regression(300, 6, n_informative=4, noise=1.0, random_state=2)
    Xr[:, 0] += 3.0
    Xr[:, 1] = Xr[:, 1] * 20.0 + 50.0  # far from the origin, another scale: centring and standardize
    ym = ym * 2 + 1
    sw = np.random.default_rng(3).uniform(0.0, 2.0, 300)
    return dict(Xb=Xb, yb=yb, Xm=Xm, ym=ym, Xr=Xr, yr=yr, sw=sw)
"""
exec(DATA)

# name -> (estimator class, constructor kwargs, data keys (X, y, sample_weight or None))
CASES = {
    "ols_lbfgs_std": ("LinearRegression", dict(solver="lbfgs", standardize=True, tol=1e-10), ("Xr", "yr", None)),
    "ridge_gd_sw": ("Ridge", dict(alpha=3.0, solver="gd", tol=1e-8, max_iter=3000), ("Xr", "yr", "sw")),
    "lasso_fista": ("Lasso", dict(alpha=2.0, tol=1e-10, max_iter=5000), ("Xr", "yr", None)),
    "bin": ("LogisticRegression", dict(tol=1e-10, max_iter=500), ("Xb", "yb", None)),
    "bin32": ("LogisticRegression", dict(tol=1e-7, max_iter=500), ("Xb32", "yb", None)),
    "bin_bal_val": ("LogisticRegression", dict(class_weight="balanced", validation_fraction=0.2, tol=1e-12,
                                               max_iter=200), ("Xb", "yb", None)),
    "bin_l1_fista": ("LogisticRegression", dict(penalty="l1", C=0.1, solver="fista", tol=1e-10, max_iter=5000),
                     ("Xb", "yb", None)),
    "multi_sw": ("LogisticRegression", dict(tol=1e-10, max_iter=500), ("Xm", "ym", "sw")),
}
NUMPY_CASES = ("ols_lbfgs_std", "multi_sw")

SCRIPT = r"""
import hashlib, os
import numpy as np
from mpi4py import MPI
from shardlearn.runtime import init
from shardlearn.models import linear

DATA
D = linear_data()
D["Xb32"] = D["Xb"].astype(np.float32)
P, r = MPI.COMM_WORLD.size, MPI.COMM_WORLD.rank

def part(n):  # at P = 4 rank 2 holds no rows
    cuts = [0, n // 3, 2 * n // 3, 2 * n // 3, n] if P == 4 else [n * i // P for i in range(P + 1)]
    return slice(cuts[r], cuts[r + 1])

def fit(ctx, cls, kw, keys, exact):
    X, y, w = (D[k] if k else None for k in keys)
    s = part(len(y))
    return getattr(linear, cls)(comm=ctx, exact_reduce=exact, **kw).fit(
        X[s], y[s], sample_weight=None if w is None else w[s])

def digest(m):
    h = hashlib.sha256()
    for a in (np.atleast_1d(np.asarray(m.coef_, dtype=np.float64)),
              np.atleast_1d(np.asarray(m.intercept_, dtype=np.float64)),
              np.int64(m.n_iter_), np.float64(m.loss_)):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()

for topo in TOPOLOGIES:
    ctx = init(MPI.COMM_WORLD.Dup(), topology=topo, device="cpu", verbose=False)
    for kernels in ("c", "numpy"):
        os.environ["SHARDLEARN_KERNELS"] = kernels
        for name, (cls, kw, keys) in CASES.items():
            if kernels == "numpy" and name not in NUMPY_CASES:
                continue
            m = fit(ctx, cls, kw, keys, True)
            row = {"case": name, "kernels": kernels, "topology": topo, "digest": digest(m),
                   "exact_reduce": m.get_params()["exact_reduce"]}
            if REFERENCE and kernels == "c":
                f = fit(ctx, cls, kw, keys, False)
                row.update(coef=np.ravel(m.coef_).tolist(), intercept=np.ravel(m.intercept_).tolist(),
                           float_coef=np.ravel(f.coef_).tolist(), float_intercept=np.ravel(f.intercept_).tolist())
            if r == 0:
                emit(row)
    os.environ["SHARDLEARN_KERNELS"] = "c"
"""

WORLDS = [(1, ["native"], True), (2, ["native", "ring", "tree"], False), (3, ["ring"], False),
          (4, ["tree"], False)]


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exact_linear")
    out = {}
    for P, topos, ref in WORLDS:
        code = (f"CASES = {CASES!r}\nNUMPY_CASES = {NUMPY_CASES!r}\n"
                + SCRIPT.replace("DATA", DATA).replace("TOPOLOGIES", repr(topos)).replace("REFERENCE", repr(ref)))
        out[P] = json_lines(run_script(P, code, tmp, timeout=240).stdout)
    return out


def test_same_coefficients_bytes_for_any_rank_count_and_topology(worlds):
    for kernels, names in (("c", tuple(CASES)), ("numpy", NUMPY_CASES)):
        ref = {row["case"]: row["digest"] for row in worlds[1] if row["kernels"] == kernels}
        assert sorted(ref) == sorted(names)
        seen = 0
        for P, rows in worlds.items():
            for row in rows:
                if row["kernels"] == kernels:
                    assert row["exact_reduce"] is True
                    assert row["digest"] == ref[row["case"]], (P, row)
                    seen += 1
        assert seen == len(names) * sum(len(t) for _, t, _ in WORLDS)


def rel(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def test_close_to_the_float_path(worlds):
    for row in worlds[1]:
        if row["kernels"] == "c":
            got = np.concatenate([row["coef"], row["intercept"]])
            want = np.concatenate([row["float_coef"], row["float_intercept"]])
            assert rel(got, want) < 1e-6, (row["case"], rel(got, want))


def test_close_to_sklearn(worlds):
    from sklearn.linear_model import Lasso as SKLasso, LinearRegression as SKOLS, LogisticRegression as SK
    from sklearn.linear_model import Ridge as SKRidge

    D = linear_data()  # noqa: F821 (defined by exec(DATA))
    refs = {"ols_lbfgs_std": (SKOLS().fit(D["Xr"], D["yr"]), 1e-6),
            "ridge_gd_sw": (SKRidge(alpha=3.0).fit(D["Xr"], D["yr"], sample_weight=D["sw"]), 1e-5),
            "lasso_fista": (SKLasso(alpha=2.0, tol=1e-14, max_iter=100000).fit(D["Xr"], D["yr"]), 1e-4),
            "bin": (SK(tol=1e-12, max_iter=10000).fit(D["Xb"], D["yb"]), 1e-4),
            "bin32": (SK(tol=1e-12, max_iter=10000).fit(D["Xb"], D["yb"]), 1e-4),
            "bin_l1_fista": (SK(l1_ratio=1.0, C=0.1, solver="saga", tol=1e-12, max_iter=100000)
                             .fit(D["Xb"], D["yb"]), 1e-4),
            "multi_sw": (SK(tol=1e-12, max_iter=10000).fit(D["Xm"], D["ym"], sample_weight=D["sw"]), 1e-4)}
    rows = {row["case"]: row for row in worlds[1] if row["kernels"] == "c"}
    for name, (ref, tol) in refs.items():
        got = np.concatenate([rows[name]["coef"], rows[name]["intercept"]])
        want = np.concatenate([np.ravel(ref.coef_), np.ravel(ref.intercept_)])
        assert rel(got, want) < tol, (name, rel(got, want))


def test_cli_exact_reduce_equals_one_process(tmp_path):
    D = linear_data()  # noqa: F821 (defined by exec(DATA))
    data = tmp_path / "bin.h5"
    with h5py.File(data, "w") as h:
        h["X"] = D["Xb"]
        h["y"] = D["yb"]
    model = tmp_path / "logistic.h5"
    run_cli(3, "train", "logistic", "--data", data, "--exact-reduce", "--tol", "1e-10", "--out", model, "--quiet")
    one = LogisticRegression(tol=1e-10, exact_reduce=True).fit(D["Xb"], D["yb"])
    with h5py.File(model, "r") as h:
        coef, intercept = h["coef"][()], h["intercept"][()]
        params = json.loads(h.attrs["params"])
    assert params["exact_reduce"] is True
    assert hashlib.sha256(coef.tobytes()).digest() == hashlib.sha256(np.atleast_2d(one.coef_).tobytes()).digest()
    assert intercept[0] == one.intercept_


def test_refusals_and_model_params():
    D = linear_data()  # noqa: F821 (defined by exec(DATA))
    X, y = D["Xr"], D["yr"]
    with pytest.raises(ShardlearnError, match="exact_reduce must be True or False"):
        LinearRegression(solver="lbfgs", exact_reduce="yes").fit(X, y)
    for est in (LinearRegression(exact_reduce=True), Ridge(exact_reduce=True, solver="sgd"),
                Lasso(exact_reduce=True, solver="sgd")):
        with pytest.raises(ShardlearnError, match="exact_reduce=True needs solver lbfgs, gd or fista"):
            est.fit(X, y)
    with pytest.raises(ShardlearnError, match="LinearSVC: exact_reduce=True is not available"):
        LinearSVC(exact_reduce=True).fit(D["Xb"], D["yb"])
    m = LogisticRegression(exact_reduce=True).fit(D["Xb"], D["yb"])
    arrays, params, info = m.to_model()
    assert params["exact_reduce"] is True
    back = LogisticRegression.from_model(arrays, params, info)
    assert back.exact_reduce is True and np.array_equal(back.predict(D["Xb"]), m.predict(D["Xb"]))


def test_compiled_and_numpy_forms_give_the_same_bits():
    from shardlearn.models.linear import _exact

    kern = _exact.kernels()
    if kern is None:
        pytest.skip("linear kernels not built (or SHARDLEARN_KERNELS=numpy)")
    g = np.random.default_rng(9)
    for n, d, K in ((37, 13, 1), (20, 4, 3), (9, 3, 2)):
        X = g.standard_normal((n, d)) * 10.0 ** g.integers(-3, 4, d)
        at = g.standard_normal((K, d))
        Z = _exact.rowdot(kern, X, at)
        assert np.array_equal(Z, _exact.rowdot(None, X, at))
        # a row's value does not depend on the rows around it
        assert np.array_equal(Z[5:6], _exact.rowdot(kern, X[5:6].copy(), at))
        R = g.standard_normal((n, K))
        scale = _exact.fixed_scales(np.outer(np.abs(R).max(axis=0), np.abs(X).max(axis=0)), 1000)
        Gc, Gn = np.zeros((K, d), dtype=np.int64), np.zeros((K, d), dtype=np.int64)
        _exact.xtr_fixed(kern, X, R, scale, Gc)
        _exact.xtr_fixed(None, X, R, scale, Gn)
        assert np.array_equal(Gc, Gn)
        assert np.allclose(Gc / scale, (X.T @ R).T, rtol=1e-9, atol=1e-9 * np.abs(X.T @ R).max())
        w = g.uniform(0, 2, n)
        assert _exact.wsum_fixed(kern, R[:, 0].copy(), w, 2.0 ** 20) == _exact.wsum_fixed(None, R[:, 0].copy(), w,
                                                                                           2.0 ** 20)
