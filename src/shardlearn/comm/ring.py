"""Ring collectives: reduce-scatter then allgather around a ring of ranks.

The buffer of ``n`` elements is cut into ``P`` blocks ``[b*n//P, (b+1)*n//P)``
(:func:`~shardlearn.util.blocks.block_bounds`). In the reduce-scatter phase, at step ``s``
(``0 .. P-2``) rank ``r`` sends its partial sum of block ``(r-s-1) mod P`` to its right
neighbour and receives block ``(r-s-2) mod P`` from its left neighbour, adding its own
contribution; after ``P-1`` steps rank ``r`` holds the fully reduced block ``r``. The
allgather phase passes the finished blocks around the ring in ``P-1`` more steps. Each
rank sends ``2(P-1)/P`` of the buffer in all: bandwidth-optimal, but ``2(P-1)`` message
latencies, so it pays off for large messages.

Determinism: every block is reduced on exactly one path (starting at rank ``b+1`` and
ending at rank ``b``, always in the same order), then copied byte for byte to the other
ranks, so every rank holds identical bytes and repeated runs give the same bits.

Implementation notes (what made it fast here, see bench/comm.md):

* ``Sendrecv`` with numpy buffers (upper-case mpi4py methods, no pickling);
* blocks larger than :attr:`RingCollectives.chunk_bytes` are moved in pieces: all
  pieces of the outgoing block are posted at once (``Isend``), incoming pieces land in
  two alternating buffers (``Irecv``) and each is reduced right after it arrives,
  while it is still in cache and while the next piece is in flight; a block of one
  piece takes a single ``Sendrecv`` (lowest latency);
* the reduction writes straight into the output (``np.add(x_block, piece, out=...)``),
  so the input is never copied first, and the allgather phase receives in place;
* the receive buffer is allocated once per communicator and reused across calls.
"""
from __future__ import annotations

import numpy as np
from mpi4py import MPI

from .base import REDUCE, Collectives

TAG_RS, TAG_AG, TAG_BC = 7101, 7102, 7103


def block_edges(n: int, size: int) -> list:
    """Block boundaries ``[0, n//P, 2n//P, ..., n]`` (``P+1`` Python ints)."""
    return [i * n // size for i in range(size + 1)]


class RingCollectives(Collectives):
    """Bandwidth-optimal ring algorithms on point-to-point messages.

    Parameters
    ----------
    mpi_comm : mpi4py.MPI.Comm
        Duplicated once (collectively) so that the ring's messages can never match a
        user's point-to-point messages on the same communicator.

    Attributes
    ----------
    chunk_bytes : int
        Largest piece sent in one ``Sendrecv``; each piece is reduced as soon as it
        arrives, which keeps the reduction in cache.
    """

    topology = "ring"
    chunk_bytes = 512 * 1024

    def __init__(self, mpi_comm):
        super().__init__(mpi_comm)
        self.p2p = mpi_comm.Dup() if self.size > 1 else mpi_comm
        self.right = (self.rank + 1) % self.size
        self.left = (self.rank - 1) % self.size
        self._scratch = np.empty(0, dtype=np.uint8)

    # ------------------------------------------------------------------ buffers
    def _buffer(self, count: int, dtype) -> np.ndarray:
        """A reusable receive buffer of ``count`` elements (grown, never shrunk)."""
        need = count * dtype.itemsize
        if self._scratch.nbytes < need:
            self._scratch = np.empty(need, dtype=np.uint8)
        return self._scratch[:need].view(dtype)

    def _n_pieces(self, max_block: int, itemsize: int) -> int:
        return max(1, -(-max_block * itemsize // self.chunk_bytes))

    # ------------------------------------------------------------- ring phases
    def _ring_reduce_scatter(self, flat: np.ndarray, op: str, edges: list,
                             out: np.ndarray | None) -> np.ndarray:
        """Reduce-scatter phase; returns this rank's reduced block (a view).

        With ``out`` (full length), block ``b``'s partial results are written to
        ``out[edges[b]:edges[b+1]]``; without it, two block-sized buffers alternate.
        """
        P, r = self.size, self.rank
        ufunc = REDUCE[op]
        max_block = -(-flat.size // P)  # blocks i*n//P differ by at most one element
        k = self._n_pieces(max_block, flat.itemsize)
        piece = -(-max_block // k)
        tmp = self._buffer(2 * piece, flat.dtype)
        bufs = (tmp[:piece], tmp[piece:])
        if out is None:
            work = (np.empty(max_block, dtype=flat.dtype), np.empty(max_block, dtype=flat.dtype))
        send = None
        sendrecv, right, left = self.p2p.Sendrecv, self.right, self.left
        isend, irecv, waitall = self.p2p.Isend, self.p2p.Irecv, MPI.Request.Waitall
        for s in range(P - 1):
            sb, rb = (r - s - 1) % P, (r - s - 2) % P
            r_lo, r_hi = edges[rb], edges[rb + 1]
            if s == 0:
                send = flat[edges[sb]:edges[sb + 1]]
            mine = flat[r_lo:r_hi]
            acc = out[r_lo:r_hi] if out is not None else work[s % 2][:r_hi - r_lo]
            if k == 1:
                got = tmp[:r_hi - r_lo]
                sendrecv(send, right, TAG_RS, got, left, TAG_RS)
                ufunc(mine, got, out=acc)
            else:
                # pipelined: all pieces of the outgoing block are posted at once, the
                # incoming pieces are received into two alternating buffers, and piece c
                # is reduced while piece c+1 is in flight (bench/comm.md: clearly faster
                # than one Sendrecv per piece when the cores are shared)
                m_s, m_r = send.size, r_hi - r_lo
                bounds = [c * m_r // k for c in range(k + 1)]
                rreq = irecv(bufs[0][:bounds[1]], left, TAG_RS)
                sreqs = [isend(send[c * m_s // k:(c + 1) * m_s // k], right, TAG_RS)
                         for c in range(k)]
                for c in range(k):
                    rreq.Wait()
                    lo, hi = bounds[c], bounds[c + 1]
                    if c + 1 < k:
                        rreq = irecv(bufs[(c + 1) % 2][:bounds[c + 2] - hi], left, TAG_RS)
                    ufunc(mine[lo:hi], bufs[c % 2][:hi - lo], out=acc[lo:hi])
                waitall(sreqs)
            self.bytes_sent += send.nbytes
            send = acc
        return send

    def _ring_allgather(self, out: np.ndarray, edges: list) -> None:
        """Allgather phase in place: rank ``r`` already holds block ``r`` of ``out``."""
        P, r = self.size, self.rank
        sendrecv, right, left = self.p2p.Sendrecv, self.right, self.left
        for s in range(P - 1):
            sb, rb = (r - s) % P, (r - s - 1) % P
            snd = out[edges[sb]:edges[sb + 1]]
            sendrecv(snd, right, TAG_AG, out[edges[rb]:edges[rb + 1]], left, TAG_AG)
            self.bytes_sent += snd.nbytes

    # ------------------------------------------------------- interface methods
    def _allreduce(self, x, op):
        flat = x.reshape(-1)
        n = flat.size
        # n < P works unchanged: some blocks are empty and their messages carry 0 bytes
        edges = block_edges(n, self.size)
        out = np.empty_like(flat)
        self._ring_reduce_scatter(flat, op, edges, out)
        self._ring_allgather(out, edges)
        return out

    def _reduce_scatter(self, flat, op):
        edges = block_edges(flat.size, self.size)
        mine = self._ring_reduce_scatter(flat, op, edges, None)
        return np.array(mine, copy=True)

    def _allgather(self, flat, counts):
        edges = [0] + np.cumsum(counts).tolist()
        out = np.empty(edges[-1], dtype=flat.dtype)
        out[edges[self.rank]:edges[self.rank + 1]] = flat
        self._ring_allgather(out, edges)
        return out

    def _bcast(self, x, root):
        """Pipelined chain from ``root`` around the ring, in pieces of ``chunk_bytes``."""
        P = self.size
        vr = (self.rank - root) % P
        flat = x.reshape(-1)
        k = self._n_pieces(flat.size, flat.itemsize)
        req = None
        for c in range(k):
            piece = flat[c * flat.size // k:(c + 1) * flat.size // k]
            if vr > 0:
                self.p2p.Recv(piece, self.left, TAG_BC)
            if vr < P - 1:
                if req is not None:
                    req.Wait()
                req = self.p2p.Isend(piece, self.right, TAG_BC)
                self.bytes_sent += piece.nbytes
        if req is not None:
            req.Wait()
        return x


__all__ = ["RingCollectives", "block_edges"]
