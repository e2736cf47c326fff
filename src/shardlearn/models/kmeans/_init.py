"""Initialisations: greedy k-means++ (distributed D² draws), k-means|| (and its local
k-means++ and Lloyd on the candidates), the row fetch behind ``"random"``, and initial
centers read from an HDF5 file; with the float64 distance helpers they share.

All return centred float64 centers, identical on every rank. The package docstring has
the algorithms and their costs.
"""
from __future__ import annotations

import numpy as np

from ... import rng as _rng
from ...errors import ShardlearnError
from ._data import SCRATCH_BYTES, _Local
from ._exact import exact_total, global_scale, local_fixed_sum, local_max, quantize, sqdist_rows

INITS = ("k-means++", "k-means||", "random")
KEEP_FRACTION = 8  # k-means++ keeps its n x trials distances only if <= shard bytes / this


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
    (rows x m) distance block stays near SCRATCH_BYTES. With ``data.exact`` the distances
    are ``Σ (x - c)²`` row by row (:func:`._exact.sqdist_rows`): the same bits for a row
    whatever block it falls in, which the GEMM form does not promise.
    """
    m = cands.shape[0]
    if data.exact:
        step = max(64, SCRATCH_BYTES // (8 * (m + data.d)))
        scratch = np.empty((min(step, data.n), data.d))
        for lo in range(0, data.n, step):
            hi = min(data.n, lo + step)
            yield lo, hi, sqdist_rows(data.kernels, data.centred64(lo, hi, scratch), cands)
        return
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


def _d2_targets_here(ctx, total: float, n: int, targets):
    """Which D² draws land in this rank's rows (one allgather of every rank's total and rows).

    ``targets`` are positions on the cumulative D² sum over all ranks' rows in rank order;
    each belongs to the rank whose prefix interval holds it (a target past the grand total:
    the last non-empty rank). ``targets`` may be a function of the grand total (the exact
    draw's integer positions). Returns (indices into ``targets`` that this rank owns, their
    positions on its local cumulative sum; ``inf`` for "its last row"). An integer
    ``total`` (int64 fixed point, ``exact_reduce``) keeps everything in int64: positions
    are then exact, and "its last row" is the largest int64.
    """
    exact = isinstance(total, (int, np.integer))
    info = ctx.coll.allgather(np.array([[total, n]], dtype=np.int64 if exact else np.float64))
    totals, counts = info[:, 0], info[:, 1].astype(np.int64)
    if callable(targets):
        targets = targets(totals.sum())
    past = np.iinfo(np.int64).max if exact else np.inf
    prefix = np.concatenate((np.zeros(1, dtype=totals.dtype), np.cumsum(totals)[:-1]))
    ends = prefix + totals
    nonempty = np.flatnonzero(counts > 0)
    mine, where = [], []
    for t, r in enumerate(targets):
        hit = nonempty[ends[nonempty] >= r]
        owner = int(hit[0]) if hit.size else int(nonempty[-1])
        if owner == ctx.rank:
            mine.append(t)
            where.append(r - prefix[owner] if hit.size else past)
    return mine, np.asarray(where, dtype=info.dtype)


def _d2_draw(ctx, data: _Local, closest: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Global rows at cumulative D² positions ``targets`` (as one process would pick).

    Every rank sends its local D² total (:func:`_d2_targets_here`); each target lands in
    the rank whose prefix interval holds it, which finds the row by a binary search of
    its local cumulative sum (two levels: block totals, then within one block, so no
    n-long temporary) and contributes it. Returns (m x d) centred float64 rows.
    """
    step = 65536
    starts = np.arange(0, data.n, step)
    block_tot = np.add.reduceat(closest, starts) if data.n else np.zeros(0)
    block_csum = np.cumsum(block_tot)
    total = float(block_csum[-1]) if data.n else 0.0
    mine, where = _d2_targets_here(ctx, total, data.n, targets)
    buf = np.zeros((len(targets), data.d))
    for t, local in zip(mine, where):
        if np.isinf(local):
            i = data.n - 1
        else:
            b = min(int(np.searchsorted(block_csum, local)), len(starts) - 1)
            before = block_csum[b - 1] if b else 0.0
            inner = np.cumsum(closest[starts[b]:starts[b] + step])
            i = min(int(starts[b]) + int(np.searchsorted(inner, local - before)), data.n - 1)
        buf[t] = data.X[i].astype(np.float64) - data.mean_t
    return ctx.coll.allreduce(buf)


def _d2_draw_exact(ctx, data: _Local, q: np.ndarray, u: np.ndarray) -> np.ndarray:
    """:func:`_d2_draw` on int64 fixed-point D² values ``q`` (``exact_reduce``): target
    ``t`` is the integer position ``floor(u_t Q)`` on the cumulative sum of all ranks'
    ``q`` (``Q`` its total) and picks the first row whose cumulative sum passes it, so a
    row with ``q = 0`` is never drawn. Integer prefix sums: the same row for any P."""
    csum = np.cumsum(q)
    total = int(csum[-1]) if data.n else 0

    def targets(grand):
        grand = int(grand)
        t = np.minimum(np.floor(u * float(grand)).astype(np.int64), max(grand - 1, 0))
        return t + (1 if grand > 0 else 0)  # first cumulative sum >= t + 1, i.e. > t

    mine, where = _d2_targets_here(ctx, total, data.n, targets)
    buf = np.zeros((len(u), data.d))
    for t, local in zip(mine, where):
        i = min(int(np.searchsorted(csum, local)), data.n - 1)
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

    With ``data.exact`` (``exact_reduce``) the D² values of each step get one fixed-point
    unit (a max-allreduce of the largest D²: the candidates' values are no larger), the
    draw runs on their integer cumulative sums (:func:`_d2_draw_exact`) and the potentials
    are int64 sums: the chosen rows and the winners do not depend on P.
    """
    trials = 2 + int(np.log(k))
    keep = data.n * trials * 8 <= data.X.nbytes // KEEP_FRACTION
    centers = np.empty((k, data.d))
    centers[0] = _fetch_rows(ctx, data, [int(rng.integers(data.n_total))])[0]
    closest = _dist_to(data, centers[:1])[:, 0].copy()
    exact = data.exact
    pot = 0.0 if exact else float(ctx.coll.allreduce(np.array([closest.sum()]))[0])
    for c in range(1, k):
        u = rng.uniform(size=trials)
        if exact:
            scale = global_scale(ctx, local_max(closest), data.n_total)
            cands = _d2_draw_exact(ctx, data, quantize(closest, scale), u)
        else:
            cands = _d2_draw(ctx, data, closest, u * pot)
        pots = np.zeros(trials, dtype=np.int64 if exact else np.float64)
        stored = np.empty((data.n, trials)) if keep else None
        for lo, hi, dist in _dist_blocks(data, cands):
            np.minimum(dist, closest[lo:hi, None], out=dist)
            pots += local_fixed_sum(dist, scale) if exact else dist.sum(axis=0)
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

    def total(values):  # the cost phi: exact (int64 fixed point) with exact_reduce
        if data.exact:
            return exact_total(ctx, values, data.n_total)
        return float(ctx.coll.allreduce(np.array([values.sum()]))[0])

    phi = total(closest)
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
        phi = total(closest)
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
