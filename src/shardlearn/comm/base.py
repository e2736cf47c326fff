"""The collectives interface shared by every topology.

Subclasses implement the buffer-level algorithms on contiguous host numpy arrays
(``_allreduce``, ``_bcast``, ``_reduce_scatter``, ``_allgather``); this base class
does the rest once for all of them: argument checks, making input contiguous, moving
GPU (CuPy) arrays through host memory, phase timing, and small pickled helpers for
control messages that are not on the hot path.
"""
from __future__ import annotations

import time

import numpy as np

OPS = ("sum", "max", "min")
TOPOLOGIES = ("native", "ring", "tree", "hierarchical", "auto")
DTYPES = (np.float32, np.float64, np.int32, np.int64)
_DTYPE_SET = frozenset(DTYPES)
_clock = time.perf_counter


#: the element-wise ufunc of each op; ring and tree reduce with ``ufunc(a, b, out=...)``
REDUCE = {"sum": np.add, "max": np.maximum, "min": np.minimum}


class Collectives:
    """Allreduce, broadcast, allgather and reduce-scatter on one communicator.

    Attributes
    ----------
    comm : mpi4py.MPI.Comm
    rank, size : int
    topology : str
    comm_seconds : float
        Wall time spent inside collectives since creation (the "communication" phase).
    bytes_sent : int
        Bytes this rank handed to MPI as payload (an estimate for native).
    entered, calls : int
        Collectives this rank has entered and completed; ``entered > calls`` while it
        waits inside ``current``. The stall watchdog (:mod:`shardlearn.runtime`) reads them.
    current : str
        The collective entered last (name and bytes).

    With ``SHARDLEARN_CHECK_COLLECTIVES=1`` every call first checks, on a communicator of
    its own, that all ranks entered the same collective with the same length and dtype,
    and raises the same ``ShardlearnError`` on every rank naming the first that did not.
    """

    topology = "base"

    def __init__(self, mpi_comm):
        self.comm = mpi_comm
        self.rank = mpi_comm.Get_rank()
        self.size = mpi_comm.Get_size()
        self.comm_seconds = 0.0
        self.bytes_sent = 0
        self.calls = 0
        self.entered = 0
        self.current = ""
        self._checker = _CollectiveChecker(mpi_comm) if _check_enabled() else None
        self.device_buffers = None  # comm.device.DeviceBuffers: how device arrays travel

    # ----------------------------------------------------------------- public API
    def allreduce(self, x, op: str = "sum"):
        """Reduce ``x`` element-wise over all ranks; every rank gets the result.

        Returns a new array of the same shape and dtype (and device) as ``x``.
        """
        if op not in OPS:
            self._check_op(op)
        self.entered += 1
        self.current = "allreduce"
        if self._checker is not None:
            self._checker.check(f"allreduce({op})", x)
        if type(x) is np.ndarray and x.dtype.type in _DTYPE_SET:
            # fast path for host arrays: small allreduces are latency-bound, so the
            # wrapper's own overhead matters (see bench/comm.md)
            host, back = (x if x.flags.c_contiguous else np.ascontiguousarray(x)), None
        elif self._device(x):  # comm/device.py: CUDA-aware MPI, or reused pinned buffers
            from .device import device_allreduce

            self.entered -= 1  # device_allreduce enters again (host path) or counts itself
            return device_allreduce(self, self.device_buffers, x, op)
        else:
            host, back = self._to_host(x)
        t0 = _clock()
        if host.size and self.size > 1:
            out = self._allreduce(host, op)
            if out.shape != host.shape:
                out = out.reshape(host.shape)
        else:
            out = host.copy()
        self.comm_seconds += _clock() - t0
        self.calls += 1
        return out if back is None else back(out)

    def bcast(self, x, root: int = 0):
        """Return ``x`` from ``root`` on every rank.

        Every rank passes an array of the same shape and dtype (the values on ranks
        other than ``root`` are ignored).
        """
        self._enter("bcast", x, f"root={root}")
        host, back = self._to_host(x)
        t0 = time.perf_counter()
        out = self._bcast(host.copy(), root) if host.size and self.size > 1 else host.copy()
        self._account(t0)
        return back(out.reshape(host.shape))

    def allgather(self, x):
        """Concatenate every rank's ``x`` along axis 0, in rank order.

        The ranks may pass different numbers of rows (also 0); trailing dimensions
        and dtype must agree.
        """
        self._enter("allgather", None, f"dtype={np.asarray(x).dtype} row={np.shape(x)[1:]}")
        host, back = self._to_host(x)
        t0 = time.perf_counter()
        row = int(np.prod(host.shape[1:], dtype=np.int64)) if host.ndim > 1 else 1
        # one small buffer exchange (no pickling): rows, row size and dtype of every rank,
        # so every rank sees the same table and a mismatch fails on all ranks alike
        mine = np.array([host.shape[0] if host.ndim else 1, row, host.dtype.num, host.ndim],
                        dtype=np.int64)
        table = np.empty((self.size, 4), dtype=np.int64)
        self.comm.Allgather(mine, table)
        if (table[:, 1:] != table[0, 1:]).any():
            self._account(t0)
            raise ValueError("allgather: ranks passed arrays whose dtype or trailing dimensions "
                             f"differ (rows, row size, dtype code, ndim per rank: {table.tolist()})")
        counts = table[:, 0]
        flat = self._allgather(host.reshape(-1), counts * row)
        self._account(t0)
        return back(flat.reshape((int(counts.sum()),) + host.shape[1:]))

    def reduce_scatter(self, x, op: str = "sum"):
        """Reduce ``x`` over all ranks and return this rank's block of the result.

        Blocks split the flattened array as :func:`shardlearn.util.blocks.block_bounds` does, so rank ``r``
        gets elements ``[r*n//P, (r+1)*n//P)``; a rank's block may be empty.
        """
        self._check_op(op)
        self._enter(f"reduce_scatter({op})", x)
        host, back = self._to_host(x)
        t0 = time.perf_counter()
        flat = host.reshape(-1)
        if self.size == 1:
            out = flat.copy()
        else:
            out = self._reduce_scatter(flat, op)
        self._account(t0)
        return back(out)

    def alltoallv(self, send, recv) -> None:
        """MPI ``Alltoallv`` of host buffers given as mpi4py buffer specs
        (``[buf, counts, displacements, datatype]``), counted as a collective like the
        others (the stall watchdog's progress, communication seconds, the collective check)."""
        self._enter("alltoallv", None)
        t0 = time.perf_counter()
        self.comm.Alltoallv(send, recv)
        self._account(t0)

    # small pickled helpers: control data, never on the hot path
    def bcast_obj(self, obj, root: int = 0):
        """Broadcast a small Python object (pickled)."""
        self._enter("bcast_obj", None, f"root={root}")
        out = self.comm.bcast(obj, root=root)
        self.calls += 1
        return out

    def allgather_obj(self, obj) -> list:
        """Gather a small Python object from every rank, in rank order (pickled)."""
        self._enter("allgather_obj", None)
        out = self.comm.allgather(obj)
        self.calls += 1
        return out

    def barrier(self) -> None:
        self._enter("barrier", None)
        self.comm.Barrier()
        self.calls += 1

    def free(self) -> None:
        """Release communicators this object duplicated (collective; optional)."""
        p2p = getattr(self, "p2p", None)
        if p2p is not None and p2p is not self.comm:
            p2p.Free()
            self.p2p = None
        if self._checker is not None:
            self._checker.free()
            self._checker = None

    # ------------------------------------------------------------ implementation
    def _allreduce(self, x: np.ndarray, op: str) -> np.ndarray:
        raise NotImplementedError

    def _bcast(self, x: np.ndarray, root: int) -> np.ndarray:
        raise NotImplementedError

    def _allgather(self, flat: np.ndarray, counts: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _reduce_scatter(self, flat: np.ndarray, op: str) -> np.ndarray:
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _check_op(op: str) -> None:
        if op not in OPS:
            raise ValueError(f"unknown reduction op {op!r}: choose one of {', '.join(OPS)}")

    def _enter(self, what: str, x, extra: str = "") -> None:
        self.entered += 1
        self.current = what
        if self._checker is not None:
            self._checker.check(what + (f" {extra}" if extra else ""), x)

    def _account(self, t0: float) -> None:
        self.comm_seconds += time.perf_counter() - t0
        self.calls += 1

    def _device(self, x) -> bool:
        """Whether ``x`` is a device (CuPy) array; makes the staging buffers on first use."""
        if type(x).__module__.split(".")[0] != "cupy":
            return False
        if self.device_buffers is None:  # CuPy input on a cpu Context: stage, no detection
            from .device import DeviceBuffers

            self.device_buffers = DeviceBuffers(self.comm, cuda_aware=False)
        return True

    def _to_host(self, x):
        """Return (contiguous host array, function that moves a result back)."""
        if self._device(x):  # reused pinned host buffers (comm/device.py)
            return self.device_buffers.stage(x), self.device_buffers.unstage
        arr = np.asarray(x)
        if arr.dtype.type not in DTYPES:
            raise TypeError(
                f"collectives take float32, float64, int32 or int64 arrays, not {arr.dtype}")
        return np.ascontiguousarray(arr), (lambda a: a)


def _check_enabled() -> bool:
    import os

    return os.environ.get("SHARDLEARN_CHECK_COLLECTIVES", "").strip() not in ("", "0")


class _CollectiveChecker:
    """Debug mode: before each collective, every rank shows what it is about to call.

    One pickled allgather on a duplicated communicator per call (slow: for debugging a
    hang or a wrong result, not for production). A mismatch raises the same error on
    every rank, naming the first rank whose call differs from rank 0's.
    """

    def __init__(self, mpi_comm):
        self.comm = mpi_comm.Dup() if mpi_comm.Get_size() > 1 else None
        self.n = 0

    def check(self, what: str, x) -> None:
        if self.comm is None:
            return
        self.n += 1
        mine = what if x is None else f"{what} shape={tuple(np.shape(x))} dtype={np.asarray(x).dtype}"
        seen = self.comm.allgather(mine)
        bad = [r for r, s in enumerate(seen) if s != seen[0]]
        if bad:
            from ..errors import agreed

            raise agreed(
                f"SHARDLEARN_CHECK_COLLECTIVES: collective #{self.n}: rank {bad[0]} called {seen[bad[0]]} "
                f"but rank 0 called {seen[0]}" + ("" if len(bad) == 1 else f" (ranks {bad} differ)"))

    def free(self) -> None:
        if self.comm is not None:
            self.comm.Free()
            self.comm = None
