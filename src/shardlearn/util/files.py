"""Atomic file writes: every output appears whole or not at all.

A file is written under a temporary name in the target's directory, flushed and fsynced,
then renamed over the target (atomic on POSIX). :func:`atomic_path` is the one place this
happens; model files, reports, datasets and predictions all go through it.
"""
from __future__ import annotations

import contextlib
import os
import socket

from ..errors import ShardlearnError


def tmp_name(path: str) -> str:
    """The temporary name a file is written under before its atomic rename:
    ``.NAME.tmp-HOST-PID`` beside it (host and PID say whose it is)."""
    d, base = os.path.split(os.path.abspath(path))
    return os.path.join(d, f".{base}.tmp-{_host()}-{os.getpid()}")


def _host() -> str:
    return socket.gethostname().split(".")[0].replace("-", "_") or "host"


def remove_stale_temps(path: str) -> list:
    """Remove temporary files of ``path`` left by killed writers on this host.

    Only files named as :func:`tmp_name` names them, written on this host by a process that
    no longer exists, are removed (a live writer's, or another node's, are left alone).
    Returns the removed paths.
    """
    d, base = os.path.split(os.path.abspath(path))
    prefix = f".{base}.tmp-{_host()}-"
    removed = []
    try:
        names = os.listdir(d)
    except OSError:
        return removed
    for name in names:
        pid = name[len(prefix):]
        if name.startswith(prefix) and pid.isdigit() and not _alive(int(pid)):
            try:
                os.remove(os.path.join(d, name))
                removed.append(os.path.join(d, name))
            except OSError:
                pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    remove_stale_temps(path)
    tmp = tmp_name(path) if tmp is None else tmp
    restore = _remove_on_sigterm(tmp)
    try:
        yield tmp
        fsync_replace(tmp, path)
    finally:
        restore()
        if os.path.exists(tmp):
            os.remove(tmp)


def _remove_on_sigterm(tmp: str):
    """While ``tmp`` is being written, a SIGTERM that would kill the process removes it first.

    A handler already in place (a checkpointing fit turns SIGTERM into a stop request) is
    left to do its job. Returns the function that restores the previous handler.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        return lambda: None

    def handler(signum, frame):
        try:
            os.remove(tmp)
        except OSError:
            pass
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)


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


def refuse_inputs_as_outputs(outputs: dict, inputs: dict) -> None:
    """Raise :class:`ShardlearnError` if an output would replace an input file.

    ``outputs`` and ``inputs`` map option names (``"--out"``) to paths; an input that is a
    directory stands for every file in it. Paths are compared after resolving links.
    """
    seen = {}
    for opt, path in inputs.items():
        if not path:
            continue
        real = os.path.realpath(path)
        files = [os.path.join(real, f) for f in os.listdir(real)] if os.path.isdir(real) else [real]
        for f in files:
            seen[os.path.realpath(f)] = opt
    for opt, path in outputs.items():
        if path and os.path.realpath(path) in seen:
            raise ShardlearnError(f"{opt} {path} is also the input {seen[os.path.realpath(path)]}: "
                                  "writing it would destroy the input; choose another path")
