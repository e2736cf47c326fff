"""Categorical columns to indicator columns: :class:`OneHotEncoder`.

The categories of each column are agreed by ONE allgather of the local unique values
(rows of (column, value)); every rank then holds the same sorted categories, so the
encoding does not depend on how the rows are split. NaN is a category of its own (the
last), as in scikit-learn.
"""
from __future__ import annotations

import numpy as np

from ...errors import ShardlearnError
from ._base import Transformer

UNKNOWN = ("error", "ignore")


class OneHotEncoder(Transformer):
    """Encode categorical columns (numbers: codes or any values) as one-hot indicator
    columns, as scikit-learn's ``OneHotEncoder`` (dense output).

    Parameters
    ----------
    columns : list of int, optional
        shardlearn's addition: encode only these columns; the other columns follow the
        indicator blocks unchanged, in order (as scikit-learn's
        ``ColumnTransformer([("onehot", OneHotEncoder(), columns)], remainder="passthrough")``).
        Default: every column.
    handle_unknown : {"error", "ignore"}
        A category not seen in fit: an error, or all-zero indicators.
    dtype : "float32" or "float64"
        dtype of the output.

    Attributes
    ----------
    categories_ : list of ndarray (sorted; NaN last)
    columns_ : ndarray of int, the encoded columns
    n_features_out_ : int
    """

    _model_name = "onehot_encoder"
    _fitted = ("columns_", "n_features_out_")

    def __init__(self, *, columns=None, handle_unknown="error", dtype="float64", comm=None):
        self.columns = columns
        self.handle_unknown = handle_unknown
        self.dtype = dtype
        self.comm = comm

    def _check_params(self):
        if self.handle_unknown not in UNKNOWN:
            raise ShardlearnError(f"handle_unknown {self.handle_unknown!r}: choose one of {', '.join(UNKNOWN)}")
        if np.dtype(self.dtype) not in (np.float32, np.float64):
            raise ShardlearnError(f"dtype {self.dtype}: use float32 or float64")

    def _fit(self, ctx, X, n_total):
        d = X.shape[1]
        cols = np.arange(d) if self.columns is None else np.asarray(self.columns, dtype=np.int64).reshape(-1)
        error = None
        if cols.size and (cols.min() < 0 or cols.max() >= d or np.unique(cols).size != cols.size):
            error = f"columns {cols.tolist()}: need distinct column indices in [0, {d})"
        ctx.agree(error)
        rows = [np.column_stack([np.full(u.size, i, dtype=np.float64), u])
                for i, u in enumerate(np.unique(X[:, j]) for j in cols)]
        mine = np.concatenate(rows) if rows else np.zeros((0, 2))
        every = ctx.coll.allgather(mine.reshape(-1, 2))
        self.columns_ = cols
        self.categories_ = [np.unique(every[every[:, 0] == i, 1]) for i in range(cols.size)]
        self.n_features_out_ = int(sum(c.size for c in self.categories_) + d - cols.size)

    def _rest(self):
        keep = np.ones(self.n_features_in_, dtype=bool)
        keep[self.columns_] = False
        return np.flatnonzero(keep)

    def transform(self, X):
        """Indicator blocks of the encoded columns, then the other columns (local)."""
        X = self._check_X(X)
        n = X.shape[0]
        out = np.zeros((n, self.n_features_out_), dtype=np.dtype(self.dtype))
        off = 0
        rows = np.arange(n)
        for j, cats in zip(self.columns_, self.categories_):
            x = X[:, j].astype(np.float64)
            idx = np.minimum(np.searchsorted(cats, x), cats.size - 1) if cats.size else np.zeros(n, dtype=np.int64)
            known = (cats[idx] == x) if cats.size else np.zeros(n, dtype=bool)
            if cats.size and np.isnan(cats[-1]):
                nan = np.isnan(x)
                idx[nan], known[nan] = cats.size - 1, True
            if not known.all() and self.handle_unknown == "error":
                bad = x[~known][0]
                raise ShardlearnError(f"column {int(j)} holds category {bad!r}, unseen in fit (categories: "
                                      f"{cats[:10].tolist()}{' ...' if cats.size > 10 else ''}); use "
                                      "handle_unknown='ignore' to encode it as all zeros")
            out[rows[known], off + idx[known]] = 1
            off += cats.size
        rest = self._rest()
        out[:, off:] = X[:, rest]
        return out

    def inverse_transform(self, X):
        """Categories back from indicator blocks (all zeros: NaN), local."""
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_out_:
            raise ShardlearnError(f"X has shape {X.shape}; expected {self.n_features_out_} columns")
        out = np.empty((X.shape[0], self.n_features_in_))
        off = 0
        for j, cats in zip(self.columns_, self.categories_):
            B = X[:, off:off + cats.size]
            val = cats[B.argmax(axis=1)] if cats.size else np.full(X.shape[0], np.nan)
            out[:, j] = np.where(B.max(axis=1) > 0, val, np.nan) if cats.size else val
            off += cats.size
        out[:, self._rest()] = X[:, off:]
        return out

    # categories_ is a list of arrays of different lengths: one group entry each
    def to_model(self):
        arrays, params, info = super().to_model()
        arrays["categories"] = {f"c{i}": c for i, c in enumerate(self.categories_)}
        return arrays, params, info

    def _loaded(self):
        self.columns_ = np.asarray(self.columns_, dtype=np.int64).reshape(-1)
        self.n_features_out_ = int(self.n_features_out_)

    @classmethod
    def from_model(cls, arrays, params, info, comm=None):
        est = super().from_model(arrays, params, info, comm)
        cats = arrays.get("categories", {})
        est.categories_ = [np.asarray(cats[f"c{i}"], dtype=np.float64) for i in range(est.columns_.size)]
        return est
