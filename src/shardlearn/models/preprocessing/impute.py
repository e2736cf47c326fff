"""Missing values: :class:`SimpleImputer` (mean, median, most_frequent, constant).

Each strategy is one collective: ``mean`` one allreduce of per-column sums and counts;
``median`` one allgather of the quantile sketch (:mod:`._sketch`: exact while no rank
holds more than ``sketch_size`` values of a column, otherwise within ``n / sketch_size``
of the middle rank); ``most_frequent`` one allgather of the local (column, value, count)
triples (so its message grows with the distinct values: meant for discrete columns);
``constant`` one allreduce of the counts (to find empty columns). Columns with no value at all are dropped by ``transform`` unless
``keep_empty_features``, as in scikit-learn.
"""
from __future__ import annotations

import math

import numpy as np

from ...errors import ShardlearnError
from . import _sketch
from ._base import Transformer

STRATEGIES = ("mean", "median", "most_frequent", "constant")


class SimpleImputer(Transformer):
    """Replace missing values column by column with a global statistic, as scikit-learn's
    ``SimpleImputer``.

    Parameters
    ----------
    missing_values : float
        The value that marks a missing entry (default NaN).
    strategy : {"mean", "median", "most_frequent", "constant"}
    fill_value : float, optional
        The value for ``strategy="constant"`` (default 0).
    keep_empty_features : bool
        Keep columns that hold no value (filled with 0, or ``fill_value``).
    sketch_size : int
        Runs per column per rank of the median's quantile sketch: the median is exact
        while no rank holds more values of a column, and otherwise a value whose rank is
        within ``n / sketch_size`` of the middle (see :mod:`._sketch`).

    Attributes
    ----------
    statistics_ : ndarray (d,)
    """

    _model_name = "simple_imputer"
    _fitted = ("statistics_",)

    def __init__(self, *, missing_values=np.nan, strategy="mean", fill_value=None, keep_empty_features=False,
                 sketch_size=_sketch.DEFAULT_SIZE, comm=None):
        self.missing_values = missing_values
        self.strategy = strategy
        self.fill_value = fill_value
        self.keep_empty_features = keep_empty_features
        self.sketch_size = sketch_size
        self.comm = comm

    def _check_params(self):
        if self.strategy not in STRATEGIES:
            raise ShardlearnError(f"strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}")
        if int(self.sketch_size) < 1:
            raise ShardlearnError(f"sketch_size must be >= 1, got {self.sketch_size}")

    def _missing(self, X) -> np.ndarray:
        mv = self.missing_values
        if mv is None or (isinstance(mv, float) and math.isnan(mv)):
            return np.isnan(X)
        return (X == mv) | np.isnan(X)

    def _as_nan(self, X) -> np.ndarray:
        """X with every missing entry as NaN (a copy only when needed)."""
        mv = self.missing_values
        if mv is None or (isinstance(mv, float) and math.isnan(mv)):
            return X
        return np.where(X == mv, np.nan, X)

    def _fit(self, ctx, X, n_total):
        d = X.shape[1]
        Xn = self._as_nan(X)
        if self.strategy == "constant":
            fill = 0.0 if self.fill_value is None else float(self.fill_value)
            count = ctx.coll.allreduce((~np.isnan(Xn)).sum(axis=0).astype(np.float64))
            stats = np.where((count > 0) | bool(self.keep_empty_features), fill, np.nan)
        elif self.strategy == "mean":
            ok = ~np.isnan(Xn)
            got = ctx.coll.allreduce(np.concatenate([np.nansum(Xn, axis=0, dtype=np.float64),
                                                     ok.sum(axis=0).astype(np.float64)]))
            total, count = got[:d], got[d:]
            stats = np.divide(total, count, out=np.full(d, np.nan), where=count > 0)
        elif self.strategy == "median":
            sk = _sketch.merge(ctx, Xn, int(self.sketch_size))
            stats = np.array([sk.median(j) for j in range(d)])
        else:
            stats = _most_frequent(ctx, Xn)
        if self.keep_empty_features:
            stats = np.where(np.isnan(stats), 0.0, stats)  # kept empty columns are filled with 0
        self.statistics_ = stats

    def transform(self, X):
        """Fill missing entries of local rows (no communication); empty columns are dropped
        unless ``keep_empty_features``."""
        X = self._check_X(X)
        stats = self.statistics_
        empty = np.isnan(stats)
        fill = np.where(empty, 0.0, stats).astype(X.dtype)
        out = X.copy()
        mask = self._missing(out)
        if mask.any():
            out[mask] = np.broadcast_to(fill, out.shape)[mask]
        if empty.any() and not self.keep_empty_features:
            out = out[:, ~empty]
        return out


def _most_frequent(ctx, X) -> np.ndarray:
    """Per column the globally most frequent non-missing value (ties: the smallest), from
    ONE allgather of local (column, value, count) rows."""
    d = X.shape[1]
    rows = []
    for j in range(d):
        col = X[:, j]
        vals, counts = np.unique(col[~np.isnan(col)], return_counts=True)
        rows.append(np.column_stack([np.full(vals.size, j, dtype=np.float64), vals, counts]))
    mine = np.concatenate(rows) if rows else np.zeros((0, 3))
    every = ctx.coll.allgather(mine.reshape(-1, 3))
    stats = np.full(d, np.nan)
    if every.shape[0] == 0:
        return stats
    order = np.lexsort((every[:, 1], every[:, 0]))
    e = every[order]
    new = np.ones(e.shape[0], dtype=bool)
    new[1:] = (e[1:, 0] != e[:-1, 0]) | (e[1:, 1] != e[:-1, 1])
    starts = np.flatnonzero(new)
    totals = np.add.reduceat(e[:, 2], starts)
    cols, vals = e[starts, 0].astype(np.int64), e[starts, 1]
    for j in np.unique(cols):
        sel = cols == j
        stats[j] = vals[sel][int(np.argmax(totals[sel]))]  # argmax: the first (smallest) of ties
    return stats
