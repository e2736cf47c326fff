"""A tree ensemble as flat arrays, and its vectorised prediction on raw features.

Every node of every tree lives in one set of flat arrays: ``feature`` (-1 for a leaf),
``threshold`` (float: ``x <= threshold`` goes left), ``bin`` (the same split on bin
codes), ``missing_left`` (where NaN goes), ``left``/``right`` (absolute node indices; a
leaf points to itself), ``value`` (n_nodes, n_out), ``gain``, ``count``, ``depth``;
``tree_offsets`` (T + 1) gives each tree's root and ``tree_class`` the output column a
tree adds to. Prediction uses the float thresholds, so new data need no binning.

Categorical splits (present only in models with categorical features): ``cat_index``
(per node: a row of ``cat_bits``, or -1 for a numerical split or a leaf) and
``cat_bits`` (one bitset over the bins per categorical split, see
:func:`.categorical.pack_bits`). A categorical column must reach prediction as bin codes
(:meth:`shardlearn.data.binning.BinMapper.encode`: NaN, rare and unseen categories get
the missing bin, which is in no left set, so they go right); the node sends a row left
when its code's bit is set.

Prediction partitions the rows down each tree (one vectorised comparison per internal
node on a contiguous feature column, no Python loop over rows); :meth:`Ensemble.apply`
gives leaf indices by walking all trees level by level with array indexing.
"""
from __future__ import annotations

import numpy as np

from ...backend import compiled_kernels
from .categorical import in_bitset

FIELDS = ("feature", "threshold", "bin", "missing_left", "left", "right", "value", "gain",
          "count", "depth")


class Ensemble:
    """Trees added one by one during a fit; flat arrays for prediction and model files.

    Parameters
    ----------
    n_out : int
        Values per leaf (1 for boosting trees; the number of classes for a forest).
    """

    def __init__(self, n_out: int = 1):
        self.n_out = n_out
        self.trees: list[dict] = []
        self.tree_class: list[int] = []
        self._flat = None

    def add(self, tree: dict, mapper, klass: int = 0, threshold=None) -> None:
        """Append a grown tree (arrays from the grower), computing its float thresholds
        from the bins (``threshold``: given ones instead, one per node)."""
        t = dict(tree)
        internal = t["feature"] >= 0
        if threshold is None:
            thr = np.zeros(len(t["feature"]))
            thr[internal] = mapper.threshold_value(t["feature"][internal], t["bin"][internal])
        else:
            thr = np.asarray(threshold, dtype=np.float64)
        t["threshold"] = thr
        self.trees.append(t)
        self.tree_class.append(int(klass))
        self._flat = None

    def truncate(self, n_trees: int) -> None:
        del self.trees[n_trees:]
        del self.tree_class[n_trees:]
        self._flat = None

    @property
    def n_trees(self) -> int:
        return len(self.tree_class)

    # --------------------------------------------------------------- arrays
    def to_arrays(self) -> dict:
        if self._flat is not None:
            return self._flat
        sizes = [len(t["feature"]) for t in self.trees]
        off = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=off[1:])
        flat = {}
        for k in FIELDS:
            parts = [t[k] for t in self.trees]
            if k in ("left", "right"):
                parts = [p.astype(np.int64) + o for p, o in zip(parts, off[:-1])]
            if parts:
                flat[k] = np.concatenate(parts)
            else:
                flat[k] = np.empty((0, self.n_out) if k == "value" else 0)
        flat["missing_left"] = flat["missing_left"].astype(np.int8)
        if any("cat_index" in t for t in self.trees):
            flat.update(_flat_categorical(self.trees))
        flat["tree_offsets"] = off
        flat["tree_class"] = np.array(self.tree_class, dtype=np.int64)
        flat["n_out"] = np.int64(self.n_out)
        self._flat = flat
        return flat

    @classmethod
    def from_arrays(cls, a: dict) -> "Ensemble":
        e = cls(int(a["n_out"]))
        e._flat = {k: np.asarray(v) for k, v in a.items()}
        e._flat["value"] = e._flat["value"].reshape(-1, e.n_out)
        off = e._flat["tree_offsets"]
        e.tree_class = [int(c) for c in e._flat["tree_class"]]
        e.trees = []
        for i in range(len(off) - 1):
            t = {k: e._flat[k][off[i]:off[i + 1]] for k in FIELDS}
            t["left"] = t["left"] - off[i]
            t["right"] = t["right"] - off[i]
            t["missing_left"] = t["missing_left"].astype(bool)
            e.trees.append(t)
        if "cat_index" in e._flat:
            # per tree: its rows of cat_bits, indices made tree-local again
            base = 0
            for i, t in enumerate(e.trees):
                ci = e._flat["cat_index"][off[i]:off[i + 1]].astype(np.int64)
                n_cat = int((ci >= 0).sum())
                t["cat_index"] = np.where(ci >= 0, ci - base, -1).astype(np.int32)
                t["cat_bits"] = e._flat["cat_bits"][base:base + n_cat]
                base += n_cat
        return e

    # ----------------------------------------------------------- prediction
    def apply(self, X: np.ndarray, trees=None, block: int = 32768) -> np.ndarray:
        """Leaf node (absolute index) of every row in every tree: (n, T) int64.

        ``X`` holds raw features, categorical columns as bin codes (``BinMapper.encode``).
        """
        a = self.to_arrays()
        off = a["tree_offsets"]
        roots = off[:-1] if trees is None else off[:-1][trees]
        return walk(a, roots, X, block)

    def raw_sum(self, X: np.ndarray, n_cols: int, trees=None, average=False) -> np.ndarray:
        """Sum (or mean) of the leaf values per output column: (n, n_cols) float64.

        Tree by tree, the rows are partitioned down the tree (like training does): each
        internal node splits its index array with one vectorised comparison on one
        contiguous feature column, so the work is (rows x average depth) per tree.
        Measured 2.7x faster than walking all trees level by level on (rows x trees)
        arrays, which also pays for finished rows until the deepest leaf.
        """
        a = self.to_arrays()
        off = a["tree_offsets"]
        ids = np.arange(len(off) - 1) if trees is None else np.asarray(trees)
        kernels = compiled_kernels("models.trees._hist_kernels")
        if kernels is not None:
            cols = a["tree_class"][ids] if self.n_out == 1 else np.zeros(len(ids), np.int64)
            out = predict_compiled(kernels, a, off[:-1][ids], cols, X, n_cols, self.n_out)
            ids_done = True
        else:
            ids_done = False
            XT = np.ascontiguousarray(np.asarray(X, dtype=np.float64).T)
            out = np.zeros((X.shape[0], n_cols))
        for t in ([] if ids_done else ids):
            if self.n_out == 1:
                add_tree(a, int(off[t]), XT, out[:, int(a["tree_class"][t])], a["value"][:, 0])
            else:
                add_tree(a, int(off[t]), XT, out, a["value"])
        if average and len(ids):
            if self.n_out == 1:
                cnt = np.bincount(a["tree_class"][ids], minlength=n_cols)
                out /= np.maximum(cnt, 1)[None, :]
            else:
                out /= len(ids)
        return out


def _flat_categorical(trees: list) -> dict:
    """``cat_index`` (absolute rows of the concatenated ``cat_bits``) for flat arrays."""
    nb = max(t["cat_bits"].shape[1] for t in trees if "cat_bits" in t)
    idx, bits, base = [], [], 0
    for t in trees:
        ci = t.get("cat_index")
        if ci is None:
            idx.append(np.full(len(t["feature"]), -1, dtype=np.int32))
            continue
        idx.append(np.where(ci >= 0, ci + base, -1).astype(np.int32))
        bits.append(t["cat_bits"])
        base += len(t["cat_bits"])
    return {"cat_index": np.concatenate(idx),
            "cat_bits": np.concatenate(bits) if bits else np.zeros((0, nb), dtype=np.uint8)}


def add_tree(a: dict, root: int, XT: np.ndarray, out: np.ndarray, values: np.ndarray) -> None:
    """``out[rows] += values[leaf of each row]`` for the tree at ``root`` (rows partitioned down)."""
    feat, thr, ml = a["feature"], a["threshold"], a["missing_left"]
    cat_index, cat_bits = a.get("cat_index"), a.get("cat_bits")
    left, right = a["left"], a["right"]
    stack = [(root, None)]
    n = XT.shape[1]
    while stack:
        node, rows = stack.pop()
        f = feat[node]
        if f < 0:
            if rows is None:
                out += values[node]
            else:
                out[rows] += values[node]
            continue
        x = XT[f] if rows is None else XT[f].take(rows)
        if cat_index is not None and cat_index[node] >= 0:
            go_left = in_bitset(cat_bits, int(cat_index[node]), x)   # x: bin codes
        else:
            go_left = x <= thr[node]
            if ml[node]:
                go_left |= np.isnan(x)
        base = np.arange(n) if rows is None else rows
        # np.compress: same rows as boolean-mask indexing, several times faster
        stack.append((right[node], np.compress(~go_left, base)))
        stack.append((left[node], np.compress(go_left, base)))


def walk(a: dict, roots: np.ndarray, X: np.ndarray, block: int = 32768) -> np.ndarray:
    """Leaf reached by every row from each root: (n, len(roots)) node indices into ``a``.

    ``a`` holds node arrays (``feature``, ``threshold``, ``missing_left``, ``left``,
    ``right``, ``depth``) with absolute child indices.
    """
    featc = np.maximum(a["feature"], 0).astype(np.intp)
    thr, ml = a["threshold"], a["missing_left"].astype(bool)
    left, right = a["left"].astype(np.intp), a["right"].astype(np.intp)
    depth = int(a["depth"].max()) if len(a["depth"]) else 0
    cat_index = a["cat_index"].astype(np.intp) if "cat_index" in a else None
    if cat_index is not None:
        cat_bits = a["cat_bits"]
        top_code = cat_bits.shape[1] * 8 - 1
    roots = np.asarray(roots, dtype=np.intp)
    n, T = X.shape[0], len(roots)
    out = np.empty((n, T), dtype=np.intp)
    for lo in range(0, n, block):
        xb = X[lo:lo + block]
        m = xb.shape[0]
        node = np.broadcast_to(roots, (m, T)).copy()
        ridx = np.arange(m)[:, None]
        for _ in range(depth):
            x = xb[ridx, featc[node]]
            go_left = x <= thr[node]
            nan = np.isnan(x)
            if nan.any():
                go_left |= nan & ml[node]
            if cat_index is not None:
                ci = cat_index[node]
                is_cat = ci >= 0
                if is_cat.any():
                    code = np.clip(np.where(is_cat, x, 0), 0, top_code)
                    go_left = np.where(is_cat, in_bitset(cat_bits, np.maximum(ci, 0), code), go_left)
            node = np.where(go_left, left[node], right[node])
        out[lo:lo + m] = node
    return out


def predict_compiled(kernels, a: dict, roots, cols, X, n_cols: int, n_out: int) -> np.ndarray:
    """``(n, n_cols)`` sums of the leaf values of the trees at ``roots`` through ``_hist_kernels``.

    ``a`` holds node arrays with absolute child indices; tree ``t`` adds to column
    ``cols[t]`` (``n_out == 1``) or to all ``n_out`` columns. Same sums as :func:`add_tree`.
    Categorical nodes (``cat_index`` >= 0) read bin codes from their column (as
    :func:`add_tree` does); a value that is no code of the bitset goes right.
    """
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    feat = np.ascontiguousarray(a["feature"], dtype=np.int64)
    roots = np.ascontiguousarray(roots, dtype=np.int64)
    cols = np.ascontiguousarray(cols, dtype=np.int64)
    value = np.ascontiguousarray(a["value"], dtype=np.float64).reshape(-1, n_out)
    # the C walk trusts the arrays: every index must be in range
    n_nodes = len(feat)
    left = np.ascontiguousarray(a["left"], dtype=np.int64)
    right = np.ascontiguousarray(a["right"], dtype=np.int64)
    if n_nodes and (feat.max() >= d or min(left.min(), right.min(), roots.min(initial=0)) < 0
                    or max(left.max(), right.max(), roots.max(initial=0)) >= n_nodes):
        raise ValueError("tree arrays out of range for this X")
    if len(roots) and (cols.min() < 0 or cols.max() >= (n_cols if n_out == 1 else 1)
                       or value.shape[1] * (n_out > 1) > n_cols):
        raise ValueError("tree output columns out of range")
    if "cat_index" in a:
        cat_index = np.ascontiguousarray(a["cat_index"], dtype=np.int64)
        cat_bits = np.ascontiguousarray(a["cat_bits"], dtype=np.uint8)
        if cat_bits.ndim != 2 or len(cat_index) != n_nodes:
            raise ValueError("cat_index must have one entry per node and cat_bits be (n_cat, bytes)")
        if n_nodes and cat_index.max() >= len(cat_bits):
            raise ValueError("cat_index out of range of cat_bits")
        cat_bytes = cat_bits.shape[1]
    else:
        cat_index, cat_bits, cat_bytes = np.empty(0, np.int64), np.empty(0, np.uint8), 0
    out = np.zeros((n, n_cols))
    if n and len(roots):
        XT = np.ascontiguousarray(X.T)                  # feature-major: a node reads one column
        idx, tmp = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        stack = np.empty(3 * (n_nodes + 1), dtype=np.int64)   # depth-first: at most every node
        kernels.predict_raw(XT, n, d, feat, np.ascontiguousarray(a["threshold"], dtype=np.float64),
                            np.ascontiguousarray(a["missing_left"], dtype=np.int8), left, right, value,
                            n_out, roots, cols, out, n_cols, idx, tmp, stack, cat_index, cat_bits, cat_bytes)
    return out


def tree_values(tree: dict, X: np.ndarray) -> np.ndarray:
    """Leaf values (n, n_out) of one tree (as grown, with ``threshold`` set) for rows X."""
    kernels = compiled_kernels("models.trees._hist_kernels")
    n_out = tree["value"].shape[1]
    if kernels is not None:
        return predict_compiled(kernels, tree, [0], [0], X, n_out, n_out)
    out = np.zeros((X.shape[0], tree["value"].shape[1]))
    add_tree(tree, 0, np.ascontiguousarray(np.asarray(X, dtype=np.float64).T), out, tree["value"])
    return out


def replay_scores(ens: Ensemble, X: np.ndarray, F: np.ndarray) -> None:
    """``F[:, k] += values`` of every tree of ``ens`` for rows ``X``, one tree after the other.

    Rebuilds a fit's per-row boosting scores from its trees when it resumes from a
    checkpoint: ``F`` starts at the initial score and each tree's leaf value is added in
    the order the fit added it, so the scores are bit-identical to the accumulated ones
    (:meth:`Ensemble.raw_sum` sums the trees first and adds the initial score last, which
    rounds differently). ``X``: raw features, categorical columns as bin codes.
    """
    for t, k in zip(ens.trees, ens.tree_class):
        F[:, k] += tree_values(t, X)[:, 0]

