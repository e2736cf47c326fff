"""Principal component analysis on row-sharded data: :class:`PCA`.

Two ways to the SVD of the centred data, each ONE collective:

- ``svd_solver="full"``: TSQR (communication-avoiding QR). Each rank takes the R factor
  of its rows centred on their local mean; one allgather shares ``(n_r, mean_r, R_r)``;
  every rank stacks the R factors with the rows ``sqrt(n_r) (mean_r - mean)`` (which add
  back the between-rank spread exactly), takes the QR of that small stack and the SVD of
  its R. The data's condition number is not squared and no large mean cancels: accurate
  for any data. Cost: 2 n d^2 flops per rank, ``P (d^2 + d + 1)`` floats gathered.
- ``svd_solver="covariance_eigh"``: the Gram matrix. One allreduce of ``[n, sum x, X^T X]``
  (``d^2 + d + 1`` floats whatever P), then an eigendecomposition of
  ``X^T X - n mean mean^T``: half the flops and a message that does not grow with P, but it
  squares the condition number and loses digits when the mean is large against the
  spread (standardise first).
- ``"auto"`` (default) takes TSQR while the gathered R factors stay under 64 MB
  (``P d^2 8`` bytes: d up to ~1400 on 4 ranks), else the Gram matrix.

Components, explained variances and their signs follow scikit-learn's ``PCA``
(``svd_flip`` on the rows of ``components_``).
"""
from __future__ import annotations

import numpy as np

from ...errors import ShardlearnError
from ._base import Transformer, blocks

SOLVERS = ("auto", "full", "covariance_eigh")
#: "auto" takes TSQR while P * d^2 * 8 bytes of R factors stay below this
TSQR_MAX_BYTES = 64 << 20


def _flip(Vt: np.ndarray) -> np.ndarray:
    """scikit-learn's ``svd_flip(u_based_decision=False)``: the largest |entry| of each row positive."""
    i = np.argmax(np.abs(Vt), axis=1)
    signs = np.sign(Vt[np.arange(Vt.shape[0]), i])
    signs[signs == 0] = 1.0
    return Vt * signs[:, None]


class PCA(Transformer):
    """Project onto the leading principal components, as scikit-learn's ``PCA``.

    Parameters
    ----------
    n_components : int, float in (0, 1) or None
        Components kept: a count, the smallest count explaining at least this fraction
        of the variance, or all (``min(n, d)``).
    whiten : bool
        Divide the projections by the square roots of the explained variances.
    svd_solver : {"auto", "full", "covariance_eigh"}
        TSQR (``full``) or the Gram matrix (``covariance_eigh``); see the module text.

    Attributes
    ----------
    components_, explained_variance_, explained_variance_ratio_, singular_values_,
    mean_, n_components_, noise_variance_, svd_solver_ (the one used)
    """

    _model_name = "pca"
    _allow_nan = False  # the Gram matrix / QR of X: NaN is refused in fit (Transformer.fit)
    _fitted = ("components_", "explained_variance_", "explained_variance_ratio_", "singular_values_",
               "mean_", "n_components_", "noise_variance_")

    def __init__(self, n_components=None, *, whiten=False, svd_solver="auto", comm=None):
        self.n_components = n_components
        self.whiten = whiten
        self.svd_solver = svd_solver
        self.comm = comm

    def _check_params(self):
        if self.svd_solver not in SOLVERS:
            raise ShardlearnError(f"svd_solver {self.svd_solver!r}: choose one of {', '.join(SOLVERS)}")
        k = self.n_components
        if k is not None and not (isinstance(k, (int, np.integer)) and k >= 1) and not (
                isinstance(k, float) and 0.0 < k < 1.0):
            raise ShardlearnError(f"n_components must be an int >= 1, a float in (0, 1) or None, got {k!r}")

    def _fit(self, ctx, X, n_total):
        n_local, d = X.shape
        if n_total < 2:
            ctx.agree(f"PCA needs at least 2 rows (n_samples={n_total})")
        solver = self.svd_solver
        if solver == "auto":
            solver = "full" if ctx.size * d * d * 8 <= TSQR_MAX_BYTES else "covariance_eigh"
        if solver == "full":
            S, Vt, mean = _tsqr(ctx, X)
        else:
            S, Vt, mean = _gram(ctx, X)
        Vt = _flip(Vt)
        var = S ** 2 / (n_total - 1)
        total = var.sum()
        ratio = var / total if total > 0 else np.zeros_like(var)
        rank_max = min(n_total, d)
        k = self.n_components
        if k is None:
            k = rank_max
        elif isinstance(k, float):
            k = int(np.searchsorted(np.cumsum(ratio), k, side="right") + 1)
            k = min(k, rank_max)
        elif k > rank_max:
            ctx.agree(f"n_components={k} must be at most min(n_samples, n_features) = {rank_max}")
        k = int(k)
        self.svd_solver_ = solver
        self.mean_ = mean
        self.n_components_ = k
        self.components_ = Vt[:k]
        self.explained_variance_ = var[:k]
        self.explained_variance_ratio_ = ratio[:k]
        self.singular_values_ = S[:k]
        self.noise_variance_ = float(var[k:rank_max].mean()) if k < rank_max else 0.0

    def transform(self, X):
        """Project local rows (no communication); float32 in, float32 out."""
        X = self._check_X(X)
        if X.size and not np.isfinite(X.sum()) and not np.isfinite(X).all():
            raise ShardlearnError(f"X holds NaN or infinite values in {int((~np.isfinite(X).all(axis=1)).sum())} rows: "
                                  "PCA needs finite features (impute them first)")
        Z = (X - self.mean_.astype(X.dtype)) @ self.components_.T.astype(X.dtype)
        if self.whiten:
            Z /= np.sqrt(self.explained_variance_).astype(X.dtype)
        return Z

    def inverse_transform(self, Z):
        """Back to feature space (local)."""
        self._check_fitted()
        Z = np.asarray(Z)
        dt = Z.dtype if Z.dtype in (np.float32, np.float64) else np.float64
        Z = Z.astype(dt, copy=False)
        if Z.ndim != 2 or Z.shape[1] != self.n_components_:
            raise ShardlearnError(f"X has shape {Z.shape}; expected {self.n_components_} columns")
        if self.whiten:
            Z = Z * np.sqrt(self.explained_variance_).astype(dt)
        return Z @ self.components_.astype(dt) + self.mean_.astype(dt)

    def _loaded(self):
        self.n_components_ = int(self.n_components_)
        self.noise_variance_ = float(self.noise_variance_)
        if isinstance(self.n_components, list):  # pragma: no cover - JSON keeps ints and floats
            self.n_components = self.n_components[0]


def _tsqr(ctx, X):
    """``(S, Vt, mean)`` of the centred global data by TSQR (one allgather)."""
    n, d = X.shape
    mean = X.mean(axis=0, dtype=np.float64) if n else np.zeros(d)
    R = np.zeros((d, d))
    if n:
        r = np.linalg.qr(X.astype(np.float64) - mean, mode="r")
        R[:r.shape[0]] = r
    mine = np.concatenate([[float(n)], mean, R.ravel()])
    every = ctx.coll.allgather(mine.reshape(1, -1))
    ns, means, Rs = every[:, 0], every[:, 1:1 + d], every[:, 1 + d:].reshape(-1, d, d)
    gmean = (ns[:, None] * means).sum(axis=0) / ns.sum()
    shift = np.sqrt(ns)[:, None] * (means - gmean)
    stack = np.concatenate([Rs.reshape(-1, d), shift])
    Rg = np.linalg.qr(stack, mode="r")
    _, S, Vt = np.linalg.svd(Rg, full_matrices=False)
    return S, Vt, gmean


def _gram(ctx, X):
    """``(S, Vt, mean)`` from the Gram matrix (one allreduce of ``[n, sum x, X^T X]``)."""
    n, d = X.shape
    G = np.zeros((d, d))
    s = np.zeros(d)
    for b in blocks(n):
        B = X[b].astype(np.float64)
        G += B.T @ B
        s += B.sum(axis=0)
    got = ctx.coll.allreduce(np.concatenate([[float(n)], s, G.ravel()]))
    N, mean = got[0], got[1:1 + d] / got[0]
    C = got[1 + d:].reshape(d, d) - N * np.outer(mean, mean)
    C = 0.5 * (C + C.T)
    lam, V = np.linalg.eigh(C)
    lam, V = lam[::-1], V[:, ::-1]
    S = np.sqrt(np.maximum(lam, 0.0))
    return S, V.T.copy(), mean
