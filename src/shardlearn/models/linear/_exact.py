"""``exact_reduce=True`` for the linear models: every sum that reaches the solver is exact.

With float sums the reduced loss and gradient change in their last bits with the number of
ranks, the topology and the row blocks, and an L-BFGS or gradient-descent run amplifies
that into different coefficients. Here every sum is int64 fixed point
(:mod:`shardlearn.util.fixed`), so it is the same integer whatever the split, and the
solvers see the same ``f``, ``g`` and validation loss on any P: the model is bit-identical.

- :func:`setup_stats`: the fit's one reduction of row counts, per-class weights and column
  sums (and squares, for ``standardize``), exact: one max-allreduce of the extremes
  (weights, ``|y|``, per-feature max and min), then one int64 allreduce. The same layout
  as the float path's ``stats``, plus the bounds the objective needs.
- :class:`ExactObjective`: the loss+gradient oracle. Per row, ``z = x . a`` is a compiled
  dot in a fixed order (``_linear_kernels.c`` ``rowdot_f64``: a row's value does not depend
  on its block), the loss and residual are element-wise NumPy, and ``X^T r``, ``sum r``,
  the loss and the validation loss are int64 fixed point (``xtr_fixed_f64`` and
  :func:`shardlearn.util.fixed.local_fixed_sum`). The units come from bounds every rank
  computes alike from the current coefficients and the setup's extremes (no extra
  collective): ``|z_i| <= sum_j D_j |A_jk| + |c_k|`` with ``D_j = max |x_ij - mu_j|``;
  ``|r| <= |z| + max|y|`` (squared error) or 1 (log-loss) times the largest weight; the
  loss from ``|z|``. So one evaluation is still one pass over X and ONE allreduce (int64).

Without the compiled kernels the same arithmetic runs in NumPy (the same bits, slower).
Supported: the squared error and the binary and multinomial log-loss, solvers ``lbfgs``,
``gd`` and ``fista``; :func:`check` refuses the rest (normal equations, SGD, the parameter
server, LinearSVC's hinge losses, the device path) with one message on every rank.
"""
from __future__ import annotations

import numpy as np

from ...backend import compiled_kernels
from ...errors import ShardlearnError
from ...util.fixed import BLOCK, fixed_scales, local_fixed_sum, quantize
from ._objective import CHUNK_ELEMENTS, _Objective, binary_loss_resid

EXACT_SOLVERS = ("lbfgs", "gd", "fista")
EPS = np.finfo(np.float64).eps


def kernels():
    return compiled_kernels("models.linear._linear_kernels")


def check(model, solver: str) -> None:
    """ShardlearnError unless ``exact_reduce`` can be honoured (called in the parameter
    checks, which every rank runs and agrees on)."""
    if not getattr(model, "_exact_supported", True):
        raise ShardlearnError(f"{type(model).__name__}: exact_reduce=True is not available (its hinge losses have "
                              "no exact objective); use LogisticRegression, or exact_reduce=False")
    if solver not in EXACT_SOLVERS:
        raise ShardlearnError(f"exact_reduce=True needs solver lbfgs, gd or fista (exact sums of the loss and "
                              f"gradient), not {solver!r}: the normal equations and SGD are not order-independent")


# ------------------------------------------------------------------------------- setup
def _class_sums(q, lab, nc: int) -> np.ndarray:
    out = np.zeros(nc, dtype=np.int64)
    np.add.at(out, lab, q)
    return out


def _colsum_fixed(kern, X, scale, step) -> np.ndarray:
    """Column sums in fixed point: ``X^T 1`` by the compiled ``xtr_fixed_f64`` (x_ij * 1 is
    exact, so the same integers as :func:`local_fixed_sum`), or NumPy."""
    d = X.shape[1]
    if kern is None:
        return local_fixed_sum(X, scale) if X.shape[0] else np.zeros(d, dtype=np.int64)
    out = np.zeros((1, d), dtype=np.int64)
    ones = np.ones((min(step, X.shape[0]), 1))
    sc = np.ascontiguousarray(scale, dtype=np.float64).reshape(1, d)
    for i in range(0, X.shape[0], step):
        Xc = np.ascontiguousarray(X[i:i + step], dtype=np.float64)
        kern.xtr_fixed_f64(Xc, ones, sc, out, Xc.shape[0], d, 1)
    return out[0]


def _colsumsq_fixed(X, scale) -> np.ndarray:
    out = np.zeros(X.shape[1], dtype=np.int64)
    for lo in range(0, X.shape[0], BLOCK):
        out += local_fixed_sum(np.square(X[lo:lo + BLOCK], dtype=np.float64), scale)
    return out


def setup_stats(ctx, X, t, lab, nc, s0, sv0, train, *, need_colsum, need_sq, n_total, regression):
    """``(stats, bounds)``: ``stats`` as the float path's one allreduce lays it out
    (``[n_train, counts (nc), weights (nc), validation weights (nc), colsum (d)?,
    colsumsq (d)?]``), every entry exact; ``bounds`` the global extremes the objective's
    units need (``xabs``, ``hi``, ``lo``, ``smax``, ``svmax``, ``tmax``)."""
    d = X.shape[1]
    n = X.shape[0]
    kern = kernels()
    step = max(64, CHUNK_ELEMENTS // max(1, d))
    hi, lo = np.full(d, -np.inf), np.full(d, np.inf)
    if kern is not None:  # one compiled pass (NumPy's axis-0 max and min are two slow ones)
        for i in range(0, n, step):
            Xc = np.ascontiguousarray(X[i:i + step], dtype=np.float64)
            kern.colrange_f64(Xc, hi, lo, Xc.shape[0], d)
    elif n:
        hi, lo = X.max(axis=0).astype(np.float64), X.min(axis=0).astype(np.float64)
    tmax = float(np.abs(t).max()) if regression and n else 0.0
    local = np.concatenate([[s0.max() if n else 0.0, sv0.max() if sv0 is not None and n else 0.0, tmax], hi, -lo])
    ext = ctx.coll.allreduce(local, op="max")
    smax, svmax, tmax = float(ext[0]), float(ext[1]), float(ext[2])
    hi, lo = ext[3:3 + d], -ext[3 + d:]
    xabs = np.maximum(np.abs(hi), np.abs(lo))
    xabs[~np.isfinite(xabs)] = 0.0  # (no rows anywhere cannot happen: checked before)
    sw_scale = fixed_scales(smax, n_total)
    sv_scale = fixed_scales(svmax, n_total)
    x_scale = fixed_scales(xabs, n_total)
    x2_scale = fixed_scales(xabs * xabs, n_total)
    parts = [np.array([int(train.sum())], dtype=np.int64),
             np.bincount(lab[train], minlength=nc).astype(np.int64),
             _class_sums(quantize(s0, sw_scale), lab, nc),
             _class_sums(quantize(sv0, sv_scale), lab, nc) if sv0 is not None else np.zeros(nc, dtype=np.int64)]
    if need_colsum or need_sq:
        parts.append(_colsum_fixed(kern, X, x_scale, step))
    if need_sq:
        parts.append(_colsumsq_fixed(X, x2_scale))
    q = ctx.coll.allreduce(np.concatenate(parts))
    stats = q.astype(np.float64)
    stats[1 + nc:1 + 2 * nc] /= sw_scale
    stats[1 + 2 * nc:1 + 3 * nc] /= sv_scale
    off = 1 + 3 * nc
    if need_colsum or need_sq:
        stats[off:off + d] /= x_scale
    if need_sq:
        stats[off + d:off + 2 * d] /= x2_scale
    return stats, {"xabs": xabs, "hi": hi, "lo": lo, "smax": smax, "svmax": svmax, "tmax": tmax}


# --------------------------------------------------------------------------- objective
def rowdot(kern, Xc, at) -> np.ndarray:
    """``Z[i, k] = Xc[i] . at[k]`` (n x K) in the fixed per-row order of ``rowdot_f64``."""
    n, d = Xc.shape
    K = at.shape[0]
    Z = np.empty((n, K))
    if kern is not None:
        kern.rowdot_f64(Xc, at, Z, n, d, K)
        return Z
    d4 = d - d % 4
    for k in range(K):
        lanes = np.zeros((n, 4))
        for j in range(0, d4, 4):
            lanes += Xc[:, j:j + 4] * at[k, j:j + 4]
        s = (lanes[:, 0] + lanes[:, 1]) + (lanes[:, 2] + lanes[:, 3])
        for j in range(d4, d):
            s += Xc[:, j] * at[k, j]
        Z[:, k] = s
    return Z


def xtr_fixed(kern, Xc, R, gscale_t, Gt) -> None:
    """``Gt[k, j] += round(Xc[i, j] * R[i, k] * gscale_t[k, j])`` summed over i (int64, K x d:
    class-major, so the compiled inner loop runs along contiguous features)."""
    n, d = Xc.shape
    K = R.shape[1]
    if kern is not None:
        kern.xtr_fixed_f64(Xc, R, gscale_t, Gt, n, d, K)
        return
    for k in range(K):
        Gt[k] += local_fixed_sum(Xc * R[:, k:k + 1], gscale_t[k])


def wsum_fixed(kern, v, w, scale) -> int:
    """``sum_i round(v_i * w_i * scale)`` (a weighted loss sum in fixed point)."""
    if kern is not None:
        return kern.wsum_fixed_f64(v, np.ascontiguousarray(w, dtype=np.float64), float(scale), v.shape[0])
    return int(local_fixed_sum(v * w, scale))


class ExactObjective(_Objective):
    """:class:`._objective._Objective` with exact sums (see the module docstring).

    ``bounds`` is :func:`setup_stats`'s; ``n_total`` the rows over every rank (the units
    keep every sum of that many values inside int64)."""

    def __init__(self, ctx, X, target, s_train, s_val, *, bounds, n_total, max_class_weight, **kw):
        super().__init__(ctx, X, target, s_train, s_val, **kw)
        self.kern = kernels()
        self.n_total = int(n_total)
        self.xabs = bounds["xabs"]
        # max |x_ij - mu_j| over every rank's rows
        self.D = np.maximum(bounds["hi"] - self.mu, self.mu - bounds["lo"])
        self.D[~np.isfinite(self.D)] = 0.0
        self.tmax = bounds["tmax"]
        # the largest training / validation row weight (sample weight x class weight)
        self.smax = bounds["smax"] * float(max_class_weight)
        self.svmax = bounds["svmax"] * float(max_class_weight)

    def _units(self, w):
        """Per-evaluation units: (gscale (K x d), srscale (K), lscale, vscale), or None when
        a bound is not finite (then the objective is +inf on every rank alike)."""
        A, b = self.affine(w)
        _, c = self.split(w)
        absA = np.abs(A)
        zb = self.D @ absA + np.abs(c)
        # the computed z may differ from the exact one by (d + 2) eps sum |x_ij a_j| + |b|
        zb = (zb + (self.d + 4) * EPS * (self.xabs @ absA + np.abs(b))) * (1 + 1e-9)
        if self.kind == "squared":
            rb = zb + self.tmax
            lossb = 0.5 * float(rb[0]) ** 2
        elif self.K == 1:
            rb = np.ones(1)
            lossb = float(zb[0]) + np.log(2.0)
        else:
            rb = np.ones(self.K)
            lossb = np.log(self.K) + 2.0 * float(zb.max())
        rb = rb * self.smax * (1 + 1e-9)
        lossb *= 1 + 1e-9
        if not (np.all(np.isfinite(rb)) and np.isfinite(lossb)):
            return None
        n = self.n_total
        return (fixed_scales(np.outer(rb, self.xabs), n), fixed_scales(rb, n),
                fixed_scales(lossb * self.smax, n), fixed_scales(lossb * self.svmax, n))

    def _resid(self, Z, t):
        """Per-row loss and dloss/dz from the decision values (element-wise only)."""
        if self.K == 1:
            loss, r = binary_loss_resid(Z[:, 0], t, self.kind)
            return loss, r[:, None]
        rows = np.arange(Z.shape[0])
        m = Z.max(axis=1)
        E = np.exp(Z - m[:, None])
        se = E[:, 0].copy()
        for k in range(1, self.K):  # the row sums in class order: the same bits on any rank
            se += E[:, k]
        loss = m + np.log(se)
        loss -= Z[rows, t]
        E /= se[:, None]
        E[rows, t] -= 1.0
        return loss, E

    def _local_fixed(self, w, units):
        """int64 ``[loss, val_loss, (X^T r).ravel(), sum r]`` on this rank's rows."""
        gscale, srscale, lscale, vscale = units
        X, t, s, sv = self.X, self.t, self.s, self.sv
        A, b = self.affine(w)
        at = np.ascontiguousarray(A.T)
        K, d = self.K, self.d
        Gt = np.zeros((K, d), dtype=np.int64)
        sr = np.zeros(K, dtype=np.int64)
        lq = vq = 0
        n = X.shape[0]
        step = max(64, CHUNK_ELEMENTS // max(1, d))
        ones = np.ones(min(step, n))
        for i in range(0, n, step):
            Xc = np.ascontiguousarray(X[i:i + step], dtype=np.float64)
            Z = rowdot(self.kern, Xc, at)
            Z += b
            loss, R = self._resid(Z, t[i:i + step])
            sc = s[i:i + step]
            lq += wsum_fixed(self.kern, loss, sc, lscale)
            if sv is not None:
                vq += wsum_fixed(self.kern, loss, sv[i:i + step], vscale)
            R *= sc[:, None]
            for k in range(K):
                sr[k] += wsum_fixed(self.kern, np.ascontiguousarray(R[:, k]), ones[:R.shape[0]], srscale[k])
            xtr_fixed(self.kern, Xc, R, gscale, Gt)
        return np.concatenate([np.array([lq, vq], dtype=np.int64), Gt.T.ravel(), sr])

    def __call__(self, w):
        """Full-batch objective, gradient and validation loss: one int64 allreduce."""
        units = self._units(w)
        if units is None:  # the same decision on every rank: no collective to skip unevenly
            g = np.full(self.p, np.nan)
            return np.inf, g, (np.inf if self.sv is not None else None)
        with self.ctx.timers.phase("compute"):
            q = self._local_fixed(w, units)
        q = self.ctx.coll.allreduce(q)
        gscale, srscale, lscale, vscale = units
        K, d = self.K, self.d
        buf = np.empty(q.shape[0])
        buf[0] = q[0] / lscale
        buf[1] = q[1] / vscale
        buf[2:2 + d * K] = q[2:2 + d * K] / gscale.T.ravel()
        buf[2 + d * K:] = q[2 + d * K:] / srscale
        f, g = self._assemble(w, buf, self.W)
        val = buf[1] / self.Wv if self.sv is not None else None
        return f, g, val

    def batch(self, w, rows):  # pragma: no cover - check() refuses SGD
        raise ShardlearnError("exact_reduce=True does not support SGD")

    def validation(self, w):  # pragma: no cover - check() refuses SGD
        raise ShardlearnError("exact_reduce=True does not support SGD")
