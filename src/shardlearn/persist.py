"""Model files, JSON documents and per-row outputs: HDF5 / JSON, written atomically.

Every file goes through :func:`shardlearn.util.files.atomic_path` (temporary name, fsync,
rename), so a crash never leaves a half-written model. Only rank 0 writes model files;
per-row outputs are written by every rank in turn into one temporary file that rank 0
renames at the end.

A model file carries ``shardlearn_format`` (:data:`FORMAT_VERSION`); :func:`load_model`
refuses a file of a newer format with a message saying to upgrade.

Layer: above :mod:`shardlearn.util` (files); takes a Context for collective writes.
"""
from __future__ import annotations

import json
import os
import platform
import time

import numpy as np

from .errors import ShardlearnError
from .util import faults
from .util.files import atomic_path, check_output_dir, fsync_replace, remove_stale_temps, tmp_name

#: the model-file format this version writes; it reads this one and every older one
FORMAT_VERSION = 1


def provenance() -> dict:
    """Versions and host facts stored with every model."""
    import h5py
    from mpi4py import MPI

    return {"shardlearn": _version(), "numpy": np.__version__, "h5py": h5py.__version__,
            "mpi": MPI.Get_library_version().splitlines()[0].strip(),
            "python": platform.python_version(), "host": platform.node(),
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _write_group(g, arrays: dict) -> None:
    for name, value in arrays.items():
        if isinstance(value, dict):
            _write_group(g.create_group(name), value)
        else:
            g.create_dataset(name, data=np.asarray(value))


def _read_group(g) -> dict:
    import h5py

    out = {}
    for name, item in g.items():
        out[name] = _read_group(item) if isinstance(item, h5py.Group) else item[()]
    return out


def save_model(path: str, estimator: str, arrays: dict, params: dict, info: dict | None = None) -> None:
    """Write a model file atomically (call on one rank only).

    Parameters
    ----------
    path : str
    estimator : str
        The estimator's registered name (``"kmeans"``, ``"logistic"``, ...).
    arrays : dict of name -> array (nested dicts become HDF5 groups)
    params : dict
        Hyper-parameters, stored as JSON in the ``params`` attribute.
    info : dict, optional
        Fit facts (n_iter, loss, data path, ranks, ...), stored as JSON in ``info``.
    """
    import h5py

    check_output_dir(path)
    with atomic_path(path) as tmp:
        faults.check("save")
        with h5py.File(tmp, "w") as h:
            h.attrs["shardlearn_format"] = FORMAT_VERSION
            h.attrs["estimator"] = estimator
            h.attrs["params"] = json.dumps(params, default=jsonable)
            h.attrs["info"] = json.dumps(info or {}, default=jsonable)
            h.attrs["provenance"] = json.dumps(provenance())
            _write_group(h, arrays)


def load_model(path: str) -> tuple[str, dict, dict, dict]:
    """Read a model file: ``(estimator, arrays, params, info)``.

    Raises :class:`ShardlearnError` for a missing or unreadable file, a file that is not a
    shardlearn model, or one written in a newer format than :data:`FORMAT_VERSION`.
    """
    import h5py

    if not os.path.exists(path):
        raise ShardlearnError(f"{path}: no such model file")
    try:
        with h5py.File(path, "r") as h:
            if "estimator" not in h.attrs:
                raise ShardlearnError(f"{path}: not a shardlearn model file (no 'estimator' attribute)")
            version = int(h.attrs.get("shardlearn_format", 1))
            if version > FORMAT_VERSION:
                raise ShardlearnError(
                    f"{path}: model file format {version} was written by a newer shardlearn; this "
                    f"version ({_version()}) reads format {FORMAT_VERSION} and older: upgrade shardlearn")
            est = str(h.attrs["estimator"])
            params = json.loads(h.attrs["params"])
            info = json.loads(h.attrs.get("info", "{}"))
            info["provenance"] = json.loads(h.attrs.get("provenance", "{}"))
            arrays = _read_group(h)
    except OSError as exc:
        raise ShardlearnError(f"{path}: not a readable HDF5 file ({exc})") from None
    return est, arrays, params, info


def write_json(path: str, obj: dict) -> None:
    """Write a JSON document atomically (call on one rank only)."""
    check_output_dir(path)
    with atomic_path(path) as tmp:
        faults.check("save")
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, default=jsonable)
            f.write("\n")


def write_rows(path: str, columns: dict, start: int, n_total: int, ctx) -> None:
    """Write per-row outputs (labels, predictions) in global row order, collectively.

    Each rank passes its local rows of every column and the global index of its first
    row. Rank 0 creates a temporary file with full-size datasets, the ranks write
    their slices one after another (a token passed in rank order, so memory per rank
    stays O(local rows)), and rank 0 renames the file into place. If any rank fails to
    write, every rank raises the same :class:`ShardlearnError`, the temporary file is
    removed and ``path`` is untouched.
    """
    import h5py

    comm = ctx.mpi_comm
    with ctx.collective_errors():
        if ctx.rank == 0:
            check_output_dir(path)
            remove_stale_temps(path)
    tmp = comm.bcast(tmp_name(path) if ctx.rank == 0 else None, root=0)
    error = None
    if ctx.rank == 0:
        try:
            with h5py.File(tmp, "w") as h:
                h.attrs["rows"] = n_total
                for k, v in columns.items():
                    v = np.asarray(v)
                    h.create_dataset(k, shape=(n_total,) + v.shape[1:], dtype=v.dtype)
        except Exception as exc:  # noqa: BLE001 - any failure: agreed below, file removed
            error = f"{path}: cannot create the output ({type(exc).__name__}: {exc})"
    else:
        error = comm.recv(source=ctx.rank - 1, tag=77)  # the token: the first error so far
    n_local = len(next(iter(columns.values()))) if columns else 0
    if error is None and n_local:
        try:
            faults.check("write-rows")
            with h5py.File(tmp, "r+") as h:
                for k, v in columns.items():
                    h[k][start:start + n_local] = np.asarray(v)
        except Exception as exc:  # noqa: BLE001
            error = f"{path}: rank {ctx.rank} could not write its rows ({type(exc).__name__}: {exc})"
    if ctx.rank < ctx.size - 1:
        comm.send(error, dest=ctx.rank + 1, tag=77)
    try:
        ctx.agree(error)
        if ctx.rank == 0:
            try:
                fsync_replace(tmp, path)
            except OSError as exc:
                error = f"{path}: cannot move the output into place ({exc})"
        ctx.agree(error)
    finally:
        if ctx.rank == 0 and os.path.exists(tmp):
            os.remove(tmp)


def _version() -> str:
    from . import __version__

    return __version__


def jsonable(o):
    """``json.dumps(..., default=jsonable)``: NumPy scalars and arrays as Python values."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
