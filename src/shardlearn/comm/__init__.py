"""Collectives behind one interface, picked by ``topology``.

Every model talks to the other ranks only through a :class:`Collectives` object::

    coll = make_collectives(mpi_comm, topology="auto")
    total = coll.allreduce(local_sums)            # same array on every rank

Topologies
----------
native : MPI's own ``Allreduce``/``Bcast``/``Allgatherv``/``Reduce_scatter``.
ring   : reduce-scatter then allgather around a ring of point-to-point messages
         (bandwidth-optimal: each rank sends about 2(P-1)/P of the buffer).
tree   : binomial-tree reduce to rank 0, then binomial-tree broadcast
         (latency-optimal: about 2*log2(P) message steps).
hierarchical : reduce within each node (``COMM_TYPE_SHARED``) to its lowest rank in
         local rank order, tree (small) or ring (large) allreduce among those leaders,
         broadcast within each node (Horovod's hierarchical allreduce; deterministic).
auto   : per call, by message size (see :mod:`shardlearn.comm.auto`).

Layer: above :mod:`shardlearn.util` and :mod:`shardlearn.errors` only; the runtime's
``Context`` builds a Collectives object, models use it through the Context.

Contract: every call returns the same result on every rank, for any
world size, any length (also 0 or shorter than the world size), dtypes
float32/float64/int32/int64 and ops ``sum``/``max``/``min``. Ring, tree and hierarchical equal native
exactly for integers and up to floating-point reassociation for floats.
"""
from __future__ import annotations

from .base import Collectives, OPS, TOPOLOGIES

__all__ = ["Collectives", "make_collectives", "OPS", "TOPOLOGIES"]


def make_collectives(mpi_comm, topology: str = "auto") -> Collectives:
    """Return the collectives object for ``topology`` on ``mpi_comm``.

    Parameters
    ----------
    mpi_comm : mpi4py.MPI.Comm
        The communicator; models never reach for ``COMM_WORLD`` themselves.
    topology : {"native", "ring", "tree", "hierarchical", "auto"}
    """
    if topology == "native":
        from .native import NativeCollectives as cls
    elif topology == "ring":
        from .ring import RingCollectives as cls
    elif topology == "tree":
        from .tree import TreeCollectives as cls
    elif topology == "hierarchical":
        from .hierarchical import HierarchicalCollectives as cls
    elif topology == "auto":
        from .auto import AutoCollectives as cls
    else:
        raise ValueError(f"unknown topology {topology!r}: choose one of {', '.join(TOPOLOGIES)}")
    return cls(mpi_comm)
