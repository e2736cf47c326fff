"""Groups of ranks (``Comm.Split``), the dynamic hand-out of tasks, and results to rank 0.

The world of P ranks splits into G groups of consecutive ranks (group ``g`` holds world
ranks ``[g*P//G, (g+1)*P//G)``); each group trains one candidate at a time,
data-parallel on its own sub-communicator. G = 1 is pure data parallelism, G = P one
rank per candidate.

Hand-out: a shared counter in an MPI window on world rank 0 (:class:`TaskCounter`). A
group's first rank takes the next task number with one ``Fetch_and_op`` (passive target,
exclusive lock) and broadcasts it in its group, so the group that finishes first takes
the next task. Why a counter and not rank 0 answering requests: world rank 0 is itself a
worker, inside its own group's fit most of the time; a request would wait until it
finishes its own candidate. An atomic on a window needs nothing from rank 0 (with MPICH's
shared-memory windows on one node the origin does the atomic itself; across nodes rank 0
serves it in its next MPI call, and its fit makes one every step).

Results: a group's first rank sends each finished task's record to world rank 0
(``isend`` on a duplicated communicator, small pickled dicts); rank 0 takes them between
its own tasks (progress lines) and, at the end, waits for the rest, then broadcasts all
records to every rank.

:func:`redistribute` moves world-block rows (what an estimator's ``fit`` gets) to
group-block rows (group rank ``j`` of a group of ``m`` holds global block ``j`` of ``m``)
with one ``Alltoallv``; the command line instead reads the group's rows from the file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ...errors import ShardlearnError
from ...runtime import Context, init
from ...util.blocks import block_bounds


@dataclass
class Layout:
    """This rank's place: world and group contexts, group index and count."""

    world: Context
    group: Context
    index: int
    count: int
    stall_timeout: float | None = None

    @property
    def leader(self) -> bool:
        return self.group.rank == 0

    def free(self) -> None:
        """Release the group communicator (collective over the world); the world's stall
        watchdog watches again."""
        comm = self.group.mpi_comm
        if self.count > 1:
            self.group.free()
            comm.Free()
            if self.stall_timeout:
                from ...runtime import StallWatchdog

                self.world.watchdog = StallWatchdog(self.world, self.stall_timeout)


def group_bounds(P: int, G: int, g: int) -> tuple[int, int]:
    """World ranks of group ``g``."""
    return block_bounds(P, G, g)


def split_groups(world: Context, n_groups: int) -> Layout:
    """Split ``world`` into ``n_groups`` groups of consecutive ranks (collective)."""
    P = world.size
    with world.collective_errors():
        if not 1 <= int(n_groups) <= P:
            raise ShardlearnError(f"groups must be in 1..{P} (the number of ranks), got {n_groups}")
    G = int(n_groups)
    if G == 1:
        return Layout(world, world, 0, 1)
    g = next(i for i in range(G) if group_bounds(P, G, i)[0] <= world.rank < group_bounds(P, G, i)[1])
    sub = world.mpi_comm.Split(color=g, key=world.rank)
    # the groups make progress on their own communicators, not the world's: the stall
    # watchdog (--stall-timeout) watches each group while they work
    stall = world.watchdog.seconds if world.watchdog is not None else None
    if stall:
        world.watchdog.stop()
        world.watchdog = None
    gctx = init(sub, device=world.device, topology=world.topology, threads=world.threads, verbose=False,
                stall_timeout=stall)
    return Layout(world, gctx, g, G, stall)


def auto_groups(P: int, n_rows: int, n_features: int, itemsize: int, n_tasks: int,
                memory_fraction: float = 0.25) -> int:
    """``--groups auto``: the most groups (fewest ranks per candidate, no collectives) such
    that a rank's copy of its group's rows stays within ``memory_fraction`` of this node's
    available memory per rank, and no group is left without a task."""
    data = float(n_rows) * n_features * itemsize
    avail = _available_memory()
    per_rank = avail * memory_fraction / max(1, P) if avail else float("inf")
    best = 1
    for G in range(1, P + 1):
        if G > max(1, n_tasks):
            break
        if data * G / P <= per_rank:
            best = G
    return best


def _available_memory() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0.0


class TaskCounter:
    """A shared int64 counter on world rank 0; ``take()`` on a group's first rank returns
    the next task number (collective to create and free)."""

    def __init__(self, world: Context):
        from mpi4py import MPI

        self._MPI = MPI
        nbytes = 8 if world.rank == 0 else 0
        self.win = MPI.Win.Allocate(nbytes, 8, comm=world.mpi_comm)
        if world.rank == 0:
            self.win.Lock(0, MPI.LOCK_EXCLUSIVE)
            self.win.Put(np.zeros(1, dtype=np.int64), 0)
            self.win.Unlock(0)
        world.mpi_comm.Barrier()

    def take(self) -> int:
        MPI = self._MPI
        one, got = np.ones(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
        self.win.Lock(0, MPI.LOCK_EXCLUSIVE)
        self.win.Fetch_and_op(one, got, 0, 0, MPI.SUM)
        self.win.Unlock(0)
        return int(got[0])

    def free(self) -> None:
        self.win.Free()


def next_task(layout: Layout, counter: TaskCounter) -> int:
    """The group's next task number (collective over the group)."""
    mine = np.array([counter.take() if layout.leader else 0], dtype=np.int64)
    return int(layout.group.coll.bcast(mine, root=0)[0])


class ResultChannel:
    """Finished-task records from every group's first rank to world rank 0 (see module doc)."""

    TAG = 71

    def __init__(self, world: Context, senders: bool = True):
        """``senders``: whether ranks other than world rank 0 send records (several groups).
        With one group every record is rank 0's own: no communicator of its own (a
        ``Dup`` can cost MPI a block of communicator objects, ~2 MB), the final broadcast
        goes over the world's."""
        self.world = world
        self.own = bool(senders) and world.size > 1
        self.comm = world.mpi_comm.Dup() if self.own else world.mpi_comm
        self.pending = []
        self.received: list = []

    def send(self, record: dict) -> None:
        if self.world.rank == 0:
            self.received.append(record)
        else:
            self.pending.append(self.comm.isend(record, dest=0, tag=self.TAG))

    def poll(self) -> list:
        """Rank 0: take what has arrived (no waiting); returns the new records."""
        from mpi4py import MPI

        new = []
        if self.world.rank == 0 and self.own:
            while self.comm.iprobe(source=MPI.ANY_SOURCE, tag=self.TAG):
                new.append(self.comm.recv(source=MPI.ANY_SOURCE, tag=self.TAG))
            self.received.extend(new)
        return new

    def collect(self, n_records: int, on_record=None) -> list:
        """Every rank: rank 0 waits for all ``n_records``, then every rank gets them all."""
        from mpi4py import MPI

        if self.world.rank == 0:
            while len(self.received) < n_records:
                rec = self.comm.recv(source=MPI.ANY_SOURCE, tag=self.TAG)
                self.received.append(rec)
                if on_record is not None:
                    on_record(rec)
        MPI.Request.Waitall(self.pending)
        self.pending = []
        out = self.comm.bcast(self.received if self.world.rank == 0 else None, root=0)
        self.received = []
        return out

    def free(self) -> None:
        if self.own:
            self.comm.Free()


def redistribute(world: Context, layout: Layout, arrays: list, n_total: int, start: int) -> list:
    """World-block rows -> group-block rows (one ``Alltoallv`` per array; collective).

    ``arrays``: this rank's rows (same first dimension, or None), global rows
    ``[start, start + n)``. Returns the arrays of this rank's block of its group.
    """
    from mpi4py import MPI

    P = world.size
    if layout.count == 1:
        return arrays
    n = len(next(a for a in arrays if a is not None)) if any(a is not None for a in arrays) else 0
    # the global rows every rank wants: its block of its own group
    want = []
    for r in range(P):
        g = next(i for i in range(layout.count) if group_bounds(P, layout.count, i)[0] <= r
                 < group_bounds(P, layout.count, i)[1])
        g0, g1 = group_bounds(P, layout.count, g)
        want.append(block_bounds(n_total, g1 - g0, r - g0))
    starts = world.mpi_comm.allgather((start, n))
    mine_lo, mine_hi = want[world.rank]
    send_rows = np.array([max(0, min(start + n, hi) - max(start, lo)) for lo, hi in want], dtype=np.int64)
    send_off = np.array([max(0, max(start, lo) - start) if c else 0 for (lo, hi), c in zip(want, send_rows)],
                        dtype=np.int64)
    recv_rows = np.array([max(0, min(s + m, mine_hi) - max(s, mine_lo)) for s, m in starts], dtype=np.int64)
    recv_at = np.array([max(0, max(s, mine_lo) - mine_lo) if c else 0 for (s, m), c in zip(starts, recv_rows)],
                       dtype=np.int64)
    out = []
    for a in arrays:
        if a is None:
            out.append(None)
            continue
        a = np.ascontiguousarray(a)
        row = int(np.prod(a.shape[1:], dtype=np.int64))
        flat = a.reshape(-1).view(np.uint8) if a.size else np.zeros(0, np.uint8)
        unit = row * a.itemsize
        res = np.empty((mine_hi - mine_lo,) + a.shape[1:], dtype=a.dtype)
        rflat = res.reshape(-1).view(np.uint8) if res.size else np.zeros(0, np.uint8)
        sb = np.ascontiguousarray(flat) if flat.size else np.zeros(1, np.uint8)
        rb = rflat if rflat.size else np.zeros(1, np.uint8)
        world.coll.alltoallv([sb, (send_rows * unit).tolist(), (send_off * unit).tolist(), MPI.BYTE],
                                 [rb, (recv_rows * unit).tolist(), (recv_at * unit).tolist(), MPI.BYTE])
        out.append(res)
    return out
