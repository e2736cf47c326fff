"""k-means on the device: every pass over the rows with the array module ``xp`` (CuPy on a
GPU; NumPy under ``SHARDLEARN_FAKE_GPU=1``, which is how CI runs these lines).

:class:`DeviceRows` stands in for :class:`._data._Local` when the fit computes on the
device: the rank's rows live on the GPU (moved once, in chunks, float32 stays float32),
and the Lloyd pass, the final assignment, empty-cluster relocation and the
initialisations (k-means++, k-means||, random) run there; only the collectives' small
buffers (sums, counts, candidate rows) come to the host.

One Lloyd pass per row chunk (rows sized to a device-memory budget, so k x n never has
to fit at once): cuBLAS computes ``X_c @ (-2 C)^T`` (a GEMM, in the data's dtype), then
one fused kernel (:data:`KERNEL_SOURCE`, ``lloyd_accumulate``) takes each row's argmin
over ``dist + ‖c‖²``, counts changed labels and adds the row, centred, to its cluster's
sums. The sums are **fixed-point int64**: each centred value is scaled by a power of
two per feature (:func:`fixed_scales`, chosen from the global range of the feature and
the global row count so no sum can overflow) and rounded once. Integer additions are
exact, so the GPU's atomics give the same bits in any order, the packed int64 allreduce
of ``[sums, counts, changed]`` is exact too, and the fit does not depend on thread
scheduling (nor on P, beyond the labels). The resolution is ``2^-37`` of a feature's
range at 10^7 rows, far below float32's: the centers equal the CPU path's within float
tolerance (``tests/test_gpu_kmeans.py``: 1e-6 relative for float64 data).

Kernels and how CI covers them: :func:`lloyd_accumulate` runs the CUDA kernel on CuPy
arrays and :func:`lloyd_accumulate_reference` (plain NumPy, the same arithmetic: the
subtraction in the data's dtype, then ``rint(v * scale)`` in float64, ties of the argmin
to the lowest index, NaN distances never winning) on NumPy arrays. CI runs the whole
device path with the reference and compares it with the CPU path;
``tests/test_gpu_kernels.py`` compares kernel and reference bit for bit on a GPU
(random inputs, one row, an empty chunk, every row in one cluster, NaN distances). CI also runs the CUDA C source itself: the test compiles
:data:`KERNEL_SOURCE` with the host C compiler against a small emulation of the CUDA
built-ins (atomics, shared memory, thread and block indices) and runs it one thread per
block, every block in turn, on the same cases, bit for bit against the reference; only
the interleaving of the parallel atomics is not exercised, and integer sums do not
depend on it.
"""
from __future__ import annotations

import numpy as np

from ... import rng as _rng
from ._data import _chunk_rows
from ._exact import SUM_BITS, add_fixed_rows
from ._exact import fixed_scales as _fixed_scales
from ._init import _d2_targets_here

#: device bytes per chunk of the Lloyd pass (distances + centred rows), at most
DEVICE_CHUNK_BYTES = 512 << 20
#: bits of headroom: |fixed sums| stay below 2^FIXED_BITS for any number of rows summed
FIXED_BITS = SUM_BITS

# One source, compiled for float and double. Each thread takes rows i, i + grid, ...;
# per-block accumulators live in shared memory (when k*d + k + 1 int64 fit) and are added
# to the global buffer once per block. All additions are on int64 (as unsigned: two's
# complement wrap-around makes that the signed sum), so their order does not matter.
KERNEL_SOURCE = r"""
#define DEFINE_LLOYD(NAME, T, INF)                                                        \
extern "C" __global__ void NAME(const T* __restrict__ X, const T* __restrict__ mean,      \
        const T* __restrict__ dist, const T* __restrict__ cc,                             \
        const double* __restrict__ scale, int* __restrict__ labels,                      \
        unsigned long long* __restrict__ out, long long r, int k, int d, int use_shared)  \
{                                                                                        \
    extern __shared__ unsigned long long sh[];                                           \
    const long long cells = (long long)k * d + k + 1;                                    \
    unsigned long long* acc = use_shared ? sh : out;                                     \
    if (use_shared) {                                                                    \
        for (long long c = threadIdx.x; c < cells; c += blockDim.x) sh[c] = 0ULL;        \
        __syncthreads();                                                                 \
    }                                                                                    \
    const long long step = (long long)gridDim.x * blockDim.x;                            \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < r; i += step) { \
        const T* di = dist + i * k;                                                      \
        int best = 0;                                                                    \
        T bv = INF;                                                                      \
        for (int j = 0; j < k; ++j) {                                                    \
            T v = di[j] + cc[j];                                                         \
            if (v < bv) { bv = v; best = j; }                                            \
        }                                                                                \
        if (labels[i] != best) atomicAdd(&acc[cells - 1], 1ULL);                         \
        labels[i] = best;                                                                \
        atomicAdd(&acc[(long long)k * d + best], 1ULL);                                  \
        const T* xi = X + i * d;                                                         \
        unsigned long long* s = acc + (long long)best * d;                               \
        for (int j = 0; j < d; ++j) {                                                    \
            T c = xi[j] - mean[j];                                                       \
            long long q = llrint((double)c * scale[j]);                                  \
            if (q != 0) atomicAdd(&s[j], (unsigned long long)q);                         \
        }                                                                                \
    }                                                                                    \
    if (use_shared) {                                                                    \
        __syncthreads();                                                                 \
        for (long long c = threadIdx.x; c < cells; c += blockDim.x)                      \
            if (sh[c] != 0ULL) atomicAdd(&out[c], sh[c]);                                \
    }                                                                                    \
}
DEFINE_LLOYD(lloyd_accumulate_f32, float, __int_as_float(0x7f800000))
DEFINE_LLOYD(lloyd_accumulate_f64, double, __longlong_as_double(0x7ff0000000000000LL))
"""

_MODULE = None
SHARED_LIMIT = 48 * 1024  # bytes of dynamic shared memory a block may take without opt-in
THREADS = 256


def _kernel(dtype):
    global _MODULE
    import cupy

    if _MODULE is None:
        _MODULE = cupy.RawModule(code=KERNEL_SOURCE)
    return _MODULE.get_function("lloyd_accumulate_f32" if dtype == np.float32 else "lloyd_accumulate_f64")


# ----------------------------------------------------------------------------- the kernel
def fixed_scales(bound, n_total: int) -> np.ndarray:
    """Per feature, the power of two that maps centred values to int64 fixed point.

    ``bound`` (d) bounds |x - mean| over all ranks' rows; with ``n_total`` rows no sum of
    scaled values can reach 2^62 (one more bit spare for the rounding of each value).
    """
    return _fixed_scales(bound, n_total, value_bits=None)  # the kernel rounds with llrint: no cap


def lloyd_accumulate_reference(X, mean_t, dist, cc, scale, labels, out) -> None:
    """The fused kernel in NumPy: labels (in place) and ``out`` += packed int64
    ``[fixed-point sums (k*d), counts (k), changed labels (1)]``."""
    r, d = X.shape
    k = cc.shape[0]
    if r == 0:
        return
    tot = dist + cc                       # in the distances' dtype, as the kernel
    tot = np.where(np.isnan(tot), np.inf, tot)  # NaN never wins (v < best is false)
    lab = tot.argmin(axis=1).astype(np.int32)   # first minimum: the lowest index
    out[-1] += int(np.count_nonzero(labels != lab))
    labels[:] = lab
    out[k * d:k * d + k] += np.bincount(lab, minlength=k)
    c = np.subtract(X, mean_t, dtype=X.dtype)
    q = np.rint(c.astype(np.float64) * scale).astype(np.int64)
    add_fixed_rows(q, lab, k, out[:k * d].reshape(k, d))


def lloyd_accumulate(X, mean_t, dist, cc, scale, labels, out) -> None:
    """Labels and packed fixed-point sums of one chunk: the CUDA kernel on CuPy arrays,
    :func:`lloyd_accumulate_reference` on NumPy arrays (same results, bit for bit)."""
    if isinstance(X, np.ndarray):
        lloyd_accumulate_reference(X, mean_t, dist, cc, scale, labels, out)
        return
    r, d = X.shape
    k = cc.shape[0]
    if r == 0:
        return
    cells = k * d + k + 1
    shared = cells * 8 <= SHARED_LIMIT
    blocks = int(min(-(-r // THREADS), 2048))
    fn = _kernel(X.dtype)
    fn((blocks,), (THREADS,), (X, mean_t, dist, cc, scale, labels, out.view(np.uint64), np.int64(r),
                                np.int32(k), np.int32(d), np.int32(1 if shared else 0)),
       shared_mem=cells * 8 if shared else 0)


# ------------------------------------------------------------------------- the rows
class DeviceRows:
    """This rank's rows on the device plus the global facts every pass needs (the device
    twin of :class:`._data._Local`)."""

    device = True

    def __init__(self, xp, X, mean, offset, n_total, chunk):
        self.xp = xp
        self.X = X
        self.n, self.d = X.shape
        self.dtype = X.dtype
        self.mean = mean                                   # float64 host (d,)
        self.mean_t = mean.astype(X.dtype)                 # host, X's dtype
        self.mean_dev = xp.asarray(self.mean_t)            # device, X's dtype
        self.offset = offset
        self.n_total = n_total
        self.chunk = chunk
        self.centre_rows = True
        self.threads = 1
        self.kernels = None
        self.scale = None                                  # set by set_bounds
        self._xx = None

    # the estimator's thread plumbing: the GPU needs none
    def close(self):
        pass

    def chunks(self):
        for i in range(0, self.n, self.chunk):
            yield i, min(self.n, i + self.chunk)

    def set_bounds(self, bound) -> None:
        """The fixed-point scales from the global bound of |x - mean| per feature."""
        self.scale_host = fixed_scales(bound, self.n_total)
        self.scale = self.xp.asarray(self.scale_host)

    def centred64(self, lo, hi):
        return self.X[lo:hi].astype(np.float64) - self.xp.asarray(self.mean_t.astype(np.float64))

    def sqnorms(self):
        if self._xx is None:
            xp = self.xp
            self._xx = xp.empty(self.n)
            for lo, hi in self.chunks():
                xc = self.centred64(lo, hi)
                self._xx[lo:hi] = (xc * xc).sum(axis=1)
        return self._xx

    # ----------------------------------------------------------- Lloyd
    def lloyd_pass(self, centers, labels):
        """One E-step and local M-step: labels in place; returns the packed int64
        ``[fixed-point centred sums (k*d), counts (k), changed (1)]`` (host)."""
        xp = self.xp
        k, d = centers.shape
        dt = self.dtype
        c = centers.astype(dt)
        c_neg2_t = xp.asarray(np.ascontiguousarray((-2.0 * c).T))
        c64 = c.astype(np.float64)
        cc64 = np.einsum("ij,ij->i", c64, c64)
        if not self.centre_rows:
            cc64 = cc64 + 2.0 * (c64 @ self.mean_t.astype(np.float64))
        cc = xp.asarray(cc64.astype(dt))
        out = xp.zeros(k * d + k + 1, dtype=np.int64)
        rows = min(self.chunk, self.n)
        dist = xp.empty((max(rows, 1), k), dtype=dt)
        xbuf = xp.empty((max(rows, 1), d), dtype=dt) if self.centre_rows else None
        for lo, hi in self.chunks():
            xs = self.X[lo:hi]
            xg = xs
            if self.centre_rows:
                xg = xbuf[:hi - lo]
                xp.subtract(xs, self.mean_dev, out=xg)
            dc = dist[:hi - lo]
            xp.matmul(xg, c_neg2_t, out=dc)
            lloyd_accumulate(xs, self.mean_dev, dc, cc, self.scale, labels[lo:hi], out)
        return _host(out)

    def unpack(self, tot, k, d) -> np.ndarray:
        """The reduced int64 buffer as the CPU path's float64 ``[sums, counts, changed]``."""
        tot = np.asarray(tot)
        buf = tot.astype(np.float64)
        buf[:k * d] = (tot[:k * d].reshape(k, d) / self.scale_host).ravel()
        return buf

    def assign(self, centers, labels, relabel: bool) -> float:
        """Local exact inertia (float64); relabel first if asked."""
        xp = self.xp
        dt = self.dtype
        c = xp.asarray(centers.astype(dt))
        c_neg2_t = xp.ascontiguousarray((-2.0 * c).T)
        cc = (c * c).sum(axis=1)
        total = 0.0
        for lo, hi in self.chunks():
            xc = self.X[lo:hi] - self.mean_dev
            if relabel:
                dist = xc @ c_neg2_t
                dist += cc
                labels[lo:hi] = dist.argmin(axis=1)
            diff = xc - c[labels[lo:hi]]
            total += float((diff * diff).sum(axis=1).sum(dtype=np.float64))
        return total

    def farthest(self, centers_old, labels, m):
        """The ``m`` local rows farthest from their centers: (m' x (3 + d)) host rows of
        [distance, global row, label, centred row] for :func:`._lloyd._relocate_empty`."""
        xp = self.xp
        k = centers_old.shape[0]
        c = xp.asarray(centers_old.astype(self.dtype))
        dist = xp.empty(self.n, dtype=self.dtype)
        for lo, hi in self.chunks():
            diff = self.X[lo:hi] - self.mean_dev - c[xp.clip(labels[lo:hi], 0, k - 1)]
            dist[lo:hi] = (diff * diff).sum(axis=1)
        top = xp.argpartition(-dist, m - 1)[:m] if self.n > m else xp.arange(self.n)
        rows = np.empty((int(top.shape[0]), 3 + self.d))
        rows[:, 0] = _host(dist[top])
        rows[:, 1] = self.offset + _host(top)
        rows[:, 2] = _host(labels[top])
        rows[:, 3:] = _host(self.X[top].astype(np.float64)) - self.mean_t
        return rows

    # -------------------------------------------------------- initialisation
    def rows64(self, local_ids) -> np.ndarray:
        """Centred float64 host rows of the given local indices."""
        ids = self.xp.asarray(np.asarray(local_ids, dtype=np.int64))
        return _host(self.X[ids].astype(np.float64)) - self.mean_t

    def dist_blocks(self, cands):
        """Yield (lo, hi, squared distances (device float64) of rows [lo, hi) to the
        centred float64 host rows ``cands``), as ``_init._dist_blocks``."""
        xp = self.xp
        c = xp.asarray(cands)
        cc = (c * c).sum(axis=1)
        xx = self.sqnorms()
        for lo, hi in self.chunks():
            dist = self.centred64(lo, hi) @ (-2.0 * c).T
            dist += cc
            dist += xx[lo:hi, None]
            xp.maximum(dist, 0.0, out=dist)
            yield lo, hi, dist


def _host(a) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    return a.get()


def device_chunk_rows(xp, d: int, k: int, itemsize: int, chunk_rows=None) -> int:
    """Rows per chunk of the device passes: the distance block and the centred rows stay
    within :data:`DEVICE_CHUNK_BYTES` and a quarter of the free device memory. With NumPy
    as ``xp`` (tests) the CPU path's chunk size."""
    if chunk_rows:
        return max(1, int(chunk_rows))
    if xp is np:
        return _chunk_rows(d, k, itemsize)
    free = int(xp.cuda.runtime.memGetInfo()[0])
    budget = max(1 << 20, min(DEVICE_CHUNK_BYTES, free // 4))
    return max(256, budget // max(1, (d + k) * max(itemsize, 8)))


# ------------------------------------------------------------------ fit-level passes
def moments(ctx, X, n_total):
    """Global mean, per-feature variance and the bound of |x - mean| (for the fixed-point
    scales): the CPU path's two allreduces, plus one of the per-feature extremes."""
    xp = ctx_xp(X)
    d = X.shape[1]
    step = 1 << 20
    s = xp.zeros(d)
    for i in range(0, X.shape[0], step):
        s += X[i:i + step].sum(axis=0, dtype=np.float64)
    mean = ctx.coll.allreduce(_host(s)) / n_total
    m = xp.asarray(mean)
    sq = xp.zeros(d)
    ext = np.full(2 * d, -np.inf)
    for i in range(0, X.shape[0], step):
        xc = X[i:i + step].astype(np.float64) - m
        sq += (xc * xc).sum(axis=0)
    if X.shape[0]:
        ext[:d] = _host(X.max(axis=0).astype(np.float64))
        ext[d:] = -_host(X.min(axis=0).astype(np.float64))
    var = ctx.coll.allreduce(_host(sq)) / n_total
    ext = ctx.coll.allreduce(ext, op="max")
    # |x - m| computed in X's dtype can exceed the exact distance by an ulp: a margin
    bound = np.maximum(ext[:d] - mean, ext[d:] + mean) * (1 + 1e-6) + 1e-300
    return mean, var, bound


def device_rows(ctx, xp, X, offset, n_total, k, chunk_rows, state):
    """(mean, var, :class:`DeviceRows`) of a device fit; a resumed fit keeps the saved
    mean and variances (the same coordinates and tolerance)."""
    mean, var, bound = moments(ctx, X, n_total)
    if state is not None:
        mean = np.asarray(state["mean"], dtype=np.float64)
        var = np.asarray(state["var"], dtype=np.float64)
    d = X.shape[1]
    data = DeviceRows(xp, X, mean, offset, n_total, device_chunk_rows(xp, d, k, X.dtype.itemsize, chunk_rows))
    data.set_bounds(bound)
    return mean, var, data


def ctx_xp(X):
    from ...backend import array_module

    return array_module(X)


def init_kmeanspp(ctx, data: DeviceRows, k, rng):
    """Greedy k-means++ as ``_init._init_kmeanspp``, the distances on the device."""
    xp = data.xp
    trials = 2 + int(np.log(k))
    centers = np.empty((k, data.d))
    centers[0] = fetch_rows(ctx, data, [int(rng.integers(data.n_total))])[0]
    closest = xp.empty(data.n)
    for lo, hi, dist in data.dist_blocks(centers[:1]):
        closest[lo:hi] = dist[:, 0]
    pot = float(ctx.coll.allreduce(np.array([float(closest.sum())]))[0])
    for c in range(1, k):
        targets = rng.uniform(size=trials) * pot
        cands = d2_draw(ctx, data, closest, targets)
        pots = xp.zeros(trials)
        stored = xp.empty((data.n, trials))
        for lo, hi, dist in data.dist_blocks(cands):
            xp.minimum(dist, closest[lo:hi, None], out=dist)
            pots += dist.sum(axis=0)
            stored[lo:hi] = dist
        pots = ctx.coll.allreduce(_host(pots))
        best = int(np.argmin(pots))
        pot = float(pots[best])
        closest[:] = stored[:, best]
        centers[c] = cands[best]
    return centers


def d2_draw(ctx, data: DeviceRows, closest, targets) -> np.ndarray:
    """Global rows at cumulative D² positions ``targets`` (``_init._d2_draw``'s owner rule;
    the local search runs on the device's cumulative sum)."""
    xp = data.xp
    csum = xp.cumsum(closest) if data.n else xp.zeros(0)
    total = float(csum[-1]) if data.n else 0.0
    mine, pos = _d2_targets_here(ctx, total, data.n, targets)
    buf = np.zeros((len(targets), data.d))
    if mine:
        ids = _host(xp.searchsorted(csum, xp.asarray(np.where(np.isinf(pos), 0.0, pos))))
        ids = np.where(np.isinf(pos), data.n - 1, np.minimum(ids, data.n - 1))
        buf[mine] = data.rows64(ids)
    return ctx.coll.allreduce(buf)


def fetch_rows(ctx, data: DeviceRows, global_ids) -> np.ndarray:
    """``_init._fetch_rows`` on device rows: centred float64, on every rank."""
    ids = np.asarray(global_ids, dtype=np.int64)
    buf = np.zeros((len(ids), data.d))
    mine = (ids >= data.offset) & (ids < data.offset + data.n)
    if mine.any():
        buf[mine] = data.rows64(ids[mine] - data.offset)
    return ctx.coll.allreduce(buf)


def init_kmeans_parallel(ctx, data: DeviceRows, k, rng, rounds, oversampling):
    """k-means|| as ``_init._init_kmeans_parallel``: the same row-keyed coins (drawn on
    the host from the global row index, compared on the device)."""
    from ._init import _local_kmeanspp, _local_lloyd

    xp = data.xp
    seed = int(rng.integers(2 ** 62))
    ell = oversampling * k
    cands = [fetch_rows(ctx, data, [int(rng.integers(data.n_total))])]
    closest = xp.empty(data.n)
    for lo, hi, dist in data.dist_blocks(cands[0]):
        closest[lo:hi] = dist[:, 0]
    phi = float(ctx.coll.allreduce(np.array([float(closest.sum())]))[0])
    for r in range(rounds):
        if phi <= 0.0:
            break
        stream = _rng.stream_id("kmeans||", r)
        picks = []
        for lo, hi in data.chunks():
            u = xp.asarray(_rng.row_uniform(seed, stream, np.arange(data.offset + lo, data.offset + hi)))
            picks.append(lo + _host(xp.flatnonzero(u * phi < ell * closest[lo:hi])))
        pick = np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)
        new = ctx.coll.allgather(data.rows64(pick) if pick.size else np.zeros((0, data.d)))
        if new.shape[0] == 0:
            continue
        for lo, hi, dist in data.dist_blocks(new):
            xp.minimum(closest[lo:hi], dist.min(axis=1), out=closest[lo:hi])
        phi = float(ctx.coll.allreduce(np.array([float(closest.sum())]))[0])
        cands.append(new)
    cands = np.concatenate(cands)
    counts = xp.zeros(cands.shape[0])
    for _, _, dist in data.dist_blocks(cands):
        counts += xp.bincount(dist.argmin(axis=1), minlength=cands.shape[0])
    weights = ctx.coll.allreduce(_host(counts).astype(np.float64))
    keep = weights > 0
    if int(keep.sum()) < k:
        return None
    centers = np.zeros((k, data.d))
    if ctx.rank == 0:
        pts, w = cands[keep], weights[keep]
        centers = _local_lloyd(pts, w, _local_kmeanspp(pts, w, k, np.random.default_rng(seed)))
    return ctx.coll.bcast(centers, root=0)


def nearest(xp, X, centers, chunk):
    """(labels int32, squared distance float64) of rows ``X`` (device) to ``centers``."""
    c = xp.asarray(centers.astype(X.dtype))
    c_neg2_t = xp.ascontiguousarray((-2.0 * c).T)
    cc = (c * c).sum(axis=1)
    labels = xp.empty(X.shape[0], dtype=np.int32)
    d2 = xp.empty(X.shape[0])
    for i in range(0, X.shape[0], chunk):
        xs = X[i:i + chunk]
        dist = xs @ c_neg2_t
        dist += cc
        lab = dist.argmin(axis=1)
        labels[i:i + chunk] = lab
        diff = xs - c[lab]
        d2[i:i + chunk] = (diff * diff).sum(axis=1)
    return labels, d2


def predict_rows(xp, est, X, where):
    """``KMeans._nearest`` on the device: the same checks as ``_local_X`` (numbers, the
    model's width, finite), then :func:`nearest`. Device arrays back for device input."""
    from ...backend import is_device_array, to_device
    from ...errors import ShardlearnError

    on_device = is_device_array(X)
    centers = est.cluster_centers_
    if not on_device:
        X = np.asarray(X)
    width = centers.shape[1]
    if X.ndim != 2 or X.shape[1] != width:
        raise ShardlearnError(f"X has shape {X.shape}{where}; expected (n, {width})")
    if X.dtype.kind not in "fiub":
        raise ShardlearnError(f"X must hold numbers; got dtype {X.dtype}{where}")
    dt = centers.dtype
    X = to_device(xp, X, dt if X.dtype != np.float64 or dt == np.float64 else X.dtype)
    if X.dtype.kind == "f" and X.size:
        bad = int((~xp.isfinite(X)).any(axis=1).sum())
        if bad:
            raise ShardlearnError(f"X holds NaN or infinite values in {bad} rows{where}; k-means needs finite "
                                  "values: impute or drop those rows first")
    chunk = device_chunk_rows(xp, X.shape[1], centers.shape[0], X.dtype.itemsize, est.chunk_rows)
    labels, d2 = nearest(xp, X, centers, chunk)
    return (labels, d2) if on_device else (_host(labels), _host(d2))
