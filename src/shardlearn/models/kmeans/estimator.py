"""Distributed k-means: Lloyd iterations with k-means++ or k-means|| initialisation.

Every rank holds a block of rows; the ranks agree on the centers through collectives.

Lloyd iteration (one collective)
    Each rank assigns its rows to the nearest center with the GEMM form of the squared
    distance, ``‖x‖² - 2 x·c + ‖c‖²`` (``‖x‖²`` is constant per row and dropped for the
    argmin), in row chunks small enough to stay in cache: the temporaries are
    ``chunk x d`` and ``chunk x k`` (about 2 MiB), never ``n x k x d``. It accumulates
    per-cluster sums (k x d), counts (k) and the number of changed labels in float64,
    packs them into ONE buffer and allreduces it. Every rank then computes the same new
    centers, the inertia (from the sums, see :func:`_inertia_from_sums`) and the center
    shift, and stops by scikit-learn's rule: labels unchanged (strict convergence), or
    squared center shift summed over clusters ``<= tol * mean feature variance``.
    As in scikit-learn, everything is done in coordinates centred on the global mean,
    which keeps the GEMM form accurate when the data sits far from the origin; when
    the mean is large next to the spread the rows are centred chunk by chunk in a
    scratch buffer, otherwise the mean is folded into the per-center constant and the
    sums (one pass fewer). The data itself is never copied or modified. After the loop a final
    E-step (skipped on strict convergence) makes ``labels_`` match the centers; the
    final ``inertia_`` is computed exactly, from ``x - c`` directly.

Per-cluster sums
    Scatter-add of the chunk's rows into k rows via a sparse one-hot matrix (SciPy's
    CSC mat-vec, one pass over the chunk) when SciPy is importable; otherwise a dense
    one-hot GEMM. Measured on this project's 2-core machine, 500k x 32 float64, k=16:
    sparse 16 ms, dense one-hot GEMM 27 ms; 100k x 64, k=64: 5 ms vs 26 ms
    (``np.add.at`` and per-feature ``np.bincount`` are far slower still).

Initialisation
    ``"k-means++"`` (default) -- scikit-learn's greedy k-means++ (``2 + log k`` local
    trials per center), done exactly as on one process: one random stream drawn
    identically on every rank; each D²-weighted draw finds the owning rank from the
    ranks' local D² totals (allgather of P numbers, a prefix over ranks) and the owner
    contributes the chosen row to an allreduce. The chosen rows do not depend on P
    (up to rounding in the prefix sums). Cost: k passes over the data and 3 small
    collectives per center.
    ``"k-means||"`` -- Bahmani et al. (2012): ``init_rounds`` (5) rounds, each keeping
    every row independently with probability ``min(1, l d²(x)/phi)``, ``l =
    oversampling_factor * k`` (2k), the coin keyed by the global row index
    (:func:`shardlearn.rng.row_uniform`); the candidates (about ``1 + 10k``) are weighted
    by the rows nearest to them and reduced to k with weighted greedy k-means++ plus
    weighted Lloyd on rank 0, broadcast to all. Cost: ``init_rounds + 1`` passes over
    the data whatever k is.
    Why k-means++ is the default: it is scikit-learn's default with the same semantics,
    so results are comparable one-to-one, and for the k this project targets (<= ~100)
    its k passes cost about as much as a few Lloyd iterations. Choose ``"k-means||"`` for
    large k (hundreds and more) or many ranks, where k-means++'s k sequential passes
    and 3k collectives dominate.
    ``"random"`` picks k distinct rows; an array (k x d) or an HDF5 file path (a
    shardlearn k-means model, or a file with dataset ``centers``) gives the centers.

Empty clusters
    Re-seeded as in scikit-learn: each empty cluster takes the row farthest from its
    assigned (old) center, chosen globally (allgather of each rank's local top
    candidates, ties broken by global row index), identically on every rank.
"""
from __future__ import annotations

import inspect
import os
import time

import numpy as np

from ...backend import compiled_kernels
from ...errors import ShardlearnError
from ..base import Params
from ... import rng as _rng

import scipy.sparse as _sparse

try:  # the kernel behind csc_matrix @ dense, without building and checking a matrix per chunk
    from scipy.sparse._sparsetools import csc_matvecs as _csc_matvecs
except ImportError:  # pragma: no cover - private SciPy API moved: use the public one
    _csc_matvecs = None

INITS = ("k-means++", "k-means||", "random")
KERNELS = "models.kmeans._kmeans_kernels"  # compiled loops (see _kmeans_kernels.c); None: NumPy
#: the tiled kernel (dot products in registers) beats BLAS GEMM + one pass while
#: padded k x d is at most this (500k rows, one thread: d=32,k=16 f64 28 vs 36 ms,
#: f32 16.5 vs 19.8; d=64,k=16 108 vs 151; d=16,k=64 60 vs 64; but d=64,k=64 184 vs
#: 156 and d=128,k=32 f64 237 vs 194: bench/kmeans.md)
TILED_MAX_KD = 2048
SCRATCH_BYTES = 2 << 20  # per-chunk temporaries: chunk x (d + k) values, ~ L2 cache sized
KEEP_FRACTION = 8  # k-means++ keeps its n x trials distances only if <= shard bytes / this


def _chunk_rows(d: int, k: int, itemsize: int, chunk_rows=None) -> int:
    """Rows per chunk so that the chunk's temporaries stay near SCRATCH_BYTES."""
    if chunk_rows:
        return max(1, int(chunk_rows))
    rows = SCRATCH_BYTES // max(1, (d + k) * itemsize)
    return int(min(16384, max(256, rows // 256 * 256)))


class _Local:
    """This rank's rows plus the global facts every pass needs."""

    def __init__(self, X, mean, offset, n_total, chunk):
        self.X = X
        self.n = X.shape[0]
        self.d = X.shape[1]
        self.dtype = X.dtype
        self.mean = mean                      # float64 global mean (d,)
        self.mean_t = mean.astype(X.dtype)    # the mean as rows are centred (X's dtype)
        self.offset = offset                  # global index of local row 0
        self.n_total = n_total
        self.chunk = chunk
        self.centre_rows = True               # set by fit from the data's mean and spread
        self.threads = 1                      # row blocks run in parallel by _lloyd_pass
        self.kernels = compiled_kernels(KERNELS)  # None: the NumPy code paths
        self._pool = None

    def sqnorms(self):
        """‖x - m‖² per local row, float64, computed once for the initialisation passes."""
        if getattr(self, "_xx", None) is None:
            self._xx = np.empty(self.n)
            for lo in range(0, self.n, 65536):
                hi = min(self.n, lo + 65536)
                xc = self.centred64(lo, hi)
                self._xx[lo:hi] = np.einsum("ij,ij->i", xc, xc)
        return self._xx

    def blocks(self):
        """Contiguous row ranges, one per thread, aligned to chunks."""
        nchunks = -(-self.n // self.chunk) if self.n else 1
        t = max(1, min(self.threads, nchunks))
        bounds = [(nchunks * i // t) * self.chunk for i in range(t + 1)]
        return [(min(a, self.n), min(b, self.n)) for a, b in zip(bounds[:-1], bounds[1:])]

    def pool(self):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.threads)
        return self._pool

    def close(self):
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def chunks(self):
        for i in range(0, self.n, self.chunk):
            yield i, min(self.n, i + self.chunk)

    def centred64(self, lo, hi, out=None):
        """Rows [lo, hi) minus the mean, in float64 (for the initialisation passes)."""
        xs = self.X[lo:hi]
        if out is None:
            out = np.empty((hi - lo, self.d))
        out = out[:hi - lo]
        np.subtract(xs, self.mean_t, out=out, dtype=np.float64)
        return out


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
    """

    def __init__(self, kernels, c_neg2_t: np.ndarray, cc: np.ndarray, chunk: int):
        d, k = c_neg2_t.shape
        dt = c_neg2_t.dtype
        f32 = dt == np.float32
        tile = kernels.TILE_F32 if f32 else kernels.TILE_F64
        kp = -(-k // tile) * tile
        self.k, self.d = k, d
        self.tiled = kp * d <= TILED_MAX_KD
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
        (k x d) and ``counts`` (k), float64, add each row to its cluster. Returns the
        number of labels that changed."""
        r = xc.shape[0]
        acc = sums is not None
        s, c = (sums, counts) if acc else (self._unused, self._unused)
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
    in centred coordinates.

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
    which made one rank with 2 BLAS threads several times slower than with one. Block
    results are combined in block order, so the result is deterministic for a given
    thread count.
    """
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
    out = np.zeros(k * d + k + 1)
    sums = out[:k * d].reshape(k, d)
    counts = out[k * d:k * d + k]
    changed = 0
    rows = min(data.chunk, hi_block - lo_block)
    if rows <= 0:
        return out
    xbuf = np.empty((rows, d), dtype=dt) if data.centre_rows else None
    if data.kernels is not None:
        label = _Labeler(data.kernels, c_neg2_t, cc, rows)
        for lo in range(lo_block, hi_block, data.chunk):
            hi = min(hi_block, lo + data.chunk)
            xc = data.X[lo:hi]
            if data.centre_rows:
                xc = np.subtract(xc, data.mean_t, out=xbuf[:hi - lo])
            changed += label(xc, labels[lo:hi], sums, counts)
        out[-1] = changed
        return out
    dbuf = np.empty((rows, k), dtype=dt)
    # NumPy's argmin over short float32 rows is about 2x slower than over float64 ones
    # (measured, k=16); the float32 -> float64 widening is exact, so labels are unchanged
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


def _assign(data: _Local, centers: np.ndarray, labels: np.ndarray | None, relabel: bool) -> float:
    """Local exact inertia sum ‖x - c_label‖² (float64); relabel first if asked."""
    k, d = centers.shape
    dt = data.dtype
    c = centers.astype(dt)
    c_neg2_t = np.ascontiguousarray((-2.0 * c).T)
    cc = np.einsum("ij,ij->i", c, c)
    total = 0.0
    rows = min(data.chunk, data.n)
    xbuf = np.empty((rows, d), dtype=dt)
    label = _Labeler(data.kernels, c_neg2_t, cc, rows) if data.kernels is not None and relabel else None
    for lo, hi in data.chunks():
        xc = xbuf[:hi - lo]
        np.subtract(data.X[lo:hi], data.mean_t, out=xc)
        if relabel and label is not None:
            label(xc, labels[lo:hi])
        elif relabel:
            dist = xc @ c_neg2_t
            dist += cc
            labels[lo:hi] = dist.argmin(axis=1)
        diff = xc - c[labels[lo:hi]]
        total += float(np.einsum("ij,ij->i", diff, diff).sum(dtype=np.float64))
    return total


def _sqdist64(xc64: np.ndarray, c64: np.ndarray, cc64: np.ndarray, xx64=None) -> np.ndarray:
    """Squared distances (r x m) in float64 via the GEMM form, negatives clipped."""
    dist = xc64 @ (-2.0 * c64).T
    dist += cc64
    dist += (np.einsum("ij,ij->i", xc64, xc64) if xx64 is None else xx64)[:, None]
    np.maximum(dist, 0.0, out=dist)
    return dist


def _dist_blocks(data: _Local, cands: np.ndarray):
    """Yield (lo, hi, squared distances of rows [lo, hi) to ``cands``) in small blocks.

    ``cands`` are centred float64 rows (m x d); the block of rows is sized so that the
    (rows x m) distance block stays near SCRATCH_BYTES.
    """
    m = cands.shape[0]
    cc = np.einsum("ij,ij->i", cands, cands)
    step = max(64, SCRATCH_BYTES // (8 * (m + data.d)))
    scratch = np.empty((min(step, data.n), data.d))
    xx = data.sqnorms()
    for lo in range(0, data.n, step):
        hi = min(data.n, lo + step)
        yield lo, hi, _sqdist64(data.centred64(lo, hi, scratch), cands, cc, xx[lo:hi])


def _dist_to(data: _Local, cands: np.ndarray) -> np.ndarray:
    """Squared distances (n_local x m) of the local rows to ``cands`` (only for small m)."""
    out = np.empty((data.n, cands.shape[0]))
    for lo, hi, dist in _dist_blocks(data, cands):
        out[lo:hi] = dist
    return out


def _update_closest(data: _Local, cands: np.ndarray, closest: np.ndarray) -> None:
    """closest = min(closest, distance to the nearest of ``cands``), in place."""
    for lo, hi, dist in _dist_blocks(data, cands):
        np.minimum(closest[lo:hi], dist.min(axis=1), out=closest[lo:hi])


def _nearest_counts(data: _Local, cands: np.ndarray) -> np.ndarray:
    """How many local rows have each of ``cands`` as their nearest (float64, length m)."""
    counts = np.zeros(cands.shape[0])
    for _, _, dist in _dist_blocks(data, cands):
        counts += np.bincount(dist.argmin(axis=1), minlength=cands.shape[0])
    return counts


# ------------------------------------------------------------------- global row access
def _fetch_rows(ctx, data: _Local, global_ids) -> np.ndarray:
    """Centred float64 rows with the given global indices, on every rank (one allreduce)."""
    ids = np.asarray(global_ids, dtype=np.int64)
    buf = np.zeros((len(ids), data.d))
    mine = (ids >= data.offset) & (ids < data.offset + data.n)
    if mine.any():
        local = ids[mine] - data.offset
        buf[mine] = data.X[local].astype(np.float64) - data.mean_t
    return ctx.coll.allreduce(buf)  # x + 0 is exact: every rank gets the owner's row


def _d2_draw(ctx, data: _Local, closest: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Global rows at cumulative D² positions ``targets`` (as one process would pick).

    Every rank sends its local D² total (allgather of P numbers); each target lands in
    the rank whose prefix interval holds it, which finds the row by a binary search of
    its local cumulative sum (two levels: block totals, then within one block, so no
    n-long temporary) and contributes it. Returns (m x d) centred float64 rows.
    """
    step = 65536
    starts = np.arange(0, data.n, step)
    block_tot = np.add.reduceat(closest, starts) if data.n else np.zeros(0)
    block_csum = np.cumsum(block_tot)
    total = float(block_csum[-1]) if data.n else 0.0
    info = ctx.coll.allgather(np.array([[total, float(data.n)]]))
    totals, counts = info[:, 0], info[:, 1].astype(np.int64)
    prefix = np.concatenate(([0.0], np.cumsum(totals)[:-1]))
    ends = prefix + totals
    nonempty = np.flatnonzero(counts > 0)
    buf = np.zeros((len(targets), data.d))
    for t, r in enumerate(targets):
        hit = nonempty[ends[nonempty] >= r]
        owner = int(hit[0]) if hit.size else int(nonempty[-1])
        if owner != ctx.rank:
            continue
        if not hit.size:
            i = data.n - 1
        else:
            local = r - prefix[owner]
            b = min(int(np.searchsorted(block_csum, local)), len(starts) - 1)
            before = block_csum[b - 1] if b else 0.0
            inner = np.cumsum(closest[starts[b]:starts[b] + step])
            i = min(int(starts[b]) + int(np.searchsorted(inner, local - before)), data.n - 1)
        buf[t] = data.X[i].astype(np.float64) - data.mean_t
    return ctx.coll.allreduce(buf)


# --------------------------------------------------------------------- initialisation
def _init_kmeanspp(ctx, data: _Local, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ (scikit-learn's), distributed; centred float64 centers.

    Per center: a D² draw of ``2 + log k`` candidates, the potential of each (one pass,
    one allreduce of ``trials`` numbers), keep the best. The distances to the candidates
    are kept (n_local x trials float64) when that is at most 1/8 of the shard's bytes;
    otherwise a second pass recomputes the winner's distances, so memory stays near the
    shard size.
    """
    trials = 2 + int(np.log(k))
    keep = data.n * trials * 8 <= data.X.nbytes // KEEP_FRACTION
    centers = np.empty((k, data.d))
    centers[0] = _fetch_rows(ctx, data, [int(rng.integers(data.n_total))])[0]
    closest = _dist_to(data, centers[:1])[:, 0].copy()
    pot = float(ctx.coll.allreduce(np.array([closest.sum()]))[0])
    for c in range(1, k):
        targets = rng.uniform(size=trials) * pot
        cands = _d2_draw(ctx, data, closest, targets)
        pots = np.zeros(trials)
        stored = np.empty((data.n, trials)) if keep else None
        for lo, hi, dist in _dist_blocks(data, cands):
            np.minimum(dist, closest[lo:hi, None], out=dist)
            pots += dist.sum(axis=0)
            if keep:
                stored[lo:hi] = dist
        pots = ctx.coll.allreduce(pots)
        best = int(np.argmin(pots))
        pot = float(pots[best])
        if keep:
            closest[:] = stored[:, best]
        else:
            _update_closest(data, cands[best:best + 1], closest)
        centers[c] = cands[best]
    return centers


def _local_kmeanspp(points, weights, k, rng) -> np.ndarray:
    """Weighted greedy k-means++ on a small in-memory set of points."""
    trials = 2 + int(np.log(k))
    p = weights / weights.sum()
    centers = np.empty((k, points.shape[1]))
    centers[0] = points[rng.choice(len(points), p=p)]
    closest = _sqdist64(points, centers[:1], (centers[:1] ** 2).sum(1))[:, 0]
    pot = float(closest @ weights)
    for c in range(1, k):
        targets = rng.uniform(size=trials) * pot
        ids = np.minimum(np.searchsorted(np.cumsum(weights * closest), targets), len(points) - 1)
        cand = points[ids]
        dist = _sqdist64(points, cand, np.einsum("ij,ij->i", cand, cand))
        np.minimum(dist, closest[:, None], out=dist)
        pots = weights @ dist
        best = int(np.argmin(pots))
        pot = float(pots[best])
        closest = dist[:, best].copy()
        centers[c] = cand[best]
    return centers


def _local_lloyd(points, weights, centers, max_iter=100) -> np.ndarray:
    """Weighted Lloyd on a small in-memory set (reduces k-means|| candidates to k)."""
    k = centers.shape[0]
    labels = None
    for _ in range(max_iter):
        dist = _sqdist64(points, centers, np.einsum("ij,ij->i", centers, centers))
        new = dist.argmin(axis=1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        w = np.bincount(labels, weights=weights, minlength=k)
        sums = np.zeros_like(centers)
        np.add.at(sums, labels, points * weights[:, None])  # small: ~1 + 10k points
        filled = w > 0
        centers = centers.copy()
        centers[filled] = sums[filled] / w[filled, None]
    return centers


def _init_kmeans_parallel(ctx, data: _Local, k, rng, rounds, oversampling):
    """k-means|| (Bahmani et al. 2012); returns centred float64 centers or None.

    None means the candidates held fewer than k distinct points (tiny or heavily
    duplicated data): the caller falls back to k-means++.
    """
    seed = int(rng.integers(2 ** 62))
    ell = oversampling * k
    cands = [_fetch_rows(ctx, data, [int(rng.integers(data.n_total))])]
    closest = _dist_to(data, cands[0])[:, 0].copy()
    phi = float(ctx.coll.allreduce(np.array([closest.sum()]))[0])
    step = 65536
    for r in range(rounds):
        if phi <= 0.0:
            break
        stream = _rng.stream_id("kmeans||", r)
        picks = []
        for lo in range(0, data.n, step):  # the coin of each row, keyed by its global index
            hi = min(data.n, lo + step)
            u = _rng.row_uniform(seed, stream, np.arange(data.offset + lo, data.offset + hi))
            picks.append(lo + np.flatnonzero(u * phi < ell * closest[lo:hi]))
        pick = np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)
        new = ctx.coll.allgather(data.X[pick].astype(np.float64) - data.mean_t)
        if new.shape[0] == 0:
            continue
        _update_closest(data, new, closest)
        phi = float(ctx.coll.allreduce(np.array([closest.sum()]))[0])
        cands.append(new)
    cands = np.concatenate(cands)
    weights = ctx.coll.allreduce(_nearest_counts(data, cands))
    keep = weights > 0
    if int(keep.sum()) < k:
        return None
    centers = np.zeros((k, data.d))
    if ctx.rank == 0:  # computed once and broadcast: identical on every rank by construction
        pts, w = cands[keep], weights[keep]
        centers = _local_lloyd(pts, w, _local_kmeanspp(pts, w, k, np.random.default_rng(seed)))
    return ctx.coll.bcast(centers, root=0)


def _read_centers_file(path: str) -> np.ndarray:
    import h5py

    try:
        with h5py.File(path, "r") as h:
            for name in ("cluster_centers", "centers", "X"):
                if name in h and isinstance(h[name], h5py.Dataset):
                    return np.asarray(h[name][()], dtype=np.float64)
            found = ", ".join(sorted(h.keys())) or "nothing"
    except OSError as exc:
        raise ShardlearnError(f"{path}: not a readable HDF5 file ({exc})") from None
    raise ShardlearnError(f"{path}: no dataset 'cluster_centers' or 'centers' with initial centers "
                          f"(found: {found})")


# ---------------------------------------------------------------------- the estimator
class KMeans(Params):
    """K-means clustering on rows spread over MPI ranks (Lloyd's algorithm).

    Every rank constructs the estimator with the same parameters and calls
    :meth:`fit` with its own block of rows; blocks are taken to be in rank order
    (rank 0 holds the first rows of the global table, and so on), which is what
    :func:`shardlearn.data.read_shard` gives. Ranks may hold zero rows.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters k (at most the global number of rows).
    init : {"k-means++", "k-means||", "random"}, array of shape (k, d) or str path, default="k-means++"
        Initialisation. ``"k-means++"``: scikit-learn's greedy k-means++, exactly as on
        one process. ``"k-means||"``: Bahmani et al.'s scalable variant, a fixed number
        of passes whatever k (better for large k). ``"random"``: k distinct rows. An
        array or the path of an HDF5 file (a k-means model file or a file holding a
        ``centers`` dataset) gives the initial centers.
    n_init : int, default=1
        Number of runs with different initialisations; the lowest inertia wins.
    max_iter : int, default=300
        Maximum number of Lloyd iterations per run.
    tol : float, default=1e-4
        Relative tolerance: stop when the squared center shift summed over clusters is
        at most ``tol`` times the mean of the per-feature variances of the (global) data.
    verbose : int, default=0
        Print one line per iteration on rank 0 (inertia, center shift, seconds split into
        compute and communication).
    random_state : int or None, default=None
        Seed. The same seed, data and rank count give bit-identical centers; None draws
        a seed on rank 0 and shares it.
    comm : mpi4py communicator, shardlearn Context or None, default=None
        Where the ranks meet (None: ``MPI.COMM_WORLD``).
    oversampling_factor : float, default=2.0
        k-means||: candidates drawn per round = ``oversampling_factor * k`` in expectation.
    init_rounds : int, default=5
        k-means||: number of sampling rounds.
    chunk_rows : int or None, default=None
        Rows per chunk of the distance computation (None: sized so the temporaries take
        about 2 MiB).

    Attributes
    ----------
    cluster_centers_ : ndarray (k, d)
        Centers, in the data's dtype, identical on every rank.
    labels_ : ndarray (n_local,) int32
        Cluster of each of this rank's rows.
    inertia_ : float
        Sum of squared distances of all rows (all ranks) to their centers.
    n_iter_ : int
        Lloyd iterations run (by the best run).
    n_features_in_ : int
    init_seconds_ : float
        Seconds spent in initialisation (best run).
    iteration_log_ : list of dict
        Per iteration: inertia, center shift, seconds, communication seconds.
    """

    def __init__(self, n_clusters=8, *, init="k-means++", n_init=1, max_iter=300, tol=1e-4,
                 verbose=0, random_state=None, comm=None, oversampling_factor=2.0,
                 init_rounds=5, chunk_rows=None):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.random_state = random_state
        self.comm = comm
        self.oversampling_factor = oversampling_factor
        self.init_rounds = init_rounds
        self.chunk_rows = chunk_rows

    # ---------------------------------------------------------------- sklearn API
    def __repr__(self):
        defaults = inspect.signature(type(self).__init__).parameters
        changed = [f"{k}={v!r}" for k, v in self.get_params().items()
                   if not (isinstance(v, np.ndarray) or v is defaults[k].default or
                           (not isinstance(defaults[k].default, np.ndarray) and v == defaults[k].default))]
        return f"KMeans({', '.join(changed)})"

    # ------------------------------------------------------------------- checks
    def _check_params(self):
        k = self.n_clusters
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise ShardlearnError(f"n_clusters must be a positive integer, got {k!r}")
        for name, lo in (("max_iter", 1), ("n_init", 1), ("init_rounds", 1)):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
                raise ShardlearnError(f"{name} must be an integer >= {lo}, got {v!r}")
        if not (isinstance(self.tol, (int, float, np.floating)) and self.tol >= 0):
            raise ShardlearnError(f"tol must be a number >= 0, got {self.tol!r}")
        if not (isinstance(self.oversampling_factor, (int, float, np.floating))
                and self.oversampling_factor > 0):
            raise ShardlearnError(f"oversampling_factor must be > 0, got {self.oversampling_factor!r}")
        if self.random_state is not None and not isinstance(self.random_state, (int, np.integer)):
            raise ShardlearnError("random_state must be an int or None "
                                  f"(got {type(self.random_state).__name__})")
        init = self.init
        if isinstance(init, str) and init not in INITS and not os.path.exists(init):
            raise ShardlearnError(f"init must be one of {', '.join(INITS)}, an array of centers or "
                                  f"an HDF5 file of centers; {init!r} is none of these")

    def _ctx(self):
        from ...runtime import context_from

        return context_from(self.comm)

    def _prepare(self, ctx, X):
        """Validate collectively; return (local X in the agreed dtype, _Local-less facts)."""
        with ctx.collective_errors():
            self._check_params()
            X = np.asarray(X)
            if X.ndim != 2:
                raise ShardlearnError(f"X must be 2-D (rows x features); rank {ctx.rank} passed "
                                      f"an array of shape {X.shape}")
            if X.dtype.kind not in "fiub":
                raise ShardlearnError(f"X must hold numbers; rank {ctx.rank} passed dtype {X.dtype}")
            if X.dtype.kind == "f":
                step = 65536
                bad = sum(int((~np.isfinite(X[i:i + step])).any(axis=1).sum())
                          for i in range(0, X.shape[0], step))
                if bad:
                    raise ShardlearnError(
                        f"X holds NaN or infinite values in {bad} rows on rank {ctx.rank}; k-means "
                        "needs finite values: impute or drop those rows first")
        meta = ctx.coll.allgather_obj((int(X.shape[0]), int(X.shape[1]), X.dtype.str))
        sizes = [m[0] for m in meta]
        n_total = sum(sizes)
        widths = {m[1] for m in meta if m[0] > 0}
        error = None
        if n_total == 0:
            error = "X has no rows on any rank: nothing to cluster"
        elif len(widths) > 1:
            error = ("ranks passed different numbers of features: "
                     + ", ".join(f"rank {r}: {m[1]}" for r, m in enumerate(meta)))
        elif self.n_clusters > n_total:
            error = (f"n_clusters={self.n_clusters} is larger than the number of rows "
                     f"({n_total} over {ctx.size} ranks): choose k <= n")
        ctx.agree(error)
        d = widths.pop()
        if X.shape[0] == 0 and X.shape[1] != d:
            X = np.empty((0, d), dtype=X.dtype)
        all_f32 = all(np.dtype(m[2]) == np.float32 for m in meta)
        dtype = np.dtype(np.float32 if all_f32 else np.float64)
        X = np.ascontiguousarray(X, dtype=dtype)
        offset = sum(sizes[:ctx.rank])
        return X, offset, n_total

    def _initial_centers(self, ctx):
        """Centers given by the user (array or file), as float64 (k x d), on every rank."""
        init = self.init
        if isinstance(init, str) and init in INITS:
            return None
        if isinstance(init, (str, os.PathLike)):
            centers, error = None, None
            if ctx.rank == 0:
                try:
                    centers = _read_centers_file(str(init))
                except ShardlearnError as exc:
                    error = str(exc)
            ctx.agree(error)
            return ctx.coll.bcast_obj(centers, root=0)
        return np.array(init, dtype=np.float64)

    # ---------------------------------------------------------------------- fit
    def fit(self, X, y=None):
        """Cluster the rows of all ranks (collective: every rank calls it with its rows).

        Parameters
        ----------
        X : array-like (n_local, d)
            This rank's rows (may be empty). float32 stays float32 for distances; sums are
            accumulated in float64.
        y : ignored

        Returns
        -------
        self
        """
        ctx = self._ctx()
        X, offset, n_total = self._prepare(ctx, X)
        k = int(self.n_clusters)
        d = X.shape[1]
        given = self._initial_centers(ctx)
        error = None
        if given is not None:
            if given.shape != (k, d):
                error = f"initial centers have shape {given.shape}; expected (n_clusters, n_features) = ({k}, {d})"
            elif not np.isfinite(given).all():
                error = "initial centers hold NaN or infinite values"
        ctx.agree(error)
        seed = self.random_state
        if seed is None:
            seed = ctx.coll.bcast_obj(int(np.random.SeedSequence().entropy % (2 ** 63)) if ctx.rank == 0 else None)
        rng = np.random.default_rng(int(seed))

        # global mean (for centring) and mean feature variance (for tol): two reductions
        chunk = _chunk_rows(d, k, X.dtype.itemsize, self.chunk_rows)
        s = np.zeros(d)
        for i in range(0, X.shape[0], 65536):
            s += X[i:i + 65536].sum(axis=0, dtype=np.float64)
        mean = ctx.coll.allreduce(s) / n_total
        data = _Local(X, mean, offset, n_total, chunk)
        sq = np.zeros(d)
        for lo, hi in data.chunks():
            xc = X[lo:hi] - mean
            sq += np.einsum("ij,ij->j", xc, xc)
        var = ctx.coll.allreduce(sq) / n_total
        tol = float(np.mean(var) * self.tol) if self.tol else 0.0
        self._total_ss = float(var.sum() * n_total)
        # Centre rows chunk by chunk only where it buys accuracy: when the mean is large
        # next to the spread, the GEMM form loses digits to cancellation (scikit-learn
        # always centres for this reason). Otherwise skip that pass (see _lloyd_pass).
        data.centre_rows = bool(float(mean @ mean) > float(var.sum()))

        n_init = int(self.n_init)
        if given is not None and n_init != 1:
            if ctx.rank == 0:
                ctx.warn(f"explicit initial centers given: running n_init=1 instead of {n_init}")
            n_init = 1
        best = None
        labels = np.empty(X.shape[0], dtype=np.int32)
        for run in range(n_init):
            t0 = time.perf_counter()
            centers = self._init_run(ctx, data, k, rng, given)
            t_init = time.perf_counter() - t0
            labels.fill(-1)
            centers, inertia, n_iter, log = self._lloyd_threads(ctx, data, centers, labels, tol)
            if best is None or inertia < best[1]:
                best = (centers, inertia, n_iter, labels.copy() if n_init > 1 else labels, log, t_init)
        centers, inertia, n_iter, labels, log, t_init = best
        self.cluster_centers_ = (centers + data.mean_t.astype(np.float64)).astype(X.dtype)
        self.labels_ = labels
        self.inertia_ = float(inertia)
        self.n_iter_ = int(n_iter)
        self.n_features_in_ = d
        self.init_seconds_ = t_init
        self.iteration_log_ = log
        self.n_rows_total_ = n_total
        self._dtype = X.dtype
        return self

    def _init_run(self, ctx, data, k, rng, given):
        if given is not None:
            return given - data.mean_t.astype(np.float64)
        try:
            return self._init_draw(ctx, data, k, rng)
        finally:
            data._xx = None  # the row norms are for the init passes only

    def _init_draw(self, ctx, data, k, rng):
        with ctx.timers.phase("init"):
            if self.init == "random":
                ids = np.sort(rng.choice(data.n_total, size=k, replace=False))
                return _fetch_rows(ctx, data, ids)
            if self.init == "k-means||":
                centers = _init_kmeans_parallel(ctx, data, k, rng, int(self.init_rounds),
                                                float(self.oversampling_factor))
                if centers is not None:
                    return centers
                self._log(ctx, "k-means||: fewer than k distinct candidates; using k-means++")
            return _init_kmeanspp(ctx, data, k, rng)

    def _lloyd_threads(self, ctx, data, centers, labels, tol):
        """Run :meth:`_lloyd` with this rank's threads on row blocks, BLAS single-threaded."""
        data.threads = max(1, int(getattr(ctx, "threads", 1) or 1))
        if data.threads == 1:
            return self._lloyd(ctx, data, centers, labels, tol)
        from threadpoolctl import threadpool_limits

        try:
            with threadpool_limits(limits=1, user_api="blas"):
                return self._lloyd(ctx, data, centers, labels, tol)
        finally:
            data.close()

    def _log(self, ctx, msg):
        ctx.log(msg, verbose=bool(self.verbose))

    def _lloyd(self, ctx, data, centers, labels, tol):
        """Lloyd iterations from ``centers`` (centred float64); sklearn's stopping rule."""
        k, d = centers.shape
        buf = np.empty(k * d + k + 1)
        strict = False
        log = []
        n_iter = 0
        for it in range(int(self.max_iter)):
            t0, c0 = time.perf_counter(), ctx.coll.comm_seconds
            with ctx.timers.phase("compute"):
                _lloyd_pass(data, centers, labels, buf)
            tot = ctx.coll.allreduce(buf)  # THE collective of the iteration
            with ctx.timers.phase("compute"):
                sums = tot[:k * d].reshape(k, d)
                counts = tot[k * d:k * d + k].copy()
                changed = int(tot[-1])
                used = centers.astype(data.dtype).astype(np.float64)
                inertia = _inertia_from_sums(self._total_ss, used, sums, counts)
            if (counts == 0).any():
                _relocate_empty(ctx, data, used, labels, sums, counts)
            new = centers.copy()
            filled = counts > 0
            new[filled] = sums[filled] / counts[filled, None]
            shift = float(((new - used) ** 2).sum())
            centers = new
            n_iter = it + 1
            dt, dc = time.perf_counter() - t0, ctx.coll.comm_seconds - c0
            log.append({"iter": n_iter, "inertia": inertia, "center_shift": shift,
                        "changed": changed, "seconds": dt, "comm_seconds": dc})
            self._log(ctx, f"kmeans iter {n_iter:3d}  inertia {inertia:.8g}  center shift² "
                           f"{shift:.3g} (tol {tol:.3g})  labels changed {changed}  "
                           f"{dt:.3f}s (compute {dt - dc:.3f}s, comm {dc:.4f}s)")
            if changed == 0:
                strict = True
                break
            if shift <= tol:
                break
        t0 = time.perf_counter()
        with ctx.timers.phase("compute"):
            local = _assign(data, centers, labels, relabel=not strict)
        inertia = float(ctx.coll.allreduce(np.array([local]))[0])
        self._log(ctx, f"kmeans {'converged (labels stable)' if strict else 'stopped'} after "
                       f"{n_iter} iterations: inertia {inertia:.8g} ({time.perf_counter() - t0:.3f}s final pass)")
        return centers, inertia, n_iter, log

    # ------------------------------------------------------------------ inference
    def _check_fitted(self):
        if not hasattr(self, "cluster_centers_"):
            raise ShardlearnError("this KMeans is not fitted yet: call fit first")

    def _local_X(self, X):
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.cluster_centers_.shape[1]:
            raise ShardlearnError(f"X has shape {X.shape}; expected (n, {self.cluster_centers_.shape[1]})")
        dt = self.cluster_centers_.dtype
        return np.ascontiguousarray(X, dtype=dt if X.dtype != np.float64 or dt == np.float64 else X.dtype)

    def _nearest(self, X):
        """(labels int32, squared distance float64) of local rows; no communication."""
        self._check_fitted()
        X = self._local_X(X)
        c = self.cluster_centers_.astype(X.dtype)
        c_neg2_t = np.ascontiguousarray((-2.0 * c).T)
        cc = np.einsum("ij,ij->i", c, c)
        labels = np.empty(X.shape[0], dtype=np.int32)
        d2 = np.empty(X.shape[0])
        step = _chunk_rows(X.shape[1], c.shape[0], X.dtype.itemsize, self.chunk_rows)
        kernels = compiled_kernels(KERNELS)
        label = _Labeler(kernels, c_neg2_t, cc, step) if kernels is not None else None
        for i in range(0, X.shape[0], step):
            xs = X[i:i + step]
            if label is not None:
                lab = labels[i:i + step]
                label(xs, lab)
            else:
                dist = xs @ c_neg2_t
                dist += cc
                lab = dist.argmin(axis=1)
                labels[i:i + step] = lab
            diff = xs - c[lab]
            d2[i:i + step] = np.einsum("ij,ij->i", diff, diff)
        return labels, d2

    def predict(self, X):
        """Index of the nearest center for each local row (int32; no communication)."""
        return self._nearest(X)[0]

    def fit_predict(self, X, y=None):
        """Fit, then return this rank's labels."""
        return self.fit(X).labels_

    def transform(self, X):
        """Euclidean distances (n_local x k) of local rows to every center (no communication)."""
        self._check_fitted()
        X = self._local_X(X)
        c = self.cluster_centers_.astype(X.dtype)
        out = np.empty((X.shape[0], c.shape[0]), dtype=X.dtype)
        step = _chunk_rows(X.shape[1], c.shape[0], X.dtype.itemsize, self.chunk_rows)
        cc = np.einsum("ij,ij->i", c, c)
        for i in range(0, X.shape[0], step):
            xs = X[i:i + step]
            dist = xs @ (-2.0 * c).T
            dist += cc
            dist += np.einsum("ij,ij->i", xs, xs)[:, None]
            np.maximum(dist, 0, out=dist)
            out[i:i + step] = np.sqrt(dist)
        return out

    def fit_transform(self, X, y=None):
        return self.fit(X).transform(X)

    # --------------------------------------------------------- model files, CLI
    _model_name = "kmeans"
    evaluate_needs_y = False

    def to_model(self) -> tuple[dict, dict, dict]:
        """(arrays, params, info) for :func:`shardlearn.models.io.save_estimator`."""
        self._check_fitted()
        info = {"n_iter": getattr(self, "n_iter_", None), "inertia": getattr(self, "inertia_", None),
                "init_seconds": getattr(self, "init_seconds_", None)}
        return {"cluster_centers": self.cluster_centers_}, self.model_params(), info

    @classmethod
    def from_model(cls, arrays, params, info, comm=None) -> "KMeans":
        """The fitted estimator a model file describes (see :mod:`shardlearn.models.io`)."""
        if "cluster_centers" not in arrays:
            raise KeyError("no 'cluster_centers' in this k-means model file")
        # init may name a file of the training machine: it is not needed to predict
        est = cls(**{k: v for k, v in params.items() if k in cls.param_names() and k not in ("init", "comm")},
                  comm=comm)
        est.cluster_centers_ = np.asarray(arrays["cluster_centers"])
        est.n_features_in_ = est.cluster_centers_.shape[1]
        return est

    @property
    def data_options(self) -> dict:
        """How to read data to apply the model to: in the centers' dtype."""
        return {"dtype": self.cluster_centers_.dtype}

    def predict_columns(self, X) -> dict:
        """``labels`` (int64) and ``distance`` to the nearest center, per local row."""
        labels, d2 = self._nearest(X)
        return {"labels": labels.astype(np.int64), "distance": np.sqrt(d2)}

    def evaluate(self, X, y=None) -> dict:
        """Inertia, mean squared distance and cluster sizes over all ranks (collective)."""
        ctx = self._ctx()
        with ctx.collective_errors():
            labels, d2 = self._nearest(X)
        k = self.cluster_centers_.shape[0]
        local = np.concatenate((np.bincount(labels, minlength=k).astype(np.float64), [d2.sum()]))
        tot = ctx.coll.allreduce(local)
        sizes = tot[:k].astype(np.int64)
        return {"inertia": float(tot[k]), "mean_sq_distance": float(tot[k] / max(1, sizes.sum())),
                "cluster_sizes": sizes.tolist()}

    def score(self, X, y=None):
        """Minus the inertia of all ranks' rows (collective: every rank calls it)."""
        ctx = self._ctx()
        with ctx.collective_errors():
            _, d2 = self._nearest(X)
        return -float(ctx.coll.allreduce(np.array([d2.sum()]))[0])


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
    k = centers_old.shape[0]
    c = centers_old.astype(data.dtype)
    dist = np.empty(data.n)
    for lo, hi in data.chunks():
        xc = data.X[lo:hi] - data.mean_t
        lab = np.clip(labels[lo:hi], 0, k - 1)
        diff = xc - c[lab]
        dist[lo:hi] = np.einsum("ij,ij->i", diff, diff)
    top = np.argpartition(-dist, m - 1)[:m] if data.n > m else np.arange(data.n)
    rows = np.empty((len(top), 3 + data.d))
    rows[:, 0] = dist[top]
    rows[:, 1] = data.offset + top
    rows[:, 2] = labels[top]
    rows[:, 3:] = data.X[top].astype(np.float64) - data.mean_t
    every = ctx.coll.allgather(rows)
    order = np.lexsort((every[:, 1], -every[:, 0]))[:m]
    for cluster, row in zip(empty, every[order]):
        old = int(row[2])
        x = row[3:]
        sums[old] -= x
        sums[cluster] = x
        counts[cluster] = 1.0
        counts[old] -= 1.0
