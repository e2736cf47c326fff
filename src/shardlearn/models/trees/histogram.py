"""Per-node histograms of (gradient channels..., hessian, count) per feature and bin.

A histogram has shape ``(C, d, S)``: ``C`` channels (one or more gradient channels, then
the hessian, then the row count), ``d`` features and ``S = max_bin + 1`` slots per
feature (the last slot is the missing-value bin). Sums are float64; counts are exact
integers stored as float64 (exact below 2**53 rows), so one buffer carries all of a
node's statistics through one collective.

**Compiled path** (:class:`CompiledHistogram`, used whenever ``_hist_kernels`` is built):
one pass over the node's rows accumulates every channel of every (sampled) feature, with
row-major codes, the caller's channel-major statistics (not copied), interleaved per-bin
accumulators and prefetching (``_hist_kernels.c`` explains the layout); the same object
partitions a node's rows in place within the tree's row permutation, reading the same
row-major codes (the only copy of the codes a fit holds). Sums are in row order, as ``np.bincount``'s, so
both paths give the same trees (tests/test_tree_kernels.py). Measured 2.7x faster per
tree than the NumPy forms below (bench/trees.md).

**NumPy path** (no compiler, or ``SHARDLEARN_KERNELS=numpy``): three ways to build it,
chosen by the node size (all measured, bench/trees.md):

- **feature pairs** (large nodes): with ``S <= 256`` the codes of features ``2p`` and
  ``2p + 1`` fit one uint16 ``code[2p] + S * code[2p + 1]`` (:func:`pair_codes`, built
  once per fit). One ``np.bincount`` over that joint code (``S * S`` slots) gives the
  2-D histogram of the pair, whose row and column sums are the two features'
  histograms. Per row and channel this is one bincount step instead of two, plus half
  the gathers and int conversions; the price is a fixed ``S * S`` reduction per pair
  and channel, so it wins only above ``PAIR_MIN_ROWS`` rows.
- **per feature** (medium nodes): one ``np.bincount`` per (feature, channel); beats one
  big bincount over feature-offset codes, which must materialise an int64 code array
  and tiled weights ``d`` times the node size.
- **feature-offset codes** (nodes of at most ``SMALL_NODE_ROWS`` rows, deep forest
  trees): the per-call overhead of ``d`` bincounts dominates, so one bincount per
  channel over ``code + f * S``.

NumPy's bincount is a single compiled pass per call (a min/max scan then the scatter),
so the number of bincount calls times their lengths is what costs; the pair form halves
it. Summation order differs between the forms (sums of the 2-D histogram vs one pass),
which changes float64 sums in the last bits only, like the rank-dependent order of the
histogram allreduce already does: the split search treats gains within ``TIE_RTOL`` as
ties, so the trees stay the same for any rank count (tests/test_trees.py runs its
multi-rank worlds with small thresholds so that all forms are mixed across ranks). The
form depends only on the local row count, so a run is deterministic. Counts are exact
in every form.
"""
from __future__ import annotations

import numpy as np


#: nodes with at most this many rows use one feature-offset bincount per channel
SMALL_NODE_ROWS = 2048
#: nodes with at least this many local rows use joint bincounts of feature pairs
PAIR_MIN_ROWS = 60_000


def pair_codes(codes: np.ndarray, n_slots: int):
    """``(d // 2, n)`` uint16 joint codes ``codes[2p] + n_slots * codes[2p + 1]``.

    None when ``n_slots ** 2`` does not fit uint16 (never with uint8 codes and
    ``max_bin <= 255``). An odd last feature is left to the per-feature form.
    """
    if n_slots * n_slots > 1 << 16 or codes.shape[0] < 2:
        return None
    q = codes.shape[0] // 2
    out = codes[1:2 * q:2].astype(np.uint16)
    out *= n_slots
    out += codes[0:2 * q:2]
    return out


def is_all_rows(rows, n) -> bool:
    """rows is 0..n-1 in order (a full, unbagged tree): no gather is needed."""
    return (len(rows) == n and (n == 0 or (rows[0] == 0 and rows[-1] == n - 1))
            and bool((rows[1:] > rows[:-1]).all()))


def build_histogram(codes: np.ndarray, channels: np.ndarray, rows, n_slots: int,
                    features=None, hess_is_count: bool = False, out=None,
                    pairs=None, count=None) -> np.ndarray:
    """Histogram of the given rows.

    Parameters
    ----------
    codes : (d, n) uint8
        Feature-major bin codes of the local rows.
    channels : (C - 1, n) float64 or float32
        Per-row values to sum: gradient channel(s) then the hessian (the count channel
        is added here); summed in float64 either way.
    rows : int array or None
        Local rows of the node (None: all rows).
    n_slots : int
        Slots per feature (``max_bin + 1``).
    features : int array, optional
        Only these features are built (the others stay zero): feature sampling.
    hess_is_count : bool
        The hessian of every row is 1 (L2 loss, unweighted): copy the count instead of
        summing it.
    out : (C, d, n_slots) float64, optional
    pairs : (d // 2, n) uint16, optional
        :func:`pair_codes` of ``codes``; enables the feature-pair form on large nodes.
    count : (d, n_slots) float64, optional
        The count channel of these rows, already known (the root of an unbagged tree
        has the same counts every tree): copied instead of counted, which saves one of
        the three bincount passes of the root.

    Returns
    -------
    (C, d, n_slots) float64
    """
    n_ch = channels.shape[0] + 1
    d, n = codes.shape
    if out is None:
        out = np.zeros((n_ch, d, n_slots), dtype=np.float64)
    else:
        out[...] = 0.0
    if rows is not None and is_all_rows(rows, n):
        rows = None  # the root of an unbagged tree: skip gathering every row
    if rows is None:
        w = channels
        m = n
    else:
        w = np.take(channels, rows, axis=1)
        m = len(rows)
    if m == 0:
        return out
    if w.dtype != np.float64:
        w = w.astype(np.float64)    # once (bincount would convert its weights on every call)
    feats = range(d) if features is None else features
    n_grad = n_ch - 1 if not hess_is_count else n_ch - 2
    if count is not None and m > SMALL_NODE_ROWS:
        fl = list(feats)
        out[n_ch - 1, fl] = count[fl]
        if hess_is_count:
            out[n_ch - 2, fl] = count[fl]
        n_count = 0                      # bincount passes for the count channel
    else:
        n_count = 1
    if m <= SMALL_NODE_ROWS:
        # small node: one bincount per channel over feature-offset codes beats d calls
        fidx = np.asarray(feats, dtype=np.intp)
        sub = codes[fidx] if rows is None else codes[fidx][:, rows]
        flat = (sub + (fidx * n_slots)[:, None]).ravel()
        size = d * n_slots
        view = out.reshape(n_ch, size)
        for ch in range(n_grad):
            view[ch] = np.bincount(flat, weights=np.tile(w[ch], len(fidx)), minlength=size)
        view[n_ch - 1] = np.bincount(flat, minlength=size)
        if hess_is_count:
            view[n_ch - 2] = view[n_ch - 1]
        return out
    single = list(feats)
    if pairs is not None and m >= PAIR_MIN_ROWS:
        chosen = set(single)
        single = []
        S2 = n_slots * n_slots
        for p in range(pairs.shape[0]):
            f0, f1 = 2 * p, 2 * p + 1
            if not (f0 in chosen and f1 in chosen):
                single += [f for f in (f0, f1) if f in chosen]
                continue
            j = (pairs[p] if rows is None else pairs[p].take(rows)).astype(np.intp)
            for ch in range(n_grad + n_count):
                # the last pass is the count (the hessian is a copy of it for L2)
                ch_out = ch if ch < n_grad else n_ch - 1
                wt = w[ch] if ch < n_grad else None
                # joint[code1, code0]: summing over code1 gives feature f0, over code0 f1
                joint = np.bincount(j, weights=wt, minlength=S2).reshape(n_slots, n_slots)
                out[ch_out, f0] = joint.sum(axis=0)
                out[ch_out, f1] = joint.sum(axis=1)
            if hess_is_count and n_count:
                out[n_ch - 2, f0] = out[n_ch - 1, f0]
                out[n_ch - 2, f1] = out[n_ch - 1, f1]
        if d % 2 and d - 1 in chosen:
            single.append(d - 1)
    for f in single:
        # convert to intp once: bincount would convert uint8 on each of its calls
        c = (codes[f] if rows is None else codes[f].take(rows)).astype(np.intp)
        for ch in range(n_grad):
            out[ch, f] = np.bincount(c, weights=w[ch], minlength=n_slots)
        if n_count:
            out[n_ch - 1, f] = np.bincount(c, minlength=n_slots)
            if hess_is_count:
                out[n_ch - 2, f] = out[n_ch - 1, f]
    return out


# ------------------------------------------------------------------ compiled kernels
def row_major_codes(codes: np.ndarray) -> np.ndarray:
    """``(n, d)`` C-contiguous copy of the ``(d, n)`` codes for the compiled kernels.

    One row's codes are adjacent (one or two cache lines), which is what a pass over a
    node's gathered rows reads; built once per fit.
    """
    return np.ascontiguousarray(codes.T)


#: local rows the compiled path's int32 row indices (the tree's permutation, the partition
#: scratch) hold (more local rows: the NumPy path)
MAX_COMPILED_ROWS = 2 ** 31 - 1


def _scratch(rows: np.ndarray) -> np.ndarray:
    """A partition's scratch: room for every row of the node (the right ones go there)."""
    return np.empty(len(rows), dtype=np.int32)


def as_rows32(rows, n: int) -> np.ndarray:
    """``rows`` as the compiled kernels take row indices: a C-contiguous int32 array.

    The tree's row permutation and its views (int32, C-contiguous) are returned as they are;
    other integer arrays are checked against ``[0, n)`` (an int64 row past 2**31 would wrap
    to a valid-looking int32 one) and converted (a copy).
    """
    rows = np.asarray(rows)
    if rows.dtype == np.int32 and rows.flags.c_contiguous:
        return rows
    if len(rows) == 0:
        return np.empty(0, dtype=np.int32)
    if rows.dtype.kind not in "iu":
        raise TypeError(f"rows must be integer row indices, got {rows.dtype}")
    _check_range(rows, n, "rows")
    return rows.astype(np.int32)


class CompiledHistogram:
    """Histograms and row partitions through ``_hist_kernels`` (see its C source).

    Holds the one copy of the codes a fit keeps, row-major ``(n, d)`` (the histogram reads a
    row's codes together, the partition one feature's code of each of a node's ascending
    rows); the caller passes the per-tree statistics through :meth:`set_channels` (kept as
    given, channel-major ``(C - 1, n)``: no copy).

    Per local row this holds one byte of codes per feature; the caller's gradient channels
    (GBDT's gradient and hessian: 8 bytes in float32) are referenced, not copied. A
    partition's scratch (int32, the node's rows) is taken for that call only: the big nodes
    are split while a tree has few open leaves, so a scratch of every local row held through
    the tree would add 4 bytes a row to the peak, which comes when many leaves hold
    histograms. Row indices are int32 (the kernels take no other type): the grower's row
    permutation is int32 too (4 bytes a local row, held by the grower), and
    :meth:`partition` / :meth:`partition_table` reorder int32 views of it.

    Parameters
    ----------
    kernels : module
        ``shardlearn.models.trees._hist_kernels``.
    codes : (d, n) uint8
        The codes, copied once to the row-major layout (the caller may let go of them then);
        not copied when they are already the transpose of a C-contiguous ``(n, d)`` array
        (``BinMapper.transform(row_major=True)``).
    n_slots : int
    """

    def __init__(self, kernels, codes: np.ndarray, n_slots: int):
        self.k = kernels
        self.codes_rm = row_major_codes(np.asarray(codes, dtype=np.uint8))
        self.n, self.d = self.codes_rm.shape
        if self.n > MAX_COMPILED_ROWS:
            raise ValueError(f"{self.n} local rows, more than int32 row indices hold "
                             f"({MAX_COMPILED_ROWS})")
        self.n_slots = n_slots
        self.all_features = np.arange(self.d, dtype=np.int64)
        self._acc = None
        self._no_rows = np.empty(0, dtype=np.int32)
        self.channels = None
        self.cin = 0

    def set_channels(self, channels: np.ndarray) -> None:
        """Per-row statistics ``(C - 1, n)`` of this tree (gradient channel(s) then hessian),
        kept by reference (a C-contiguous float32 or float64 array is not copied; the
        histogram kernel reads this channel-major layout and sums in float64 either way)."""
        cin, n = channels.shape
        if n != self.n or cin < 1:
            raise ValueError(f"channels must be (C - 1, {self.n}), got {channels.shape}")
        dtype = np.float32 if channels.dtype == np.float32 else np.float64
        self.channels = np.ascontiguousarray(channels, dtype=dtype)
        self.cin = cin
        size = self.d * self.n_slots * (self.cin + 1)
        if self._acc is None or self._acc.size < size:
            self._acc = np.empty(size, dtype=np.float64)

    def build(self, rows, features=None, hess_is_count=False, out=None, count=None) -> np.ndarray:
        """Histogram ``(C, d, n_slots)`` of ``rows`` (local rows, or None for all; int32 ones,
        a view of the tree's permutation, are used as they are, others converted by
        :func:`as_rows32`).

        Features not in ``features`` are zero, as in :func:`build_histogram`. ``count``
        ``(d, n_slots)``: the count channel of these rows, already known (the root of an
        unbagged tree): copied instead of accumulated.
        """
        C = self.cin + 1
        if out is None:
            out = np.zeros((C, self.d, self.n_slots), dtype=np.float64)
        else:
            out[...] = 0.0
        all_rows = rows is None or is_all_rows(rows, self.n)
        if all_rows:
            rows = self._no_rows
        else:
            rows = as_rows32(rows, self.n)
            if len(rows) == 0:
                return out
            # no NumPy pre-pass over the rows (a min and a max per node, as long as a good part
            # of the kernel's own work): the kernel checks every row in its loop (ValueError)
        feats = self.all_features if features is None else np.ascontiguousarray(features, dtype=np.int64)
        _check_range(feats, self.d, "features")
        if out.shape != (C, self.d, self.n_slots) or out.dtype != np.float64 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float64 array of shape {(C, self.d, self.n_slots)}")
        if self.cin < 2:
            hess_is_count = False
        self.k.histogram(self.codes_rm, self.n, self.d, self.channels, self.cin, rows, int(all_rows),
                         feats, self.n_slots, self._acc, out, int(bool(hess_is_count)), int(count is None),
                         int(self.channels.dtype == np.float32))
        if count is not None:
            out[C - 1, feats] = count[feats]
            if hess_is_count:
                out[C - 2, feats] = count[feats]
        return out

    def build_packed(self, kernels, vals: np.ndarray, rows, features=None, out=None) -> np.ndarray:
        """Packed int64 histogram ``(d, n_slots)`` of ``rows`` through
        ``_quant_kernels.histogram_packed``: ``vals`` (n,) int64 is each row's packed
        quantized statistics (:mod:`.quantize`); features not in ``features`` are zero."""
        if out is None:
            out = np.empty((self.d, self.n_slots), dtype=np.int64)
        all_rows = rows is None or is_all_rows(rows, self.n)
        rows = self._no_rows if all_rows else as_rows32(rows, self.n)
        feats = self.all_features if features is None else np.ascontiguousarray(features, dtype=np.int64)
        if out.shape != (self.d, self.n_slots) or out.dtype != np.int64 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous int64 array of shape {(self.d, self.n_slots)}")
        kernels.histogram_packed(self.codes_rm, self.n, self.d, vals, rows, int(all_rows), feats, self.n_slots, out)
        return out

    def partition(self, rows: np.ndarray, feature: int, bin_: int, missing_left: bool) -> int:
        """Reorder ``rows`` (a contiguous int32 view of the row permutation, ascending) in
        place: rows going left (code ``<= bin_``, or the missing slot when ``missing_left``)
        first, both sides in their original order. Returns the number of left rows."""
        if rows.dtype != np.int32 or not rows.flags.c_contiguous:
            raise ValueError("rows must be a C-contiguous int32 array (a view of the row permutation), "
                             f"got {rows.dtype}")
        if len(rows) > self.n:
            raise ValueError(f"{len(rows)} rows, more than the {self.n} local rows")
        # no NumPy pre-pass over the rows (a min and a max per split, as long as the kernel's
        # own work): the kernel checks every row in its loop (ValueError, nothing written)
        return self.k.partition(self.codes_rm, self.d, int(feature), rows, _scratch(rows), int(bin_),
                                self.n_slots - 1, int(bool(missing_left)))

    def partition_table(self, rows: np.ndarray, feature: int, cat_left: np.ndarray) -> int:
        """Reorder ``rows`` in place by a categorical split: rows whose code ``c`` has
        ``cat_left[c]`` first, both sides in their original order (the NumPy path's
        ``np.compress`` order). ``cat_left``: bool over the bin slots. Returns the number of
        left rows."""
        if rows.dtype != np.int32 or not rows.flags.c_contiguous:
            raise ValueError("rows must be a C-contiguous int32 array (a view of the row permutation), "
                             f"got {rows.dtype}")
        if len(rows) > self.n:
            raise ValueError(f"{len(rows)} rows, more than the {self.n} local rows")
        cat_left = np.asarray(cat_left, dtype=bool).ravel()
        if len(cat_left) > 256:
            raise ValueError(f"a categorical split over {len(cat_left)} bins, more than 256")
        if len(rows):
            _check_range(rows, self.n, "rows")
        table = np.zeros(256, dtype=np.uint8)     # every uint8 code has an entry (0: right)
        table[:len(cat_left)] = cat_left
        return self.k.partition_table(self.codes_rm, self.d, int(feature), rows, _scratch(rows), table)


def _check_range(idx: np.ndarray, n: int, what: str) -> None:
    if len(idx) and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"{what} out of range 0..{n - 1}")
