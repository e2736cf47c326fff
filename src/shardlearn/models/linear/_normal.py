"""The normal-equations path of least squares (``solver="normal"``).

Each rank sums ``X^T S X``, ``X^T S y``, ``X^T s``, ``s.y`` and ``s.y^2`` over its rows in
float64 (one SYRK call for unweighted float64 X, else blocks of :data:`_CHUNK` rows), ONE
allreduce combines them, and every rank centres them for the intercept and solves
``(G + alpha I) v = b`` by Cholesky, with a clear error when the system is singular.
Also here: the blocked column sums of squares that ``standardize=True`` needs.
"""
from __future__ import annotations

import numpy as np

from ...errors import ShardlearnError
from ._solvers import OptimResult

_CHUNK = 65536


def normal_equations(ctx, X, y, s, W, sigma, *, fit_intercept, alpha, device=False):
    """Least squares (ridge with ``alpha > 0``) in one pass over X and one allreduce.

    ``s`` are the row weights, ``W`` the total training weight (the reported loss is
    divided by it), ``sigma`` the feature scales (ones without ``standardize``): the
    penalty applies to ``v = sigma * coef``. Returns ``(coef, intercept, result)`` with
    ``coef`` (d,) and ``intercept`` on the original scale and an :class:`OptimResult`
    of one "iteration". Raises ShardlearnError on every rank when the system is singular.
    ``device``: X is on the device; its sums come from ``_gpu.gram`` (GEMM there).
    """
    d = X.shape[1]
    with ctx.timers.phase("compute"):
        if device:
            from ._gpu import gram as _device_gram

            G, Xty, Xs, sy, syy = _device_gram(X, y, s)
        else:
            G, Xty, Xs, sy, syy = _gram(X, y, s)
        buf = np.concatenate([G.ravel(), Xty, Xs, [s.sum(), sy, syy]])
    buf = ctx.coll.allreduce(buf)
    G = buf[:d * d].reshape(d, d)
    Xty, Xs = buf[d * d:d * d + d], buf[d * d + d:d * d + 2 * d]
    Wt, sy, syy = buf[-3:]
    if fit_intercept:
        mx, my = Xs / Wt, sy / Wt
        G = G - Wt * np.outer(mx, mx)
        Xty = Xty - Wt * mx * my
        syy = syy - Wt * my * my
    else:
        mx, my = np.zeros(d), 0.0
    Gs = G / np.outer(sigma, sigma)
    bs = Xty / sigma
    with ctx.collective_errors():  # identical matrices on every rank: identical verdicts
        v = _cholesky_solve(Gs, bs, alpha)
    coef = v / sigma
    intercept = my - float(mx @ coef) if fit_intercept else 0.0
    rss = syy - 2.0 * float(coef @ Xty) + float(coef @ G @ coef)
    loss = (0.5 * rss + 0.5 * alpha * float(v @ v)) / W
    hist = [{"iter": 1, "loss": loss, "seconds": 0.0, "comm_seconds": ctx.coll.comm_seconds}]
    return coef, intercept, OptimResult(coef, loss, 0.0, 1, 1, True, "solved the normal equations", hist)


def _colsumsq(X):
    """Local per-column ``sum x^2`` in float64 (for ``standardize=True``)."""
    out = np.zeros(X.shape[1])
    for i in range(0, X.shape[0], _CHUNK):
        blk = X[i:i + _CHUNK].astype(np.float64, copy=False)
        out += np.einsum("ij,ij->j", blk, blk)
    return out


def _gram(X, y, s):
    """Local ``X^T S X``, ``X^T S y``, ``X^T s``, ``s.y``, ``s.y^2`` in float64."""
    d = X.shape[1]
    unweighted = bool(np.all(s == 1.0))
    if X.dtype == np.float64 and unweighted:
        G = X.T @ X  # one SYRK call
        return G, X.T @ y, X.sum(axis=0), float(y.sum()), float(y @ y)
    G = np.zeros((d, d))
    Xty, Xs = np.zeros(d), np.zeros(d)
    for i in range(0, X.shape[0], _CHUNK):
        blk = X[i:i + _CHUNK].astype(np.float64, copy=False)
        sb = s[i:i + _CHUNK]
        sq = np.sqrt(sb)
        wb = blk * sq[:, None]
        G += wb.T @ wb
        Xty += blk.T @ (sb * y[i:i + _CHUNK])
        Xs += blk.T @ sb
    return G, Xty, Xs, float(s @ y), float(s @ (y * y))


def _cholesky_solve(G, b, alpha):
    """Solve ``(G + alpha I) v = b`` by Cholesky; clear error when singular."""
    import scipy.linalg

    d = G.shape[0]
    A = G + alpha * np.eye(d)
    scale = float(np.max(np.abs(np.diag(A)))) if d else 1.0
    hint = ("the normal equations are singular (collinear or constant features, or fewer "
            "rows than features): use ridge with alpha > 0, or standardize/drop columns")
    if d == 0:
        return np.zeros(0)
    if not scale > 0:
        raise ShardlearnError(hint)
    try:
        c, low = scipy.linalg.cho_factor(A, lower=True, check_finite=True)
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgError, ValueError):
        raise ShardlearnError(hint) from None
    piv = np.diag(c) ** 2
    if float(piv.min()) <= 1e3 * d * np.finfo(float).eps * scale:
        raise ShardlearnError(hint + f" (smallest pivot {piv.min():.3g} vs largest diagonal {scale:.3g})")
    return scipy.linalg.cho_solve((c, low), b)
