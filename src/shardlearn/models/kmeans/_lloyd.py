"""Lloyd's pass: nearest-center labels, per-cluster sums and the exact inertia.

:class:`_Labeler` glues the compiled kernels (``_kmeans_kernels.c``) to row chunks;
:func:`_lloyd_pass` is one iteration's E-step and local M-step sums (NumPy path in
:func:`_lloyd_block` when there are no kernels); :func:`_assign` the final labels and
inertia; :func:`_inertia_from_sums` the per-iteration inertia without a pass;
:func:`_relocate_empty` re-seeds empty clusters. The package docstring has the algorithm.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as _sparse

from ._data import _Local
from ._exact import add_fixed_rows, quantize, row_sqnorms

try:  # the kernel behind csc_matrix @ dense, without building and checking a matrix per chunk
    from scipy.sparse._sparsetools import csc_matvecs as _csc_matvecs
except ImportError:  # pragma: no cover - private SciPy API moved: use the public one
    _csc_matvecs = None

#: the tiled kernel (dot products in registers) beats BLAS GEMM + one pass while
#: padded k x d is at most this; for larger k x d BLAS's GEMM wins (the crossover
#: measurements: bench/kmeans.md)
TILED_MAX_KD = 2048


# ----------------------------------------------------------------------------- kernels
def _cluster_sums(xc: np.ndarray, lab: np.ndarray, k: int, ones: np.ndarray, indptr: np.ndarray):
    """Per-cluster sums of the rows of ``xc`` (k x d, xc's dtype)."""
    r = xc.shape[0]
    if _csc_matvecs is not None and xc.flags.c_contiguous:
        # the one-hot matrix (k x r, one 1 per column at row lab[i]) in CSC form is just
        # (indptr=0..r, indices=lab, data=1): Y += A @ xc is a scatter-add of the rows
        out = np.zeros((k, xc.shape[1]), dtype=xc.dtype)
        _csc_matvecs(k, r, xc.shape[1], indptr[:r + 1], lab.astype(indptr.dtype, copy=False),
                     ones[:r], xc.reshape(-1), out.reshape(-1))
        return out
    m = _sparse.csc_matrix((ones[:r], lab, indptr[:r + 1]), shape=(k, r))
    return m @ xc


class _Labeler:
    """Nearest-center labels of row chunks (and the E-step sums) with the compiled kernels.

    Built once per pass from the centers in GEMM form: ``c_neg2_t`` = (-2 C)^T (d x k)
    and ``cc`` = the per-center constant, both in the data's dtype. For a small padded
    k x d the tiled kernel computes the dot products itself; otherwise BLAS does the
    GEMM per chunk and the kernel does the argmin and sums in one pass.

    With ``scale`` (``KMeans(exact_reduce=True)``: the per-feature fixed-point units) the
    tiled kernel is used whatever k x d, because its distances of a row do not depend on
    the other rows of the chunk (a BLAS GEMM does not promise that), and the sums and
    counts it adds into are int64 (``lloyd_tiled_fixed_*``).
    """

    def __init__(self, kernels, c_neg2_t: np.ndarray, cc: np.ndarray, chunk: int, scale=None):
        d, k = c_neg2_t.shape
        dt = c_neg2_t.dtype
        f32 = dt == np.float32
        tile = kernels.TILE_F32 if f32 else kernels.TILE_F64
        kp = -(-k // tile) * tile
        self.k, self.d = k, d
        self.tiled = kp * d <= TILED_MAX_KD or scale is not None
        self.scale = scale
        if scale is not None:
            self.fixed = kernels.lloyd_tiled_fixed_f32 if f32 else kernels.lloyd_tiled_fixed_f64
        if self.tiled:
            self.ct = np.zeros((d, kp), dtype=dt)
            self.ct[:, :k] = c_neg2_t
            self.cc = np.full(kp, np.inf, dtype=dt)  # padded centers never win
            self.cc[:k] = cc
            self.width = kp
            self.fn = kernels.lloyd_tiled_f32 if f32 else kernels.lloyd_tiled_f64
        else:
            self.ct = np.ascontiguousarray(c_neg2_t)
            self.cc = np.ascontiguousarray(cc, dtype=dt)
            self.dist = np.empty((max(1, chunk), k), dtype=dt)
            self.fn = kernels.lloyd_gemm_f32 if f32 else kernels.lloyd_gemm_f64
        self._unused = np.zeros(1)  # sums/counts when only labels are wanted

    def __call__(self, xc: np.ndarray, labels: np.ndarray, sums=None, counts=None) -> int:
        """Label the rows of ``xc`` into ``labels`` (int32, C-contiguous); with ``sums``
        (k x d) and ``counts`` (k), float64 (int64 fixed point with ``scale``), add each
        row to its cluster. Returns the number of labels that changed."""
        r = xc.shape[0]
        acc = sums is not None
        s, c = (sums, counts) if acc else (self._unused, self._unused)
        if acc and self.scale is not None:
            return self.fixed(xc, self.ct, self.cc, self.scale, labels, s, c, r, self.width, self.d)
        if self.tiled:
            return self.fn(xc, self.ct, self.cc, labels, s, c, r, self.width, self.d, acc)
        if r > self.dist.shape[0]:
            self.dist = np.empty((r, self.k), dtype=self.dist.dtype)
        dist = self.dist[:r]
        np.matmul(xc, self.ct, out=dist)
        return self.fn(xc, dist, self.cc, labels, s, c, r, self.k, self.d, acc)


def _lloyd_pass(data: _Local, centers: np.ndarray, labels: np.ndarray, buf: np.ndarray):
    """E-step and local M-step sums on this rank's rows.

    Writes the new labels into ``labels`` (int32, in place) and fills ``buf`` (float64,
    length k*d + k + 1) with [per-cluster sums, counts, number of changed labels], sums
    in centred coordinates. With ``data.exact`` (``exact_reduce``) it returns instead a new
    int64 buffer ``[fixed-point sums, counts, changed]``, the sums of the rows as the
    kernel saw them (centred or not): ``data.unpack`` turns the reduced one into ``buf``'s
    form.

    With ``data.centre_rows`` False (the data's mean is small next to its spread) the
    rows are used as they are, saving a pass: the mean is folded into the per-center
    constant, ``‖x-m-c‖² = ‖x-m‖² - 2 x·c + (‖c‖² + 2 m·c)``, and subtracted from the sums
    afterwards (``Σ(x-m) = Σx - n m``); rounding is then no worse than with centring.

    With the compiled kernels (:class:`_Labeler`, ``_kmeans_kernels.c``) each chunk is
    labelled and summed in one pass, sums in float64; without them (no C compiler at
    install time, or ``SHARDLEARN_KERNELS=numpy``) NumPy does the same in four passes.

    With ``data.threads`` > 1 the rows are split into that many contiguous blocks run
    by a thread pool (NumPy, BLAS and SciPy's sparse kernels release the GIL) with
    single-threaded BLAS: the per-chunk GEMMs are too small for BLAS's own threads,
    which made one rank with 2 BLAS threads slower than with one (bench/kmeans.md). Block
    results are combined in block order, so the result is deterministic for a given
    thread count.
    """
    if getattr(data, "device", False):  # rows on the GPU: packed int64 sums (_gpu.py)
        return data.lloyd_pass(centers, labels)
    k, d = centers.shape
    dt = data.dtype
    c = centers.astype(dt)
    c_neg2_t = np.ascontiguousarray((-2.0 * c).T)  # scaling by -2 is exact
    c64 = c.astype(np.float64)
    cc64 = np.einsum("ij,ij->i", c64, c64)
    if not data.centre_rows:
        cc64 = cc64 + 2.0 * (c64 @ data.mean_t.astype(np.float64))
    cc = cc64.astype(dt)
    parts = data.blocks()
    if len(parts) == 1:
        results = [_lloyd_block(data, c_neg2_t, cc, labels, *parts[0])]
    else:
        results = list(data.pool().map(lambda b: _lloyd_block(data, c_neg2_t, cc, labels, *b), parts))
    if data.exact:  # integer sums: exact in any order; centred after the reduction
        return np.sum(results, axis=0, dtype=np.int64)
    buf[:] = 0.0
    for part in results:
        buf += part
    if not data.centre_rows:
        sums = buf[:k * d].reshape(k, d)
        sums -= buf[k * d:k * d + k, None] * data.mean_t.astype(np.float64)
    return buf


def _lloyd_block(data: _Local, c_neg2_t, cc, labels, lo_block, hi_block):
    """:func:`_lloyd_pass` on rows [lo_block, hi_block): returns [sums, counts, changed]."""
    d, k = c_neg2_t.shape
    dt = data.dtype
    out = np.zeros(k * d + k + 1, dtype=np.int64 if data.exact else np.float64)
    sums = out[:k * d].reshape(k, d)
    counts = out[k * d:k * d + k]
    changed = 0
    rows = min(data.chunk, hi_block - lo_block)
    if rows <= 0:
        return out
    xbuf = np.empty((rows, d), dtype=dt) if data.centre_rows else None
    if data.kernels is not None:
        label = _Labeler(data.kernels, c_neg2_t, cc, rows, data.scale)
        for lo in range(lo_block, hi_block, data.chunk):
            hi = min(hi_block, lo + data.chunk)
            xc = data.X[lo:hi]
            if data.centre_rows:
                xc = np.subtract(xc, data.mean_t, out=xbuf[:hi - lo])
            changed += label(xc, labels[lo:hi], sums, counts)
        out[-1] = changed
        return out
    if data.exact:
        return _lloyd_block_exact(data, c_neg2_t, cc, labels, lo_block, hi_block, out, xbuf)
    dbuf = np.empty((rows, k), dtype=dt)
    # NumPy's argmin over short float32 rows is slower than over float64 ones (k=16:
    # bench/kmeans.md); the float32 -> float64 widening is exact, so labels are unchanged
    widen = dt == np.float32 and k <= 32
    wbuf = np.empty((rows, k)) if widen else None
    ones = np.ones(rows, dtype=dt)
    indptr = np.arange(rows + 1, dtype=np.int64)
    for lo in range(lo_block, hi_block, data.chunk):
        hi = min(hi_block, lo + data.chunk)
        r = hi - lo
        if data.centre_rows:
            xc = xbuf[:r]
            np.subtract(data.X[lo:hi], data.mean_t, out=xc)
        else:
            xc = data.X[lo:hi]
        dist = dbuf[:r]
        np.matmul(xc, c_neg2_t, out=dist)
        if widen:
            dist = np.add(dist, cc, out=wbuf[:r])  # float32 sum, stored widened
        else:
            dist += cc
        lab = dist.argmin(axis=1)
        old = labels[lo:hi]
        changed += int(np.count_nonzero(old != lab))
        old[:] = lab
        counts += np.bincount(lab, minlength=k)
        sums += _cluster_sums(xc, lab, k, ones, indptr)
    out[-1] = changed
    return out


def _rows_in_order_dist(xc, c_neg2_t, cc):
    """``cc + x·(-2C)^T`` per row with the products added in feature order, in the data's
    dtype: the NumPy twin of the tiled kernel's arithmetic, without BLAS (whose result for
    a row may depend on the chunk), for the exact NumPy path."""
    acc = np.zeros((xc.shape[0], c_neg2_t.shape[1]), dtype=xc.dtype)
    for t in range(xc.shape[1]):
        acc += xc[:, t:t + 1] * c_neg2_t[t]
    return acc + cc


def _lloyd_block_exact(data: _Local, c_neg2_t, cc, labels, lo_block, hi_block, out, xbuf):
    """:func:`_lloyd_block` without the compiled kernels for ``data.exact``: labels from
    :func:`_rows_in_order_dist`, the rows rounded to the fixed-point units and summed as
    int64 into ``out`` (``[sums, counts, changed]``)."""
    d, k = c_neg2_t.shape
    sums = out[:k * d].reshape(k, d)
    changed = 0
    for lo in range(lo_block, hi_block, data.chunk):
        hi = min(hi_block, lo + data.chunk)
        xc = data.X[lo:hi]
        if data.centre_rows:
            xc = np.subtract(xc, data.mean_t, out=xbuf[:hi - lo])
        lab = _rows_in_order_dist(xc, c_neg2_t, cc).argmin(axis=1).astype(np.int32)
        old = labels[lo:hi]
        changed += int(np.count_nonzero(old != lab))
        old[:] = lab
        out[k * d:k * d + k] += np.bincount(lab, minlength=k)
        add_fixed_rows(quantize(xc, data.scale), lab, k, sums)
    out[-1] = changed
    return out


def _assign(data: _Local, centers: np.ndarray, labels: np.ndarray | None, relabel: bool, per_row: bool = False):
    """Local exact inertia sum ‖x - c_label‖² (float64); relabel first if asked. With
    ``per_row`` the (n_local,) squared distances instead, each computed the same way
    whatever the chunk (:func:`._exact.row_sqnorms`), for an exact sum over the ranks."""
    if getattr(data, "device", False):
        return data.assign(centers, labels, relabel)
    k, d = centers.shape
    dt = data.dtype
    c = centers.astype(dt)
    c_neg2_t = np.ascontiguousarray((-2.0 * c).T)
    cc = np.einsum("ij,ij->i", c, c)
    total = 0.0
    d2 = np.empty(data.n) if per_row else None
    rows = min(data.chunk, data.n)
    xbuf = np.empty((rows, d), dtype=dt)
    label = _Labeler(data.kernels, c_neg2_t, cc, rows, data.scale) \
        if data.kernels is not None and relabel else None
    for lo, hi in data.chunks():
        xc = xbuf[:hi - lo]
        np.subtract(data.X[lo:hi], data.mean_t, out=xc)
        if relabel and label is not None:
            label(xc, labels[lo:hi])
        elif relabel and data.exact:
            labels[lo:hi] = _rows_in_order_dist(xc, c_neg2_t, cc).argmin(axis=1)
        elif relabel:
            dist = xc @ c_neg2_t
            dist += cc
            labels[lo:hi] = dist.argmin(axis=1)
        diff = xc - c[labels[lo:hi]]
        if per_row:
            d2[lo:hi] = row_sqnorms(diff)
        else:
            total += float(np.einsum("ij,ij->i", diff, diff).sum(dtype=np.float64))
    return d2 if per_row else total


def _inertia_from_sums(total_ss, centers, sums, counts) -> float:
    """Σ_i ‖x_i - c_{l_i}‖² from the reduced sums, without another pass over the rows.

    In centred coordinates, Σ_{i in j} ‖x_i - c_j‖² = Σ_{i in j} ‖x_i‖² - 2 c_j·S_j + n_j‖c_j‖²,
    and Σ_i ‖x_i‖² is the total sum of squares, known from the variance pass. Used for the
    per-iteration log; the final ``inertia_`` is computed directly.
    """
    val = total_ss + float((counts * np.einsum("ij,ij->i", centers, centers)).sum()
                           - 2.0 * np.einsum("ij,ij->", centers, sums))
    return max(val, 0.0)


def _relocate_empty(ctx, data: _Local, centers_old, labels, sums, counts) -> None:
    """Give each empty cluster the globally farthest row (scikit-learn's policy).

    Modifies ``sums`` and ``counts`` in place, identically on every rank.
    """
    empty = np.flatnonzero(counts == 0)
    m = len(empty)
    rows = data.farthest(centers_old, labels, m) if getattr(data, "device", False) else \
        _farthest(data, centers_old, labels, m)
    every = ctx.coll.allgather(rows)
    order = np.lexsort((every[:, 1], -every[:, 0]))[:m]
    for cluster, row in zip(empty, every[order]):
        old = int(row[2])
        x = row[3:]
        sums[old] -= x
        sums[cluster] = x
        counts[cluster] = 1.0
        counts[old] -= 1.0


def _farthest(data: _Local, centers_old, labels, m):
    """The ``m`` local rows farthest from their centers: rows of [distance, global row,
    label, centred row] (float64)."""
    k = centers_old.shape[0]
    c = centers_old.astype(data.dtype)
    dist = np.empty(data.n)
    for lo, hi in data.chunks():
        xc = data.X[lo:hi] - data.mean_t
        lab = np.clip(labels[lo:hi], 0, k - 1)
        diff = xc - c[lab]
        dist[lo:hi] = row_sqnorms(diff) if data.exact else np.einsum("ij,ij->i", diff, diff)
    top = np.argpartition(-dist, m - 1)[:m] if data.n > m else np.arange(data.n)
    rows = np.empty((len(top), 3 + data.d))
    rows[:, 0] = dist[top]
    rows[:, 1] = data.offset + top
    rows[:, 2] = labels[top]
    rows[:, 3:] = data.X[top].astype(np.float64) - data.mean_t
    return rows
