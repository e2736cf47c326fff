"""MPI's own collectives (``Allreduce``, ``Bcast``, ``Allgatherv``, ``Reduce_scatter``)."""
from __future__ import annotations

import numpy as np
from mpi4py import MPI

from ..util.blocks import block_bounds
from .base import Collectives

MPI_OPS = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}


class NativeCollectives(Collectives):
    """Collectives delegated to the MPI library (its own algorithm choices)."""

    topology = "native"

    def _allreduce(self, x, op):
        out = np.empty_like(x)
        self.comm.Allreduce(x, out, op=MPI_OPS[op])
        self.bytes_sent += x.nbytes
        return out

    def _bcast(self, x, root):
        self.comm.Bcast(x, root=root)
        if self.rank == root:
            self.bytes_sent += x.nbytes
        return x

    def _allgather(self, flat, counts):
        out = np.empty(int(counts.sum()), dtype=flat.dtype)
        displs = np.zeros_like(counts)
        np.cumsum(counts[:-1], out=displs[1:])
        self.comm.Allgatherv(flat, [out, (counts, displs)])
        self.bytes_sent += flat.nbytes
        return out

    def _reduce_scatter(self, flat, op):
        n = flat.size
        counts = np.array([block_bounds(n, self.size, r)[1] - block_bounds(n, self.size, r)[0]
                           for r in range(self.size)], dtype=np.int64)
        lo, hi = block_bounds(n, self.size, self.rank)
        out = np.empty(hi - lo, dtype=flat.dtype)
        if n == 0:
            return out
        self.comm.Reduce_scatter(flat, out, recvcounts=counts, op=MPI_OPS[op])
        self.bytes_sent += flat.nbytes
        return out
