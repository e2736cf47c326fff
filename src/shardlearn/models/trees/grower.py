"""Grow one tree on the local rows of every rank; the ranks agree through histograms.

Every structural decision (which leaf to split, where, which child is smaller) is taken
from combined (global) histograms and totals, so all ranks build the identical tree
while each partitions only its own rows.

Per step (one leaf for leaf-wise growth, a whole level for depth-wise growth):

1. split the chosen leaves and partition each rank's rows of those leaves;
2. build, for every split, the local histogram of the child with fewer *global* rows;
3. combine all of them in ONE collective: ``allreduce`` of the stacked histograms, or
   ``reduce_scatter`` by feature blocks (each rank then owns the global histograms of
   its features only, LightGBM's data-parallel scheme);
4. the sibling's histogram is parent minus child (subtraction trick);
5. best split search of the new leaves (with ``reduce_scatter``: on the rank's own
   features, then one small ``allgather`` of the candidates picks the global best).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from ...backend import compiled_kernels
from ._gpu import device_histogram
from .categorical import CatParams, find_best_categorical_splits, merge_splits, pack_bits
from .histogram import MAX_COMPILED_ROWS, CompiledHistogram, as_rows32, build_histogram, is_all_rows, pair_codes
from .quantize import decode, fields, narrow, widen
from .split import TIE_RTOL, SplitParams, find_best_splits, find_best_splits_packed, find_best_splits_quant

HIST_REDUCE = ("allreduce", "reduce_scatter")
#: at most this many splits share one histogram collective (bounds memory on wide levels)
GROW_BATCH = 64
GROWTH = ("leafwise", "depthwise")


@dataclass
class GrowParams:
    """Tree shape and combining options.

    num_leaves : int or None (no limit)
    max_depth : int or None (no limit); the root has depth 0
    growth : "leafwise" (best-first, LightGBM) or "depthwise" (level by level)
    hist_reduce : "allreduce" or "reduce_scatter"
    learning_rate : leaf values are ``-G / (H + lambda_l2) * learning_rate``
    split : SplitParams
    categorical : CatParams, optional
        Categorical features and their split parameters (see :mod:`.categorical`).
    histogram_pool_size : float
        MiB the histograms of open leaves may keep (LightGBM's ``histogram_pool_size``);
        negative: no bound. A leaf chosen for a split whose histogram was let go has both
        children's histograms built from its rows (no subtraction trick): more histogram
        work, the same tree up to the rounding of its sums.
    """

    num_leaves: int | None = 31
    max_depth: int | None = None
    growth: str = "leafwise"
    hist_reduce: str = "allreduce"
    learning_rate: float = 1.0
    split: SplitParams = None
    categorical: CatParams = None
    histogram_pool_size: float = -1.0

    def __post_init__(self):
        if self.split is None:
            self.split = SplitParams()


class _Leaf:
    __slots__ = ("rows", "hist", "totals", "depth", "split", "start", "qtot", "pooled")

    def __init__(self, rows, hist, totals, depth, start=None, qtot=None):
        self.rows, self.hist, self.totals, self.depth, self.split = rows, hist, totals, depth, None
        #: ``hist`` came from the grower's _HistPool (goes back there when dropped)
        self.pooled = False
        #: where ``rows`` begins in the tree's row permutation (compiled host path), else None
        self.start = start
        #: quantized gradients: the node's integer totals (gradient, hessian, count) as an
        #: int64 (3,) array (``hist`` then holds integer sums: packed int64 (d, S), or
        #: integer-valued float64 (3, d, S)), else None
        self.qtot = qtot


class _HistPool:
    """Histogram buffers of a grower, reused from step to step and tree to tree.

    Every split step needs a buffer for the local histograms sent to the collective and
    one for the bigger child's histogram (parent minus the smaller child, kept as long
    as the child is a leaf). Fresh arrays of these sizes (~120 KB) come from the operating
    system often enough (mmap, or the heap grown again after a trim) that their first
    writes cost page faults, about a second per rank in a 16-candidate, 5-fold search.
    Buffers given back are kept by size and dtype and handed out again (reshaped, not
    copied: a step's local histograms and a bigger child's buffer serve one another), so
    the grower holds at most the most it ever held at once (its largest tree's live
    histograms); it lets them go with itself, at the end of the fit. Each leaf's histogram
    is an array of its own (one node), so a leaf's buffer is free as soon as that leaf is
    done. (The collective's results, the smaller children's histograms, are new arrays
    each step and go back to the allocator, not here: pooled, they would pile up.)"""

    def __init__(self):
        self.free = {}

    def take(self, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        got = self.free.get((int(np.prod(shape)), dtype))
        return got.pop().reshape(shape) if got else np.empty(shape, dtype=dtype)

    def give(self, array: np.ndarray) -> None:
        if array.flags.c_contiguous:
            self.free.setdefault((array.size, array.dtype), []).append(array)


class TreeGrower:
    """Grows trees for one fit: holds the codes, the bins and the combining scheme.

    Parameters
    ----------
    ctx : shardlearn.runtime.Context
    codes : (d, n_local) uint8
    n_bins : (d,) int
    n_slots : int
        ``max_bin + 1``.
    params : GrowParams
    """

    def __init__(self, ctx, codes, n_bins, n_slots, params: GrowParams):
        self.ctx, self.codes, self.n_slots, self.params = ctx, codes, n_slots, params
        self.d, self.n = codes.shape
        #: the compiled histogram and partition kernels (None: the NumPy path)
        self.chist = device_histogram(ctx, codes, n_slots) or _compiled_histogram(codes, n_slots)
        #: histograms, partitions and the row permutation on the device (_gpu.py)
        self.device = self.chist is not None and self.chist.k is None
        if self.chist is not None and not self.device:
            self.codes = None   # the compiled kernels read their row-major copy only: one copy per fit
        elif self.chist is None and not codes.flags.c_contiguous:
            # the NumPy path reads feature rows: row-major codes (BinMapper's row_major) copied
            self.codes = codes = np.ascontiguousarray(codes)
        #: the tree's row permutation (compiled host path), one buffer for every tree of the fit
        self._perm = None
        # joint codes of feature pairs, built once per fit: large nodes' histograms take
        # one bincount per pair instead of one per feature (see histogram.py)
        self.pairs = pair_codes(codes, n_slots) if self.chist is None else None
        #: count channel of the root over all local rows: the same for every unbagged
        #: tree of the fit (the codes do not change), so it is counted once
        self._root_count = None
        #: the quantized statistics of the tree being grown (:mod:`.quantize`), or None
        self._quant = None
        #: per-node L2 penalty of the last tree grown (children of many-vs-many categorical
        #: splits carry ``cat_l2`` too): what renewing its leaf values needs
        self.last_l2 = None
        #: the last tree's row permutation and each leaf's (start, length) in it, in the order
        #: of the returned leaf_rows (compiled host path; else None): one kernel call can then
        #: walk every leaf (leaf renewal, score update)
        self.last_perm = self.last_spans = None
        #: bytes each rank would put on the wire for histograms and split candidates with
        #: bandwidth-optimal algorithms (ring allreduce / reduce-scatter / allgather)
        self.wire_bytes = 0
        self.hist_collectives = 0
        #: the split search's kernels (looked up by grow(), once a tree)
        self._split_kernels = None
        self._ready = []
        self._pool = _HistPool()
        #: open leaves that keep a histogram at most (set per tree from histogram_pool_size)
        self.hist_cap = None
        self.n_bins = np.asarray(n_bins, dtype=np.int64)
        self.rs = params.hist_reduce == "reduce_scatter" and ctx.size > 1
        P = ctx.size
        if self.rs:
            q = -(-self.d // P)
            self.block = q
            self.d_pad = q * P
            self.f_lo = ctx.rank * q
            nb = np.ones(self.d_pad, dtype=np.int64)  # padding features: 1 bin, never split
            nb[:self.d] = self.n_bins
            self.block_bins = nb[self.f_lo:self.f_lo + q]
        else:
            self.block, self.d_pad, self.f_lo, self.block_bins = self.d, self.d, 0, self.n_bins
        #: categorical features of this rank's block (block-local indices), or None
        self.cat = params.categorical if params.categorical is not None and len(params.categorical.features) else None
        if self.cat is not None:
            f = self.cat.features
            self.cat_block = f[(f >= self.f_lo) & (f < self.f_lo + self.block)] - self.f_lo
            # 0 bins: no numerical candidate on a categorical feature (cheaper than a mask)
            self.numeric_bins = np.array(self.block_bins, dtype=np.int64)
            self.numeric_bins[self.cat_block] = 0

    # ----------------------------------------------------------- collectives
    def _combine(self, local: np.ndarray) -> np.ndarray:
        """(k, C, d, S) local histograms -> (k, C, block, S) global ones."""
        coll = self.ctx.coll
        P = self.ctx.size
        self.hist_collectives += 1
        if not self.rs:
            # a bandwidth-optimal allreduce moves 2(P-1)/P of the buffer per rank
            self.wire_bytes += 2 * (P - 1) * local.nbytes // P
            return coll.allreduce(local)
        k, C, d, S = local.shape
        buf = np.zeros((self.d_pad, k, C, S), dtype=local.dtype)
        buf[:d] = local.transpose(2, 0, 1, 3)
        self.wire_bytes += (P - 1) * buf.nbytes // P       # reduce-scatter: (P-1)/P
        mine = coll.reduce_scatter(buf).reshape(self.block, k, C, S)
        return np.ascontiguousarray(mine.transpose(1, 2, 0, 3))

    def _combine_hist(self, local: np.ndarray, max_rows: int) -> np.ndarray:
        """The k local histograms -> (k, C, block, S) global real sums, for the tree being grown.

        Unquantized: :meth:`_combine` as it is. Quantized: the integer sums, exact whatever the
        order, NOT scaled: the subtraction trick and the split search (:meth:`_find_best_quant`)
        work on the integers, scaling only in the gain (:class:`.quantize.TreeQuant`). Packed ones ((k, d, S) int64) are
        sent as int32 when the fields of sums over ``max_rows`` rows (the largest global row
        count of the k nodes) fit 32 bits, else as the int64 sums, and come back as the
        packed int64 global sums (k, block, S): the subtraction trick and the split search
        (:func:`.split.find_best_splits_packed`) work on the integers themselves."""
        q = self._quant
        if q is None:
            return self._combine(local)
        if q.packed is None:
            return self._combine(local)
        small, p = narrow(local, q.packing, max_rows)
        sent = local if small is None else small
        got = self._combine(sent[:, None])[:, 0]
        return got if small is None else widen(got, p, q.packing)

    def _search(self, hists, totals, masks, qtots=None):
        """Best split per node, identical on every rank. Packed quantized histograms
        (``qtots``: the nodes' integer totals (k, 3)): ``left`` is the winner's integer sums."""
        with self.ctx.timers.phase("split_search"):
            if masks is not None and self.rs:
                pad = np.zeros((masks.shape[0], self.d_pad), dtype=bool)
                pad[:, :self.d] = masks
                masks = pad[:, self.f_lo:self.f_lo + self.block]
            res = self._find_best(hists, totals, masks, qtots)
        if not self.rs:
            return res
        k, C = totals.shape
        S = self.n_slots
        width = 4 + C + (2 + S if self.cat is not None else 0)
        rec = np.empty((k, width))
        rec[:, 0] = res["gain"]
        rec[:, 1] = res["feature"] + self.f_lo
        rec[:, 2] = res["bin"]
        rec[:, 3] = res["missing_left"]
        rec[:, 4:4 + C] = res["left"]
        if self.cat is not None:   # the winner's category set travels with it
            rec[:, 4 + C] = res["l2"]
            rec[:, 5 + C] = res["is_cat"]
            rec[:, 6 + C:] = res["cat_left"]
        self.wire_bytes += (self.ctx.size - 1) * rec.nbytes  # allgather of the candidates
        allrec = self.ctx.coll.allgather(rec).reshape(self.ctx.size, k, width)
        with self.ctx.timers.phase("split_search"):
            out = {"gain": np.empty(k), "feature": np.empty(k, np.int64), "bin": np.empty(k, np.int64),
                   "missing_left": np.empty(k, bool), "left": np.empty((k, C))}
            for i in range(k):
                cand = allrec[:, i]
                # highest gain (ties within TIE_RTOL), then the lowest feature
                top = cand[:, 0].max()
                near = cand[:, 0] >= top - TIE_RTOL * abs(top) if np.isfinite(top) else np.ones(len(cand), bool)
                j = int(np.flatnonzero(near)[np.argmin(cand[near, 1])])
                out["gain"][i], out["feature"][i], out["bin"][i] = cand[j, 0], int(cand[j, 1]), int(cand[j, 2])
                out["missing_left"][i] = bool(cand[j, 3])
                out["left"][i] = cand[j, 4:4 + C]
                if self.cat is not None:
                    out.setdefault("l2", np.empty(k))[i] = cand[j, 4 + C]
                    out.setdefault("is_cat", np.zeros(k, bool))[i] = bool(cand[j, 5 + C])
                    out.setdefault("cat_left", np.zeros((k, S), bool))[i] = cand[j, 6 + C:] > 0
        return out

    def _find_best(self, hists, totals, masks, qtots=None):
        """Best split per node over this rank's block: numerical and categorical features."""
        sp = self.params.split
        if qtots is not None:
            return self._find_best_quant(hists, totals, masks, qtots)
        if self.cat is None:
            return find_best_splits(hists, totals, self.block_bins, sp, masks, kernels=self._split_kernels)
        k = hists.shape[0]
        num = find_best_splits(hists, totals, self.numeric_bins, sp, masks, kernels=self._split_kernels)
        cat = find_best_categorical_splits(hists, totals, self.block_bins, self.cat_block, sp, self.cat,
                                           None if masks is None else np.broadcast_to(masks, (k, self.block)))
        return merge_splits(num, cat, sp.lambda_l2)

    def _find_best_quant(self, hists, totals, masks, qtots):
        """:meth:`_find_best` on integer histograms (quantized gradients): packed
        (k, block, S) int64, or integer-valued float64 (k, 3, block, S) (the float path);
        ``qtots`` (k, 3) the nodes' integer totals. ``left`` is the winner's integer
        (gradient, hessian, count) sums. Numerical features only: straight on the integers,
        the same choice either way (compiled for packed histograms, else NumPy); with
        categorical features the histograms are scaled to real sums for the search, and the
        winner's integer sums are read back from the integer histogram."""
        q = self._quant
        sp = self.params.split
        packed = hists.dtype == np.int64
        if self.cat is None:
            if packed:
                return find_best_splits_packed(q.kernels, hists, qtots, totals, self.block_bins, sp, q.packing,
                                               q.scale, masks)
            return find_best_splits_quant(hists, qtots, totals, self.block_bins, sp, q.scale, masks)
        if packed:
            real = np.ascontiguousarray(q.real(hists).transpose(0, 3, 1, 2))   # (k, 3, block, S)
        else:
            real = q.scale_hist(hists.copy())
        res = self._find_best(real, totals, masks)
        k = hists.shape[0]
        left = np.zeros((k, 3))
        for i in range(k):
            if not np.isfinite(res["gain"][i]):
                continue
            f = int(res["feature"][i])
            h = hists[i, f] if packed else hists[i, :, f].T              # (S,) or (S, 3)
            if res.get("is_cat") is not None and res["is_cat"][i]:
                s = h[np.asarray(res["cat_left"][i], dtype=bool)].sum(axis=0)
            else:
                s = h[:int(res["bin"][i]) + 1].sum(axis=0) + (h[-1] if res["missing_left"][i] else 0)
            left[i] = [int(v) for v in fields(np.int64(s), q.packing)] if packed else s
        res["left"] = left
        return res

    # ---------------------------------------------------------------- grow
    def grow(self, channels: np.ndarray, rows: np.ndarray, hess_is_count=False,
             hist_features=None, node_mask=None, quant=None):
        """Grow one tree.

        Parameters
        ----------
        channels : (C - 1, n_local) float64 or float32
            Gradient channel(s) then hessian per local row (summed in float64 either way).
        rows : int64 array or None
            Local rows used by this tree (bagging / bootstrap); None: every local row (the
            grower makes the tree's permutation itself, so the caller keeps no index array).
        hess_is_count : bool
            Every hessian is 1 (skips one bincount per feature).
        hist_features : int array, optional
            Features whose histograms are built (per-tree feature sampling).
        node_mask : callable(node_ids) -> (k, d) bool, optional
            Features allowed at each of the given nodes (per-node feature sampling).
        quant : :class:`.quantize.TreeQuant`, optional
            Quantized gradients: the histograms sum its integers (exact for any P) and are
            scaled to real sums before the split search; ``channels`` is then ignored.

        Returns
        -------
        tree : dict of arrays (see :mod:`.predict`)
        leaf_rows : list of (node_id, local rows) for every leaf (compiled host path: int32 views
            of the fit's one row permutation, valid until the next :meth:`grow`)
        """
        ctx, p = self.ctx, self.params
        sp = p.split
        self._quant = quant
        # the split search's kernels, looked up once per tree instead of once per step
        self._split_kernels = compiled_kernels("models.trees._hist_kernels")
        packed = quant is not None and quant.packed is not None
        if quant is not None:
            channels = quant.channels           # None on the packed path
        C = 3 if packed else channels.shape[0] + 1
        nodes = _NodeList(C - 2)
        #: open leaves that keep a histogram at most (histogram_pool_size; None: no bound)
        self.hist_cap = None
        if p.histogram_pool_size >= 0:
            per_hist = (1 if packed else C) * (self.block if self.rs else self.d) * self.n_slots * 8
            self.hist_cap = int(p.histogram_pool_size * 2 ** 20 // per_hist)
        timers = ctx.timers
        if self.rs:
            hist_features = None  # every rank must contribute to every feature block
        with timers.phase("histogram"):
            fresh = rows is None
            in_place = self.chist is not None and not self.device
            if fresh and not in_place:
                rows = np.arange(self.n, dtype=np.int64)
            full = fresh or is_all_rows(rows, self.n)
            # the root's sums below gather with the caller's rows on the host (int64 from
            # np.flatnonzero), not the int32 permutation: NumPy would first copy that to intp
            gather = rows
            if self.chist is not None:
                # the tree's row permutation: every node's rows stay a contiguous range of
                # it (partitioned in place), as in LightGBM's DataPartition
                rows = self.chist.rows_array(rows) if self.device else self._tree_perm(rows)
                gather = rows if self.device else gather
            if packed:
                local = self.chist.build_packed(quant.kernels, quant.packed, rows, hist_features)
            elif self.chist is not None:
                self.chist.set_channels(channels)
                local = self.chist.build(None if full else rows, hist_features, hess_is_count,
                                         count=self._root_count if full else None)
            else:
                local = build_histogram(self.codes, channels, rows, self.n_slots, hist_features, hess_is_count,
                                        pairs=self.pairs, count=self._root_count if full else None)
            if full and self._root_count is None and hist_features is None and not packed:
                self._root_count = local[C - 1].copy()
            if packed:   # the packed sum of the rows: every field's total at once, exact
                local_tot = np.array([quant.packed.sum() if full else quant.packed[gather].sum()], dtype=np.int64)
            else:
                local_tot = np.empty(C)
                if self.device:
                    local_tot[:C - 1] = self.chist.totals(None if full else rows)
                else:
                    sel = channels if full else np.take(channels, gather, axis=1)   # no copy of all rows
                    # float64 sums of float32 channels too (the same bits for float64 ones)
                    local_tot[:C - 1] = sel.sum(axis=1, dtype=np.float64) if len(rows) else 0.0
                local_tot[C - 1] = len(rows)
        root_hist = self._combine_hist(local[None], (1 << quant.packing.L) - 1 if packed else 0)[0]
        totals = ctx.coll.allreduce(local_tot)
        qtot = None
        if packed:
            totals = decode(totals, quant.packing)[0]
        if quant is not None:   # sums of integers: exact for any order; now scaled
            qtot = totals.astype(np.int64)
            quant.scale_totals(totals)
        leaves = {0: _Leaf(rows, root_hist, totals, 0, 0 if in_place else None, qtot)}
        # the leaves with a split of gain > min_gain_to_split, as (-gain, node id): popped
        # highest gain first, ties to the lowest node id (identical on every rank)
        self._ready = ready = []
        nodes.add(totals, 0, p, sp.lambda_l2)
        n_leaves = 1
        if self._splittable(totals, 0, n_leaves):
            self._set_splits([leaves[0]], [0], node_mask)
            self._drop_unreachable(leaves, n_leaves)
        while p.num_leaves is None or n_leaves < p.num_leaves:
            if not ready:
                break
            room = len(ready) if p.num_leaves is None else p.num_leaves - n_leaves
            n_chosen = 1 if p.growth == "leafwise" else min(room, len(ready))
            chosen = [heapq.heappop(ready)[1] for _ in range(n_chosen)]
            n_leaves += len(chosen)
            pairs = []
            for i in chosen:
                lf = leaves.pop(i)
                s = lf.split
                with timers.phase("partition"):
                    if s.get("cat_left") is not None:
                        lrows, rrows = self._partition_categorical(lf.rows, s)
                    elif self.chist is not None:
                        lrows, rrows = self._partition_compiled(lf.rows, s)
                    else:
                        lrows, rrows = self._partition_numpy(lf.rows, s)
                ltot = s["left"]
                lq = rq = None
                if lf.qtot is not None:     # exact integer totals; the real ones from them
                    lq = s["left_q"]
                    rq = lf.qtot - lq
                    rtot = self._quant.scale_totals(rq.astype(np.float64))
                else:
                    rtot = lf.totals - ltot
                # children of a many-vs-many split take lambda_l2 + cat_l2, as in LightGBM
                li = nodes.add(ltot, lf.depth + 1, p, s.get("l2", sp.lambda_l2))
                ri = nodes.add(rtot, lf.depth + 1, p, s.get("l2", sp.lambda_l2))
                nodes.set_split(i, s, li, ri)
                st = lf.start
                left = _Leaf(lrows, None, ltot, lf.depth + 1, st, lq)
                right = _Leaf(rrows, None, rtot, lf.depth + 1, None if st is None else st + len(lrows), rq)
                leaves[li], leaves[ri] = left, right
                # which children will be searched (known before their histograms)
                split_l = self._splittable(ltot, lf.depth + 1, n_leaves)
                split_r = self._splittable(rtot, lf.depth + 1, n_leaves)
                if split_l or split_r:
                    pairs.append((lf, li, ri, split_l, split_r))
            if not pairs:
                continue
            # one collective per step; a very wide level goes in batches to bound memory
            for b0 in range(0, len(pairs), GROW_BATCH):
                self._child_histograms(pairs[b0:b0 + GROW_BATCH], leaves, channels, C, hist_features,
                                       hess_is_count, node_mask)
            self._drop_unreachable(leaves, n_leaves)
        for lf in leaves.values():   # the buffers of the leaves left serve the next tree
            self._release(lf)
        self._ready = []
        leaf_rows = [(i, lf.rows) for i, lf in sorted(leaves.items())]
        self.last_perm = self.last_spans = None
        if in_place:
            self.last_perm = rows
            self.last_spans = np.array([(lf.start, len(lf.rows)) for _, lf in sorted(leaves.items())],
                                       dtype=np.int64).reshape(-1, 2)
        self._quant = None
        self.last_l2 = np.array(nodes.lam, dtype=np.float64)
        return nodes.arrays(), leaf_rows

    def _tree_perm(self, rows):
        """The tree's row permutation: ``rows`` (None: every local row, in order) copied into
        one int32 buffer that every tree of the fit reuses (the previous tree's leaf rows,
        views of it, are valid until the next :meth:`grow`). int32, 4 bytes a local row: the
        compiled path has at most ``MAX_COMPILED_ROWS`` local rows, and its kernels take
        int32 row indices only (as the partition's scratch)."""
        if self._perm is None:
            self._perm = np.empty(self.n, dtype=np.int32)
        m = self.n if rows is None else len(rows)
        if m > self.n:
            raise ValueError(f"{m} rows, more than the {self.n} local rows")
        perm = self._perm[:m]
        if rows is None:
            step = 1 << 16                  # by blocks: no n-row temporary
            for lo in range(0, m, step):
                perm[lo:lo + step] = np.arange(lo, min(m, lo + step), dtype=np.int32)
        else:
            rows = np.asarray(rows)
            if rows.dtype != np.int32 and m and (rows.min() < 0 or rows.max() >= self.n):
                # checked before the narrowing copy: a row past 2**31 would wrap to a valid one
                raise IndexError(f"rows out of range 0..{self.n - 1}")
            perm[...] = rows
        return perm

    def _drop_unreachable(self, leaves, n_leaves) -> None:
        """Free the histograms of the leaves that can no longer be split (LightGBM's bounded
        histogram pool, without changing any tree): a leaf's histogram is needed only to
        split it (the subtraction trick), and the leaves are split in the order of
        (-gain, node id), one per remaining leaf of ``num_leaves``. A ready leaf ranked
        ``r`` in that order is split only after the ``r`` ahead of it (new leaves can only
        add to those), each split taking one of the ``num_leaves - n_leaves`` left, so with
        ``r >= num_leaves - n_leaves`` it never is. This bounds
        the live histograms by the leaves still to grow as well as by the open leaves: about
        ``num_leaves / 2`` at most instead of ``num_leaves``.

        With ``histogram_pool_size`` (``hist_cap`` histograms), of the leaves still to be
        split only the ``hist_cap`` with the most (global) rows keep theirs: a leaf split
        without one has its children's histograms built from their rows
        (:meth:`_child_histograms`), so the small ones are the cheap ones to let go."""
        p, cap = self.params, self.hist_cap
        order = self._ready                 # the ready heap: (-gain, node id) of the ready leaves
        if p.num_leaves is not None:
            room = max(p.num_leaves - n_leaves, 0)
            if len(order) > room:
                order = sorted(order)
                for _, i in order[room:]:
                    self._release(leaves[i])
                order = order[:room]
        if cap is not None and len(order) > cap:
            # histogram_pool_size: the leaves with the most rows keep theirs (a leaf split without
            # one costs a pass over its rows); ties by node id, the same choice on every rank
            by_rows = sorted(order, key=lambda e: (-leaves[e[1]].totals[-1], e[1]))
            for _, i in by_rows[cap:]:
                self._release(leaves[i])

    def add_leaf_values(self, scores: np.ndarray, k: int, values: np.ndarray, leaf_rows) -> None:
        """``scores[rows, k] += values[node]`` for every ``(node, rows)`` of ``leaf_rows``.

        scores : (n_local, K) float64, C-contiguous; values : (n_nodes,) leaf values.
        """
        if self.device:
            return self.chist.add_leaf_values(scores, k, values, leaf_rows)
        kern = self.chist.k if self.chist is not None else None
        if kern is None or scores.dtype != np.float64 or not scores.flags.c_contiguous:
            for node, r in leaf_rows:
                scores[r, k] += values[node]
            return
        K = scores.shape[1]
        if not 0 <= k < K:
            raise IndexError(f"score column {k} out of range 0..{K - 1}")
        for node, r in leaf_rows:
            r = as_rows32(r, len(scores))   # a view of the tree's int32 permutation: as it is
            # the kernel checks every row in its loop (ValueError): no min/max pass here
            kern.add_leaf_value(scores, K, int(k), r, float(values[node]))

    def _partition_numpy(self, rows, s):
        """Left and right rows of a split (new arrays, same order)."""
        c = self.codes[s["feature"]].take(rows)
        go_left = c <= s["bin"]
        if s["missing_left"]:
            go_left |= c == self.n_slots - 1
        # np.compress is several times faster than boolean-mask indexing
        # here (measured 0.54 vs 2.0 ms for 200k rows), same rows, same order
        lrows = np.compress(go_left, rows)
        rrows = np.compress(np.logical_not(go_left, out=go_left), rows)
        return lrows, rrows

    def _partition_categorical(self, rows, s):
        """Left and right rows of a categorical split. Compiled: the two halves of ``rows``
        reordered in place by a lookup table over the codes (``_hist_kernels.partition_table``),
        like :meth:`_partition_compiled`; NumPy: new arrays, like :meth:`_partition_numpy`
        (``rows`` may be the caller's array there). Same rows, same order either way."""
        if self.chist is not None:
            n_left = self.chist.partition_table(rows, s["feature"], s["cat_left"])
            return rows[:n_left], rows[n_left:]
        go_left = categorical_goes_left(self.codes[s["feature"]].take(rows), s["cat_left"])
        return np.compress(go_left, rows), np.compress(np.logical_not(go_left, out=go_left), rows)

    def _partition_compiled(self, rows, s):
        """Left and right rows of a split as the two halves of ``rows``, reordered in place
        (same rows, same order as :meth:`_partition_numpy`)."""
        n_left = self.chist.partition(rows, s["feature"], s["bin"], s["missing_left"])
        return rows[:n_left], rows[n_left:]

    def _child_histograms(self, pairs, leaves, channels, C, hist_features, hess_is_count, node_mask):
        """Histograms of the children of ``pairs`` (one collective), then their best splits.

        ``pairs``: (parent leaf, left id, right id, left searched, right searched) per split;
        a child not searched is a final leaf (no histogram kept)."""
        q = self._quant
        packed = q is not None and q.packed is not None
        pool = self._pool
        with self.ctx.timers.phase("histogram"):
            # the nodes whose local histograms go into the collective: each split's smaller
            # child; and where the parent's histogram was let go (histogram_pool_size), the
            # searched children, the bigger one included (no subtraction)
            small_left, built, slot = [], [], {}
            for lf, li, ri, split_l, split_r in pairs:
                sl = leaves[li].totals[C - 1] <= leaves[ri].totals[C - 1]
                small_left.append(sl)
                for c_id, searched, small in ((li, split_l, sl), (ri, split_r, not sl)):
                    if (small and lf.hist is not None) or (searched and lf.hist is None):
                        slot[c_id] = len(built)
                        built.append(leaves[c_id])
            if packed:
                local = pool.take((len(built), self.d, self.n_slots), np.dtype(np.int64))
            else:
                local = pool.take((len(built), C, self.d, self.n_slots), np.dtype(np.float64))
            max_rows = 0
            for j, node in enumerate(built):
                max_rows = max(max_rows, int(node.totals[C - 1]))
                if packed:
                    self.chist.build_packed(q.kernels, q.packed, node.rows, hist_features, out=local[j])
                elif self.chist is not None:
                    self.chist.build(node.rows, hist_features, hess_is_count, out=local[j])
                else:
                    build_histogram(self.codes, channels, node.rows, self.n_slots, hist_features,
                                    hess_is_count, out=local[j], pairs=self.pairs)
        # the children that are searched (the others are final leaves: no histogram kept;
        # a final bigger child's is not even subtracted), in (left, right) order per pair
        todo, ids = [], []
        for lf, li, ri, split_l, split_r in pairs:
            if split_l:
                todo.append(leaves[li])
                ids.append(li)
            if split_r:
                todo.append(leaves[ri])
                ids.append(ri)
        combined = self._combine_hist(local, max_rows)
        if not np.may_share_memory(combined, local):   # (a new array from the collective)
            pool.give(local)
        # a built child's histogram is the collective's result (a view of it when the step
        # has several); the bigger one's, parent minus the smaller, goes into a buffer of the pool
        for j, (lf, li, ri, split_l, split_r) in enumerate(pairs):
            small_id = li if small_left[j] else ri
            for c_id, searched in ((li, split_l), (ri, split_r)):
                if searched:
                    child = leaves[c_id]
                    if c_id in slot:
                        child.hist = combined[slot[c_id]]
                    else:   # subtraction trick: parent minus the smaller child
                        child.hist = np.subtract(lf.hist, combined[slot[small_id]],
                                                 out=pool.take(combined.shape[1:], combined.dtype))
                        child.pooled = True
            self._release(lf)
        if todo:
            self._set_splits(todo, ids, node_mask)

    def _release(self, lf) -> None:
        """Drop leaf ``lf``'s histogram (back to the pool if it came from there). Code that
        sets ``lf.hist = None`` itself only loses the buffer to the garbage collector."""
        if lf.pooled and lf.hist is not None:
            self._pool.give(lf.hist)
        lf.pooled = False
        lf.hist = None

    def _splittable(self, totals, depth, n_leaves) -> bool:
        p, sp = self.params, self.params.split
        C = len(totals)
        return ((p.max_depth is None or depth < p.max_depth)
                and (p.num_leaves is None or n_leaves < p.num_leaves)
                and totals[C - 1] >= 2 * sp.min_child_samples
                and totals[C - 2] >= 2 * sp.min_sum_hessian)

    def _set_splits(self, leaves, ids, node_mask):
        """Search the best split of ``leaves`` (node ids ``ids``); the ones with a gain above
        ``min_gain_to_split`` join the ready heap."""
        if self.cat is None and leaves[0].qtot is None and type(self)._find_best is TreeGrower._find_best:
            # numerical search: the nodes' arrays as they are (find_best_splits reads one or
            # two without stacking them)
            hists = [lf.hist for lf in leaves]
        else:
            hists = np.stack([lf.hist for lf in leaves])
        totals = np.array([lf.totals for lf in leaves])
        masks = None
        if node_mask is not None:
            masks = np.asarray(node_mask(np.asarray(ids, dtype=np.int64)), dtype=bool)
        qtots = None if leaves[0].qtot is None else np.stack([lf.qtot for lf in leaves])
        res = self._search(hists, totals, masks, qtots)
        gains, feats, bins = res["gain"].tolist(), res["feature"].tolist(), res["bin"].tolist()
        mls, lefts = res["missing_left"].tolist(), res["left"]
        min_gain = self.params.split.min_gain_to_split
        for j, lf in enumerate(leaves):
            if not gains[j] > min_gain:
                self._release(lf)  # never split: its histogram is not needed
                continue
            lf.split = {"gain": gains[j], "feature": feats[j], "bin": bins[j], "missing_left": bool(mls[j]),
                        "left": np.array(lefts[j], dtype=np.float64)}
            heapq.heappush(self._ready, (-gains[j], ids[j]))
            if qtots is not None:   # integer left sums (exact); the real ones from them
                lf.split["left_q"] = res["left"][j].astype(np.int64)
                lf.split["left"] = self._quant.scale_totals(np.array(res["left"][j], dtype=np.float64))
            if "is_cat" in res:
                lf.split["l2"] = float(res["l2"][j])
                if res["is_cat"][j]:
                    lf.split["cat_left"] = np.array(res["cat_left"][j], dtype=bool)


def compiled_host(ctx, n_slots: int) -> bool:
    """Whether a :class:`TreeGrower` on ``ctx`` grows through the compiled host kernels, which
    read the codes row-major: the fit then bins with ``BinMapper.transform(row_major=True)``
    and the grower uses those codes as they are (no second copy)."""
    return (getattr(ctx, "device", "cpu") != "gpu" and n_slots <= 256
            and compiled_kernels("models.trees._hist_kernels") is not None)


def _compiled_histogram(codes, n_slots):
    """A :class:`~.histogram.CompiledHistogram` over ``codes``, or None (NumPy path)."""
    kernels = compiled_kernels("models.trees._hist_kernels")
    if kernels is None or codes.dtype != np.uint8 or n_slots > 256 or codes.shape[1] > MAX_COMPILED_ROWS:
        return None
    return CompiledHistogram(kernels, codes, n_slots)


class _NodeList:
    """Nodes of one tree as growing Python lists, turned into arrays at the end."""

    def __init__(self, n_out):
        self.n_out = n_out
        self.feature, self.bin, self.missing_left = [], [], []
        self.cat_sets = {}   # node -> bool (S,) bins going left, for categorical splits
        self.left, self.right, self.value, self.gain, self.count, self.hess, self.depth = [], [], [], [], [], [], []
        self.lam = []        # each node's L2 penalty (not saved: leaf renewal reads it)

    def add(self, totals, depth, p: GrowParams, lam) -> int:
        C = len(totals)
        h = totals[C - 2]
        if C == 3:   # one output: the same float64 operations on scalars, cheaper than on (1,) arrays
            den = h + lam
            val = -totals[0] / den * p.learning_rate if den > 0 else 0.0
        else:
            val = -totals[:C - 2] / (h + lam) * p.learning_rate if h + lam > 0 else np.zeros(C - 2)
        i = len(self.feature)
        self.feature.append(-1)
        self.bin.append(0)
        self.missing_left.append(False)
        self.left.append(i)
        self.right.append(i)
        self.value.append(val)
        self.gain.append(0.0)
        self.count.append(totals[C - 1])
        self.hess.append(h)
        self.depth.append(depth)
        self.lam.append(lam)
        return i

    def set_split(self, i, s, li, ri):
        self.feature[i], self.bin[i], self.missing_left[i] = s["feature"], s["bin"], s["missing_left"]
        self.left[i], self.right[i], self.gain[i] = li, ri, s["gain"]
        if s.get("cat_left") is not None:
            self.cat_sets[i] = s["cat_left"]

    def arrays(self) -> dict:
        return {"feature": np.array(self.feature, dtype=np.int32),
                "bin": np.array(self.bin, dtype=np.int32),
                "missing_left": np.array(self.missing_left, dtype=bool),
                "left": np.array(self.left, dtype=np.int32),
                "right": np.array(self.right, dtype=np.int32),
                "value": np.array(self.value, dtype=np.float64).reshape(-1, self.n_out),
                "gain": np.array(self.gain, dtype=np.float64),
                "count": np.array(self.count, dtype=np.float64),
                "hess": np.array(self.hess, dtype=np.float64),
                "depth": np.array(self.depth, dtype=np.int32),
                **self._cat_arrays()}

    def _cat_arrays(self) -> dict:
        """``cat_index`` (node -> row of ``cat_bits`` or -1) and ``cat_bits`` (bitsets over bins)."""
        if not self.cat_sets:
            return {}
        idx = np.full(len(self.feature), -1, dtype=np.int32)
        nodes = sorted(self.cat_sets)
        idx[nodes] = np.arange(len(nodes))
        return {"cat_index": idx, "cat_bits": pack_bits(np.stack([self.cat_sets[i] for i in nodes]))}


def categorical_goes_left(codes: np.ndarray, cat_left: np.ndarray) -> np.ndarray:
    """Rows of a categorical split that go left: a lookup table over the bins (``cat_left[codes]``).

    ``cat_left`` is a bool array over the ``S`` bin slots (the missing slot is False);
    kept apart from the numerical partition so either can become a compiled kernel.
    """
    return cat_left[codes]
