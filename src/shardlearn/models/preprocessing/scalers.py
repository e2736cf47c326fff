"""Feature scaling: :class:`StandardScaler`, :class:`MinMaxScaler`, :class:`MaxAbsScaler`.

scikit-learn's names, attributes and rules (NaN ignored in fit and kept in transform,
near-constant features get scale 1). Each fit is one packed collective:

- StandardScaler: one allgather of every rank's (count, mean, M2) per column, merged in
  rank order with the pairwise update of Chan, Golub and LeVeque (1979),
  ``M2 = M2_a + M2_b + delta^2 n_a n_b / n``, never from sums of x and x^2, so a
  large offset does not cancel the variance away.
- MinMaxScaler and MaxAbsScaler: one MAX allreduce of ``[-min, max]`` / ``max |x|``.
"""
from __future__ import annotations

import contextlib
import warnings

import numpy as np

from ...errors import ShardlearnError
from ._base import Transformer, blocks, handle_zeros_in_scale


def column_moments(X: np.ndarray) -> np.ndarray:
    """Local (count, mean, M2) per column, float64 (3, d); NaN ignored; float32 data is
    accumulated in float64 block by block (no full-size float64 copy)."""
    n, d = X.shape
    count = np.zeros(d)
    total = np.zeros(d)
    has_nan = n > 0 and not np.isfinite(X.sum(dtype=np.float64)) and bool(np.isnan(X).any())
    for s in blocks(n):
        B = X[s]
        if has_nan:
            count += (~np.isnan(B)).sum(axis=0)
            total += np.nansum(B, axis=0, dtype=np.float64)
        else:
            count += B.shape[0]
            total += B.sum(axis=0, dtype=np.float64)
    mean = np.divide(total, count, out=np.zeros(d), where=count > 0)
    m2 = np.zeros(d)
    for s in blocks(n):
        D = X[s].astype(np.float64) - mean
        m2 += np.nansum(D * D, axis=0) if has_nan else np.einsum("ij,ij->j", D, D)
    return np.stack([count, mean, m2])


def chan_merge(parts: np.ndarray) -> np.ndarray:
    """Merge per-rank (count, mean, M2) rows (P, 3, d) in rank order (Chan et al.)."""
    n, mean, m2 = parts[0].copy()
    for nb, mb, m2b in parts[1:]:
        tot = n + nb
        delta = mb - mean
        frac = np.divide(nb, tot, out=np.zeros_like(tot), where=tot > 0)
        mean = mean + delta * frac
        m2 = m2 + m2b + delta * delta * n * frac
        n = tot
    return np.stack([n, mean, m2])


def _n_seen(count: np.ndarray):
    """scikit-learn's n_samples_seen_: one int when every column saw as many values."""
    count = count.astype(np.int64)
    return int(count[0]) if count.size and np.ptp(count) == 0 else count


class StandardScaler(Transformer):
    """Standardise features: ``(x - mean_) / scale_`` with global mean and (population)
    standard deviation, as scikit-learn's ``StandardScaler``.

    Parameters
    ----------
    with_mean, with_std : bool
        Centre / scale (both default True).
    comm : mpi4py communicator or shardlearn Context, optional

    Attributes
    ----------
    mean_, var_, scale_ : ndarray (d,)  (``var_``/``scale_`` None without ``with_std``)
    n_samples_seen_ : int or ndarray (per column when NaN made counts differ)
    """

    _model_name = "standard_scaler"
    _fitted = ("mean_", "var_", "scale_", "n_samples_seen_")

    def __init__(self, *, with_mean=True, with_std=True, comm=None):
        self.with_mean = with_mean
        self.with_std = with_std
        self.comm = comm

    def _fit(self, ctx, X, n_total):
        parts = ctx.coll.allgather(column_moments(X).reshape(1, -1))
        n, mean, m2 = chan_merge(parts.reshape(-1, 3, X.shape[1]))
        var = np.divide(m2, n, out=np.full_like(m2, np.nan), where=n > 0)
        mean = np.where(n > 0, mean, np.nan)  # a column without values, as scikit-learn
        self.n_samples_seen_ = _n_seen(n)
        self.mean_ = mean if (self.with_mean or self.with_std) else None
        if self.with_std:
            eps = np.finfo(np.float64).eps
            constant = var <= n * eps * var + (n * mean * eps) ** 2
            self.var_ = var
            self.scale_ = handle_zeros_in_scale(np.sqrt(var), constant)
        else:
            self.var_ = self.scale_ = None

    def transform(self, X):
        """Scale local rows (no communication); the dtype of ``X`` is kept."""
        X = self._check_X(X)
        out = X.copy()
        if self.with_mean:
            out -= self.mean_.astype(X.dtype)
        if self.with_std:
            out /= self.scale_.astype(X.dtype)
        return out

    def inverse_transform(self, X):
        """Undo :meth:`transform` on local rows."""
        X = self._check_X(X)
        out = X.copy()
        if self.with_std:
            out *= self.scale_.astype(X.dtype)
        if self.with_mean:
            out += self.mean_.astype(X.dtype)
        return out


class MinMaxScaler(Transformer):
    """Scale each feature to ``feature_range`` from its global min and max, as
    scikit-learn's ``MinMaxScaler`` (``X * scale_ + min_``)."""

    _model_name = "minmax_scaler"
    _fitted = ("data_min_", "data_max_", "data_range_", "scale_", "min_", "n_samples_seen_")

    def __init__(self, feature_range=(0, 1), *, clip=False, comm=None):
        self.feature_range = feature_range
        self.clip = clip
        self.comm = comm

    def _check_params(self):
        lo, hi = self.feature_range
        if not lo < hi:
            raise ShardlearnError(f"feature_range must be (min, max) with min < max, got {tuple(self.feature_range)}")

    def _fit(self, ctx, X, n_total):
        d = X.shape[1]
        if X.shape[0]:
            with np.errstate(invalid="ignore"), _quiet_all_nan():
                local = np.concatenate([-np.nanmin(X, axis=0), np.nanmax(X, axis=0)]).astype(np.float64)
            local[np.isnan(local)] = -np.inf  # an all-NaN column on this rank
        else:
            local = np.full(2 * d, -np.inf)
        both = ctx.coll.allreduce(local, op="max")
        dmin, dmax = -both[:d], both[d:]
        empty = dmax < dmin
        dmin[empty], dmax[empty] = np.nan, np.nan
        lo, hi = (float(v) for v in self.feature_range)
        self.data_min_, self.data_max_ = dmin, dmax
        self.data_range_ = dmax - dmin
        self.scale_ = (hi - lo) / handle_zeros_in_scale(self.data_range_)
        self.min_ = lo - dmin * self.scale_
        self.n_samples_seen_ = int(n_total)

    def transform(self, X):
        """Scale local rows (no communication)."""
        X = self._check_X(X)
        out = X * self.scale_.astype(X.dtype) + self.min_.astype(X.dtype)
        if self.clip:
            np.clip(out, self.feature_range[0], self.feature_range[1], out=out)
        return out

    def inverse_transform(self, X):
        """Undo :meth:`transform` on local rows."""
        X = self._check_X(X)
        return (X - self.min_.astype(X.dtype)) / self.scale_.astype(X.dtype)

    def _loaded(self):
        self.feature_range = tuple(self.feature_range)


class MaxAbsScaler(Transformer):
    """Divide each feature by its global maximum absolute value, as scikit-learn's
    ``MaxAbsScaler`` (keeps zeros and signs)."""

    _model_name = "maxabs_scaler"
    _fitted = ("max_abs_", "scale_", "n_samples_seen_")

    def __init__(self, *, comm=None):
        self.comm = comm

    def _fit(self, ctx, X, n_total):
        d = X.shape[1]
        if X.shape[0]:
            with _quiet_all_nan():
                local = np.nanmax(np.abs(X), axis=0).astype(np.float64)
            local[np.isnan(local)] = -np.inf
        else:
            local = np.full(d, -np.inf)
        max_abs = ctx.coll.allreduce(local, op="max")
        max_abs[np.isinf(max_abs)] = np.nan
        self.max_abs_ = max_abs
        self.scale_ = handle_zeros_in_scale(max_abs)
        self.n_samples_seen_ = int(n_total)

    def transform(self, X):
        """Scale local rows (no communication)."""
        X = self._check_X(X)
        return X / self.scale_.astype(X.dtype)

    def inverse_transform(self, X):
        """Undo :meth:`transform` on local rows."""
        X = self._check_X(X)
        return X * self.scale_.astype(X.dtype)


@contextlib.contextmanager
def _quiet_all_nan():
    """Silence NumPy's "All-NaN slice" warning (such columns are handled explicitly)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
