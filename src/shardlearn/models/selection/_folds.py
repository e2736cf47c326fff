"""Cross-validation folds and halving subsets, keyed by global row index (any P, any G).

Folds: within each class (one stratum for regression or ``stratify=False``) rows are
counted in global row order; consecutive windows of ``n_splits`` such rows send exactly
one row to each fold, in an order drawn per (seed, class, window) with
:func:`shardlearn.rng.row_uniform`. Every fold thus holds each class's rows to within one
(as scikit-learn's ``StratifiedKFold``), the draw is random, and it depends only on the
labels in global row order and the seed: the same folds for any number of ranks and
groups. The cost is one allgather of per-rank class counts (a few integers).

A fold is a boolean mask over the rank's rows, never a copy of them. Halving subsets
(:func:`subset_mask`) keep rows whose key falls below ``n_resources / n_rows``, so the
subsets of successive rounds are nested.
"""
from __future__ import annotations

import numpy as np

from ... import rng
from ...errors import ShardlearnError

_CHUNK = 16384       # most rows per block: every temporary is (block x n_splits) at most
_MIN_CHUNK = 1024    # fewest rows per block (unless the rank holds fewer)
_SHARE = 32          # a block is at most 1/32 of the rank's rows (above the floor)


def chunk_rows(n_rows: int) -> int:
    """Rows per block of the fold assignment: a small share of the rows held, so that its
    temporaries (block x n_splits, several of them) stay small next to the data, within
    [:data:`_MIN_CHUNK`, :data:`_CHUNK`]. The folds do not depend on it (rows are counted
    across blocks)."""
    return int(min(_CHUNK, max(_MIN_CHUNK, n_rows // _SHARE)))


def class_labels(ctx, y) -> np.ndarray:
    """The classes over every rank of ``ctx``, float64, sorted (collective). Found a
    block of rows at a time: no sorted copy of ``y``."""
    local = np.zeros(0)
    step = chunk_rows(len(y))
    for i in range(0, len(y), step):
        local = np.union1d(local, np.unique(np.asarray(y[i:i + step], dtype=np.float64)))
    return np.unique(np.concatenate([np.asarray(c, dtype=np.float64) for c in ctx.coll.allgather_obj(local)]))


def class_codes(ctx, y) -> tuple[np.ndarray, np.ndarray]:
    """(classes over every rank of ``ctx``, local class index per row) (collective). The
    indices are the smallest unsigned integer type that holds them (one byte a row for
    fewer than 257 classes)."""
    classes = class_labels(ctx, y)
    codes = np.empty(len(y), dtype=np.min_scalar_type(max(len(classes) - 1, 0)))
    step = chunk_rows(len(y))
    for i in range(0, len(y), step):
        codes[i:i + step] = np.searchsorted(classes, np.asarray(y[i:i + step], dtype=np.float64))
    return classes, codes


def assign_folds(ctx, y, n_splits: int, seed: int, stratify: bool, n_local: int | None = None) -> np.ndarray:
    """Fold index (0..n_splits-1) of each local row (collective over ``ctx``), as the
    smallest unsigned integer type that holds it.

    ``y``: local labels (or None: one stratum, ``n_local`` rows). Ranks hold consecutive
    blocks of rows in rank order, as :func:`shardlearn.data.read_shard` gives them.
    """
    k = int(n_splits)
    if stratify and y is not None:
        classes, codes = class_codes(ctx, y)
    else:
        n = len(y) if y is not None else int(n_local)
        classes, codes = np.zeros(1), np.zeros(n, dtype=np.uint8)
    K = len(classes)
    mine = np.bincount(codes, minlength=K).astype(np.int64)
    table = ctx.coll.allgather(mine[None, :])
    running = table[:ctx.rank].sum(axis=0)   # rows of each class on the ranks before this one
    streams = [rng.stream_id("cv-folds", c) for c in range(K)]
    # the smallest integer type that holds k - 1 (uint8 for any usual cv): held for the
    # whole search, one entry per local row
    out = np.zeros(len(codes), dtype=np.min_scalar_type(max(k - 1, 0)))
    # in row chunks, so that every temporary is chunk-sized (chunk x k at most)
    step = chunk_rows(len(codes))
    for i in range(0, len(codes), step):
        cc = codes[i:i + step]
        keys = np.empty((len(cc), k))
        slot = np.empty(len(cc), dtype=np.int64)
        for c in np.unique(cc):
            sel = cc == c
            r = running[c] + np.arange(int(sel.sum()))   # rank among the class's rows, global row order
            running[c] += len(r)
            slot[sel] = r % k
            base = (r // k)[:, None] * k + np.arange(k)[None, :]   # one permutation per (class, window)
            keys[sel] = rng.row_uniform(seed, streams[c], base.ravel()).reshape(-1, k)
        perm = np.argsort(keys, axis=1, kind="stable")
        out[i:i + step] = perm[np.arange(len(cc)), slot]
    return out


def check_folds(ctx, folds: np.ndarray, n_splits: int, n_total: int) -> None:
    """Every fold needs test rows and training rows (collective, agreed)."""
    sizes = ctx.coll.allreduce(np.bincount(folds, minlength=n_splits).astype(np.int64))
    with ctx.collective_errors():
        if n_splits < 2:
            raise ShardlearnError(f"cv must be >= 2 folds, got {n_splits}")
        if (sizes == 0).any() or (sizes == n_total).any():
            raise ShardlearnError(f"cv={n_splits} folds over {n_total} rows leaves a fold without test or "
                                  "training rows: use fewer folds or more data")


def subset_mask(start: int, n_local: int, n_resources: int, n_total: int, seed: int) -> np.ndarray | None:
    """Rows of a halving round using ``n_resources`` of ``n_total`` rows (nested across rounds),
    as a mask over the rank's ``n_local`` rows (global rows ``[start, start + n_local)``); None
    when the round uses every row (no mask, and no global row keys built for one)."""
    if n_resources >= n_total:
        return None
    global_rows = np.arange(start, start + n_local, dtype=np.int64)
    return rng.row_uniform(seed, rng.stream_id("halving"), global_rows) < n_resources / n_total
