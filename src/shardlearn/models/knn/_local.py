"""This rank's training rows as a search index: the local k nearest of a query block.

Scores by the GEMM form in chunks, as k-means labels rows (:mod:`..kmeans._lloyd`): for a
block of ``QUERY_ROWS`` queries and ``CHUNK_ROWS`` training rows (a 2 MiB float64 score
block, in cache), one BLAS GEMM gives ``g = Q @ X_c^T`` and the score is
``xx + s * g`` per training row (euclidean: ``|x|^2 - 2 q.x``, the query's own ``|q|^2``
being the same for every row; cosine: ``-q.x / |x|``; manhattan: ``g`` is the distance
itself, from SciPy's ``cdist``). The compiled ``topk_update`` (``_knn_kernels.c``) folds
each score block into the running k best per query in one pass; without it NumPy sorts
the block's candidates with the running ones (same result, slower).

The k local candidates then get their exact distances (``|q - x|`` by subtraction, not
the GEMM form, so the reported distances do not carry its cancellation) and are ordered
by (distance, global row index): the order every rank and the final merge use, so the
answer does not depend on how the rows are split.

Sample weights are resampling counts (:mod:`..resample`): a row drawn ``c`` times takes
``c`` of the k neighbour slots, as its ``c`` copies would in the materialised resampled
data, and a row of count 0 is not in the index at all (its rows are dropped here, their
global indices kept in ``ids``). The running top-k then holds slots, not rows: a row
enters as ``min(c, k - p)`` adjacent copies at its place ``p`` (``topk_update_counts``),
and every later merge, which keeps the k best slots by (distance, row), needs no change.
"""
from __future__ import annotations

import numpy as np

from ...backend import compiled_kernels

METRICS = ("euclidean", "manhattan", "cosine")
#: training rows per score block, and queries per score block (256 x 1024 float64 = 2 MiB)
CHUNK_ROWS = 1024
QUERY_ROWS = 256
#: the index of an empty slot (fewer local rows than k): sorts after every real row
NO_ROW = np.iinfo(np.int64).max
KERNELS = "models.knn._knn_kernels"


class LocalIndex:
    """This rank's training rows ``X`` (float64, C-contiguous) from global row ``offset``, and
    their targets ``y`` (float64: class indices or regression values), which travel with
    the candidates. ``counts``: per row, how many times it was drawn (whole numbers >= 0;
    None: once each), see the module docstring."""

    def __init__(self, X: np.ndarray, offset: int, metric: str, y: np.ndarray, counts=None):
        X = np.ascontiguousarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        self.offset = int(offset)
        self.ids = self.cnt = None
        if counts is not None:
            counts = np.asarray(counts, dtype=np.int64)
            kept = np.flatnonzero(counts > 0)
            self.ids = self.offset + kept
            if len(kept) < len(X):  # drop the rows of count 0 (a copy of the rest)
                X, y = np.ascontiguousarray(X[kept]), y[kept]
            self.cnt = np.ascontiguousarray(counts[kept])
        self.X, self.y = X, y
        self.n, self.d = self.X.shape
        self.metric = metric
        sq = np.einsum("ij,ij->i", self.X, self.X)
        if metric == "euclidean":
            self.xx, self.s = sq, np.full(self.n, -2.0)
        elif metric == "cosine":
            norm = np.sqrt(sq)
            self.norm = norm
            self.xx = np.zeros(self.n)
            self.s = -np.divide(1.0, norm, out=np.zeros(self.n), where=norm > 0)
        else:
            self.xx, self.s = np.zeros(self.n), np.ones(self.n)
        self.strategy = None  # how the last search moved its queries (_search.kneighbors)
        self.ranks = None  # the world size of the rows' sharding (set by the estimator)
        self._attach()

    def _attach(self):
        """The compiled kernels (a module) and the distance scratch block: rebuilt in each
        process, never pickled."""
        self.kernels = compiled_kernels(KERNELS)
        self._g = np.empty((QUERY_ROWS, CHUNK_ROWS))

    def __getstate__(self):
        """Pickle the rows and their norms; the kernels module and the scratch block are
        rebuilt on load (:meth:`_attach`)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("kernels", "_g")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._attach()

    def topk(self, Q: np.ndarray, k: int) -> np.ndarray:
        """The k nearest local rows of each query as a packed (b, 3k) candidate list
        (:func:`pack`), ordered by (distance, row); empty slots are (inf, NO_ROW, NaN)."""
        Q = np.ascontiguousarray(Q, dtype=np.float64)
        b = Q.shape[0]
        dist = np.full((b, k), np.inf)
        rows = np.full((b, k), NO_ROW, dtype=np.int64)
        if self.n and b:
            for q0 in range(0, b, QUERY_ROWS):
                q1 = min(b, q0 + QUERY_ROWS)
                bd, bi = dist[q0:q1], rows[q0:q1]
                self._scan(Q[q0:q1], k, bd, bi)
                self._exact(Q[q0:q1], bd, bi)
        ok = rows != NO_ROW
        labels = np.where(ok, self.y[self._local(rows, ok)] if self.n else np.nan, np.nan)
        return pack(dist, rows, labels)

    def _local(self, rows, ok):
        """Positions in ``X`` of global ``rows`` (0 where not ``ok``)."""
        if self.ids is None:
            return np.where(ok, rows - self.offset, 0)
        return np.where(ok, np.minimum(np.searchsorted(self.ids, rows), self.n - 1), 0)

    def _scan(self, Qs, k, bd, bi) -> None:
        """Fold every chunk's scores into ``bd``/``bi`` (scores, not distances yet)."""
        from scipy.spatial.distance import cdist

        b = Qs.shape[0]
        for c0 in range(0, self.n, CHUNK_ROWS):
            c1 = min(self.n, c0 + CHUNK_ROWS)
            m = c1 - c0
            if self.metric == "manhattan":
                g = cdist(Qs, self.X[c0:c1], "cityblock")
            else:
                g = np.matmul(Qs, self.X[c0:c1].T, out=self._g[:b, :m])
            if self.kernels is not None:
                g = np.ascontiguousarray(g)
                if self.cnt is None:
                    self.kernels.topk_update(g, self.s[c0:c1], self.xx[c0:c1], self.offset + c0, b, m, k, bd, bi)
                else:
                    self.kernels.topk_update_counts(g, self.s[c0:c1], self.xx[c0:c1], self.ids[c0:c1],
                                                    self.cnt[c0:c1], b, m, k, bd, bi)
            else:
                ids = self.offset + c0 + np.arange(m, dtype=np.int64) if self.ids is None else self.ids[c0:c1]
                _merge_numpy(self.xx[c0:c1] + self.s[c0:c1] * g, ids, bd, bi,
                             None if self.cnt is None else self.cnt[c0:c1])

    def _exact(self, Qs, bd, bi) -> None:
        """Replace scores by exact distances and order by (distance, row), in place."""
        ok = bi != NO_ROW
        local = self._local(bi, ok)
        Xs = self.X[local]                                   # (b, k, d)
        if self.metric == "cosine":
            qn = np.sqrt(np.einsum("ij,ij->i", Qs, Qs))
            dot = np.einsum("bkd,bd->bk", Xs, Qs)
            den = qn[:, None] * self.norm[local]
            sim = np.divide(dot, den, out=np.zeros_like(dot), where=den > 0)
            d = np.clip(1.0 - sim, 0.0, 2.0)
        else:
            diff = Xs - Qs[:, None, :]
            d = np.abs(diff).sum(axis=2) if self.metric == "manhattan" else np.sqrt(np.einsum("bkd,bkd->bk", diff, diff))
        d = np.where(ok, d, np.inf)
        order = np.lexsort((bi, d), axis=1)
        bd[:] = np.take_along_axis(d, order, axis=1)
        bi[:] = np.take_along_axis(bi, order, axis=1)


def _merge_numpy(scores: np.ndarray, ids: np.ndarray, bd: np.ndarray, bi: np.ndarray, cnt=None) -> None:
    """NumPy form of ``topk_update`` (``topk_update_counts`` with ``cnt``): the k smallest of
    (running, block) per row, the block's column j being global row ``ids[j]`` drawn
    ``cnt[j]`` times (min(cnt, k) copies compete), ties to the lowest row (NaN never enters)."""
    b, m = scores.shape
    k = bd.shape[1]
    scores = np.where(np.isnan(scores), np.inf, scores)
    if cnt is not None:
        reps = np.minimum(cnt, k)
        scores, ids = np.repeat(scores, reps, axis=1), np.repeat(ids, reps)
        m = len(ids)
    cand_d = np.concatenate([bd, scores], axis=1)
    cand_i = np.concatenate([bi, np.broadcast_to(ids, (b, m))], axis=1)
    order = np.lexsort((cand_i, cand_d), axis=1)[:, :k]
    bd[:] = np.take_along_axis(cand_d, order, axis=1)
    bi[:] = np.where(np.isinf(bd), NO_ROW, np.take_along_axis(cand_i, order, axis=1))   # real scores are finite


def pack(dist: np.ndarray, rows: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Candidate lists as one float64 (b, 3k) buffer: distances, the rows' int64 bits, targets.
    One buffer per message, and the rows travel exactly (their bits, not their values)."""
    b, k = dist.shape
    out = np.empty((b, 3 * k))
    out[:, :k] = dist
    out[:, k:2 * k] = np.ascontiguousarray(rows, dtype=np.int64).view(np.float64)
    out[:, 2 * k:] = labels
    return out


def unpack(buf: np.ndarray, k: int):
    """(distances, rows int64, targets) of a packed candidate buffer."""
    return buf[:, :k], np.ascontiguousarray(buf[:, k:2 * k]).view(np.int64), buf[:, 2 * k:3 * k]


def merge(bufs: list, k: int) -> np.ndarray:
    """The k best of several packed candidate lists of the same queries, by (distance, row)."""
    parts = [unpack(b, k) for b in bufs]
    d = np.concatenate([p[0] for p in parts], axis=1)
    i = np.concatenate([p[1] for p in parts], axis=1)
    y = np.concatenate([p[2] for p in parts], axis=1)
    order = np.lexsort((i, d), axis=1)[:, :k]
    return pack(*(np.take_along_axis(a, order, axis=1) for a in (d, i, y)))
