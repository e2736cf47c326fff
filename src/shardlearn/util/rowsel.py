"""Row selections: fitting on some of a rank's rows without copying them.

Model selection trains every candidate on a fold's training rows. Copying those rows
(``X[mask]``) for each fit costs the rank most of its data again; the estimators that
take ``rows=`` in ``fit`` instead read the selected rows through an index, a bounded
chunk at a time. A fit on ``rows`` is the fit on ``X[rows]``: the selected rows are
numbered in global order as a copy would number them (row keys of random draws, the
binning sample), so the model is the same bit for bit.

:func:`row_index` checks a selection (a boolean mask or increasing indices) and returns
its indices; :func:`take_chunks` yields the selected rows a chunk at a time;
:class:`RowView` is a read-only stand-in for ``X[rows]`` whose slices and index arrays
gather only the rows asked for.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShardlearnError

#: rows per gathered chunk: bounded temporaries (chunk x d values)
CHUNK_ROWS = 16384
#: bytes per gathered chunk when the caller leaves the size to :func:`take_chunks` (wide
#: rows get fewer rows a chunk: 512 KiB is 3276 rows of 20 float64 features)
CHUNK_BYTES = 1 << 19


def row_index(rows, n: int) -> np.ndarray | None:
    """``rows`` as increasing int64 indices into ``n`` local rows, or None for "every row".

    ``rows``: None, a boolean mask of length ``n``, or strictly increasing integer indices
    in ``[0, n)``. Raises :class:`ShardlearnError` otherwise (local).
    """
    if rows is None:
        return None
    r = np.asarray(rows)
    if r.dtype == bool:
        if r.shape != (n,):
            raise ShardlearnError(f"rows as a boolean mask needs one entry per row: {n} rows, mask shape {r.shape}")
        return np.flatnonzero(r).astype(np.int64, copy=False)
    if r.ndim != 1 or (r.size and r.dtype.kind not in "iu"):
        raise ShardlearnError(f"rows must be a boolean mask or increasing row indices, got shape {r.shape} "
                              f"dtype {r.dtype}")
    r = r.astype(np.int64, copy=False)
    if r.size and (r[0] < 0 or r[-1] >= n or (r.size > 1 and not (np.diff(r) > 0).all())):
        raise ShardlearnError(f"rows must be strictly increasing indices in 0..{n - 1}")
    return r


def take_chunks(X: np.ndarray, idx: np.ndarray | None, chunk: int | None = None):
    """Yield ``(lo, hi, X[idx[lo:hi]])``: the selected rows, gathered a chunk at a time
    (``idx`` None: slices of ``X`` itself, no copy). ``chunk``: rows a chunk; None: as many
    as fit :data:`CHUNK_BYTES` (at least 1024, at most :data:`CHUNK_ROWS`)."""
    n = X.shape[0] if idx is None else len(idx)
    if chunk is None:
        row_bytes = X.itemsize * int(np.prod(X.shape[1:], dtype=np.int64))
        chunk = int(min(CHUNK_ROWS, max(1024, CHUNK_BYTES // max(1, row_bytes))))
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        yield lo, hi, (X[lo:hi] if idx is None else X.take(idx[lo:hi], axis=0))


class RowView:
    """``X[idx]`` without the copy: what a row-chunked pass needs of an array.

    ``shape``, ``dtype``, ``ndim``, ``nbytes`` and ``len`` describe the selected rows;
    ``view[a:b]``, ``view[int_array]`` and ``view[i]`` gather just those rows (a new
    C-contiguous array, or one row).
    """

    def __init__(self, X: np.ndarray, idx: np.ndarray):
        self.base = X
        self.idx = idx
        self.dtype = X.dtype
        self.itemsize = X.itemsize
        self.shape = (len(idx),) + X.shape[1:]
        self.ndim = X.ndim
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * X.itemsize
        self.flags = {"C_CONTIGUOUS": False}

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.base[self.idx[key]]
        if isinstance(key, slice) or isinstance(key, np.ndarray):
            return self.base.take(self.idx[key], axis=0)
        raise TypeError(f"RowView takes a slice, an index array or an int, got {type(key).__name__}")
