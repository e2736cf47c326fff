"""The distributed loss+gradient oracle of the linear models: :class:`_Objective`.

One evaluation walks this rank's rows once, in row blocks of :data:`CHUNK_ELEMENTS`
values: ``z = X_b @ A + b``, the per-row loss and residual, then ``X_b.T @ r`` while the
block is still in cache (a float32 block is widened to float64 there first). The partial
sums travel in ONE packed float64 allreduce, ``[loss, val_loss, X^T r, sum r]``, after
which every rank holds the same objective and gradient and the solvers
(:mod:`._solvers`) take the same step. Also: the mini-batch oracle for SGD and the
validation loss on held-out rows, one allreduce each.

The losses are the squared error and the binary or multinomial log-loss; the features
are centred and scaled *virtually* (``mu``, ``sigma``), never copied.
"""
from __future__ import annotations

import numpy as np

# row block of the fused loss+gradient pass: 2 MiB of float64 (1 MiB of float32) stays in
# cache between the two BLAS calls, and is small enough that OpenBLAS runs them on one thread
# (bench/bench_linear.py times this pass against two whole-array passes: bench/linear.md)
CHUNK_ELEMENTS = 1 << 18


def binary_loss_resid(z: np.ndarray, t: np.ndarray, kind: str, xp=np, out=None):
    """Per-row loss and dloss/dz of one decision value per row: squared error, or the
    binary logistic loss (t in {0, 1}): log(1 + e^z) - t z and sigmoid(z) - t, both from
    e = exp(-|z|) in (0, 1], so no overflow for any z. Element-wise: a row's values do not
    depend on the other rows (the exact path relies on it). ``xp``: the array module of
    ``z`` (NumPy, or CuPy on the device path). ``z`` may be (n, M) (M weight vectors, ``t``
    (n, 1)). ``out``: three float64 buffers and one bool buffer of ``z``'s shape, reused
    instead of new arrays (the many-C pass); without it they are allocated here."""
    if kind == "squared":
        r = z - t
        return 0.5 * r * r, r
    if out is None:
        out = (xp.empty_like(z), xp.empty_like(z), xp.empty_like(z), xp.empty(z.shape, dtype=bool))
    e, loss, r, pos = out
    xp.abs(z, out=e)
    xp.negative(e, out=e)
    xp.exp(e, out=e)                           # e = exp(-|z|)
    xp.log1p(e, out=loss)
    xp.maximum(z, 0.0, out=r)
    loss += r
    xp.multiply(t, z, out=r)
    loss -= r                                  # log(1 + e^z) - t z
    xp.add(e, 1.0, out=r)                      # 1 + e
    xp.greater_equal(z, 0, out=pos)
    xp.copyto(e, 1.0, where=pos)               # where(z >= 0, 1, e)
    e /= r
    e -= t                                     # sigmoid(z) - t
    return loss, e


def loss_resid(kind: str, K: int, X, t, A, b, xp=np):
    """Per-row loss and dloss/dz on rows ``X`` (z is n, or n x K for the multinomial
    loss, whose ``t`` holds class indices), with the array module ``xp`` of ``X``."""
    if K == 1:
        z = (X @ A[:, 0]).astype(np.float64, copy=False)
        z += b[0]
        return binary_loss_resid(z, t, kind, xp)
    Z = (X @ A).astype(np.float64, copy=False)
    Z += b
    rows = xp.arange(Z.shape[0])
    m = Z.max(axis=1)
    E = xp.exp(Z - m[:, None])
    se = E.sum(axis=1)
    loss = m + xp.log(se)   # log-sum-exp
    ti = t.astype(np.int64, copy=False)
    loss -= Z[rows, ti]
    E /= se[:, None]
    E[rows, ti] -= 1.0
    return loss, E


class _Objective:
    """Distributed loss+gradient oracle for one linear model on this rank's rows.

    Parameters are a flat float64 vector ``[V.ravel(), c]``: ``V`` (K x d) the
    coefficients in the centred/scaled space and ``c`` (K) the intercepts (absent
    without ``fit_intercept``). The decision function is
    ``z = ((X - mu) / sigma) @ V.T + c``, evaluated as ``X @ A + b`` with
    ``A = (V / sigma).T`` and ``b = c - mu @ A``.
    """

    def __init__(self, ctx, X, target, s_train, s_val, *, kind, K, lam, mu, sigma,
                 fit_intercept, W_train, W_val):
        self.ctx, self.X, self.t = ctx, X, target
        self.s, self.sv = s_train, s_val
        self.kind, self.K, self.lam = kind, K, float(lam)
        self.mu, self.sigma = mu, sigma
        self.fit_intercept = fit_intercept
        self.W, self.Wv = float(W_train), float(W_val)
        self.d = X.shape[1]
        self.n_coef = K * self.d
        self.p = self.n_coef + (K if fit_intercept else 0)
        self.l1_mask = np.zeros(self.p, dtype=bool)
        self.l1_mask[:self.n_coef] = True
        self._val_rows = None
        self.device = False  # True: X is on the device and the row passes are _gpu.py's

    # ------------------------------------------------------------ parameters
    def split(self, w):
        V = w[:self.n_coef].reshape(self.K, self.d)
        c = w[self.n_coef:] if self.fit_intercept else np.zeros(self.K)
        return V, c

    def affine(self, w):
        """``(A, b)`` with decision ``X @ A + b`` on the original feature scale."""
        V, c = self.split(w)
        A = (V / self.sigma).T  # d x K
        b = c - self.mu @ A
        return A, b

    # ------------------------------------------------------------ local math
    def _loss_resid(self, X, t, A, b, xp=np):
        """Per-row loss and dloss/dz on rows X (z is n or n x K): :func:`loss_resid`.
        ``xp``: the array module of the rows (the device passes of ``_gpu.py`` call this
        too, so a subclass's loss, e.g. the SVM's hinge, is the one on every path)."""
        return loss_resid(self.kind, self.K, X, t, A, b, xp)

    def _local(self, w, X, t, s, sv):
        """``[loss_sum, val_loss_sum, (X^T r).ravel(), sum r]`` on local rows.

        One pass over X in row blocks of :data:`CHUNK_ELEMENTS` values: ``z = X_c @ A``,
        then loss and residual, then ``X_c^T r`` while ``X_c`` is still in cache, so X
        streams from memory once per evaluation instead of twice.
        """
        if self.device:
            from ._gpu import local_sums

            return local_sums(self, w, X, t, s, sv, cache=X is self.X)
        A, b = self.affine(w)
        K, d = self.K, self.d
        buf = np.zeros(2 + d * K + K)
        n = X.shape[0]
        if n == 0:
            return buf
        G = np.zeros((d, K))
        sr = np.zeros(K)
        loss_sum = val_sum = 0.0
        step = max(64, CHUNK_ELEMENTS // max(1, d))
        # float32 X: each block is widened to float64 in cache, so memory traffic is that of
        # float32 while z, loss and gradient keep float64 accuracy (float32 z would make the
        # objective too noisy for the line search near the optimum)
        wide = np.empty((min(step, n), d)) if X.dtype != np.float64 else None
        for i in range(0, n, step):
            Xc = X[i:i + step]
            if wide is not None:
                Xc = wide[:Xc.shape[0]]
                np.copyto(Xc, X[i:i + step])
            loss, r = self._loss_resid(Xc, t[i:i + step], A, b)
            sc = s[i:i + step]
            loss_sum += float(np.dot(sc, loss))
            if sv is not None:
                val_sum += float(np.dot(sv[i:i + step], loss))
            if K == 1:
                r *= sc
                G[:, 0] += Xc.T @ r
                sr[0] += r.sum()
            else:
                r *= sc[:, None]
                G += Xc.T @ r
                sr += r.sum(axis=0)
        buf[0], buf[1] = loss_sum, val_sum
        buf[2:2 + d * K] = G.ravel()
        buf[2 + d * K:] = sr
        return buf

    def _assemble(self, w, buf, W_data):
        """Objective and gradient from the reduced sums (identical on every rank)."""
        K, d = self.K, self.d
        V, _ = self.split(w)
        G = buf[2:2 + d * K].reshape(d, K)
        sr = buf[2 + d * K:]
        # chain rule through the virtual centring/scaling
        gV = ((G - np.outer(self.mu, sr)) / self.sigma[:, None]).T
        f = buf[0] / W_data + 0.5 * self.lam * float(np.dot(V.ravel(), V.ravel())) / self.W
        g = np.empty(self.p)
        g[:self.n_coef] = gV.ravel() / W_data + (self.lam / self.W) * V.ravel()
        if self.fit_intercept:
            g[self.n_coef:] = sr / W_data
        return f, g

    # ------------------------------------------------------------ oracles
    def __call__(self, w):
        """Full-batch objective, gradient and validation loss: one allreduce."""
        with self.ctx.timers.phase("compute"):
            buf = self._local(w, self.X, self.t, self.s, self.sv)
        buf = self.ctx.coll.allreduce(buf)
        f, g = self._assemble(w, buf, self.W)
        val = buf[1] / self.Wv if self.sv is not None else None
        return f, g, val

    def batch(self, w, rows):
        """Mini-batch mean objective and gradient over the global batch: one allreduce.

        The regulariser is scaled by ``1/W`` as in the full objective, so the
        expected batch gradient equals the full gradient.
        """
        with self.ctx.timers.phase("compute"):
            s = self.s[rows]
            if self.device:
                from ._gpu import batch_rows

                Xb = batch_rows(self.X, rows)
            else:
                Xb = self.X[rows]
            buf = self._local(w, Xb, self.t[rows], s, None)
            buf[1] = s.sum()  # the batch's weight, reduced in the same buffer
        buf = self.ctx.coll.allreduce(buf)
        Wb = buf[1]
        if Wb <= 0:  # an empty global batch: only the regulariser
            buf[:] = 0.0
            Wb = 1.0
        return self._assemble(w, buf, Wb)

    def validation(self, w):
        """Weighted mean loss on the held-out rows: one allreduce."""
        if self._val_rows is None:
            self._val_rows = np.flatnonzero(self.sv > 0)
        rows = self._val_rows
        with self.ctx.timers.phase("compute"):
            if rows.size and self.device:
                from ._gpu import validation_sum

                v = np.array([validation_sum(self, w, rows)])
            elif rows.size:
                A, b = self.affine(w)
                Xv = self.X[rows].astype(np.float64, copy=False)
                loss, _ = self._loss_resid(Xv, self.t[rows], A, b)
                v = np.array([np.dot(self.sv[rows], loss)])
            else:
                v = np.zeros(1)
        return float(self.ctx.coll.allreduce(v)[0]) / self.Wv
