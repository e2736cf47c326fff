"""Hierarchical (node-aware) allreduce: reduce within each node, allreduce among the
nodes' leaders, broadcast within each node (the scheme of Horovod's hierarchical
allreduce).

Communicators (created once, freed by :meth:`HierarchicalCollectives.free`):

* ``node``: ``Split_type(COMM_TYPE_SHARED, key=rank)``, the ranks of this node in world
  rank order; its local rank 0 (the node's lowest world rank) is the node's *leader*.
* ``leaders``: ``Split`` of the leaders (one per node, in world rank order;
  ``COMM_NULL`` on the other ranks). Among the leaders the allreduce is a
  :class:`~shardlearn.comm.tree.TreeCollectives` for messages below
  :attr:`HierarchicalCollectives.ring_bytes` and a
  :class:`~shardlearn.comm.ring.RingCollectives` from there (each duplicates the
  leaders' communicator once). With one node the leaders' communicator has size 1 and
  that step is skipped.

Determinism: the within-node reduction is not ``MPI_Reduce`` (whose order MPICH may
choose): the leader receives every local rank's buffer and combines them in local rank
order, ``((x0 op x1) op x2) op ...``, piece by piece; the leaders' step is ring or tree,
both of which reduce in a fixed order; the choice between them depends only on the
message size, which is the same on every rank; the result then travels byte for byte
(``Bcast`` on the node). So every rank holds the same bits, run after run, for any
number of nodes and ranks per node (uneven included). The bits may differ between two
*layouts* of the same world size (the summation order follows the nodes).

``reduce_scatter`` is the hierarchical allreduce followed by taking this rank's block
(:func:`~shardlearn.util.blocks.block_bounds`); ``bcast`` and ``allgather`` are MPI's own.
"""
from __future__ import annotations

import numpy as np
from mpi4py import MPI

from ..util.blocks import block_bounds
from .base import REDUCE, Collectives
from .native import NativeCollectives
from .ring import RingCollectives
from .tree import TreeCollectives

TAG_NODE = 7301


class HierarchicalCollectives(Collectives):
    """Node-aware allreduce: within-node reduce, leaders' allreduce, within-node bcast.

    Attributes
    ----------
    node : mpi4py.MPI.Comm
        The ranks sharing this node's memory; ``local_rank``/``local_size`` on it.
    leaders : mpi4py.MPI.Comm or None
        One rank per node (local rank 0); None on the other ranks.
    ring_bytes : int
        Messages of at least this many bytes use the ring among the leaders, smaller
        ones the tree.
    chunk_bytes : int
        Largest piece a leader receives from one local rank at a time in the
        within-node reduction (bounds the leader's extra memory).
    leader_chunk_bytes : int
        The leaders' ring moves each block in pieces of at most this many bytes;
        the default sends whole blocks (one ``Sendrecv`` per ring step). Measured on
        2 emulated nodes x 2 ranks over a 1 Gb/s link (16 MiB, bench/cluster.md): the
        leaders' step took 146-164 ms with whole blocks against 210-220 ms with the
        one-node ring's 512 KiB pieces, whose one-receive-at-a-time pipeline stalls
        the link between pieces; 16 MiB each way alone takes 140 ms. The reduction
        order, and so the bits, are the same either way.
    """

    topology = "hierarchical"
    ring_bytes = 256 * 1024
    chunk_bytes = 512 * 1024
    leader_chunk_bytes = 1 << 40

    def __init__(self, mpi_comm):
        self._own_bytes = 0
        self.ring = self.tree = None
        super().__init__(mpi_comm)
        self.node = mpi_comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank = self.node.Get_rank()
        self.local_size = self.node.Get_size()
        leaders = mpi_comm.Split(0 if self.local_rank == 0 else MPI.UNDEFINED, key=self.rank)
        self.leaders = None if leaders == MPI.COMM_NULL else leaders
        if self.leaders is not None:
            self.ring = RingCollectives(self.leaders)
            self.ring.chunk_bytes = self.leader_chunk_bytes
            self.tree = TreeCollectives(self.leaders)
        self.n_nodes = mpi_comm.bcast(self.leaders.Get_size() if self.leaders is not None else 0,
                                      root=0)
        self._bufs = []

    # bytes_sent adds up this object's own messages and those of the leaders' ring/tree
    @property
    def bytes_sent(self) -> int:
        subs = sum(c.bytes_sent for c in (self.ring, self.tree) if c is not None)
        return self._own_bytes + subs

    @bytes_sent.setter
    def bytes_sent(self, value: int) -> None:
        subs = sum(c.bytes_sent for c in (self.ring, self.tree) if c is not None)
        self._own_bytes = value - subs

    def free(self) -> None:
        for c in (self.ring, self.tree):
            if c is not None:
                c.free()
        self.ring = self.tree = None
        if self.leaders is not None:
            self.leaders.Free()
            self.leaders = None
        if getattr(self, "node", None) is not None:
            self.node.Free()
            self.node = None
        super().free()

    # ------------------------------------------------------------------ phases
    def _node_buffers(self, count: int, dtype) -> list:
        """``local_size - 1`` reusable receive buffers of ``count`` elements each."""
        need = max(count, 1) * np.dtype(dtype).itemsize
        if not self._bufs or self._bufs[0].nbytes < need:
            self._bufs = [np.empty(need, dtype=np.uint8) for _ in range(self.local_size - 1)]
        return [b[:count * np.dtype(dtype).itemsize].view(dtype) for b in self._bufs]

    def _node_reduce(self, flat: np.ndarray, op: str) -> np.ndarray | None:
        """Reduce ``flat`` to the node's leader in local rank order; None off the leader.

        Never writes to ``flat``. Pieces of at most :attr:`chunk_bytes`: the leader posts
        one receive per local rank for a piece, then combines them in local rank order.
        """
        L, n = self.local_size, flat.size
        k = max(1, -(-n * flat.itemsize // self.chunk_bytes))
        node = self.node
        if self.local_rank:
            reqs = [node.Isend(flat[c * n // k:(c + 1) * n // k], 0, TAG_NODE) for c in range(k)]
            MPI.Request.Waitall(reqs)
            self._own_bytes += flat.nbytes
            return None
        ufunc = REDUCE[op]
        out = np.empty_like(flat)
        bufs = self._node_buffers(-(-n // k), flat.dtype)
        for c in range(k):
            lo, hi = c * n // k, (c + 1) * n // k
            got = [b[:hi - lo] for b in bufs]
            reqs = [node.Irecv(got[i - 1], i, TAG_NODE) for i in range(1, L)]
            reqs[0].Wait()
            ufunc(flat[lo:hi], got[0], out=out[lo:hi])
            for i in range(2, L):
                reqs[i - 1].Wait()
                ufunc(out[lo:hi], got[i - 1], out=out[lo:hi])
        return out

    def _hier_allreduce(self, flat: np.ndarray, op: str) -> np.ndarray:
        if self.local_size > 1:
            acc = self._node_reduce(flat, op)
        else:
            acc = flat
        if self.local_rank == 0:
            if self.n_nodes > 1:
                algo = self.ring if flat.nbytes >= self.ring_bytes else self.tree
                acc = algo._allreduce(acc, op)
            elif acc is flat:
                acc = flat.copy()
        else:
            acc = np.empty_like(flat)
        if self.local_size > 1:
            self.node.Bcast(acc, root=0)
            if self.local_rank == 0:
                self._own_bytes += acc.nbytes
        return acc

    # ------------------------------------------------------- interface methods
    def _allreduce(self, x, op):
        return self._hier_allreduce(x.reshape(-1), op)

    def _reduce_scatter(self, flat, op):
        full = self._hier_allreduce(flat, op) if flat.size else flat
        lo, hi = block_bounds(flat.size, self.size, self.rank)
        return np.array(full[lo:hi], copy=True)

    _bcast = NativeCollectives._bcast
    _allgather = NativeCollectives._allgather


__all__ = ["HierarchicalCollectives"]
