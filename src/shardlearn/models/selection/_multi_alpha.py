"""Many regularisation strengths in one pass: candidates that differ only in ``alpha`` / ``C``.

- :class:`~shardlearn.models.linear.Ridge` (``solver="normal"``): one pass over the rows
  and one allreduce give ``X^T S X`` and ``X^T S y`` (the same helper the estimator uses);
  every ``alpha`` is then one Cholesky solve of a d x d system on every rank.
- :class:`~shardlearn.models.linear.LogisticRegression` (binary, ``penalty="l2"``,
  ``solver="lbfgs"``): M L-BFGS runs in lockstep. Each evaluation computes the losses and
  gradients of all M weight vectors together: one GEMM ``X_b @ [w_1 .. w_M]`` per row
  block, one ``X_b^T R`` back, and ONE packed allreduce ``[losses, gradients]``, instead of
  M fits one after another with one allreduce each per evaluation. The block's four
  (rows x M) float64 buffers and one bool one are allocated once per batch and sized from the rows held
  (:func:`block_rows`: together at most 1/16 of the bytes held, 256 to 8192 rows); the
  targets are one byte a row and the fold's weights may come as its boolean mask, so the
  pass holds no per-row float64 array of its own (one, for ``X^T s``, while it starts).
  The line search is backtracking (Armijo, quadratic interpolation) per run; a run that
  has converged drops out of the evaluations.
  The objective and stopping rule are the estimator's (``(sum s logloss + ||w||^2/(2C)) / W``,
  max-norm of the gradient below ``tol``), so each run stops at the estimator's optimum
  within ``tol``; the iterates differ from the estimator's strong-Wolfe L-BFGS.

Anything else (other solvers, class weights, standardisation, validation split, more
than two classes) returns None and the caller fits the candidates one by one.
"""
from __future__ import annotations

import numpy as np

from ...errors import ShardlearnError
from ..linear import LogisticRegression, Ridge
from ..linear import _normal
from ..linear._objective import binary_loss_resid
from ._grid import clone

_BLOCK = 8192       # most rows per block of the logistic evaluation
_MIN_BLOCK = 256    # fewest rows per block (unless the rank holds fewer)
_TEMP_SHARE = 16    # the block's temporaries: at most 1/16 of the rows held (above the floor)
_N_BUF = 4          # float64 (rows x runs) buffers of a block: z, e, the losses, the residuals


def strength_name(estimator, params: dict) -> str | None:
    """The strength parameter a batch may vary, if ``estimator`` with ``params`` qualifies."""
    if type(estimator) not in (Ridge, LogisticRegression):
        return None
    est = clone(estimator, params)
    plain = not est.standardize and not float(est.validation_fraction)
    if type(est) is Ridge and (est.solver or "normal") == "normal" and plain:
        return "alpha"
    if (type(est) is LogisticRegression and (est.solver or "lbfgs") == "lbfgs" and est.penalty == "l2"
            and est.class_weight is None and plain):
        return "C"
    return None


def batch_candidates(estimator, candidates: list[dict], indices: list[int], group_size: int) -> list[list[int]]:
    """Split candidate indices into batches that differ only in their strength (order kept).

    Ridge batches always (one Gram matrix for every alpha saves the passes). Logistic
    batches only on groups of several ranks: lockstep L-BFGS saves collectives, not
    arithmetic (a one-rank group fits its candidates one by one, which measured faster).
    """
    batches, where = [], {}
    for i in indices:
        name = strength_name(estimator, candidates[i])
        if name == "C" and group_size == 1:
            name = None
        if name is None:
            batches.append([i])
            continue
        key = (name, tuple(sorted((k, repr(v)) for k, v in candidates[i].items() if k != name)))
        if key not in where:
            where[key] = len(batches)
            batches.append([])
        batches[where[key]].append(i)
    return batches


def fit_many(estimator, param_list: list[dict], ctx, X, y, weight):
    """Fit every candidate of a batch at once on ``ctx``'s ranks; rows weighted by ``weight``
    (float64 weights, or a boolean mask of the training rows: weights 1 and 0).

    Returns ``[(fitted estimator or None, error message or None), ...]`` (the same on every
    rank), or None when this path does not apply (the caller then fits one by one).
    """
    first = clone(estimator, param_list[0])
    if type(first) is Ridge:
        return _ridge_many(first, param_list, ctx, X, y, weight)
    return _logistic_many(first, param_list, ctx, X, y, weight)


def _ridge_many(first, param_list, ctx, X, y, s):
    d = X.shape[1]
    s = np.asarray(s, dtype=np.float64)
    yv = np.asarray(y, dtype=np.float64)
    G, Xty, Xs, sy, _ = _normal._gram(X, yv, s)
    buf = ctx.coll.allreduce(np.concatenate([G.ravel(), Xty, Xs, [s.sum(), sy]]))
    G = buf[:d * d].reshape(d, d)
    Xty, Xs = buf[d * d:d * d + d], buf[d * d + d:d * d + 2 * d]
    Wt, sy = buf[-2:]
    if not Wt > 0:
        return [(None, "no training rows")] * len(param_list)
    if first.fit_intercept:
        mx, my = Xs / Wt, sy / Wt
        G = G - Wt * np.outer(mx, mx)
        Xty = Xty - Wt * mx * my
    else:
        mx, my = np.zeros(d), 0.0
    out = []
    for params in param_list:
        est = clone(first, params, comm=ctx)
        try:
            coef = _normal._cholesky_solve(G, Xty, float(est.alpha))
        except ShardlearnError as exc:   # identical matrices on every rank: identical verdicts
            out.append((None, str(exc)))
            continue
        est.coef_ = coef
        est.intercept_ = float(my - mx @ coef) if est.fit_intercept else 0.0
        est.n_features_in_ = d
        est.n_iter_, est.converged_ = 1, True
        out.append((est, None))
    return out


def block_rows(n_rows: int, row_bytes: int, n_runs: int) -> int:
    """Rows per block of the many-C evaluation: its four (rows x runs) float64 temporaries
    and one bool one stay within 1/:data:`_TEMP_SHARE` of the rows held (``n_rows`` x ``row_bytes``), at least
    :data:`_MIN_BLOCK` rows (below that the per-block calls dominate) and at most
    :data:`_BLOCK`. A function of this rank's row count: deterministic, as the sums need."""
    fit = n_rows * row_bytes // (_TEMP_SHARE * (_N_BUF * 8 + 1) * max(1, n_runs))
    return int(min(_BLOCK, max(_MIN_BLOCK, fit)))


def _logistic_many(first, param_list, ctx, X, y, s):
    from ._folds import class_labels

    s = np.asarray(s)
    classes = class_labels(ctx, y)
    if len(classes) != 2:
        return None
    # the positive class per row, one byte a row (each label is classes[0] or classes[1])
    t = np.asarray(y, dtype=np.float64) == classes[1]
    # the weighted column means centre X virtually (as the estimator does): the intercept
    # decouples from the weights and L-BFGS sees a better-conditioned problem
    sw = s if s.dtype == np.float64 else s.astype(np.float64)
    stats = ctx.coll.allreduce(np.concatenate([[sw.sum()], X.T @ sw]))
    del sw
    W = float(stats[0])
    if not W > 0:
        return [(None, "no training rows")] * len(param_list)
    n, d = X.shape
    M = len(param_list)
    lam = np.array([1.0 / float(p.get("C", first.C)) for p in param_list])
    fi = bool(first.fit_intercept)
    mu = stats[1:] / W if fi else np.zeros(d)
    B = block_rows(n, d * X.itemsize, M)
    # the block's temporaries, reused by every block and evaluation: z, e = exp(-|z|)
    # (then the residual), the per-row losses, 1 + e, and z >= 0
    zbuf, ebuf, lbuf, rbuf = (np.empty(min(B, n) * M) for _ in range(4))
    pbuf = np.empty(min(B, n) * M, dtype=bool)
    # the block's targets and weights as float64 columns (the element-wise passes run
    # faster on float64 than on a mixed float64 x bool loop)
    tcol, scol = np.empty((min(B, n), 1)), np.empty((min(B, n), 1))

    def evaluate(theta, cols):
        """Objective and gradient of runs ``cols`` at ``theta[:, cols]`` (one allreduce)."""
        k = len(cols)
        Wm = theta[:d, cols]
        b = (theta[d, cols] if fi else np.zeros(k)) - mu @ Wm
        loss = np.zeros(k)
        grad = np.zeros((d + 1, k))
        for i in range(0, n, B):   # a fold's held-out rows have weight 0
            Xb = X[i:i + B].astype(np.float64, copy=False)
            nb = Xb.shape[0]
            Z = np.matmul(Xb, Wm, out=zbuf[:nb * k].reshape(nb, k))
            Z += b
            tb = tcol[:nb]
            np.copyto(tb[:, 0], t[i:i + nb])
            if s.dtype == np.float64:
                sb = s[i:i + nb, None]
            else:
                sb = scol[:nb]
                np.copyto(sb[:, 0], s[i:i + nb])
            # the estimator's per-row loss and residual (one exp and one log1p a value), in
            # the block's buffers: then weighted by s
            L, R = binary_loss_resid(Z, tb, "logistic", out=(ebuf[:nb * k].reshape(nb, k),
                                     lbuf[:nb * k].reshape(nb, k), rbuf[:nb * k].reshape(nb, k),
                                     pbuf[:nb * k].reshape(nb, k)))
            R *= sb
            grad[:d] += Xb.T @ R
            grad[d] += R.sum(axis=0)
            L *= sb
            loss += L.sum(axis=0)
        tot = ctx.coll.allreduce(np.concatenate([loss, grad.ravel()]))
        loss, grad = tot[:k], tot[k:].reshape(d + 1, k)
        loss = (loss + 0.5 * lam[cols] * (Wm * Wm).sum(axis=0)) / W
        grad[:d] = (grad[:d] - np.outer(mu, grad[d]) + lam[cols] * Wm) / W
        grad[d] = grad[d] / W if fi else 0.0
        return loss, grad

    tol = 1e-4 if first.tol is None else float(first.tol)
    max_iter = int(first.max_iter or 100)
    mem = int(first.lbfgs_memory)
    theta = np.zeros((d + 1, M))
    f, g = evaluate(theta, np.arange(M))
    hist = [[] for _ in range(M)]
    n_iter = np.zeros(M, dtype=np.int64)
    active = [m for m in range(M) if np.abs(g[:, m]).max() > tol]
    while active:
        P = np.zeros((d + 1, M))
        step = np.ones(M)
        for m in active:
            P[:, m] = -_two_loop(g[:, m], hist[m])
            if not hist[m]:
                step[m] = min(1.0, 1.0 / max(np.abs(g[:, m]).sum(), 1e-12))
        slope = (g * P).sum(axis=0)
        pending = list(active)
        new_theta, new_f, new_g = theta.copy(), f.copy(), g.copy()
        for _ in range(40):
            if not pending:
                break
            cols = np.array(pending)
            trial = theta.copy()
            trial[:, cols] += step[cols] * P[:, cols]
            ft, gt = evaluate(trial, cols)
            still = []
            for j, m in enumerate(pending):
                # Armijo; near the optimum the loss is flat to rounding: a smaller gradient will do
                armijo = ft[j] <= f[m] + 1e-4 * step[m] * slope[m]
                flat = ft[j] <= f[m] + 1e-12 * abs(f[m]) and np.abs(gt[:, j]).max() < np.abs(g[:, m]).max()
                if armijo or flat or step[m] < 1e-12:
                    new_theta[:, m], new_f[m], new_g[:, m] = trial[:, m], ft[j], gt[:, j]
                else:   # the minimum of the quadratic through f, slope and ft, within [0.1, 0.5] step
                    a = step[m]
                    curv = ft[j] - f[m] - slope[m] * a
                    q = -slope[m] * a * a / (2.0 * curv) if curv > 0 else 0.5 * a
                    step[m] = min(max(q, 0.1 * a), 0.5 * a)
                    still.append(m)
            pending = still
        nxt = []
        for m in active:
            sv, yv = new_theta[:, m] - theta[:, m], new_g[:, m] - g[:, m]
            if sv @ yv > 1e-10 * (sv @ sv):
                hist[m].append((sv, yv))
                del hist[m][:-mem]
            n_iter[m] += 1
            stalled = not np.any(sv) or m in pending
            if np.abs(new_g[:, m]).max() > tol and n_iter[m] < max_iter and not stalled:
                nxt.append(m)
        theta, f, g = new_theta, new_f, new_g
        active = nxt
    out = []
    for m, params in enumerate(param_list):
        est = clone(first, params, comm=ctx)
        est.classes_ = classes
        est.coef_ = theta[:d, m][None, :].copy()
        est.intercept_ = np.array([theta[d, m] - mu @ theta[:d, m] if fi else 0.0])
        est.n_features_in_ = d
        est.n_iter_ = int(n_iter[m])
        est.loss_ = float(f[m])
        est.converged_ = bool(np.abs(g[:, m]).max() <= tol)
        out.append((est, None))
    return out


def _two_loop(g, hist):
    """L-BFGS direction ``H g`` from the stored (s, y) pairs."""
    q = g.copy()
    alphas = []
    for sv, yv in reversed(hist):
        a = (sv @ q) / (yv @ sv)
        alphas.append(a)
        q -= a * yv
    if hist:
        sv, yv = hist[-1]
        q *= (sv @ yv) / (yv @ yv)
    for (sv, yv), a in zip(hist, reversed(alphas)):
        b = (yv @ q) / (yv @ sv)
        q += (a - b) * sv
    return q
