"""Open a dataset, assign rows to ranks, read this rank's block, validate it.

Format (see data/README.md): an HDF5 file with ``X`` (n x d, float32 or float64; integer
and boolean columns are read as float64) and
optionally ``y`` (n,), or a directory of such files (``part-00000.h5``, ...) read in
name order as one table. Rank ``r`` of ``P`` gets global rows ``[r*n//P, (r+1)*n//P)``,
read with hyperslabs from whichever parts hold them; a rank may get zero rows.

Validation is collective: rank 0 checks the metadata of every part and the others
agree on its verdict; each rank checks the values of its own block, and the ranks
agree on the result (one allreduce) before anyone goes on.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import numpy as np

from ..util import faults
from ..util.blocks import block_bounds
from ..errors import ShardlearnError

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@dataclass
class Part:
    """One HDF5 file of a dataset: its path and the global rows it holds."""

    path: str
    start: int
    rows: int


@dataclass
class Dataset:
    """Metadata of a whole dataset (all parts), identical on every rank."""

    path: str
    parts: list[Part]
    n_rows: int
    n_features: int
    dtype: np.dtype
    has_y: bool
    y_dtype: np.dtype | None = None

    def describe(self) -> dict:
        return {"path": self.path, "rows": self.n_rows, "features": self.n_features,
                "dtype": str(self.dtype), "has_y": self.has_y,
                "y_dtype": str(self.y_dtype) if self.y_dtype is not None else None,
                "parts": len(self.parts)}


@dataclass
class Shard:
    """This rank's block of a dataset.

    Attributes
    ----------
    X : ndarray (n_local, d)
    y : ndarray (n_local,) or None
    start : int
        Global index of the first local row; local row ``i`` is global row ``start + i``.
    dataset : Dataset
    """

    X: np.ndarray
    y: np.ndarray | None
    start: int
    dataset: Dataset

    @property
    def n_local(self) -> int:
        return self.X.shape[0]

    @property
    def n_total(self) -> int:
        return self.dataset.n_rows

    def global_rows(self) -> np.ndarray:
        """Global row indices of the local rows (int64)."""
        return np.arange(self.start, self.start + self.n_local, dtype=np.int64)


def list_parts(path: str) -> list[str]:
    """The HDF5 files of a dataset: the file itself, or a directory's ``*.h5`` in name order."""
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "*.h5")) + glob.glob(os.path.join(path, "*.hdf5")))
        if not files:
            raise ShardlearnError(f"{path}: directory holds no .h5 part files (expected part-00000.h5, ...)")
        return files
    if not os.path.exists(path):
        raise ShardlearnError(f"{path}: no such file or directory (give an HDF5 file with dataset 'X' "
                              "or a directory of part-*.h5 files; 'shardlearn make-data' writes one)")
    return [path]


def _scan(path: str, need_y: bool) -> Dataset:
    """Read and check the metadata of every part (no values). Raises ShardlearnError."""
    import h5py

    parts, start, d, dtype, has_y, y_dtype = [], 0, None, None, None, None
    for f in list_parts(path):
        try:
            h = h5py.File(f, "r")
        except OSError as exc:
            raise ShardlearnError(f"{f}: not a readable HDF5 file ({exc})") from None
        with h:
            if "X" not in h:
                raise ShardlearnError(f"{f}: no dataset 'X' (found: {', '.join(sorted(h.keys())) or 'nothing'})")
            X = h["X"]
            if not isinstance(X, h5py.Dataset):
                raise ShardlearnError(f"{f}: 'X' is a group, expected an n x d dataset")
            if X.ndim != 2:
                raise ShardlearnError(f"{f}: 'X' has shape {X.shape}; expected 2-D (rows x features)")
            if X.dtype.kind not in "fiub":
                raise ShardlearnError(f"{f}: 'X' has dtype {X.dtype}; expected numbers (float32 or float64; "
                                      "integers and booleans are read as float64)")
            if X.shape[1] == 0:
                raise ShardlearnError(f"{f}: 'X' has shape {X.shape}: no features")
            if d is None:
                d, dtype = X.shape[1], X.dtype
            elif X.shape[1] != d:
                raise ShardlearnError(f"{f}: 'X' has {X.shape[1]} features but {parts[0].path} has {d}; "
                                      "every part must have the same feature count")
            elif X.dtype != dtype:
                raise ShardlearnError(f"{f}: 'X' is {X.dtype} but {parts[0].path} is {dtype}; "
                                      "every part must have the same dtype")
            part_has_y = "y" in h
            if has_y is None:
                has_y = part_has_y
            elif part_has_y != has_y:
                raise ShardlearnError(f"{f}: {'has' if part_has_y else 'lacks'} a 'y' dataset but "
                                      f"{parts[0].path} {'has' if has_y else 'lacks'} one")
            if part_has_y:
                Y = h["y"]
                if Y.ndim != 1 or Y.shape[0] != X.shape[0]:
                    raise ShardlearnError(f"{f}: 'y' has shape {Y.shape} but 'X' has {X.shape[0]} rows; "
                                          "expected y of shape (n,)")
                if Y.dtype.kind not in "fiub":
                    raise ShardlearnError(f"{f}: 'y' has dtype {Y.dtype}; expected numbers")
                y_dtype = Y.dtype if y_dtype is None else np.promote_types(y_dtype, Y.dtype)
            parts.append(Part(f, start, X.shape[0]))
            start += X.shape[0]
    if need_y and not has_y:
        raise ShardlearnError(f"{path}: no dataset 'y' (labels/targets); this model needs one")
    work_dtype = dtype if dtype in FLOAT_DTYPES else np.dtype(np.float64)
    return Dataset(path, parts, start, int(d), work_dtype, bool(has_y), y_dtype)


def open_dataset(path: str, ctx, *, need_y: bool = False) -> Dataset:
    """Check a dataset's metadata on rank 0 and share it with every rank.

    Raises :class:`ShardlearnError` on every rank if the path, a part, ``X`` or ``y``
    is unusable.
    """
    meta, error = None, None
    if ctx.rank == 0:
        try:
            meta = _scan(str(path), need_y)
        except ShardlearnError as exc:
            error = str(exc)
    ctx.agree(error)
    return ctx.mpi_comm.bcast(meta, root=0)


def _read_rows(parts: list[Part], name: str, lo: int, hi: int, out: np.ndarray,
               chunk_bytes: int = 8 << 20) -> None:
    """Fill ``out`` with global rows ``[lo, hi)`` of dataset ``name``, part by part.

    Same dtype: one hyperslab read straight into ``out``. Different dtype (float64 file
    read as float32, integer labels read as float): read chunks of the stored dtype into
    a small buffer and cast with NumPy, which is faster than HDF5's own conversion.
    """
    import h5py

    for p in parts:
        a, b = max(lo, p.start), min(hi, p.start + p.rows)
        if a >= b:
            continue
        with h5py.File(p.path, "r") as h:
            d = h[name]
            if d.dtype == out.dtype:
                d.read_direct(out, np.s_[a - p.start:b - p.start], np.s_[a - lo:b - lo])
                continue
            row_bytes = d.dtype.itemsize * int(np.prod(d.shape[1:], dtype=np.int64))
            step = max(1, chunk_bytes // max(1, row_bytes))
            buf = np.empty((min(step, b - a),) + d.shape[1:], dtype=d.dtype)
            for c in range(a, b, step):
                e = min(b, c + step)
                d.read_direct(buf, np.s_[c - p.start:e - p.start], np.s_[0:e - c])
                with np.errstate(over="ignore"):  # too large for float32 -> inf, refused below
                    out[c - lo:e - lo] = buf[:e - c]


def _bad_rows(X: np.ndarray, allow_nan: bool, chunk: int = 65536) -> np.ndarray:
    """Boolean mask of rows holding values the caller cannot use (chunked: small temporaries).

    Fast path: a chunk whose plain sum is finite holds no NaN and no infinity (either
    would make the sum non-finite), so clean data costs one vectorised reduction; only
    chunks with a non-finite sum (or a sum that overflowed) are checked element-wise.
    """
    bad = np.zeros(X.shape[0], dtype=bool)
    for i in range(0, X.shape[0], chunk):
        blk = X[i:i + chunk]
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(blk.sum()):
                continue
        if allow_nan:
            bad[i:i + chunk] = np.isinf(blk).any(axis=1)
        else:
            bad[i:i + chunk] = ~np.isfinite(blk).all(axis=1)
    return bad


def read_shard(path, ctx, *, dtype=None, need_y: bool = False, allow_nan: bool = False,
               y_dtype=None) -> Shard:
    """Read this rank's row block of the dataset at ``path``.

    Parameters
    ----------
    path : str
        An HDF5 file or a directory of part files.
    ctx : shardlearn.runtime.Context
    dtype : float32 or float64, optional
        Convert ``X`` on read (default: the file's float dtype; integers become float64).
    need_y : bool
        Fail clearly when the dataset has no ``y``.
    allow_nan : bool
        Whether NaN in ``X`` is acceptable (trees treat it as missing). Infinities are
        always refused, and NaN in ``y`` too.
    y_dtype : dtype, optional
        Convert ``y`` on read (default float64).

    Every rank must call this (it is collective), also ranks that get zero rows.
    """
    with ctx.collective_errors():  # same verdict on every rank, raised as an agreed error
        try:
            ok = dtype is None or np.dtype(dtype) in FLOAT_DTYPES
        except TypeError:
            ok = False
        if not ok:
            raise ShardlearnError(f"dtype {dtype} not supported: use float32 or float64")
    ds = open_dataset(path, ctx, need_y=need_y)
    dtype = np.dtype(dtype) if dtype is not None else ds.dtype
    lo, hi = block_bounds(ds.n_rows, ctx.size, ctx.rank)
    X = y = None
    with ctx.timers.phase("io"), ctx.collective_errors():  # a failed read on one rank ends every rank
        try:
            faults.check("read")
            X = np.empty((hi - lo, ds.n_features), dtype=dtype)
            _read_rows(ds.parts, "X", lo, hi, X)
            if ds.has_y:
                y = np.empty(hi - lo, dtype=np.dtype(y_dtype) if y_dtype is not None else np.float64)
                _read_rows(ds.parts, "y", lo, hi, y)
        except (OSError, MemoryError) as exc:
            raise ShardlearnError(f"{path}: rank {ctx.rank} could not read its rows [{lo}, {hi}) "
                                  f"({type(exc).__name__}: {exc})") from None
    # values: each rank checks its block; one allreduce of per-part bad-row counts (X, then y)
    starts = np.array([p.start for p in ds.parts], dtype=np.int64)
    counts = np.zeros(2 * len(ds.parts), dtype=np.int64)
    for j, bad in enumerate((_bad_rows(X, allow_nan),
                             ~np.isfinite(y) if y is not None and y.dtype.kind == "f" else None)):
        if bad is not None and bad.any():
            owner = np.searchsorted(starts, np.flatnonzero(bad) + lo, side="right") - 1
            counts[j * len(ds.parts):(j + 1) * len(ds.parts)] = np.bincount(owner, minlength=len(ds.parts))
    total = np.empty_like(counts)
    ctx.mpi_comm.Allreduce(counts, total)
    if total.any():  # the same totals on every rank: all of them raise the same error
        x_bad, y_bad = total[:len(ds.parts)], total[len(ds.parts):]
        msgs = []
        for what, c in (("X", x_bad), ("y", y_bad)):
            if c.sum():
                where = ", ".join(f"{ds.parts[i].path}: {n} rows" for i, n in enumerate(c) if n)
                vals = "infinite values" if (what == "X" and allow_nan) else "NaN or infinite values"
                msgs.append(f"{int(c.sum())} rows hold {vals} in {what} ({where})")
        hint = ""
        if x_bad.sum() and not allow_nan:
            hint = ("; this model cannot use missing values: impute or drop those rows first "
                    "(gbdt/forest accept NaN as missing)")
        elif x_bad.sum():
            hint = "; replace infinities by large finite values or NaN (missing)"
        if x_bad.sum() and dtype == np.float32 and ds.dtype != np.float32:
            hint += "; note: values beyond the float32 range (3.4e38) become infinite when read as float32"
        if y_bad.sum():
            hint += "; every row needs a finite y"
        ctx.agree(f"{path}: " + "; ".join(msgs) + hint)
    return Shard(X, y, lo, ds)
