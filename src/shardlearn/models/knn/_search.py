"""The distributed k-nearest-neighbour search: query blocks travel, training rows stay.

Every rank holds a shard of the training rows (a :class:`._local.LocalIndex`) and a
shard of the queries. A query's answer needs every rank's local top-k; two ways to get
them, the same answer bit for bit (each candidate's distance is computed by the rank
that owns the row, and every merge orders by (distance, global row)):

- **broadcast** (from the owner): for each rank in turn, for each block of its queries,
  the owner broadcasts the block (a binomial tree), every rank computes its local top-k
  at once, and one ``Gather`` brings the P candidate lists to the owner, which merges
  them. Every rank works on every block, however the queries are spread (all on one rank
  included), and a block costs one tree broadcast and one gather: cheap next to its
  compute (``block x n_train / P x d``) while queries are few against the training rows,
  but each block's candidates converge on one rank (``P x block x 2k`` values) and the
  number of blocks, hence of these rounds, grows with the query set.
- **ring**: each rank keeps its own block with the running top-k and passes both to the
  next rank, P steps per round (``Sendrecv`` with the neighbours: every link carries the
  same ``block x (d + 2k)`` values, no rank receives more than one message per step, and
  the merge is spread over the steps). All ranks compute on different blocks at the
  same time, so this wins when the query set is large next to the training rows and
  every rank holds queries; with few queries, or queries on few ranks, most ranks would
  pass empty blocks while one computes (P times the work's wall time).

``strategy="auto"`` therefore takes the ring when the queries are at least
:data:`RING_MIN_RATIO` of the training rows and every rank holds a full block, and the
broadcast otherwise (bench/knn.md times both).

The point-to-point messages (Gather, Sendrecv) go through ``ctx.mpi_comm`` and are
counted in the context's communication time and bytes like its collectives.
"""
from __future__ import annotations

import time

import numpy as np

from ._local import NO_ROW, merge, pack

STRATEGIES = ("auto", "broadcast", "ring")
#: the ring when the query rows are at least this fraction of the training rows
RING_MIN_RATIO = 0.1
#: queries per block travelling between ranks
BLOCK_ROWS = 4096


def choose_strategy(strategy: str, nq: np.ndarray, n_train: int, block: int) -> str:
    """``broadcast`` or ``ring`` for query counts ``nq`` per rank (see the module docstring)."""
    if strategy != "auto":
        return strategy
    if len(nq) > 1 and nq.sum() >= RING_MIN_RATIO * n_train and nq.min() >= block:
        return "ring"
    return "broadcast"


def _p2p(ctx, name, nbytes, fn):
    """Run one point-to-point exchange, counted as communication of ``ctx``'s collectives."""
    coll = ctx.coll
    coll.entered += 1
    coll.current = name
    t0 = time.perf_counter()
    out = fn()
    coll.comm_seconds += time.perf_counter() - t0
    coll.bytes_sent += int(nbytes)
    coll.calls += 1
    return out


def kneighbors(ctx, index, Q: np.ndarray, k: int, strategy: str = "auto", block: int = BLOCK_ROWS):
    """Global k nearest training rows of this rank's queries ``Q`` (collective).

    Returns (packed candidates (nq, 3k): distances, rows, targets (:func:`._local.unpack`),
    the strategy used).
    """
    nq = np.array(ctx.coll.allgather_obj(int(Q.shape[0])), dtype=np.int64)
    n_train = int(ctx.coll.allreduce(np.array([index.n], dtype=np.int64))[0])
    used = choose_strategy(strategy, nq, n_train, block) if ctx.size > 1 else "broadcast"
    with ctx.timers.phase("knn"):
        if used == "ring":
            out = _ring(ctx, index, Q, k, nq, block)
        else:
            out = _broadcast(ctx, index, Q, k, nq, block)
    return out, used


def _broadcast(ctx, index, Q, k, nq, block):
    from mpi4py import MPI

    P, me = ctx.size, ctx.rank
    out = np.empty((Q.shape[0], 3 * k))
    d = index.d
    t0 = time.perf_counter()
    for owner in range(P):
        for b0 in range(0, int(nq[owner]), block):
            nb = min(block, int(nq[owner]) - b0)
            mine = Q[b0:b0 + nb] if me == owner else np.empty((nb, d))
            Qb = ctx.coll.bcast(np.ascontiguousarray(mine, dtype=np.float64), root=owner) if P > 1 else mine
            local = index.topk(Qb, k)
            if P == 1:
                out[b0:b0 + nb] = local
            else:
                recv = np.empty((P, nb, 3 * k)) if me == owner else None
                _p2p(ctx, "knn gather", 0 if me == owner else local.nbytes,
                     lambda: ctx.mpi_comm.Gather(local, [recv, MPI.DOUBLE] if recv is not None else None,
                                                 root=owner))
                if me == owner:
                    out[b0:b0 + nb] = merge(list(recv), k)
            _progress(ctx, "broadcast", int(nq[:owner].sum()) + b0 + nb, int(nq.sum()), t0)
    return out


def _ring(ctx, index, Q, k, nq, block):
    P, me = ctx.size, ctx.rank
    right, left = (me + 1) % P, (me - 1) % P
    d = index.d
    out = np.empty((Q.shape[0], 3 * k))
    rounds = int(-(-int(nq.max()) // block))
    t0 = time.perf_counter()
    for r in range(rounds):
        b0 = r * block
        nb = max(0, min(block, Q.shape[0] - b0))
        # the travelling buffer: queries, then the running candidates (distances, rows, targets)
        held = np.empty((nb, d + 3 * k))
        held[:, :d] = Q[b0:b0 + nb]
        held[:, d:] = pack(np.full((nb, k), np.inf), np.full((nb, k), NO_ROW, dtype=np.int64),
                           np.full((nb, k), np.nan))
        for step in range(P):
            held[:, d:] = merge([held[:, d:], index.topk(held[:, :d], k)], k)
            # pass it on: after P computations the block sits at the owner's left neighbour,
            # one more hop (the candidates only) brings it home
            last = step == P - 1
            send = np.ascontiguousarray(held[:, d:]) if last else held
            held = _sendrecv(ctx, send, right, left, (3 * k) if last else (d + 3 * k))
        out[b0:b0 + nb] = held
        _progress(ctx, "ring", min(int(nq.sum()), (r + 1) * block * P), int(nq.sum()), t0)
    return out


def _progress(ctx, how, done, total, t0):
    ctx.log(f"knn: {done}/{total} queries ({how}), {time.perf_counter() - t0:.2f} s")


def _sendrecv(ctx, buf, dest, source, width):
    """Send ``buf`` (rows x width float64) right, receive the left neighbour's (any rows)."""
    from mpi4py import MPI

    n_in = np.empty(1, dtype=np.int64)

    def exchange():
        ctx.mpi_comm.Sendrecv(np.array([buf.shape[0]], dtype=np.int64), dest=dest, sendtag=71,
                              recvbuf=n_in, source=source, recvtag=71)
        got = np.empty((int(n_in[0]), width))
        ctx.mpi_comm.Sendrecv([buf, MPI.DOUBLE], dest=dest, sendtag=72, recvbuf=[got, MPI.DOUBLE],
                              source=source, recvtag=72)
        return got

    return _p2p(ctx, "knn ring sendrecv", buf.nbytes + 8, exchange)
