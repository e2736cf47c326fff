"""Atomic file writes: every output appears whole or not at all.

A file is written under a temporary name in the target's directory, flushed and fsynced,
then renamed over the target (atomic on POSIX). :func:`atomic_path` is the one place this
happens; model files, reports, datasets and predictions all go through it.
"""
from __future__ import annotations

import contextlib
import os

from ..errors import ShardlearnError


def tmp_name(path: str) -> str:
    """The temporary name a file is written under before its atomic rename."""
    d, base = os.path.split(os.path.abspath(path))
    return os.path.join(d, f".{base}.tmp-{os.getpid()}")


def fsync_replace(tmp: str, path: str) -> None:
    """Flush ``tmp`` to disk and rename it over ``path`` (atomic on POSIX)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str, tmp: str | None = None):
    """Yield a temporary path to write ``path``'s contents to; on success fsync and rename.

    On an exception inside the block the temporary is removed and ``path`` is untouched.
    ``tmp`` overrides the temporary name (when several ranks must agree on it).
    """
    tmp = tmp_name(path) if tmp is None else tmp
    try:
        yield tmp
        fsync_replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_h5(path: str):
    """Open an HDF5 file for writing under a temporary name; fsync and rename on success."""
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h:
            yield h


def check_output_dir(path: str) -> None:
    """Raise :class:`ShardlearnError` unless ``path``'s directory exists and is writable."""
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise ShardlearnError(f"{path}: directory {d} does not exist")
    if not os.access(d, os.W_OK):
        raise ShardlearnError(f"{path}: directory {d} is not writable")
