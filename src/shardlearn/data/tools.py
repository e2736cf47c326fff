"""Dataset tools: split a file into parts (``shard``), describe a dataset (``info``),
and the part-file writing both ``shard`` and ``make-data`` use.

Output parts are ``part-00000.h5``, ``part-00001.h5``, ... in one directory; part ``i``
of ``S`` holds global rows ``[i*n//S, (i+1)*n//S)`` (the same block rule the reader
uses for ranks) and is written by rank ``i % P``. Every file is written under a
temporary dot-name in the same directory and renamed into place, so a reader never
sees a half-written part and a crash leaves no file that looks like data.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time

import numpy as np

from ..util.blocks import block_bounds
from ..errors import ShardlearnError
from ..util import faults
from ..util.files import atomic_h5, check_output_dir, remove_stale_temps, tmp_name
from .shards import _read_rows, list_parts, open_dataset

PART_RE = re.compile(r"^part-(\d{5,})\.h5$")
MAX_PARTS = 99999
#: bytes of X copied per read/write step by ``shard`` (bounded memory per rank)
COPY_CHUNK_BYTES = 64 << 20
#: label sets larger than this are summarised by min/max only in ``info``
MAX_DISTINCT = 32


def part_name(i: int) -> str:
    """File name of part ``i``: ``part-00000.h5``."""
    return f"part-{i:05d}.h5"


def is_single_file(out: str) -> bool:
    """Whether an output path names one HDF5 file (``.h5``/``.hdf5``) rather than a directory."""
    return str(out).lower().endswith((".h5", ".hdf5"))


def output_paths(out: str, parts: int) -> list[str]:
    """The file paths a dataset with ``parts`` parts gets at ``out``."""
    if is_single_file(out):
        return [str(out)]
    return [os.path.join(str(out), part_name(i)) for i in range(parts)]


@contextlib.contextmanager
def staged_output(out: str, parts: int, ctx, *, protect=()):
    """Check the output location, yield the paths to write the parts to, and put the whole
    dataset in place at the end, or nothing (collective).

    A file output (``*.h5``) holds exactly one part, written through
    :func:`~shardlearn.util.files.atomic_h5` to its own path. A directory output is
    written into a staging directory beside it (``.NAME.tmp-HOST-PID``) and swapped in
    only after every rank has written its parts: a failure on any rank removes the
    staging directory and leaves ``out`` as it was, so a half-written dataset can never
    be read as a whole one (and ``shard DIR --out DIR`` re-shards in place safely).
    Files in ``out`` that are not parts are kept. ``protect`` lists input files that a
    file output must not replace. Raises the same :class:`ShardlearnError` on every rank.
    """
    staging = None
    with ctx.collective_errors():
        if not 1 <= parts <= MAX_PARTS:  # 5-digit names keep name order = row order
            raise ShardlearnError(f"--parts must be between 1 and {MAX_PARTS} (got {parts})")
        if is_single_file(out) and parts != 1:
            raise ShardlearnError(f"--out {out} is one file, which holds one part; give a directory "
                                  f"(e.g. --out {os.path.splitext(out)[0]}) to write {parts} parts")
        if ctx.rank == 0:
            try:
                staging = _prepare_on_root(str(out), {os.path.realpath(p) for p in protect})
            except OSError as exc:
                raise ShardlearnError(f"{out}: cannot prepare the output ({exc})") from None
    staging = ctx.mpi_comm.bcast(staging, root=0)
    if staging is None:
        yield output_paths(out, parts)
        return
    try:
        yield output_paths(staging, parts)
        with ctx.collective_errors():
            if ctx.rank == 0:
                try:
                    _swap_in(staging, str(out))
                except OSError as exc:
                    raise ShardlearnError(f"{out}: cannot move the new parts into place ({exc})") from None
    finally:
        if ctx.rank == 0 and os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)


def _prepare_on_root(out: str, protect: set):
    """Check the output; for a directory, create and return its staging directory."""
    if is_single_file(out):
        if os.path.isdir(out):
            raise ShardlearnError(f"{out}: is a directory; give a new file name or a directory without .h5")
        check_output_dir(out)
        if os.path.realpath(out) in protect:
            raise ShardlearnError(f"{out}: is an input of this command and would be overwritten; "
                                  "write to another file")
        return None
    if os.path.exists(out) and not os.path.isdir(out):
        raise ShardlearnError(f"{out}: exists and is not a directory")
    check_output_dir(out)  # the parent: the staging directory is created beside out
    if os.path.isdir(out) and not os.access(out, os.W_OK):
        raise ShardlearnError(f"{out}: directory is not writable")
    if os.path.isdir(out):
        names = sorted(os.listdir(out))
        foreign = [n for n in names if n.lower().endswith((".h5", ".hdf5")) and not PART_RE.match(n)]
        if foreign:
            raise ShardlearnError(f"{out}: holds other HDF5 files ({', '.join(foreign[:3])}"
                                  f"{', ...' if len(foreign) > 3 else ''}) that would be read as part of "
                                  "the dataset; choose an empty or new directory")
    remove_stale_temps(out)
    staging = tmp_name(out)
    try:
        os.mkdir(staging)
    except OSError as exc:
        raise ShardlearnError(f"{out}: cannot create the output directory ({exc.strerror})") from None
    return staging


def _swap_in(staging: str, out: str) -> None:
    """Put the staging directory in place of ``out``, keeping ``out``'s files that are not parts."""
    if not os.path.isdir(out):
        os.rename(staging, out)
        return
    for name in os.listdir(out):
        if not PART_RE.match(name):
            os.rename(os.path.join(out, name), os.path.join(staging, name))
    old = tmp_name(out) + "-old"
    os.rename(out, old)
    os.rename(staging, out)
    shutil.rmtree(old, ignore_errors=True)


def write_parts(paths: list[str], n_rows: int, ctx, write_one) -> tuple[int, float]:
    """Write the parts this rank owns (``i % P == rank``); agree on errors.

    ``write_one(path, i, lo, hi)`` writes part ``i`` (global rows ``[lo, hi)``) to
    ``path``, e.g. inside :func:`atomic_h5`. Returns ``(bytes written by all ranks,
    seconds of the slowest rank)``. An ``OSError`` on any rank (disk full, quota)
    becomes one clear error on every rank.
    """
    from mpi4py import MPI

    t0 = time.perf_counter()
    nbytes = 0
    with ctx.collective_errors():
        for i in range(ctx.rank, len(paths), ctx.size):
            lo, hi = block_bounds(n_rows, len(paths), i)
            try:
                faults.check("write-part")
                write_one(paths[i], i, lo, hi)
                nbytes += os.path.getsize(paths[i])
            except OSError as exc:
                raise ShardlearnError(f"{paths[i]}: write failed on rank {ctx.rank} ({exc})") from None
    seconds = ctx.mpi_comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    return int(ctx.mpi_comm.allreduce(nbytes, op=MPI.SUM)), float(seconds)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n} B"  # pragma: no cover


# ------------------------------------------------------------------------ shard
def _source_meta(ds) -> dict:
    """Stored dtypes and attributes of a dataset's first part (rank 0)."""
    import h5py

    with h5py.File(ds.parts[0].path, "r") as h:
        attrs = {k: v for k, v in h.attrs.items() if k not in ("part_index", "part_start", "parts")}
        return {"x_dtype": np.dtype(h["X"].dtype), "attrs": attrs}


def shard_dataset(input_path: str, out: str, parts: int, ctx) -> dict:
    """Split a dataset into ``parts`` part files in directory ``out`` (collective).

    Each rank copies the parts assigned to it (part ``i`` by rank ``i % P``) in row
    chunks of about 64 MB, so memory per rank stays bounded whatever the file size.
    ``X`` keeps its stored dtype; ``y`` (if present) is copied too. The input may be a
    file or a directory of parts.
    """
    ds = open_dataset(input_path, ctx)
    meta = ctx.mpi_comm.bcast(_source_meta(ds) if ctx.rank == 0 else None, root=0)
    x_dtype, y_dtype, d = meta["x_dtype"], ds.y_dtype, ds.n_features
    step = max(1, COPY_CHUNK_BYTES // max(1, d * x_dtype.itemsize))
    protect = [p.path for p in ds.parts]

    with staged_output(out, parts, ctx, protect=protect) as paths:
        def write_one(path, i, lo, hi):
            with atomic_h5(path) as h:
                for k, v in meta["attrs"].items():
                    h.attrs[k] = v
                h.attrs.update({"part_index": i, "part_start": lo, "parts": len(paths)})
                X = h.create_dataset("X", shape=(hi - lo, d), dtype=x_dtype)
                Y = h.create_dataset("y", shape=(hi - lo,), dtype=y_dtype) if ds.has_y else None
                for a in range(lo, hi, step):
                    b = min(hi, a + step)
                    buf = np.empty((b - a, d), dtype=x_dtype)
                    _read_rows(ds.parts, "X", a, b, buf)
                    X.write_direct(buf, dest_sel=np.s_[a - lo:b - lo])
                    if Y is not None:
                        ybuf = np.empty(b - a, dtype=y_dtype)
                        _read_rows(ds.parts, "y", a, b, ybuf)
                        Y.write_direct(ybuf, dest_sel=np.s_[a - lo:b - lo])

        nbytes, seconds = write_parts(paths, ds.n_rows, ctx, write_one)
    ctx.log(f"shard: {ds.n_rows} rows x {d} features from {input_path} -> {out} "
            f"({len(paths)} part{'s' if len(paths) > 1 else ''}, {_human_bytes(nbytes)}) in {seconds:.2f} s "
            f"on {ctx.size} rank{'s' if ctx.size > 1 else ''}")
    return {"command": "shard", "input": str(input_path), "out": str(out), "parts": len(paths),
            "rows": ds.n_rows, "features": d, "bytes": nbytes, "write_seconds": round(seconds, 4)}


# ------------------------------------------------------------------------- info
def _y_stats(ds, ctx) -> dict | None:
    """min/max/mean, NaN count and (when few) the distinct values of ``y``, collectively.

    Each rank reads only its row block of ``y`` (never ``X``), in chunks.
    """
    from mpi4py import MPI

    if not ds.has_y or ds.n_rows == 0:
        return None
    lo, hi = block_bounds(ds.n_rows, ctx.size, ctx.rank)
    mn, mx, total, count, nan = np.inf, -np.inf, 0.0, 0, 0
    distinct: set | None = set()
    for a in range(lo, hi, 1 << 20):
        b = min(hi, a + (1 << 20))
        y = np.empty(b - a, dtype=np.float64)
        _read_rows(ds.parts, "y", a, b, y)
        ok = np.isfinite(y)
        nan += int(np.isnan(y).sum())
        yf = y[ok]
        if yf.size:
            mn, mx = min(mn, float(yf.min())), max(mx, float(yf.max()))
            total += float(yf.sum())
            count += int(yf.size)
        if distinct is not None:
            distinct.update(np.unique(yf).tolist())
            if len(distinct) > MAX_DISTINCT:
                distinct = None
    comm = ctx.mpi_comm
    mn, mx = comm.allreduce(mn, op=MPI.MIN), comm.allreduce(mx, op=MPI.MAX)
    total, count, nan = comm.allreduce(total), comm.allreduce(count), comm.allreduce(nan)
    sets = comm.allgather(None if distinct is None else sorted(distinct))
    values = None
    if all(s is not None for s in sets):
        values = sorted(set().union(*sets))
        if len(values) > MAX_DISTINCT:
            values = None
    if values is not None and all(float(v).is_integer() for v in values):
        values = [int(v) for v in values]
    return {"min": mn if count else None, "max": mx if count else None,
            "mean": total / count if count else None, "nan": nan,
            "distinct": len(values) if values is not None else None, "values": values}


def info(path, ctx) -> dict:
    """Describe a dataset: rows, features, dtypes, ``y`` summary, parts and sizes.

    Collective (every rank calls it; bad input raises the same error on every rank).
    Metadata comes from rank 0; the ``y`` summary is computed from every rank's block.

    Returns
    -------
    dict
        ``path, rows, features, dtype`` (stored dtype of ``X``), ``has_y``, ``y_dtype``,
        ``y`` (``min, max, mean, nan, distinct, values`` or None), ``parts`` (list of
        ``{path, start, rows, bytes}``), ``bytes`` (on disk, all parts),
        ``generator`` (make-data settings, if recorded).
    """
    import h5py

    ds = open_dataset(path, ctx)
    meta = None
    if ctx.rank == 0:
        with h5py.File(ds.parts[0].path, "r") as h:
            x_dtype = str(h["X"].dtype)
            gen = h.attrs.get("generator")
        parts = [{"path": p.path, "start": p.start, "rows": p.rows, "bytes": os.path.getsize(p.path)}
                 for p in ds.parts]
        meta = {"x_dtype": x_dtype, "parts": parts,
                "generator": json.loads(gen) if isinstance(gen, (str, bytes)) else None}
    meta = ctx.mpi_comm.bcast(meta, root=0)
    y = _y_stats(ds, ctx)
    return {"path": str(path), "rows": ds.n_rows, "features": ds.n_features, "dtype": meta["x_dtype"],
            "has_y": ds.has_y, "y_dtype": str(ds.y_dtype) if ds.y_dtype is not None else None,
            "y": y, "parts": meta["parts"], "bytes": int(sum(p["bytes"] for p in meta["parts"])),
            "generator": meta["generator"]}


def format_info(info: dict, max_parts: int = 8) -> str:
    """Render :func:`info`'s dict for people (a few lines)."""
    lines = [f"{info['path']}: {info['rows']} rows x {info['features']} features, X {info['dtype']}"]
    y = info.get("y")
    if not info["has_y"]:
        lines.append("  y: none (unlabelled)")
    elif y is None:
        lines.append(f"  y: {info['y_dtype']} (no rows)")
    else:
        if y["values"] is not None and len(y["values"]) <= 12:
            what = f"{y['distinct']} distinct values: {', '.join(f'{v:.6g}' for v in y['values'])}"
        elif y["distinct"] is not None:
            what = f"{y['distinct']} distinct values"
        else:
            what = f"more than {MAX_DISTINCT} distinct values"
        rng = f"min {y['min']:.6g}, max {y['max']:.6g}, mean {y['mean']:.6g}" if y["min"] is not None else "no finite values"
        nan = f", {y['nan']} NaN" if y["nan"] else ""
        lines.append(f"  y: {info['y_dtype']}, {what}; {rng}{nan}")
    parts = info["parts"]
    lines.append(f"  parts: {len(parts)}, {_human_bytes(info['bytes'])} on disk")
    shown = parts if len(parts) <= max_parts else parts[:max_parts - 1]
    for p in shown:
        lines.append(f"    {os.path.basename(p['path'])}: rows [{p['start']}, {p['start'] + p['rows']}) "
                     f"({p['rows']} rows, {_human_bytes(p['bytes'])})")
    if len(shown) < len(parts):
        last = parts[-1]
        lines.append(f"    ... {len(parts) - len(shown) - 1} more ..., {os.path.basename(last['path'])}: "
                     f"{last['rows']} rows")
    gen = info.get("generator")
    if gen:
        opts = " ".join(f"{k}={v}" for k, v in gen.get("options", {}).items())
        lines.append(f"  generated by: make-data {gen.get('kind')} seed={gen.get('seed')} {opts}".rstrip())
    return "\n".join(lines)


__all__ = ["shard_dataset", "info", "format_info", "staged_output", "write_parts", "atomic_h5",
           "part_name", "list_parts"]
