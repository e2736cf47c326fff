"""Binomial-tree collectives: latency-optimal, about ``2*ceil(log2 P)`` message steps.

``allreduce`` is a binomial-tree reduce to rank 0 followed by a binomial-tree broadcast
from rank 0. With ranks renumbered relative to the root (``v = (rank - root) mod P``),
in round ``j`` (mask ``m = 2**j``) a rank with bit ``m`` set sends its partial result
to ``v - m`` and leaves; a rank without it receives from ``v + m`` (if that exists) and
combines ``acc = op(acc, received)``. The partner always covers the ranks just above
this rank's range, so each element is combined in one fixed order whatever the
timing; the root's result is then broadcast byte for byte, so every rank holds the
same bits, run after run.

``bcast`` works from any root (the same binomial tree, renumbered). ``reduce_scatter``
is the tree reduce followed by a binomial scatter of the blocks (each subtree owns a
contiguous range of ranks, hence of blocks), and ``allgather`` a binomial gather to
rank 0 followed by the broadcast: the tree analogues of MPICH's own small-message
algorithms.

Large messages are moved in pieces of :attr:`TreeCollectives.chunk_bytes`, each reduced
as soon as it arrives (in cache); small messages take one ``Send``/``Recv`` per step.
"""
from __future__ import annotations

import numpy as np

from .base import REDUCE, Collectives
from .ring import block_edges

TAG_RED, TAG_BC, TAG_SC, TAG_GA = 7201, 7202, 7203, 7204


class TreeCollectives(Collectives):
    """Latency-optimal binomial-tree algorithms on point-to-point messages."""

    topology = "tree"
    chunk_bytes = 512 * 1024

    def __init__(self, mpi_comm):
        super().__init__(mpi_comm)
        self.p2p = mpi_comm.Dup() if self.size > 1 else mpi_comm
        self._scratch = np.empty(0, dtype=np.uint8)
        # the binomial tree rooted at rank 0, computed once: small allreduces are
        # latency-bound and every microsecond of Python per call shows (bench/comm.md)
        r, P = self.rank, self.size
        low = (r & -r) if r else 1 << max(P - 1, 1).bit_length()
        self.parent = r - low if r else None
        self.children = [r + m for m in (1 << j for j in range(low.bit_length() - 1))
                         if r + m < P]  # in reduce order: nearest (smallest subtree) first
        self._edges = len(self.children) + (self.parent is not None)

    def _buffer(self, count: int, dtype) -> np.ndarray:
        """A reusable receive buffer of ``count`` elements (grown, never shrunk)."""
        need = max(count, 1) * np.dtype(dtype).itemsize
        if self._scratch.nbytes < need:
            self._scratch = np.empty(need, dtype=np.uint8)
        return self._scratch[:count * np.dtype(dtype).itemsize].view(dtype)

    def _n_pieces(self, n: int, itemsize: int) -> int:
        return max(1, -(-n * itemsize // self.chunk_bytes))

    # ------------------------------------------------------------------ phases
    def _reduce(self, flat: np.ndarray, op: str, root: int = 0) -> np.ndarray | None:
        """Binomial reduce to ``root``; returns the result on root, None elsewhere.

        Never writes to ``flat``.
        """
        P = self.size
        vr = (self.rank - root) % P
        ufunc = REDUCE[op]
        n = flat.size
        k = self._n_pieces(n, flat.itemsize)
        acc = None
        mask = 1
        while mask < P:
            if vr & mask:
                dest = (vr - mask + root) % P
                src = flat if acc is None else acc
                if k == 1:
                    self.p2p.Send(src, dest, TAG_RED)
                else:
                    for c in range(k):
                        self.p2p.Send(src[c * n // k:(c + 1) * n // k], dest, TAG_RED)
                self.bytes_sent += src.nbytes
                return None
            if vr + mask < P:
                source = (vr + mask + root) % P
                left = flat if acc is None else acc
                if acc is None:
                    acc = np.empty_like(flat)
                if k == 1:
                    tmp = self._buffer(n, flat.dtype)
                    self.p2p.Recv(tmp, source, TAG_RED)
                    ufunc(left, tmp, out=acc)
                else:
                    tmp = self._buffer(-(-n // k), flat.dtype)
                    for c in range(k):
                        lo, hi = c * n // k, (c + 1) * n // k
                        got = tmp[:hi - lo]
                        self.p2p.Recv(got, source, TAG_RED)
                        ufunc(left[lo:hi], got, out=acc[lo:hi])
            mask <<= 1
        return flat.copy() if acc is None else acc

    def _tree_bcast(self, flat: np.ndarray, root: int) -> None:
        """Binomial broadcast of ``flat`` (in place) from ``root``."""
        P = self.size
        vr = (self.rank - root) % P
        mask = 1
        while mask < P:
            if vr & mask:
                self.p2p.Recv(flat, (vr - mask + root) % P, TAG_BC)
                break
            mask <<= 1
        mask >>= 1
        while mask > 0:
            if vr + mask < P:
                self.p2p.Send(flat, (vr + mask + root) % P, TAG_BC)
                self.bytes_sent += flat.nbytes
            mask >>= 1

    # ------------------------------------------------------- interface methods
    def _allreduce(self, x, op):
        flat = x.reshape(-1) if x.ndim != 1 else x
        if flat.nbytes > self.chunk_bytes:
            out = self._reduce(flat, op, 0)
            if out is None:
                out = np.empty_like(flat)
            self._tree_bcast(out, 0)
            return out
        # one message per tree edge and direction
        p2p, ufunc = self.p2p, REDUCE[op]
        acc = flat
        for child in self.children:
            tmp = np.empty_like(flat)
            p2p.Recv(tmp, child, TAG_RED)
            # the first partner's buffer becomes the accumulator: one allocation per edge
            acc = ufunc(acc, tmp, out=tmp) if acc is flat else ufunc(acc, tmp, out=acc)
        if self.parent is not None:
            p2p.Send(acc, self.parent, TAG_RED)
            acc = np.empty_like(flat)
            p2p.Recv(acc, self.parent, TAG_BC)
        elif acc is flat:
            acc = flat.copy()
        for child in reversed(self.children):
            p2p.Send(acc, child, TAG_BC)
        self.bytes_sent += acc.nbytes * self._edges
        return acc

    def _bcast(self, x, root):
        self._tree_bcast(x.reshape(-1), root)
        return x

    def _reduce_scatter(self, flat, op):
        """Tree reduce to rank 0, then a binomial scatter of contiguous block ranges."""
        P, r = self.size, self.rank
        edges = block_edges(flat.size, P)
        full = self._reduce(flat, op, 0)
        # rank r's subtree is ranks [r, r + span): span = lowest set bit of r (P for r=0)
        span = (r & -r) if r else P
        hi_rank = min(r + span, P)
        if r:
            full = np.empty(int(edges[hi_rank] - edges[r]), dtype=flat.dtype)
            self.p2p.Recv(full, r - span, TAG_SC)
        base = int(edges[r])
        mask = span >> 1 if r else 1 << (P - 1).bit_length() >> 1
        while mask > 0:
            child = r + mask
            if child < P:
                lo, hi = int(edges[child]) - base, int(edges[min(child + mask, P)]) - base
                self.p2p.Send(full[lo:hi], child, TAG_SC)
                self.bytes_sent += (hi - lo) * flat.itemsize
            mask >>= 1
        return np.array(full[:int(edges[r + 1]) - base], copy=True)

    def _allgather(self, flat, counts):
        """Binomial gather of the contiguous rank ranges to rank 0, then broadcast."""
        P, r = self.size, self.rank
        edges = np.zeros(P + 1, dtype=np.int64)
        np.cumsum(counts, out=edges[1:])
        out = np.empty(int(edges[-1]), dtype=flat.dtype)
        out[int(edges[r]):int(edges[r + 1])] = flat
        mask = 1
        while mask < P:
            if r & mask:
                self.p2p.Send(out[int(edges[r]):int(edges[min(r + mask, P)])], r - mask, TAG_GA)
                self.bytes_sent += int(edges[min(r + mask, P)] - edges[r]) * flat.itemsize
                break
            child = r + mask
            if child < P:
                self.p2p.Recv(out[int(edges[child]):int(edges[min(child + mask, P)])], child, TAG_GA)
            mask <<= 1
        self._tree_bcast(out, 0)
        return out
