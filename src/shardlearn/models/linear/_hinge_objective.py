"""The linear SVM's loss+gradient oracle: :class:`_HingeObjective` (squared hinge or hinge).

The same blocked pass and ONE packed allreduce per evaluation as :class:`._objective._Objective`
(it only swaps the per-row loss and the assembly), with liblinear's (scikit-learn
``LinearSVC``'s) conventions:

- labels ``y`` in {-1, +1}; many classes are one-vs-rest: the K binary problems share
  the pass over X (``Z = X @ A`` is n x K) and their gradients travel stacked in the one
  allreduce, ``[loss, val_loss, (X^T R).ravel(), sum R]`` with R n x K;
- squared hinge ``max(0, 1 - y z)^2`` (smooth: L-BFGS, GD/FISTA, SGD) or hinge
  ``max(0, 1 - y z)`` (subgradient ``-y [1 - y z > 0]``: SGD);
- class weights as liblinear: a binary problem weighs each row by its class's weight; in
  one-vs-rest, problem k weighs its positive rows (class k) by class k's weight and the
  rest by 1;
- the intercept is a coefficient of a constant feature of value ``intercept_scaling``
  and is PENALISED like the other coefficients (L2 or L1), as liblinear does; so the
  features are never centred (``mu = 0``): centring would change the optimum.

Parameters are ``[V.ravel(), c]`` with decision ``z = (X / sigma) @ V.T + intercept_scaling * c``.
"""
from __future__ import annotations

import numpy as np

from ._objective import _Objective

LOSSES = ("squared_hinge", "hinge")


class _HingeObjective(_Objective):
    """Distributed (squared) hinge loss and gradient for the binary or one-vs-rest SVM."""

    def __init__(self, ctx, X, target, s_train, s_val, *, kind, K, lam, mu, sigma, fit_intercept,
                 W_train, W_val, intercept_scaling=1.0, positive_weights=None):
        super().__init__(ctx, X, target, s_train, s_val, kind=kind, K=K, lam=lam, mu=np.zeros_like(mu),
                         sigma=sigma, fit_intercept=fit_intercept, W_train=W_train, W_val=W_val)
        self.scale = float(intercept_scaling)
        self.l1_mask[:] = True  # the intercept is penalised too (liblinear)
        # one-vs-rest: problem k weighs its positive rows by class k's weight and its
        # negative rows by 1 (liblinear's weighted_C; the binary problem weighs every row by
        # its own class, which the sample weights ``s`` already carry)
        self.pos_w = None if positive_weights is None else np.asarray(positive_weights, dtype=np.float64)

    def affine(self, w):
        V, c = self.split(w)
        A = (V / self.sigma).T
        return A, self.scale * c

    def _loss_resid(self, X, t, A, b, xp=np):
        Z = X @ A
        Z = Z.astype(np.float64, copy=False)
        Z += b
        if self.K == 1:
            Y = 2.0 * t[:, None] - 1.0  # t in {0, 1}
        else:
            Y = xp.full(Z.shape, -1.0)
            Y[xp.arange(Z.shape[0]), t.astype(np.int64, copy=False)] = 1.0
        M = 1.0 - Y * Z  # margin violations where > 0
        xp.maximum(M, 0.0, out=M)
        if self.kind == "squared_hinge":
            L = M * M
            R = -2.0 * Y * M
        else:
            L = M
            R = xp.where(M > 0, -Y, 0.0)
        if self.pos_w is not None and self.K > 1:
            F = xp.where(Y > 0, xp.asarray(self.pos_w), 1.0)
            L *= F
            R *= F
        loss = L.sum(axis=1)
        return loss, (R[:, 0].copy() if self.K == 1 else R)

    def _assemble(self, w, buf, W_data):
        K, d = self.K, self.d
        G = buf[2:2 + d * K].reshape(d, K)
        sr = buf[2 + d * K:]
        reg = self.lam / self.W
        f = buf[0] / W_data + 0.5 * reg * float(np.dot(w, w))
        g = np.empty(self.p)
        g[:self.n_coef] = (G / self.sigma[:, None]).T.ravel() / W_data
        if self.fit_intercept:
            g[self.n_coef:] = self.scale * sr / W_data
        g += reg * w
        return f, g
