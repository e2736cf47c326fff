"""Per-call choice of algorithm by message size (placeholder thresholds, being measured)."""
from __future__ import annotations

from .base import Collectives
from .native import NativeCollectives
from .ring import RingCollectives
from .tree import TreeCollectives


class AutoCollectives(Collectives):
    topology = "auto"
    RING_FROM = {2: 4 * 1024 ** 2}
    RING_FROM_DEFAULT = 1024 ** 2

    def __init__(self, mpi_comm):
        super().__init__(mpi_comm)
        self.native = NativeCollectives(mpi_comm)
        self.ring = RingCollectives(mpi_comm)
        self.tree = TreeCollectives(mpi_comm)

    @classmethod
    def ring_threshold(cls, size):
        return cls.RING_FROM.get(size, cls.RING_FROM_DEFAULT)

    @classmethod
    def describe_rule(cls, size):
        return {"ring_from_bytes": cls.ring_threshold(size), "below": "native"}

    def choose(self, nbytes):
        return self.ring if nbytes >= self.ring_threshold(self.size) else self.native

    def _allreduce(self, x, op):
        return self.choose(x.nbytes)._allreduce(x, op)

    def _bcast(self, x, root):
        return self.native._bcast(x, root)

    def _allgather(self, flat, counts):
        return self.native._allgather(flat, counts)

    def _reduce_scatter(self, flat, op):
        return self.choose(flat.nbytes)._reduce_scatter(flat, op)
