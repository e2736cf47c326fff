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
bench-comm`` (float64 sum, 8 B .. 64 MiB) on 2 and 4 ranks of the project's 2-core
machine (P=4 is oversubscribed there) and fits the best piecewise choice
(``fit_rule``). The thresholds are the crossovers of the two quietest sessions
(2026-11-24 03:54 and 03:55 UTC, load average ~3-4 from other users); medians in µs
per call, the two sessions separated by "/":

    P=2   8 KiB: native 10.3/7.9   ring 18.7/16.4   tree 18.5/14.5
         32 KiB: native 41.3/29.9  ring 35.5/28.8   tree 29.9/20.6
        128 KiB: native 130/84     ring 60/50       tree 74/46
        256 KiB: native 118/69     ring 92/66       tree 136/72
         64 MiB: native 46246/45516  ring 19596/18863  tree 31710/30068
    P=4   8 KiB: native 64.9/57.6  ring 152/144     tree 103/96
         32 KiB: native 167/136    ring 264/233     tree 135/115
        128 KiB: native 342/259    ring 345/296     tree 285/190
        256 KiB: native 889/770    ring 720/608     tree 1059/856
          8 MiB: native 13841/12781  ring 11326/9618  tree 14551/10502

Below 32 KiB native (MPICH's recursive doubling, in C) is fastest: the tree pays a
second dependent message step and Python per step, the ring ``2(P-1)`` steps. From
32 KiB the tree's two whole-message steps beat MPICH; from 128-256 KiB the ring's
bandwidth wins. Between 1 and 4 MiB with P=4 the tree won one session and the ring
the other; the rule keeps the ring (bandwidth-optimal as P grows). The current
figures and the check "auto within 10% of the best" are in ``bench/comm.md``.
On another cluster, run ``shardlearn bench-comm`` there and
set ``--topology`` accordingly, or adjust :attr:`AutoCollectives.RULES`.
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
