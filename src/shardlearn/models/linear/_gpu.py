"""Linear and logistic models on the device: the row passes with the array module ``xp``
(CuPy on a GPU; NumPy under ``SHARDLEARN_FAKE_GPU=1``, which is how CI runs them).

What runs on the device: the loss+gradient pass (:func:`local_sums`: ``z = X_b @ A + b``
and ``X_b^T r`` as cuBLAS GEMMs over row blocks, the losses element-wise), the normal
equations' sums (:func:`gram`: ``X^T S X`` by GEMM in float64), the column statistics
and prediction. The solvers' vectors (coefficients, L-BFGS history: d x K numbers) stay
on the host: each evaluation sends ``A`` and ``b`` up and brings ``[loss, X^T r, sum r]``
back, the buffer the CPU path allreduces. The targets and row weights go to the device
once per fit (cached on the objective).

No custom kernel: everything is GEMMs and element-wise array expressions, the same
formulas as :mod:`._objective` (float32 rows are widened to float64 block by block, so
the loss and gradient keep float64 accuracy). Results equal the CPU path's within the
rounding of the sums' order (``tests/test_gpu_linear.py``: 1e-9 relative).
"""
from __future__ import annotations

import numpy as np

#: values per row block of the device pass: large blocks keep the GEMMs efficient, while
#: the float64 widening of one block stays small next to the data
DEVICE_BLOCK_ELEMENTS = 1 << 26


def _host(a):
    return a if isinstance(a, np.ndarray) else a.get()


def _xp(X):
    from ...backend import array_module

    return array_module(X)


def _cached(obj, name, host, xp):
    """``host`` (targets, weights) on the device, moved once per objective."""
    if host is None:
        return None
    cache = obj.__dict__.setdefault("_device_cache", {})
    key = (name, id(host))
    if key not in cache:
        cache[key] = (host, xp.asarray(host))  # keep host alive: its id stays unique
    return cache[key][1]


def local_sums(obj, w, X, t, s, sv, cache=True):
    """``_Objective._local`` on device rows: host ``[loss, val_loss, X^T r, sum r]``."""
    xp = _xp(X)
    A, b = obj.affine(w)
    K, d = obj.K, obj.d
    buf = np.zeros(2 + d * K + K)
    n = X.shape[0]
    if n == 0:
        return buf
    if cache:
        t, s, sv = _cached(obj, "t", t, xp), _cached(obj, "s", s, xp), _cached(obj, "sv", sv, xp)
    else:
        t, s = xp.asarray(t), xp.asarray(s)
        sv = None if sv is None else xp.asarray(sv)
    Ad, bd = xp.asarray(A), xp.asarray(b)
    G = xp.zeros((d, K))
    sr = xp.zeros(K)
    loss_sum = xp.zeros(())
    val_sum = xp.zeros(())
    step = max(64, DEVICE_BLOCK_ELEMENTS // max(1, d))
    for i in range(0, n, step):
        Xc = X[i:i + step].astype(np.float64, copy=False)
        loss, r = obj._loss_resid(Xc, t[i:i + step], Ad, bd, xp)
        sc = s[i:i + step]
        loss_sum += sc @ loss
        if sv is not None:
            val_sum += sv[i:i + step] @ loss
        if K == 1:
            r *= sc
            G[:, 0] += Xc.T @ r
            sr[0] += r.sum()
        else:
            r *= sc[:, None]
            G += Xc.T @ r
            sr += r.sum(axis=0)
    buf[0], buf[1] = float(loss_sum), float(val_sum)
    buf[2:2 + d * K] = _host(G).ravel()
    buf[2 + d * K:] = _host(sr)
    return buf


def batch_rows(X, rows):
    """Rows ``rows`` (host indices) of device ``X``."""
    xp = _xp(X)
    return X[xp.asarray(rows)]


def validation_sum(obj, w, rows):
    """Weighted loss sum on the held-out local rows (host float)."""
    X = obj.X
    xp = _xp(X)
    A, b = obj.affine(w)
    Xv = X[xp.asarray(rows)].astype(np.float64, copy=False)
    loss, _ = obj._loss_resid(Xv, xp.asarray(obj.t[rows]), xp.asarray(A), xp.asarray(b), xp)
    return float(xp.asarray(obj.sv[rows]) @ loss)


def colsumsq(X) -> np.ndarray:
    """Per-column ``sum x^2`` in float64 (host)."""
    xp = _xp(X)
    out = xp.zeros(X.shape[1])
    step = max(1, DEVICE_BLOCK_ELEMENTS // max(1, X.shape[1]))
    for i in range(0, X.shape[0], step):
        blk = X[i:i + step].astype(np.float64, copy=False)
        out += (blk * blk).sum(axis=0)
    return _host(out)


def gram(X, y, s):
    """``_normal._gram`` on device rows: host ``X^T S X``, ``X^T S y``, ``X^T s``,
    ``s.y``, ``s.y^2`` (float64; the Gram matrix by GEMM on the device)."""
    xp = _xp(X)
    d = X.shape[1]
    yd, sd = xp.asarray(y, dtype=np.float64), xp.asarray(s, dtype=np.float64)
    G = xp.zeros((d, d))
    Xty, Xs = xp.zeros(d), xp.zeros(d)
    step = max(1, DEVICE_BLOCK_ELEMENTS // max(1, d))
    for i in range(0, X.shape[0], step):
        blk = X[i:i + step].astype(np.float64, copy=False)
        sb = sd[i:i + step]
        wb = blk * xp.sqrt(sb)[:, None]
        G += wb.T @ wb
        Xty += blk.T @ (sb * yd[i:i + step])
        Xs += blk.T @ sb
    return _host(G), _host(Xty), _host(Xs), float(s @ y), float(s @ (y * y))


def check_rows(X, width=None):
    """Device checks of ``fit``/``predict`` input: (column sums float64 host, rows that
    hold NaN or infinities)."""
    xp = _xp(X)
    colsum = _host(X.sum(axis=0, dtype=np.float64))
    bad = 0
    if not np.all(np.isfinite(colsum)):
        bad = int((~xp.isfinite(X).all(axis=1)).sum())
    return colsum, bad


def decision(X, coef, intercept):
    """``X @ coef.T + intercept`` on the device (float64; (n,) or (n, K))."""
    xp = _xp(X)
    Z = (X @ xp.asarray(coef.T.astype(X.dtype, copy=False))).astype(np.float64, copy=False)
    Z += xp.asarray(np.asarray(intercept, dtype=np.float64))
    return Z
