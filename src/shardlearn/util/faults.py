"""Injected faults, for testing that a failure on one rank never hangs the others.

``SHARDLEARN_FAULT="SITE@RANK[:KIND][#N][,...]"`` makes :func:`check` fail at the named
site on that world rank, at its ``N``-th call there (default: the first): ``oserror``
(default: "No space left on device"), ``memory`` (MemoryError), ``kill`` (SIGKILL, a
rank dying) or ``usr1`` (SIGUSR1 to itself, as Slurm sends before a time limit).
Sites in the package:

- ``read``       a rank reading its block of a dataset (data/shards.py)
- ``write-part`` a rank writing a part file (make-data, shard)
- ``save``       rank 0 writing a model file, report or JSON document (persist.py)
- ``write-rows`` a rank writing its rows of a predictions file (persist.write_rows)
- ``checkpoint`` rank 0 writing a checkpoint
- ``step``       a training step boundary (every model's fit loop calls it once per step)

Without the variable :func:`check` costs one dictionary lookup.
"""
from __future__ import annotations

import errno
import os
import signal

_SPEC = None
_CALLS: dict = {}


def _parse() -> dict:
    out = {}
    for item in os.environ.get("SHARDLEARN_FAULT", "").split(","):
        site, _, rest = item.strip().partition("@")
        if not site or not rest:
            continue
        rest, _, nth = rest.partition("#")
        rank, _, kind = rest.partition(":")
        out[site] = (int(rank), kind or "oserror", int(nth or 1))
    return out


def check(site: str) -> None:
    """Fail here if ``SHARDLEARN_FAULT`` names this site and this process's world rank."""
    global _SPEC
    if _SPEC is None:
        _SPEC = _parse()
    if site not in _SPEC:
        return
    rank, kind, nth = _SPEC[site]
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() != rank:
        return
    _CALLS[site] = _CALLS.get(site, 0) + 1
    if _CALLS[site] != nth:
        return
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "usr1":
        os.kill(os.getpid(), signal.SIGUSR1)
        return
    if kind == "memory":
        raise MemoryError(f"injected at {site} on rank {rank}")
    raise OSError(errno.ENOSPC, f"No space left on device (injected at {site} on rank {rank})")
