"""Per-call choice of algorithm by message size: ``topology="auto"``.

The rule (allreduce and reduce_scatter; P = world size, B = message bytes)::

    P == 1   native (no communication at all)
    P == 2   B < 32 KiB: native    32 KiB <= B < 128 KiB: tree    B >= 128 KiB: ring
    P >= 3   B < 32 KiB: native    32 KiB <= B < 256 KiB: tree    B >= 256 KiB: ring

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

from .base import Collectives
from .native import NativeCollectives
from .ring import RingCollectives
from .tree import TreeCollectives


class AutoCollectives(Collectives):
    """Dispatch each call to native, tree or ring by message size.

    Attributes
    ----------
    RULES : dict
        World size -> list of ``(upper_bytes, topology)``: a message of ``B`` bytes
        uses the first topology whose ``upper_bytes`` exceeds ``B``. World sizes not
        in the table use :attr:`RULE_DEFAULT` (measured with 4 ranks).
    """

    topology = "auto"
    INF = float("inf")
    RULES = {
        1: [(INF, "native")],
        2: [(32 * 1024, "native"), (128 * 1024, "tree"), (INF, "ring")],
    }
    RULE_DEFAULT = [(32 * 1024, "native"), (256 * 1024, "tree"), (INF, "ring")]

    def __init__(self, mpi_comm):
        self._own_bytes = 0
        super().__init__(mpi_comm)
        self.native = NativeCollectives(mpi_comm)
        self.ring = RingCollectives(mpi_comm)
        self.tree = TreeCollectives(mpi_comm)
        rule = self.rule(self.size)
        self._bounds = [b for b, _ in rule]
        self._algos = [getattr(self, t) for _, t in rule]
        # the common case, checked first without a loop: latency-bound calls are short
        self._first_bound, self._first = self._bounds[0], self._algos[0]

    # bytes_sent adds up what the three algorithm objects handed to MPI
    @property
    def bytes_sent(self) -> int:
        subs = sum(getattr(self, t).bytes_sent for t in ("native", "ring", "tree")
                   if t in self.__dict__)
        return self._own_bytes + subs

    @bytes_sent.setter
    def bytes_sent(self, value: int) -> None:
        subs = sum(getattr(self, t).bytes_sent for t in ("native", "ring", "tree")
                   if t in self.__dict__)
        self._own_bytes = value - subs

    @classmethod
    def rule(cls, size: int) -> list:
        return cls.RULES.get(size, cls.RULE_DEFAULT)

    @classmethod
    def describe_rule(cls, size: int) -> list:
        """The rule for ``size`` ranks as ``[{"below_bytes": B or None, "topology": t}]``."""
        return [{"below_bytes": None if b == cls.INF else int(b), "topology": t}
                for b, t in cls.rule(size)]

    def choose(self, nbytes: int) -> Collectives:
        """The algorithm object used for a message of ``nbytes`` bytes."""
        if nbytes < self._first_bound:
            return self._first
        for bound, algo in zip(self._bounds, self._algos):
            if nbytes < bound:
                return algo
        return self._algos[-1]  # pragma: no cover - the last bound is infinite

    def free(self) -> None:
        """Release the communicators of the three algorithm objects (collective)."""
        for algo in (self.native, self.ring, self.tree):
            algo.free()
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
