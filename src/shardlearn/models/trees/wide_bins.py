"""More than 255 bins per feature for the single decision tree, as 8-bit windows.

The histogram machinery (:mod:`.grower`, :mod:`.histogram`, the compiled kernels) codes
a feature in one ``uint8``: at most 255 value bins and the missing code 255. A single
tree wants more: scikit-learn splits at the midpoint of any two consecutive distinct
values, and with 255 quantile bins a node holding fewer rows than one bin (``n / 255``)
cannot split inside it. :class:`WideBinMapper` computes up to ``max_bin`` bins per feature
(the same rule as :class:`~shardlearn.data.binning.BinMapper`: every midpoint between
distinct sampled values when there are at most ``max_bin`` of them, else quantiles) and
codes a feature with ``m`` thresholds ``t`` as ``W = ceil(m / 254)`` window columns:

    g = #{t < x}   (the feature's global bin),   c_j = clip(g - 254 j, 0, 254),   NaN -> 255

so ``c_j <= b`` exactly when ``x <= t[254 j + b]`` (``b < 254``): a split of window ``j`` at
bin ``b`` is the split of the feature at threshold ``t[254 j + b]``, and every threshold is
a candidate in exactly one window (a window's top code 254, "beyond this window", only
sends the missing values apart, as a feature's top bin does). The grower sees the windows
as features; :meth:`WideBinMapper.to_features` maps a grown tree's (column, bin) back to
(feature, global bin), whose float threshold :meth:`threshold_value` gives as usual. The
cost: histogram work and histogram bytes per node grow with the number of columns
(``W`` per feature with more than 255 bins, 1 for the others): measured 24x the fit time
of 255 bins for a fully grown tree on 3375 continuous rows x 20 features (14 windows per
feature; bench/tree_exact.md).

With ``quantile_bins``, a feature with more than ``max_bin`` distinct values gets that
many quantile bins instead of ``max_bin``: the single tree's default (``max_bin=None``,
:data:`.decision_tree.EXACT_MAX_BIN`) takes every distinct value up to 8192 and 255
quantile bins beyond, so that exact thresholds cost extra histogram work only where a
feature has few enough values. A feature with at most 255 bins gets one window, coded as
``BinMapper(255)`` codes it.
"""
from __future__ import annotations

import numpy as np

from ...data.binning import BinMapper, sorted_percentiles
from ...util.rowsel import take_chunks

#: value codes per window (0..253 map to thresholds; 254: above the window)
WINDOW = 254
#: the code of NaN in every window column
MISSING = 255


class WideBinMapper(BinMapper):
    """:class:`~shardlearn.data.binning.BinMapper` with up to ``MAX_BIN`` bins per feature,
    coded as 8-bit windows (see the module docstring). Numeric features only.

    Attributes (after ``fit``), besides the base class's
    ----------------------------------------------------
    window_feature_ : int64 (d',): the feature of each window column
    window_index_ : int64 (d',): which window of its feature it is (0, 1, ...)
    """

    MAX_BIN = 65535

    def __init__(self, max_bin: int = 4096, quantile_bins=None, **kwargs):
        super().__init__(max_bin, **kwargs)
        #: bins of a feature with more than ``max_bin`` distinct sampled values (quantiles);
        #: None: ``max_bin`` (the base class's rule)
        self.quantile_bins = None if quantile_bins is None else int(quantile_bins)

    def _thresholds_sorted(self, s: np.ndarray) -> np.ndarray:
        """Every midpoint when ``s`` holds at most ``max_bin`` distinct values, else the
        quantiles of ``quantile_bins`` bins (the base class's rule with that count)."""
        if self.quantile_bins is None or s.size == 0:
            return super()._thresholds_sorted(s)
        distinct = s[np.concatenate([[True], s[1:] != s[:-1]])]
        if len(distinct) <= self.max_bin:
            return (distinct[:-1] + distinct[1:]) * 0.5
        q = sorted_percentiles(s, np.linspace(0, 100, self.quantile_bins + 1)[1:-1])
        return np.unique(q)

    @property
    def n_slots(self) -> int:
        """Histogram slots per window column: 255 value codes and the missing code."""
        return MISSING + 1

    def fit(self, X_local, global_rows, n_total, ctx, rows=None) -> "WideBinMapper":
        """The thresholds (collective, as the base class; ``rows``: of ``X_local[rows]``,
        read without a copy) and the window columns."""
        super().fit(X_local, global_rows, n_total, ctx, rows=rows)
        per = [max(1, -(-len(t) // WINDOW)) for t in self.thresholds_]
        self.window_feature_ = np.repeat(np.arange(len(per), dtype=np.int64), per)
        self.window_index_ = np.concatenate([np.arange(w, dtype=np.int64) for w in per]) if per else \
            np.empty(0, np.int64)
        return self

    def fit_transform(self, X_local, global_rows, n_total, ctx, rows=None) -> np.ndarray:
        return self.fit(X_local, global_rows, n_total, ctx, rows=rows).transform(X_local, rows=rows)

    def transform(self, X, rows=None) -> np.ndarray:
        """The window codes of raw rows ``X`` (or of ``X[rows]``): (d', n) uint8."""
        n = X.shape[0] if rows is None else len(rows)
        out = np.empty((len(self.window_feature_), n), dtype=np.uint8)
        for lo, hi, chunk in take_chunks(X, rows):   # bounded float64 temporaries
            out[:, lo:hi] = self.window_codes(chunk)
        return out

    @property
    def window_bins_(self) -> np.ndarray:
        """Value bins of each window column (int32): ``min(254, m - 254 j) + 1``."""
        m = np.array([len(t) for t in self.thresholds_], dtype=np.int64)[self.window_feature_]
        return (np.minimum(WINDOW, m - WINDOW * self.window_index_) + 1).astype(np.int32)

    def window_codes(self, X) -> np.ndarray:
        """The ``(d', n)`` uint8 window codes of raw rows ``X`` (NaN: 255 in every window)."""
        X = np.asarray(X, dtype=np.float64)
        n = X.shape[0]
        out = np.empty((len(self.window_feature_), n), dtype=np.uint8)
        col = 0
        for f, t in enumerate(self.thresholds_):
            x = X[:, f]
            g = np.searchsorted(t, x, side="left")
            nan = np.isnan(x)
            w = max(1, -(-len(t) // WINDOW))
            for j in range(w):
                c = np.clip(g - WINDOW * j, 0, WINDOW).astype(np.uint8)
                c[nan] = MISSING
                out[col] = c
                col += 1
        return out

    def to_features(self, tree: dict) -> dict:
        """A grown tree's node arrays with window columns and window bins replaced by
        features and global bins (a split at a window's top code: the feature's top bin)."""
        t = dict(tree)
        internal = t["feature"] >= 0
        col = t["feature"][internal]
        b = t["bin"][internal].astype(np.int64)
        f = self.window_feature_[col]
        m = np.array([len(x) for x in self.thresholds_], dtype=np.int64)[f]
        top = b >= self.window_bins_[col] - 1
        feature = t["feature"].copy()
        bin_ = t["bin"].copy()
        feature[internal] = f
        bin_[internal] = np.where(top, m, WINDOW * self.window_index_[col] + b)
        t["feature"], t["bin"] = feature, bin_
        return t
