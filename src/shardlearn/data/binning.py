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

Speed
-----
Binning is done once per fit, but on 800k x 28 it used to cost as much as 20 trees.
**Thresholds:** each rank computes the thresholds of its own block of features (one sort
per feature; the distinct values and the quantiles are both read from the sorted column,
the quantiles by numpy's ``averaged_inverted_cdf`` formula on the sorted order instead of
``np.percentile``'s partition, which cost 5x the sort), and one more ``allgather`` gives
every rank all thresholds. They are the same numbers as before whatever the number of
ranks. **Codes:** the compiled ``_binning_kernels`` (when built; ``SHARDLEARN_KERNELS=numpy``
or no compiler selects the NumPy path, ``np.searchsorted`` per feature, with identical codes)
bins blocks of rows with a branch-free binary search per value (14x faster than
``searchsorted``) and flags NaN per feature on the way, so :meth:`BinMapper.fit_transform`
needs no separate NaN scan of ``X`` (bench/trees.md has the figures).

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
from ..backend import compiled_kernels
from ..errors import ShardlearnError
from ..util.rowsel import take_chunks

#: rows aimed for in the binning sample, summed over all ranks
SAMPLE_ROWS = 200_000
#: the sample columns a rank receives per round of the threshold exchange, at most (bytes)
SAMPLE_ROUND_BYTES = 1 << 20
#: category codes must fit a signed 32-bit integer (LightGBM's limit too)
MAX_CATEGORY = 2**31 - 1
#: thresholds per feature in the compiled search table (``max_bin - 1 <= 254`` fit)
SEARCH_TABLE = 255


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

    #: the largest ``max_bin``: codes are uint8 with ``max_bin`` for NaN (a subclass that codes
    #: otherwise may allow more: models/trees/exact.py, uint16)
    MAX_BIN = 255

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
    def fit(self, X_local: np.ndarray, global_rows: np.ndarray, n_total: int, ctx, rows=None) -> "BinMapper":
        """Compute the thresholds from a row sample gathered from every rank (collective).

        Parameters
        ----------
        X_local : (n_local, d) float array, NaN allowed
        global_rows : (n,) int64 global indices of the local rows (of the selected ones)
        n_total : int
            Rows over all ranks (those the sample is drawn from).
        ctx : shardlearn.runtime.Context
        rows : int64 array, optional
            Increasing indices of the local rows to use (:mod:`shardlearn.util.rowsel`):
            the result is that of ``X_local[rows]``, read without copying it.
        """
        self._fit(X_local, global_rows, n_total, ctx, rows)
        d = X_local.shape[1]
        local_nan = np.zeros(d, np.int32)
        for _, _, chunk in take_chunks(X_local, rows):
            local_nan |= np.isnan(chunk).any(axis=0)
        self.has_missing_ = ctx.coll.allreduce(local_nan, op="max").astype(bool)
        return self

    def fit_transform(self, X_local: np.ndarray, global_rows: np.ndarray, n_total: int, ctx,
                      rows=None, row_major: bool = False) -> np.ndarray:
        """:meth:`fit` then :meth:`transform` of the same rows (collective).

        The same thresholds, codes and ``has_missing_`` as the two calls, but the NaN
        flags come from the binning pass itself instead of a separate scan of ``X_local``.
        Returns the ``(d, n)`` uint8 codes (``n``: the local rows, or the ``rows`` given);
        ``row_major`` as in :meth:`transform`.
        """
        self._fit(X_local, global_rows, n_total, ctx, rows)
        codes, nan = self._transform(X_local, rows, row_major)
        self.has_missing_ = ctx.coll.allreduce(nan.astype(np.int32), op="max").astype(bool)
        return codes

    def _fit(self, X_local, global_rows, n_total, ctx, rows=None) -> None:
        """Thresholds and categories (everything of fit but ``has_missing_``)."""
        if not 2 <= self.max_bin <= self.MAX_BIN:
            raise ShardlearnError(f"max_bin must be in 2..{self.MAX_BIN}, got {self.max_bin}")
        d = X_local.shape[1]
        cat = self.categorical
        numeric = np.setdiff1d(np.arange(d), cat)
        self.thresholds_ = [np.empty(0) for _ in range(d)]
        if len(numeric):
            frac = min(1.0, self.sample_rows / max(1, n_total))
            sel = rows
            if frac < 1.0:
                keep = np.flatnonzero(rng.row_uniform(self.seed, rng.stream_id("binning"), global_rows) < frac)
                sel = keep if rows is None else rows[keep]
                del keep                        # (rows given: not held beside sel)
            for j, t in enumerate(self._shared_thresholds(X_local, sel, numeric, ctx)):
                self.thresholds_[numeric[j]] = t
        self.n_bins_ = np.array([len(t) + 1 for t in self.thresholds_], dtype=np.int32)
        if len(cat):
            self._fit_categories(X_local, global_rows, ctx, rows)

    def _shared_thresholds(self, X_local: np.ndarray, sel, columns: np.ndarray, ctx) -> list:
        """Thresholds of ``columns`` from the sample rows ``sel`` of every rank (None: all
        local rows), computed once (collective).

        Rank ``r`` computes the columns ``[r*k//P, (r+1)*k//P)`` (of the ``k`` given) and one
        ``allgather`` of ``(count, thresholds..., NaN padding)`` rows gives every rank all of
        them, in column order. Each rank receives only its own columns of the sample, in
        rounds of ``Alltoallv`` of at most :data:`SAMPLE_ROUND_BYTES` (the sample of every
        column on every rank cost as much memory as the rank's share of the data when the
        table has fewer than ``sample_rows`` rows). Each column's thresholds depend only on
        its sampled values, so the result does not depend on the number of ranks.
        """
        from mpi4py import MPI

        k, P = len(columns), ctx.size
        bounds = [(q * k // P, (q + 1) * k // P) for q in range(P)]
        lo, hi = bounds[ctx.rank]
        n_mine = X_local.shape[0] if sel is None else len(sel)
        counts = np.array(ctx.coll.allgather_obj(int(n_mine)), dtype=np.int64)
        n_sample = int(counts.sum())
        per_round = max(1, SAMPLE_ROUND_BYTES // max(1, 8 * n_sample))
        n_rounds = max(1, -(-max(b - a for a, b in bounds) // per_round))
        # at most max_bin - 1 thresholds, and fewer than the sampled rows (the distinct values)
        packed = np.full((hi - lo, max(1, min(self.max_bin, n_sample))), np.nan)
        # one column a round (a sample of more than SAMPLE_ROUND_BYTES): the received values
        # are the column itself, sorted where they are; else gathered from each rank's part
        col = np.empty(n_sample) if per_round > 1 else None
        for r in range(n_rounds):
            # the columns rank q sorts in this round: its block's [r*per_round, (r+1)*per_round)
            cols = [columns[min(b, a + r * per_round):min(b, a + (r + 1) * per_round)] for a, b in bounds]
            width = np.array([len(c) for c in cols], dtype=np.int64)
            sc = n_mine * width                    # values to each rank: its columns, column-major
            send = np.empty(max(1, int(sc.sum())))
            at = 0
            for c in cols:
                for f in c:
                    send[at:at + n_mine] = X_local[:, f] if sel is None else X_local[sel, f]
                    at += n_mine
            mine = int(width[ctx.rank])
            rc = counts * mine
            recv = np.empty(max(1, int(rc.sum())))
            ctx.coll.alltoallv([send, sc.tolist(), _offsets(sc), MPI.DOUBLE],
                                   [recv, rc.tolist(), _offsets(rc), MPI.DOUBLE])
            # from rank p: its rows' values of my columns, one column after the other
            start = np.concatenate([[0], np.cumsum(rc)[:-1]])
            for j in range(mine):
                if col is None:                    # mine == 1: recv holds the column's n_sample values
                    values = recv[:n_sample]
                else:
                    values = col
                    at = 0
                    for p in range(P):
                        o = int(start[p]) + j * int(counts[p])
                        col[at:at + counts[p]] = recv[o:o + counts[p]]
                        at += counts[p]
                values.sort()                      # NaN last; the thresholds depend on the values only
                t = self._thresholds_sorted(values[:n_sample - np.count_nonzero(np.isnan(values))])
                row = packed[r * per_round + j]
                row[0] = len(t)
                row[1:1 + len(t)] = t
        every = ctx.coll.allgather(packed)
        return [every[j, 1:1 + int(every[j, 0])].copy() for j in range(k)]

    def _fit_categories(self, X_local, global_rows, ctx, rows=None) -> None:
        """Validate the categorical columns, count categories globally, order the bins (collective)."""
        cat = self.categorical
        with ctx.collective_errors():
            if cat[-1] >= X_local.shape[1] or cat[0] < 0:
                raise ShardlearnError(f"categorical feature indices must be in 0..{X_local.shape[1] - 1}, "
                                      f"got {cat.tolist()}")
            for f in cat:
                col = X_local[:, f] if rows is None else X_local[rows, f]
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
            col = X_local[:, f] if rows is None else X_local[rows, f]
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
        """Thresholds of one feature from its sampled values (NaN allowed, any order)."""
        col = np.sort(col[~np.isnan(col)])
        return self._thresholds_sorted(col)

    def _thresholds_sorted(self, s: np.ndarray) -> np.ndarray:
        """Thresholds from the sorted, NaN-free sample ``s`` of one feature.

        At most ``max_bin`` distinct values: midpoints between consecutive ones (exact
        bins); else the distinct ``averaged_inverted_cdf`` quantiles at ``max_bin - 1``
        evenly spaced levels. Both read the one sorted copy (``np.unique`` and
        ``np.percentile`` would sort or partition it again).
        """
        if s.size == 0:
            return np.empty(0)
        new = np.empty(s.size, dtype=bool)                     # first of a run of equal values
        new[0] = True
        np.not_equal(s[1:], s[:-1], out=new[1:])
        if np.count_nonzero(new) <= self.max_bin:
            distinct = s[new]
            return (distinct[:-1] + distinct[1:]) * 0.5
        q = sorted_percentiles(s, np.linspace(0, 100, self.max_bin + 1)[1:-1])
        return np.unique(q)

    # ------------------------------------------------------------ transform
    def transform(self, X: np.ndarray, rows=None, row_major: bool = False) -> np.ndarray:
        """Bin codes, ``uint8`` of shape ``(d, n)`` (feature-major, C-contiguous).

        ``X`` ``(n, d)``: raw features, NaN gets ``missing_bin``. The compiled path reads
        float32 and float64 in C or Fortran order without a copy (other dtypes or layouts
        are converted once). ``rows`` (increasing indices): the codes of ``X[rows]``, its
        rows gathered a chunk at a time. ``row_major``: the same ``(d, n)`` codes as the
        transpose of a C-contiguous ``(n, d)`` array, written a chunk of rows at a time: the
        layout the compiled tree kernels read (:func:`.histogram.row_major_codes` then
        makes no copy), so a fit holds one copy of its codes, never two.
        """
        return self._transform(X, rows, row_major)[0]

    def _transform(self, X, rows=None, row_major=False):
        """``(codes, nan flags (d,) bool)``; compiled when available, else NumPy."""
        if rows is not None or row_major:
            n, d = X.shape[0] if rows is None else len(rows), X.shape[1]
            codes = np.empty((n, d) if row_major else (d, n), dtype=np.uint8)
            nan = np.zeros(d, dtype=bool)
            for lo, hi, chunk in take_chunks(X, rows):
                c, flags = self._transform(chunk)
                if row_major:
                    codes[lo:hi] = c.T
                else:
                    codes[:, lo:hi] = c
                nan |= flags
            return (codes.T if row_major else codes), nan
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D, got shape {X.shape}")
        n, d = X.shape
        if d != len(self.thresholds_):
            raise ValueError(f"X has {d} features, the bins were fitted on {len(self.thresholds_)}")
        kernels = compiled_kernels("data._binning_kernels")
        search = self._search_table() if kernels is not None else None
        if search is None:
            return self._transform_numpy(X)
        table, s0 = search
        if X.dtype != np.float32 and X.dtype != np.float64:   # also non-native byte order
            X = X.astype(np.float64)
        if X.flags.c_contiguous:
            buf, rs, cs = X, d, 1
        elif X.flags.f_contiguous:
            buf, rs, cs = X.T, 1, n                            # X.T is C-contiguous: same memory
        else:
            X = np.ascontiguousarray(X)
            buf, rs, cs = X, d, 1
        codes = np.empty((d, n), dtype=np.uint8)
        nan = np.zeros(d, dtype=np.uint8)
        kernels.bin_columns(buf, n, d, rs, cs, X.dtype == np.float32, table, s0, self.missing_bin, codes, nan)
        nan = nan.astype(bool)
        for f in self.categories_:                             # s0 = -1: left to NumPy
            col = X[:, f]
            codes[f] = self.category_codes(f, col)
            nan[f] = np.isnan(col).any()
        return codes, nan

    def _transform_numpy(self, X):
        """The NumPy path: ``np.searchsorted`` per feature (the reference for the kernel)."""
        n, d = X.shape
        codes = np.empty((d, n), dtype=np.uint8)
        nan = np.zeros(d, dtype=bool)
        for f in range(d):
            col = X[:, f]
            is_nan = np.isnan(col)
            nan[f] = is_nan.any()
            if int(f) in self.categories_:
                codes[f] = self.category_codes(f, col)
                continue
            c = np.searchsorted(self.thresholds_[f], col, side="left")
            c[is_nan] = self.missing_bin  # also for NaN unseen in training
            codes[f] = c
        return codes, nan

    def _search_table(self):
        """``(table, s0)`` for ``_binning_kernels.bin_columns``, or None (use NumPy).

        ``table`` ``(d, SEARCH_TABLE)`` float64: each feature's thresholds padded with
        ``+inf``; ``s0`` ``(d,)`` int64: the first step of the binary search, the smallest
        power of two with ``2 * s0 - 1 >= len(thresholds)`` (0: no thresholds, -1:
        categorical). None when a feature has more than ``SEARCH_TABLE`` thresholds or
        the codes would not fit uint8 (a model file not written by this class).
        """
        d = len(self.thresholds_)
        if self.missing_bin > 255:
            return None
        table = np.full((d, SEARCH_TABLE), np.inf)
        s0 = np.zeros(d, dtype=np.int64)
        for f, t in enumerate(self.thresholds_):
            if f in self.categories_:
                s0[f] = -1
                continue
            m = len(t)
            if m > SEARCH_TABLE or (m and np.isnan(t).any()):
                return None
            table[f, :m] = t
            s0[f] = 1 << (m.bit_length() - 1) if m else 0
        return table, s0

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


def _offsets(counts: np.ndarray) -> list:
    """Displacements of consecutive blocks of ``counts`` values (an Alltoallv's)."""
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64).tolist()


def sorted_percentiles(s: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``np.percentile(s, q, method="averaged_inverted_cdf")`` of a sorted NaN-free ``s``.

    The same arithmetic as NumPy's ``_quantile`` for that method (virtual index
    ``n * q / 100 - 1``, its floor and the next index clipped to the array, weight 0.5 on
    an exact index and 1 otherwise, NumPy's ``_lerp`` form for weights >= 0.5), hence the
    same floats (tests/test_binning.py compares them), but it reads the sorted order
    instead of partitioning the sample for every level.
    """
    n = s.size
    virtual = n * np.true_divide(q, 100) - 1
    prev = np.floor(virtual)
    nxt = prev + 1
    above = virtual >= n - 1                   # past the last value: take the maximum
    prev[above] = -1
    nxt[above] = -1
    below = virtual < 0                        # before the first value: take the minimum
    prev[below] = 0
    nxt[below] = 0
    prev, nxt = prev.astype(np.intp), nxt.astype(np.intp)
    gamma = virtual - prev
    gamma = np.where(gamma == 0, 0.5, 1.0)
    a, b = s[prev], s[nxt]
    diff = b - a
    # NumPy's _lerp: a + diff * gamma, replaced by b - diff * (1 - gamma) where gamma >= 0.5
    # (always here: gamma is 0.5 or 1). With infinite values inf * 0 is NaN, as in NumPy.
    with np.errstate(invalid="ignore"):
        return b - diff * (1 - gamma)
