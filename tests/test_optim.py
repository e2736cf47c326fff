"""Solvers in shardlearn.models.linear._solvers on serial oracles with known answers (no MPI)."""
import numpy as np
import pytest

from shardlearn.models.linear import _solvers


def quadratic(seed=0, p=6, cond=50.0):
    """f(w) = 1/2 w^T A w - b^T w with a known minimiser."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(p, p)))
    A = Q @ np.diag(np.geomspace(1.0, cond, p)) @ Q.T
    b = rng.normal(size=p)

    def fun(w):
        return 0.5 * w @ A @ w - b @ w, A @ w - b, None

    return fun, A, b, np.linalg.solve(A, b)


def test_lbfgs_quadratic_and_rosenbrock():
    fun, A, b, w_star = quadratic()
    res = _solvers.lbfgs(fun, np.zeros(6), tol=1e-10, max_iter=200)
    assert res.converged and np.allclose(res.w, w_star, rtol=1e-8, atol=1e-9)
    assert res.n_evals >= res.n_iter and len(res.history) == res.n_iter + 1

    def rosen(w):
        x, y = w
        f = (1 - x) ** 2 + 100 * (y - x * x) ** 2
        g = np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])
        return f, g, None

    res = _solvers.lbfgs(rosen, np.array([-1.2, 1.0]), tol=1e-9, max_iter=500)
    assert np.allclose(res.w, [1.0, 1.0], atol=1e-6), res


def test_wolfe_line_search_conditions():
    # phi(a) = (a - 3)^2 + sin(3a): a non-convex 1-D function, descending at 0
    def phi(a):
        return (a - 3) ** 2 + np.sin(3 * a), 2 * (a - 3) + 3 * np.cos(3 * a), a

    f0, d0 = phi(0.0)[:2]
    for step0 in (0.01, 1.0, 10.0):
        a, f, payload, n = _solvers.line_search_wolfe(phi, f0, d0, step0)
        assert a is not None and payload == a
        fa, da, _ = phi(a)
        assert fa <= f0 + 1e-4 * a * d0            # sufficient decrease
        assert abs(da) <= 0.9 * abs(d0) + 1e-12    # curvature (strong Wolfe)


def test_gd_fista_lasso_closed_form():
    # separable problem 1/2 sum h_i (w_i - c_i)^2 + l1 ||w||_1: w_i = soft(c_i, l1/h_i)
    h = np.array([1.0, 4.0, 0.5, 2.0, 10.0])
    c = np.array([3.0, -0.1, -2.0, 0.2, 1.0])
    l1 = 0.5

    def fun(w):
        return 0.5 * float(h @ (w - c) ** 2), h * (w - c), None

    want = np.sign(c) * np.maximum(np.abs(c) - l1 / h, 0)
    for acc in (False, True):
        res = _solvers.gd(fun, np.zeros(5), l1=l1, accelerated=acc, tol=1e-10, ftol=0.0, max_iter=2000)
        assert res.converged and np.allclose(res.w, want, rtol=0, atol=1e-7), (acc, res.w, want)
    # the mask leaves the last entry (an "intercept") unpenalised
    mask = np.array([True] * 4 + [False])
    res = _solvers.gd(fun, np.zeros(5), l1=l1, l1_mask=mask, accelerated=True, tol=1e-10, ftol=0.0, max_iter=2000)
    assert np.allclose(res.w[:4], want[:4], rtol=0, atol=1e-7) and res.w[4] == pytest.approx(c[4], abs=1e-7)


def test_gd_fixed_step_and_armijo_reach_optimum():
    fun, A, b, w_star = quadratic(1)
    for step in (None, 1.0 / 50.0):
        res = _solvers.gd(fun, np.zeros(6), step=step, tol=1e-9, max_iter=20000)
        assert res.converged and np.allclose(res.w, w_star, atol=1e-7), step


def test_epoch_batches_partition_and_rank_independence():
    n, steps = 1000, 7
    rows = np.arange(n, dtype=np.int64)
    train = rows[(rows % 10) != 3]  # some rows held out
    full = _solvers.epoch_batches(5, 2, rows, train, steps)
    got = np.sort(np.concatenate(full))
    assert np.array_equal(got, train)                       # a partition of the training rows
    assert max(b.size for b in full) < 2 * train.size / steps
    for P in (2, 3, 5):                                      # split rows over P "ranks"
        bounds = [r * n // P for r in range(P + 1)]
        per_rank = []
        for r in range(P):
            g = rows[bounds[r]:bounds[r + 1]]
            tr = np.flatnonzero((g % 10) != 3)
            per_rank.append([g[b] for b in _solvers.epoch_batches(5, 2, g, tr, steps)])
        for s in range(steps):
            assert np.array_equal(np.sort(np.concatenate([pr[s] for pr in per_rank])), full[s])
    other = _solvers.epoch_batches(5, 3, rows, train, steps)    # a new permutation each epoch
    assert not np.array_equal(other[0], full[0])


def test_learning_rate_schedules():
    assert _solvers.learning_rate_at("constant", 0.1, 50, 100) == 0.1
    assert _solvers.learning_rate_at("invscaling", 0.1, 3, 100, 0.5) == pytest.approx(0.05)
    assert _solvers.learning_rate_at("cosine", 0.1, 0, 100) == pytest.approx(0.1)
    assert _solvers.learning_rate_at("cosine", 0.1, 50, 100) == pytest.approx(0.05)
    assert _solvers.learning_rate_at("cosine", 0.1, 100, 100) == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError):
        _solvers.learning_rate_at("bogus", 0.1, 0, 1)


def test_sgd_least_squares_converges_and_is_deterministic():
    rng = np.random.default_rng(0)
    n, p = 2000, 4
    X = rng.normal(size=(n, p))
    w_true = np.array([1.0, -2.0, 0.5, 3.0])
    y = X @ w_true + 0.01 * rng.normal(size=n)

    def batch_fun(w, rows):
        r = X[rows] @ w - y[rows]
        m = max(rows.size, 1)
        return 0.5 * float(r @ r) / m, X[rows].T @ r / m

    kw = dict(global_rows=np.arange(n), train_local=np.arange(n), n_train_total=n, seed=3,
              batch_size=50, epochs=15, learning_rate=0.05, schedule="cosine", tol=None)
    a = _solvers.sgd(batch_fun, np.zeros(p), momentum=0.9, nesterov=True, **kw)
    b = _solvers.sgd(batch_fun, np.zeros(p), momentum=0.9, nesterov=True, **kw)
    assert np.allclose(a.w, w_true, atol=5e-3)
    assert np.array_equal(a.w, b.w) and a.n_evals == 15 * 40
    c = _solvers.sgd(batch_fun, np.zeros(p), **kw)
    assert np.allclose(c.w, w_true, atol=5e-3)


def test_early_stopping_returns_best():
    fun0, A, b, w_star = quadratic(2)
    calls = []

    def fun(w):  # validation loss gets worse after the first iterations
        f, g, _ = fun0(w)
        calls.append(w.copy())
        return f, g, -float(np.linalg.norm(w)) if len(calls) < 4 else float(len(calls))

    res = _solvers.lbfgs(fun, np.zeros(6), tol=1e-12, early_stopping=True, n_iter_no_change=3)
    assert res.converged and "validation" in res.reason
    best = min(range(len(res.history)), key=lambda i: res.history[i]["val_loss"])
    assert res.n_iter < 20 and best < res.n_iter


# ------------------------------------------------------------- resumable solvers
def logistic_oracles(seed=4, n=400, p=5):
    """A serial logistic problem (L2) with held-out rows: full, mini-batch and validation oracles."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    y = (X @ rng.normal(size=p) + 0.8 * rng.normal(size=n) > 0).astype(float)
    tr, va = np.arange(n) % 5 != 0, np.arange(n) % 5 == 0

    def loss_grad(w, rows):
        z = X[rows] @ w
        m = max(rows.size, 1)
        f = float(np.sum(np.logaddexp(0.0, z) - y[rows] * z)) / m + 5e-3 * float(w @ w)
        return f, X[rows].T @ (1.0 / (1.0 + np.exp(-z)) - y[rows]) / m + 1e-2 * w

    def fun(w):
        f, g = loss_grad(w, np.flatnonzero(tr))
        return f, g, loss_grad(w, np.flatnonzero(va))[0]

    return fun, loss_grad, np.flatnonzero(tr), (lambda w: loss_grad(w, np.flatnonzero(va))[0])


class _Stopped(Exception):
    pass


def _through_checkpoint_file(state, tmp_path):
    """The state as a checkpoint file gives it back (HDF5 datasets, groups, JSON)."""
    import h5py

    from shardlearn.checkpoint import _read_state, _write_state

    with h5py.File(tmp_path / "state.h5", "w") as h:
        _write_state(h.create_group("state"), state)
    with h5py.File(tmp_path / "state.h5") as h:
        return _read_state(h["state"])


def _bits(x):
    return np.ascontiguousarray(np.asarray(x, dtype=np.float64)).view(np.uint8)


def _no_seconds(history):
    return [{k: v for k, v in e.items() if k not in ("seconds", "comm_seconds")} for e in history]


RESUMABLE = {
    # one solver each, with everything that carries state between iterations switched on
    "lbfgs_early_stop": lambda o, **kw: _solvers.lbfgs(o[0], np.zeros(5), tol=1e-12, m=3, early_stopping=True,
                                                       n_iter_no_change=4, val_tol=1e-6, max_iter=40, **kw),
    "gd_backtracking": lambda o, **kw: _solvers.gd(o[0], np.zeros(5), tol=1e-12, max_iter=40, **kw),
    "fista_l1_restart": lambda o, **kw: _solvers.gd(o[0], np.zeros(5), tol=1e-12, max_iter=40, l1=2e-2,
                                                    accelerated=True, early_stopping=True, n_iter_no_change=5, **kw),
    "sgd_momentum_val": lambda o, **kw: _solvers.sgd(
        o[1], np.zeros(5), global_rows=np.arange(400), train_local=o[2], n_train_total=o[2].size, seed=7,
        batch_size=32, epochs=12, learning_rate=0.5, schedule="cosine", momentum=0.8, nesterov=True,
        l1=1e-3, tol=1e-9, n_iter_no_change=8, validation=o[3], **kw),
}


@pytest.mark.parametrize("name", sorted(RESUMABLE))
@pytest.mark.parametrize("at", [1, 3, 7])
def test_solver_resumed_from_its_state_is_bit_identical(tmp_path, name, at):
    run, oracles = RESUMABLE[name], logistic_oracles()
    steps = []
    ref = run(oracles, callback=lambda it, state_fn: steps.append(it))
    assert steps == list(range(1, len(steps) + 1)) and len(steps) > at, (name, steps)
    saved = {}

    def stop_at(it, state_fn):
        if it == at:
            saved["state"] = _through_checkpoint_file(state_fn(), tmp_path)
            raise _Stopped

    with pytest.raises(_Stopped):
        run(oracles, callback=stop_at)
    got = run(oracles, state=saved["state"])
    assert np.array_equal(_bits(got.w), _bits(ref.w)), name
    assert np.array_equal(_bits(got.loss), _bits(ref.loss)), name
    assert (got.n_iter, got.n_evals, got.converged, got.reason) == (ref.n_iter, ref.n_evals, ref.converged, ref.reason)
    assert _no_seconds(got.history) == _no_seconds(ref.history) and len(got.history) == len(ref.history)
    assert [e["seconds"] for e in got.history] == sorted(e["seconds"] for e in got.history)  # time goes on
