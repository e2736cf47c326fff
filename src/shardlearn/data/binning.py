"""Global bin edges for histogram trees, agreed by all ranks.

Every rank draws the same sample of rows (keyed by *global* row index, so the sample
does not depend on the number of ranks), the sampled rows are gathered with one
``allgather``, and every rank computes identical quantile edges from them.

Codes
-----
Feature ``f`` has ``n_bins[f]`` value bins (``1 <= n_bins[f] <= max_bin``) separated by
``n_bins[f] - 1`` increasing float thresholds ``t``. A value ``x`` gets the code
``#{t < x}`` (``searchsorted(t, x, "left")``), so code ``<= b`` exactly when
``x <= t[b]``: a split learned on codes is the same split on raw values with the float
threshold ``t[b]``. Missing values (NaN) get the code ``max_bin`` for every feature
(its own bin, the last slot of each feature's histogram).

Features with at most ``max_bin`` distinct sampled values get exact bins (thresholds
at midpoints between consecutive distinct values), as in LightGBM and scikit-learn;
the others get quantile edges of the sample (``averaged_inverted_cdf`` as in scikit-learn 1.9, duplicates
dropped).

The binned matrix is ``uint8`` and stored feature-major, ``(d, n)`` C-contiguous, so
each feature's codes are one contiguous run: measured faster than row-major for the
per-feature ``bincount`` histograms at the root and equal for subsets of rows.

Categorical features
--------------------
A categorical column holds non-negative integer category codes (as floats; NaN is
missing). Its bins are categories, not intervals: every rank counts its rows' categories
and one ``allgather`` of the (feature, category, count) triples gives every rank the
exact global counts, so the table does not depend on the number of ranks. As in
LightGBM (``BinMapper::FindBin``), category bins are ordered by global frequency (most
frequent first; ties by the smaller category) and at most ``max_bin - 1`` categories get
a bin; the rarer ones share the missing bin with NaN, and so do categories first seen at
prediction time. Negative or non-integer values are an error at fit time (LightGBM
silently treats negatives as missing; a wrong column index is the likelier cause here).
"""
from __future__ import annotations

import numpy as np

from .. import rng
from ..errors import ShardlearnError

#: rows aimed for in the binning sample, summed over all ranks
SAMPLE_ROWS = 200_000
#: category codes must fit a signed 32-bit integer (LightGBM's limit too)
MAX_CATEGORY = 2**31 - 1


class BinMapper:
    """Feature thresholds shared by every rank.

    Parameters
    ----------
    max_bin : int
        Value bins per feature, 2..255. The code ``max_bin`` is kept for missing values.
    sample_rows : int
        Rows to sample (over all ranks) for the quantiles.
    seed : int
    categorical : sequence of int, optional
        Indices of categorical features (see the module docstring).

    Attributes
    ----------
    thresholds_ : list of float64 arrays, one per feature (length ``n_bins_[f] - 1``)
    n_bins_ : int32 array (d,)
        Number of value bins per feature (1 for a constant feature).
    missing_bin : int
        The code of NaN (``max_bin``); histograms have ``max_bin + 1`` slots per feature.
    has_missing_ : bool array (d,)
        Whether the sample (or any rank's rows) held NaN in that feature.
    categories_ : dict int -> int64 array
        For each categorical feature, its categories in bin order (bin ``b`` holds
        category ``categories_[f][b]``); ``n_bins_[f]`` is their number (at least 1).
    """

    def __init__(self, max_bin: int = 255, sample_rows: int = SAMPLE_ROWS, seed: int = 0,
                 categorical=()):
        self.max_bin = int(max_bin)
        self.sample_rows = int(sample_rows)
        self.seed = int(seed)
        self.categorical = np.unique(np.asarray(categorical, dtype=np.int64))
        self.categories_ = {}

    @property
    def missing_bin(self) -> int:
        return self.max_bin

    @property
    def n_slots(self) -> int:
        """Histogram slots per feature: the value bins plus the missing bin."""
        return self.max_bin + 1

    # ------------------------------------------------------------------ fit
    def fit(self, X_local: np.ndarray, global_rows: np.ndarray, n_total: int, ctx) -> "BinMapper":
        """Compute the thresholds from a row sample gathered from every rank (collective).

        Parameters
        ----------
        X_local : (n_local, d) float array, NaN allowed
        global_rows : (n_local,) int64 global indices of the local rows
        n_total : int
            Rows over all ranks (those the sample is drawn from).
        ctx : shardlearn.runtime.Context
        """
        if not 2 <= self.max_bin <= 255:
            raise ShardlearnError(f"max_bin must be in 2..255, got {self.max_bin}")
        d = X_local.shape[1]
        cat = self.categorical
        numeric = np.setdiff1d(np.arange(d), cat)
        self.thresholds_ = [np.empty(0) for _ in range(d)]
        if len(numeric):
            frac = min(1.0, self.sample_rows / max(1, n_total))
            if frac < 1.0:
                keep = rng.row_uniform(self.seed, rng.stream_id("binning"), global_rows) < frac
                sample = X_local[keep]
            else:
                sample = X_local
            if len(cat):
                sample = sample[:, numeric]
            sample = ctx.coll.allgather(np.ascontiguousarray(sample, dtype=np.float64))
            for j, f in enumerate(numeric):
                self.thresholds_[f] = self._feature_thresholds(sample[:, j])
        self.n_bins_ = np.array([len(t) + 1 for t in self.thresholds_], dtype=np.int32)
        if len(cat):
            self._fit_categories(X_local, global_rows, ctx)
        local_nan = np.isnan(X_local).any(axis=0).astype(np.int32) if X_local.size else np.zeros(d, np.int32)
        self.has_missing_ = ctx.coll.allreduce(local_nan, op="max").astype(bool)
        return self

    def _fit_categories(self, X_local, global_rows, ctx) -> None:
        """Validate the categorical columns, count categories globally, order the bins (collective)."""
        cat = self.categorical
        with ctx.collective_errors():
            if cat[-1] >= X_local.shape[1] or cat[0] < 0:
                raise ShardlearnError(f"categorical feature indices must be in 0..{X_local.shape[1] - 1}, "
                                      f"got {cat.tolist()}")
            for f in cat:
                col = X_local[:, f]
                bad = ~np.isnan(col) & ((col < 0) | (col > MAX_CATEGORY) | (col != np.floor(col)))
                if bad.any():
                    i = int(np.argmax(bad))
                    raise ShardlearnError(
                        f"categorical feature {f} holds {float(col[i])!r} (row {int(global_rows[i])}): categorical "
                        f"columns must hold non-negative integer category codes (0..{MAX_CATEGORY}), "
                        "NaN for a missing value")
        # local (feature position, category, count) triples; one allgather gives every
        # rank the same exact global counts whatever the number of ranks
        parts = []
        for j, f in enumerate(cat):
            col = X_local[:, f]
            vals, cnt = np.unique(col[~np.isnan(col)].astype(np.int64), return_counts=True)
            parts.append(np.column_stack([np.full(len(vals), j, np.int64), vals, cnt]))
        allc = ctx.coll.allgather(np.ascontiguousarray(np.concatenate(parts), dtype=np.int64))
        key = allc[:, 0] * (MAX_CATEGORY + 1) + allc[:, 1]
        ukey, inv = np.unique(key, return_inverse=True)
        counts = np.zeros(len(ukey), dtype=np.int64)
        np.add.at(counts, inv, allc[:, 2])
        fpos, value = np.divmod(ukey, MAX_CATEGORY + 1)
        self.categories_ = {}
        for j, f in enumerate(cat):
            sel = fpos == j
            v, c = value[sel], counts[sel]
            order = np.lexsort((v, -c))          # most frequent first, ties by category
            self.categories_[int(f)] = v[order][:self.max_bin - 1]
            self.n_bins_[f] = max(1, len(self.categories_[int(f)]))
            self.thresholds_[f] = np.empty(0)

    def category_codes(self, f: int, col: np.ndarray) -> np.ndarray:
        """Bin codes (intp) of a categorical column: its category's bin, else the missing bin.

        NaN, categories rarer than the ``max_bin - 1`` kept ones, categories unseen in
        training, and values that are no category code at all (negative, fractional)
        all get ``missing_bin``.
        """
        cats = self.categories_[int(f)]
        out = np.full(len(col), self.missing_bin, dtype=np.intp)
        if len(cats) == 0 or len(col) == 0:
            return out
        order = np.argsort(cats, kind="stable")
        sv = cats[order].astype(np.float64)
        pos = np.minimum(np.searchsorted(sv, col), len(sv) - 1)
        hit = sv[pos] == col                     # False for NaN and unknown values
        out[hit] = order[pos[hit]]
        return out

    def encode(self, X: np.ndarray) -> np.ndarray:
        """``X`` with every categorical column replaced by its bin codes (as float64).

        What tree prediction reads (a categorical node looks its left set up by bin);
        ``X`` itself when there are no categorical features.
        """
        if not len(self.categorical):
            return X
        X = np.array(X, dtype=np.float64, order="C")
        for f in self.categorical:
            X[:, f] = self.category_codes(f, X[:, f])
        return X

    def _feature_thresholds(self, col: np.ndarray) -> np.ndarray:
        col = col[~np.isnan(col)]
        if col.size == 0:
            return np.empty(0)
        distinct = np.unique(col)
        if distinct.size <= self.max_bin:
            return (distinct[:-1] + distinct[1:]) * 0.5
        q = np.percentile(col, np.linspace(0, 100, self.max_bin + 1)[1:-1], method="averaged_inverted_cdf")
        return np.unique(q)

    # ------------------------------------------------------------ transform
    def transform(self, X: np.ndarray) -> np.ndarray:
        """Bin codes, ``uint8`` of shape ``(d, n)`` (feature-major, C-contiguous)."""
        n, d = X.shape
        codes = np.empty((d, n), dtype=np.uint8)
        for f in range(d):
            col = X[:, f]
            if int(f) in self.categories_:
                codes[f] = self.category_codes(f, col)
                continue
            c = np.searchsorted(self.thresholds_[f], col, side="left")
            c[np.isnan(col)] = self.missing_bin  # also for NaN unseen in training
            codes[f] = c
        return codes

    def threshold_value(self, feature: np.ndarray, bin_: np.ndarray) -> np.ndarray:
        """Float thresholds of splits ``code <= bin_`` (``+inf`` for the top value bin).

        NaN for categorical features (their splits are sets of categories).
        """
        out = np.full(len(feature), np.inf)
        for i, (f, b) in enumerate(zip(feature, bin_)):
            if int(f) in self.categories_:
                out[i] = np.nan
                continue
            t = self.thresholds_[int(f)]
            if b < len(t):
                out[i] = t[int(b)]
        return out

    # ---------------------------------------------------------- persistence
    def to_arrays(self) -> dict:
        """Flat arrays for a model file: all thresholds concatenated plus offsets."""
        offsets = np.zeros(len(self.thresholds_) + 1, dtype=np.int64)
        np.cumsum([len(t) for t in self.thresholds_], out=offsets[1:])
        flat = np.concatenate(self.thresholds_) if self.thresholds_ else np.empty(0)
        out = {"thresholds": flat, "offsets": offsets, "has_missing": self.has_missing_.astype(np.int8),
               "max_bin": np.int64(self.max_bin)}
        if len(self.categorical):
            cats = [self.categories_[int(f)] for f in self.categorical]
            coff = np.zeros(len(cats) + 1, dtype=np.int64)
            np.cumsum([len(c) for c in cats], out=coff[1:])
            out.update(cat_features=self.categorical.astype(np.int64),
                       cat_values=np.concatenate(cats).astype(np.int64), cat_offsets=coff)
        return out

    @classmethod
    def from_arrays(cls, a: dict) -> "BinMapper":
        m = cls(max_bin=int(a["max_bin"]))
        off = np.asarray(a["offsets"])
        flat = np.asarray(a["thresholds"], dtype=np.float64)
        m.thresholds_ = [flat[off[i]:off[i + 1]] for i in range(len(off) - 1)]
        m.n_bins_ = np.array([len(t) + 1 for t in m.thresholds_], dtype=np.int32)
        m.has_missing_ = np.asarray(a["has_missing"]).astype(bool)
        if "cat_features" in a:
            m.categorical = np.asarray(a["cat_features"], dtype=np.int64)
            vals, coff = np.asarray(a["cat_values"], dtype=np.int64), np.asarray(a["cat_offsets"])
            m.categories_ = {int(f): vals[coff[j]:coff[j + 1]] for j, f in enumerate(m.categorical)}
            for f, c in m.categories_.items():
                m.n_bins_[f] = max(1, len(c))
        return m
