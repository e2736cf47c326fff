"""This rank's rows as every pass sees them: :class:`_Local` (the row block, the global
mean, centring, chunking, thread blocks, squared norms) and the chunk size.

The bottom of the package: it imports nothing from the other k-means modules.
"""
from __future__ import annotations

import numpy as np

from ...backend import compiled_kernels

KERNELS = "models.kmeans._kmeans_kernels"  # compiled loops (see _kmeans_kernels.c); None: NumPy
SCRATCH_BYTES = 2 << 20  # per-chunk temporaries: chunk x (d + k) values, ~ L2 cache sized


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
        self.scale = None                     # exact_reduce: per-feature fixed-point units (_exact.py)
        self._pool = None

    @property
    def exact(self) -> bool:
        """Whether every sum is int64 fixed point (``KMeans(exact_reduce=True)``)."""
        return self.scale is not None

    def unpack(self, tot, k, d) -> np.ndarray:
        """The reduced int64 ``[fixed-point sums (k*d), counts (k), changed (1)]`` of an
        exact Lloyd pass as the float64 ``[centred sums, counts, changed]``. Rows summed
        uncentred (``centre_rows`` False) are centred here, after the reduction
        (``Σ(x-m) = Σx - n m``), so the subtraction is the same on every rank."""
        tot = np.asarray(tot)
        buf = tot.astype(np.float64)
        sums = tot[:k * d].reshape(k, d).astype(np.float64) / self.scale
        if not self.centre_rows:
            sums -= buf[k * d:k * d + k, None] * self.mean_t.astype(np.float64)
        buf[:k * d] = sums.ravel()
        return buf

    def sqnorms(self):
        """‖x - m‖² per local row, float64, computed once for the initialisation passes."""
        if getattr(self, "_xx", None) is None:
            self._xx = np.empty(self.n)
            for lo, hi in self.chunks():     # chunk-sized temporaries (X may be a RowView)
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
