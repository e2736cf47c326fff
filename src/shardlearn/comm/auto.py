"""Per-call choice of algorithm by message size: ``topology="auto"``.

The rule (allreduce and reduce_scatter; P = world size, B = message bytes)::

    P == 1   native (no communication at all)
    P == 2   B < 32 KiB: native    32 KiB <= B < 128 KiB: tree    B >= 128 KiB: ring
    P >= 3   B < 32 KiB: native    32 KiB <= B < 256 KiB: tree    B >= 256 KiB: ring

Across nodes: when the communicator spans more than one node *and* some node holds more
than one of its ranks (``Split_type(COMM_TYPE_SHARED)``, checked once, collectively, when
the object is built), messages of at least :attr:`AutoCollectives.HIER_BYTES` use
``hierarchical`` (reduce within the node, only one rank per node on the network, see
:mod:`shardlearn.comm.hierarchical`); smaller ones keep the rule above. One rank per node,
or one node, never uses it (it would only add steps). The threshold comes from
``bench/bench_cluster.py`` (bench/cluster.md: 2 emulated nodes x 2 ranks on one 2-core
machine, load average ~5-7): over a 1 Gb/s link hierarchical took 0.81x / 0.74x / 0.87x /
0.83x the best flat algorithm's time at 512 KiB / 1 MiB / 4 MiB / 16 MiB and 1.38x at
128 KiB; over 10 and 25 Gb/s links, where the shared cores and not the link limit every
algorithm, it took 0.86x-1.18x from 1 MiB. From 1 MiB it wins where the network is the
bottleneck and loses at most ~1.2x where it is not.

``bcast`` and ``allgather`` use MPI's own (native) algorithms at every size: the
ring/tree versions were not measured to be faster there.

Every rank sees the same message size (all ranks pass the same shape), so every rank
picks the same algorithm and the per-call choice can never split a collective.

How the rule was found: ``python bench/bench_comm.py --runs 3`` runs ``shardlearn
bench-comm`` (float64 sum, 8 B .. 64 MiB) on 2 and 4 ranks and fits the best piecewise
choice (``fit_rule``); the figures, the crossovers and the check "auto within 10% of the
best" are in ``bench/comm.md``. Below 32 KiB MPI's own algorithm (recursive doubling, in
C) wins; from there the tree's two whole-message steps, and from 128-256 KiB the ring's
bandwidth. On another cluster, run ``shardlearn bench-comm`` there and set ``--topology``
accordingly, or adjust :attr:`AutoCollectives.RULES`.
"""
from __future__ import annotations

import numpy as np
from mpi4py import MPI

from .base import Collectives
from .native import NativeCollectives
from .ring import RingCollectives
from .tree import TreeCollectives


class AutoCollectives(Collectives):
    """Dispatch each call to native, tree, ring (or hierarchical across nodes) by message size.

    Attributes
    ----------
    RULES : dict
        World size -> list of ``(upper_bytes, topology)``: a message of ``B`` bytes
        uses the first topology whose ``upper_bytes`` exceeds ``B``. World sizes not
        in the table use :attr:`RULE_DEFAULT` (measured with 4 ranks).
    HIER_BYTES : int
        Across nodes with several ranks on a node, messages of at least this many bytes
        use hierarchical.
    """

    topology = "auto"
    INF = float("inf")
    RULES = {
        1: [(INF, "native")],
        2: [(32 * 1024, "native"), (128 * 1024, "tree"), (INF, "ring")],
    }
    RULE_DEFAULT = [(32 * 1024, "native"), (256 * 1024, "tree"), (INF, "ring")]
    HIER_BYTES = 1024 * 1024
    _ALGOS = ("native", "ring", "tree", "hierarchical")

    def __init__(self, mpi_comm):
        self._own_bytes = 0
        super().__init__(mpi_comm)
        self.native = NativeCollectives(mpi_comm)
        self.ring = RingCollectives(mpi_comm)
        self.tree = TreeCollectives(mpi_comm)
        #: True when the communicator spans several nodes with several ranks on some node
        self.multi_node = self.spans_nodes(mpi_comm)
        if self.multi_node:
            from .hierarchical import HierarchicalCollectives

            self.hierarchical = HierarchicalCollectives(mpi_comm)
        rule = self.rule(self.size, self.multi_node)
        self._bounds = [b for b, _ in rule]
        self._algos = [getattr(self, t) for _, t in rule]
        # the common case, checked first without a loop: latency-bound calls are short
        self._first_bound, self._first = self._bounds[0], self._algos[0]

    # bytes_sent adds up what the three algorithm objects handed to MPI
    @property
    def bytes_sent(self) -> int:
        subs = sum(getattr(self, t).bytes_sent for t in self._ALGOS if t in self.__dict__)
        return self._own_bytes + subs

    @bytes_sent.setter
    def bytes_sent(self, value: int) -> None:
        subs = sum(getattr(self, t).bytes_sent for t in self._ALGOS if t in self.__dict__)
        self._own_bytes = value - subs

    @staticmethod
    def spans_nodes(mpi_comm) -> bool:
        """Whether ``mpi_comm`` spans more than one node and some node holds more than one
        of its ranks (collective: every rank gets the same answer)."""
        size = mpi_comm.Get_size()
        if size < 3:  # two nodes of at least two ranks, or three plus one, need >= 3
            return False
        node = mpi_comm.Split_type(MPI.COMM_TYPE_SHARED, key=mpi_comm.Get_rank())
        local = node.Get_size()
        node.Free()
        flags = np.array([local < size, local > 1], dtype=np.int32)
        mpi_comm.Allreduce(MPI.IN_PLACE, flags, op=MPI.MAX)  # some rank: several nodes / several here
        return bool(flags[0] and flags[1])

    @classmethod
    def rule(cls, size: int, multi_node: bool = False) -> list:
        """``[(upper_bytes, topology), ...]`` for ``size`` ranks; ``multi_node`` (see
        :meth:`spans_nodes`) replaces everything from :attr:`HIER_BYTES` up by hierarchical."""
        base = cls.RULES.get(size, cls.RULE_DEFAULT)
        if not multi_node or size == 1:
            return base
        out = []
        for bound, topo in base:
            out.append((min(bound, cls.HIER_BYTES), topo))
            if bound >= cls.HIER_BYTES:
                break
        return out + [(cls.INF, "hierarchical")]

    @classmethod
    def describe_rule(cls, size: int, multi_node: bool = False) -> list:
        """The rule for ``size`` ranks as ``[{"below_bytes": B or None, "topology": t}]``."""
        return [{"below_bytes": None if b == cls.INF else int(b), "topology": t}
                for b, t in cls.rule(size, multi_node)]

    def choose(self, nbytes: int) -> Collectives:
        """The algorithm object used for a message of ``nbytes`` bytes."""
        if nbytes < self._first_bound:
            return self._first
        for bound, algo in zip(self._bounds, self._algos):
            if nbytes < bound:
                return algo
        return self._algos[-1]  # pragma: no cover - the last bound is infinite

    def free(self) -> None:
        """Release the communicators of the algorithm objects (collective)."""
        for t in self._ALGOS:
            if t in self.__dict__:
                getattr(self, t).free()
        super().free()

    def _allreduce(self, x, op):
        if x.nbytes < self._first_bound:
            return self._first._allreduce(x, op)
        return self.choose(x.nbytes)._allreduce(x, op)

    def _reduce_scatter(self, flat, op):
        return self.choose(flat.nbytes)._reduce_scatter(flat, op)

    def _bcast(self, x, root):
        return self.native._bcast(x, root)

    def _allgather(self, flat, counts):
        return self.native._allgather(flat, counts)
