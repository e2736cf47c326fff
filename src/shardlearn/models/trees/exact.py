"""Exact thresholds for the single decision tree: uint16 bin codes and ragged histograms.

scikit-learn splits halfway between any two consecutive distinct values of a node's rows.
The ensembles' histograms (:mod:`.grower`, :mod:`.histogram`) code a feature in one
``uint8`` (255 value bins and the missing code) with ``max_bin + 1`` slots per feature.
Here a feature gets up to 65535 value bins:

**Codes.** :class:`ExactBinMapper` takes the thresholds from the shared binning machinery
(:class:`~shardlearn.data.binning.BinMapper`: a row sample keyed by global row, each rank
sorting a block of the features, one allgather; so they do not depend on P): every
midpoint between distinct sampled values when a feature has at most ``max_bin`` of them,
else ``quantile_bins`` quantile bins. Feature ``f`` with ``nb[f]`` value bins has codes
``#{t < x}`` in ``0 .. nb[f] - 1`` and the missing code ``nb[f]``, stored ``uint16``.

**Ragged histograms.** Feature ``f`` owns the histogram slots ``off[f] .. off[f] + nb[f]``
(its value bins, then its missing slot), ``T = off[d]`` in all: a histogram's size follows
the features' distinct counts, and a pass over a node's rows does one slot update per
(row, feature) whatever the number of bins (the 8-bit windows this replaces did one per
window: 14 per feature on 3375 continuous rows). A node's histogram covers only a sorted
list of slots: the root's non-empty ones, and for a child its parent's non-empty ones
(a child's rows are some of its parent's). The lists are cut by the *global* counts (the
count channel: exact integers), so they are the same on every rank and for any P. A deep
node with ``m`` rows then costs ``O(m d)`` to build and its histogram, collective,
subtraction and split search ``O(its parent's non-empty slots) <= O(d x parent rows)``,
not ``O(T)``: a level of the tree costs ``O(n d)`` in all (its lists hold at most two
entries per row and feature of the level above), like a row pass, whatever ``T``.

**Growth** is :class:`~.grower.TreeGrower`'s: the chosen leaves split (one or a level per
step), each rank partitions its rows in place, the smaller child's local histograms of the
step go in one ``allreduce`` (flattened lists, concatenated), the sibling is parent minus
child. With ``hist_reduce="reduce_scatter"`` rank ``q`` owns a block of whole features:
the histograms are dense over the rank's block (no lists), one ``reduce_scatter`` per step,
and the best candidate of each block is picked by one ``allgather`` (ties: the lowest
feature), as there. The split search (:func:`best_splits`) is :mod:`.split`'s
(``sum_c G_c^2 / H`` per side: Gini / variance) or :mod:`.criterion`'s entropy, with the
same candidates, constraints and tie rule (the first in (feature, bin, missing side)
order within ``TIE_RTOL`` of the best), over the list's value slots.

Compiled loops: ``_exact_kernels.c`` (histogram, partition, split search); without them
(no compiler, ``SHARDLEARN_KERNELS=numpy``) the NumPy forms below give the same trees.
CPU only: the device histogram (:mod:`._gpu`) is uint8, so a gpu context with exact bins
computes them on the host (``max_bin <= 255`` keeps the device path).
"""
from __future__ import annotations

import numpy as np
from scipy.special import xlogy

from ...backend import compiled_kernels
from ...data.binning import BinMapper, sorted_percentiles
from ...util.rowsel import take_chunks
from .criterion import _neg_entropy
from .grower import GrowParams, _NodeList
from .split import TIE_RTOL, node_score

#: bytes of dense histograms (reduce_scatter) that one collective carries at most
DENSE_BATCH_BYTES = 64 << 20


class ExactBinMapper(BinMapper):
    """:class:`~shardlearn.data.binning.BinMapper` with up to 65535 value bins per feature,
    coded ``uint16`` with the missing code ``n_bins_[f]`` (see the module docstring).
    Numeric features only.

    quantile_bins : int or None
        Bins of a feature with more than ``max_bin`` distinct sampled values (quantiles);
        None: ``max_bin``.

    Attributes (after ``fit``), besides the base class's: ``offsets_`` int64 (d + 1,),
    the first histogram slot of each feature (feature ``f``: ``n_bins_[f] + 1`` slots).
    """

    MAX_BIN = 65535

    def __init__(self, max_bin: int = 65535, quantile_bins=None, **kwargs):
        super().__init__(max_bin, **kwargs)
        self.quantile_bins = None if quantile_bins is None else int(quantile_bins)

    def _thresholds_sorted(self, s: np.ndarray) -> np.ndarray:
        """Every midpoint when ``s`` holds at most ``max_bin`` distinct values, else the
        quantiles of ``quantile_bins`` bins (the base class's rule with that count)."""
        if self.quantile_bins is None or s.size == 0:
            return super()._thresholds_sorted(s)
        distinct = s[np.concatenate([[True], s[1:] != s[:-1]])]
        if len(distinct) <= self.max_bin:
            return (distinct[:-1] + distinct[1:]) * 0.5
        q = sorted_percentiles(s, np.linspace(0, 100, self.quantile_bins + 1)[1:-1])
        return np.unique(q)

    def fit(self, X_local, global_rows, n_total, ctx, rows=None) -> "ExactBinMapper":
        """The thresholds (collective, as the base class; ``rows``: of ``X_local[rows]``)."""
        super().fit(X_local, global_rows, n_total, ctx, rows=rows)
        self.offsets_ = np.concatenate([[0], np.cumsum(self.n_bins_.astype(np.int64) + 1)])
        return self

    def fit_transform(self, X_local, global_rows, n_total, ctx, rows=None) -> np.ndarray:
        return self.fit(X_local, global_rows, n_total, ctx, rows=rows).transform(X_local, rows=rows)

    def transform(self, X, rows=None) -> np.ndarray:
        """The ``(d, n)`` uint16 codes of raw rows ``X`` (or of ``X[rows]``); NaN: ``n_bins_[f]``."""
        n = X.shape[0] if rows is None else len(rows)
        out = np.empty((len(self.thresholds_), n), dtype=np.uint16)
        for lo, hi, chunk in take_chunks(X, rows):   # bounded float64 temporaries
            chunk = np.asarray(chunk, dtype=np.float64)
            for f, t in enumerate(self.thresholds_):
                x = chunk[:, f]
                c = np.searchsorted(t, x, side="left")
                c[np.isnan(x)] = len(t) + 1
                out[f, lo:hi] = c
        return out


class ExactGrower:
    """Grows one tree on uint16 codes with ragged histograms (see the module docstring).

    Parameters
    ----------
    ctx : shardlearn.runtime.Context
    codes : (d, n_local) uint16, from :class:`ExactBinMapper`
    n_bins : (d,) value bins per feature
    params : GrowParams (``num_leaves``, ``max_depth``, ``growth``, ``hist_reduce``, ``split``)
    criterion : "gini" (also the variance: the squared-gradient gain) or "entropy"
    """

    def __init__(self, ctx, codes: np.ndarray, n_bins, params: GrowParams, criterion: str = "gini"):
        self.ctx, self.params = ctx, params
        self.codes = np.ascontiguousarray(codes, dtype=np.uint16)
        self.d, self.n = self.codes.shape
        self.nb = np.asarray(n_bins, dtype=np.int64)
        self.off = np.concatenate([[0], np.cumsum(self.nb + 1)]).astype(np.int64)
        self.T = int(self.off[-1])
        self.crit = 1 if criterion == "entropy" else 0
        self.k = compiled_kernels("models.trees._exact_kernels")
        if self.k is not None:
            self.codes_rm = np.ascontiguousarray(self.codes.T)
            self.table = np.full(self.T, -1, dtype=np.int32)
            self._tmp = np.empty(self.n, dtype=np.int64)
        self.wire_bytes = 0
        self.hist_collectives = 0
        P = ctx.size
        self.rs = params.hist_reduce == "reduce_scatter" and P > 1
        if self.rs:
            fb = [(q * self.d // P, (q + 1) * self.d // P) for q in range(P)]
            self.blocks = [(int(self.off[a]), int(self.off[b])) for a, b in fb]
            self.B = max(1, max(e - s for s, e in self.blocks))
            self.my_slots = np.arange(*self.blocks[ctx.rank], dtype=np.int64)

    # ------------------------------------------------------------ kernels
    def histogram(self, channels_rm, channels, rows, slots) -> np.ndarray:
        """``(C, len(slots))`` local histogram of ``rows`` (None: all) over ``slots``."""
        cin = channels.shape[0]
        L = len(slots)
        out = np.empty((cin + 1, L))
        if self.k is not None:
            all_rows = rows is None
            r = self._tmp[:0] if all_rows else np.ascontiguousarray(rows, dtype=np.int64)
            acc = np.empty(L * (cin + 1))
            self.k.histogram(self.codes_rm, self.n, self.d, self.off, channels_rm, cin, r, int(all_rows),
                             self.table, slots, acc, out)
            return out
        pos = np.full(self.T, -1, dtype=np.int64)
        pos[slots] = np.arange(L)
        sub = self.codes if rows is None else self.codes[:, rows]
        j = pos[sub.astype(np.int64) + self.off[:-1, None]].ravel()     # feature-major, rows in order
        if len(j) and j.min() < 0:
            raise ValueError("a row's slot is not in the node's slot list")
        w = channels if rows is None else channels[:, rows]
        for c in range(cin):
            out[c] = np.bincount(j, weights=np.tile(w[c], self.d), minlength=L)
        out[cin] = np.bincount(j, minlength=L)
        return out

    def partition(self, rows: np.ndarray, f: int, b: int, missing_left: bool) -> int:
        """Reorder ``rows`` in place, left rows first (both sides in order); the left count."""
        if self.k is not None:
            return self.k.partition(self.codes[f], rows, self._tmp, int(b), int(self.nb[f]), int(missing_left))
        c = self.codes[f, rows]
        miss = c == self.nb[f]
        go = np.where(miss, bool(missing_left), c <= b)
        rows[:] = np.concatenate([rows[go], rows[~go]])
        return int(go.sum())

    def best_splits(self, hists, slots, totals) -> dict:
        """Best split of each node: ``hists`` / ``slots`` lists of (C, L_i) / (L_i,)."""
        k, C = totals.shape
        sp = self.params.split
        if self.k is not None:
            starts = np.concatenate([[0], np.cumsum([len(s) for s in slots])]).astype(np.int64)
            flat = np.concatenate([h.ravel() for h in hists]) if k else np.empty(0)
            sl = np.concatenate(slots).astype(np.int64) if k else np.empty(0, np.int64)
            scratch = np.empty(3 * max(1, int(np.diff(starts).max(initial=0))))
            bg, left = np.empty(k), np.empty((k, C))
            f, b, ml = np.empty(k, np.int64), np.empty(k, np.int64), np.empty(k, np.uint8)
            self.k.best_splits(flat, starts, sl, self.off, self.nb, np.ascontiguousarray(totals), k, C, self.crit,
                               sp.lambda_l2, sp.min_sum_hessian, TIE_RTOL, sp.min_child_samples, scratch,
                               bg, left, f, b, ml)
            ml = ml.astype(bool)
        else:
            bg, left = np.full(k, -np.inf), np.zeros((k, C))
            f, b, ml = np.zeros(k, np.int64), np.zeros(k, np.int64), np.zeros(k, bool)
            for i in range(k):
                bg[i], left[i], f[i], b[i], ml[i] = self._search_numpy(hists[i], slots[i], totals[i])
        parent = _neg_entropy(totals, C) if self.crit else node_score(totals, sp.lambda_l2)
        gain = np.where(np.isfinite(bg), bg - parent, -np.inf)
        return {"gain": gain, "feature": f, "bin": b, "missing_left": ml, "left": left}

    def _side(self, s, h):
        """A side's score (columns: candidates): the kernel's side_score."""
        ng = s.shape[0] - 2
        if self.crit == 0:
            return (s[:ng] ** 2).sum(axis=0) / (h + self.params.split.lambda_l2)
        n = np.maximum(-s[:ng], 0.0)
        return xlogy(n, n).sum(axis=0) - xlogy(np.maximum(h, 0.0), np.maximum(h, 0.0))

    def _search_numpy(self, hist, slots, tot):
        """One node's best candidate (the kernel's rule): (raw gain, left sums, f, bin, ml)."""
        C = len(tot)
        sp = self.params.split
        lam = sp.lambda_l2
        feat = np.searchsorted(self.off, slots, side="right") - 1
        g_all, info = [], []
        for f in np.unique(feat):
            js = np.flatnonzero(feat == f)
            nb, mslot = int(self.nb[f]), int(self.off[f] + self.nb[f])
            mj = js[-1] if slots[js[-1]] == mslot else -1
            vj = js[:-1] if mj >= 0 else js
            has_miss = mj >= 0 and hist[C - 1, mj] > 0
            cum = np.cumsum(hist[:, vj], axis=1)                      # (C, m)
            b = slots[vj] - self.off[f]
            g = np.full((len(vj), 3), -np.inf)
            # column 0: the dense scan's (bin 0, missing left) when bin 0 is empty (first entry)
            virt = len(vj) > 0 and b[0] > 0 and has_miss
            for k3 in (0, 1, 2) if virt else (1, 2):
                direction = int(k3 != 1)
                bb = b if k3 else np.zeros(len(vj), np.int64)
                valid = ((bb < nb - 1) & has_miss) if direction else ((bb < nb - 1) | ((bb == nb - 1) & has_miss))
                lv = (cum if k3 else np.zeros_like(cum)) + (hist[:, [mj]] if direction else 0.0)
                rv = tot[:, None] - lv
                hl, hr, cl, cr = lv[C - 2], rv[C - 2], lv[C - 1], rv[C - 1]
                ok = (valid & (cl >= sp.min_child_samples) & (cr >= sp.min_child_samples) & (hl >= sp.min_sum_hessian)
                      & (hr >= sp.min_sum_hessian) & (hl + lam > 0) & (hr + lam > 0))
                if k3 == 0:
                    ok &= np.arange(len(vj)) == 0
                with np.errstate(divide="ignore", invalid="ignore"):
                    g[:, k3] = np.where(ok, self._side(lv, hl) + self._side(rv, hr), -np.inf)
            g_all.append(g.ravel())
            info.append((f, vj, cum, b, mj, has_miss))
        flat = np.concatenate(g_all) if g_all else np.empty(0)
        if not len(flat) or not np.isfinite(flat.max()):
            return -np.inf, np.zeros(C), 0, 0, False
        top = flat.max()
        q0 = q = int(np.argmax(flat >= top - TIE_RTOL * abs(top)))
        for f, vj, cum, b, mj, has_miss in info:
            if q < 3 * len(vj):
                j, k3 = divmod(q, 3)
                direction = k3 != 1
                left = (cum[:, j] if k3 else np.zeros(C)) + (hist[:, mj] if direction else 0.0)
                ml = bool(direction) if has_miss else bool(left[C - 1] >= tot[C - 1] - left[C - 1])
                return flat[q0], left, int(f), int(b[j]) if k3 else 0, ml
            q -= 3 * len(vj)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------ collectives
    def _reduce(self, parts: list) -> list:
        """Global histograms of the local ``parts`` ((C, L_i) each; dense (C, T) with
        reduce_scatter, of which this rank gets its block): one collective."""
        coll, P = self.ctx.coll, self.ctx.size
        self.hist_collectives += 1
        if not self.rs:
            flat = np.concatenate([p.ravel() for p in parts])
            self.wire_bytes += 2 * (P - 1) * flat.nbytes // P
            got = coll.allreduce(flat)
            out, at = [], 0
            for p in parts:
                out.append(got[at:at + p.size].reshape(p.shape))
                at += p.size
            return out
        k, C = len(parts), parts[0].shape[0]
        buf = np.zeros((P, k, C, self.B))
        for q, (s, e) in enumerate(self.blocks):
            for j, p in enumerate(parts):
                buf[q, j, :, :e - s] = p[:, s:e]
        self.wire_bytes += (P - 1) * buf.nbytes // P
        mine = coll.reduce_scatter(buf).reshape(k, C, self.B)
        w = len(self.my_slots)
        return [np.ascontiguousarray(mine[j, :, :w]) for j in range(k)]

    def _search(self, leaves) -> dict:
        """Best split per leaf, identical on every rank."""
        C = len(leaves[0].totals)
        totals = np.stack([lf.totals for lf in leaves])
        with self.ctx.timers.phase("split_search"):
            res = self.best_splits([lf.hist for lf in leaves], [lf.slots for lf in leaves], totals)
        if not self.rs:
            return res
        k = len(leaves)
        rec = np.empty((k, 4 + C))
        rec[:, 0], rec[:, 1], rec[:, 2], rec[:, 3] = res["gain"], res["feature"], res["bin"], res["missing_left"]
        rec[:, 4:] = res["left"]
        self.wire_bytes += (self.ctx.size - 1) * rec.nbytes
        allrec = self.ctx.coll.allgather(rec).reshape(self.ctx.size, k, 4 + C)
        out = {"gain": np.empty(k), "feature": np.empty(k, np.int64), "bin": np.empty(k, np.int64),
               "missing_left": np.empty(k, bool), "left": np.empty((k, C))}
        for i in range(k):
            cand = allrec[:, i]
            top = cand[:, 0].max()
            near = cand[:, 0] >= top - TIE_RTOL * abs(top) if np.isfinite(top) else np.ones(len(cand), bool)
            j = int(np.flatnonzero(near)[np.argmin(cand[near, 1])])
            out["gain"][i], out["feature"][i], out["bin"][i] = cand[j, 0], int(cand[j, 1]), int(cand[j, 2])
            out["missing_left"][i], out["left"][i] = bool(cand[j, 3]), cand[j, 4:]
        return out

    # ------------------------------------------------------------------ grow
    def grow(self, channels: np.ndarray, rows: np.ndarray):
        """Grow one tree: ``channels`` (C - 1, n_local) gradient channel(s) then hessian,
        ``rows`` the local rows used. Returns (tree arrays, [(leaf node, local rows)])."""
        ctx, p = self.ctx, self.params
        sp = p.split
        timers = ctx.timers
        C = channels.shape[0] + 1
        channels = np.ascontiguousarray(channels, dtype=np.float64)
        crm = np.ascontiguousarray(channels.T) if self.k is not None else None
        nodes = _NodeList(C - 2)
        rows = np.array(rows, dtype=np.int64)
        full = len(rows) == self.n
        all_slots = np.arange(self.T, dtype=np.int64)
        with timers.phase("histogram"):
            local = self.histogram(crm, channels, None if full else rows, all_slots)
            local_tot = local[:, :self.off[1]].sum(axis=1) if self.d else np.zeros(C)
            if not self.d:
                local_tot[:C - 1] = channels[:, rows].sum(axis=1)
                local_tot[C - 1] = len(rows)
        if self.rs:
            root_hist = self._reduce([local])[0]
            totals = ctx.coll.allreduce(local_tot)
            root_slots = self.my_slots
        else:
            self.hist_collectives += 1
            got = ctx.coll.allreduce(np.concatenate([local.ravel(), local_tot]))
            self.wire_bytes += 2 * (ctx.size - 1) * got.nbytes // ctx.size
            root_hist, totals = got[:-C].reshape(C, self.T), got[-C:]
            root_slots, root_hist = self._compact(all_slots, root_hist)
        leaves = {0: _Leaf(rows, root_slots, root_hist, totals, 0)}
        nodes.add(totals, 0, p, sp.lambda_l2)
        n_leaves = 1
        if self._splittable(totals, 0, n_leaves):
            self._set_splits([leaves[0]])
        while p.num_leaves is None or n_leaves < p.num_leaves:
            ready = [i for i, lf in leaves.items() if lf.split is not None and lf.split["gain"] > sp.min_gain_to_split]
            if not ready:
                break
            ready.sort(key=lambda i: (-leaves[i].split["gain"], i))
            room = len(ready) if p.num_leaves is None else p.num_leaves - n_leaves
            chosen = ready[:1] if p.growth == "leafwise" else ready[:room]
            n_leaves += len(chosen)
            pairs = []
            for i in chosen:
                lf = leaves.pop(i)
                s = lf.split
                with timers.phase("partition"):
                    nl = self.partition(lf.rows, s["feature"], s["bin"], s["missing_left"])
                ltot = s["left"]
                rtot = lf.totals - ltot
                li = nodes.add(ltot, lf.depth + 1, p, sp.lambda_l2)
                ri = nodes.add(rtot, lf.depth + 1, p, sp.lambda_l2)
                nodes.set_split(i, s, li, ri)
                leaves[li] = _Leaf(lf.rows[:nl], None, None, ltot, lf.depth + 1)
                leaves[ri] = _Leaf(lf.rows[nl:], None, None, rtot, lf.depth + 1)
                if self._splittable(ltot, lf.depth + 1, n_leaves) or self._splittable(rtot, lf.depth + 1, n_leaves):
                    pairs.append((lf, li, ri))
                else:
                    lf.hist = None
            if not pairs:
                continue
            batch = len(pairs) if not self.rs else max(1, DENSE_BATCH_BYTES // (8 * C * self.T * max(1, ctx.size)))
            for b0 in range(0, len(pairs), batch):
                self._children(pairs[b0:b0 + batch], leaves, crm, channels, C, n_leaves)
        leaf_rows = [(i, lf.rows) for i, lf in sorted(leaves.items())]
        self.last_l2 = np.array(nodes.lam, dtype=np.float64)
        return nodes.arrays(), leaf_rows

    def _compact(self, slots, hist):
        """The list's non-empty slots (global count > 0) and their histogram."""
        keep = hist[-1] > 0
        if keep.all():
            return slots, hist
        # np.compress: measured 2-3x faster than boolean indexing here
        return np.compress(keep, slots), np.compress(keep, hist, axis=1)

    def _children(self, pairs, leaves, crm, channels, C, n_leaves):
        """Histograms of the children of ``pairs`` (one collective), then their best splits."""
        with self.ctx.timers.phase("histogram"):
            parts, small_left = [], []
            for lf, li, ri in pairs:
                sl = leaves[li].totals[C - 1] <= leaves[ri].totals[C - 1]
                small_left.append(sl)
                small = leaves[li] if sl else leaves[ri]
                slots = np.arange(self.T, dtype=np.int64) if self.rs else lf.slots
                parts.append(self.histogram(crm, channels, small.rows, slots))
        combined = self._reduce(parts)
        todo = []
        for j, (lf, li, ri) in enumerate(pairs):
            small, big = (li, ri) if small_left[j] else (ri, li)
            hs, hb = combined[j], lf.hist - combined[j]
            for c_id, h in ((small, hs), (big, hb)):
                lc = leaves[c_id]
                if self._splittable(lc.totals, lc.depth, n_leaves):
                    lc.slots, lc.hist = (lf.slots, h) if self.rs else self._compact(lf.slots, h)
                    todo.append(lc)
            lf.hist = None
        if todo:
            self._set_splits(todo)

    def _splittable(self, totals, depth, n_leaves) -> bool:
        p, sp = self.params, self.params.split
        C = len(totals)
        return ((p.max_depth is None or depth < p.max_depth)
                and (p.num_leaves is None or n_leaves < p.num_leaves)
                and totals[C - 1] >= 2 * sp.min_child_samples
                and totals[C - 2] >= 2 * sp.min_sum_hessian)

    def _set_splits(self, leaves):
        res = self._search(leaves)
        for j, lf in enumerate(leaves):
            if not res["gain"][j] > self.params.split.min_gain_to_split:
                lf.hist = None
                continue
            lf.split = {"gain": float(res["gain"][j]), "feature": int(res["feature"][j]),
                        "bin": int(res["bin"][j]), "missing_left": bool(res["missing_left"][j]),
                        "left": np.array(res["left"][j], dtype=np.float64)}


class _Leaf:
    __slots__ = ("rows", "slots", "hist", "totals", "depth", "split")

    def __init__(self, rows, slots, hist, totals, depth):
        self.rows, self.slots, self.hist, self.totals, self.depth, self.split = rows, slots, hist, totals, depth, None
