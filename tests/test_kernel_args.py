"""Every entry point of the compiled kernels checks its arguments before it touches memory.

The kernels (``src/shardlearn/**/_*_kernels.c``, checks in ``_kernel_args.h``) take many
positional buffers and sizes. A wrong call must be a Python exception, never an
out-of-bounds read or write. For each entry point, called directly as the wrappers call it:

(a) correct arguments work;
(b) each buffer one element too short raises (except a buffer whose length *is* a count,
    e.g. the rows to partition: a shorter one is a smaller, valid call);
(c) each buffer with the wrong item size (float32 for float64, int32 for int64, ...) or the
    wrong dtype of the same size (int64 for float64) raises TypeError;
(d) indices that address memory (rows, features, bin codes, child links, roots, output
    columns, category-set rows) out of range raise ValueError;
(e) negative sizes raise ValueError;
(f) a read-only buffer (or bytes) where the kernel writes raises TypeError;
plus strided buffers, outputs overlapping another argument, non-buffers and sizes whose
products overflow.

The modules not built (no compiler, or SHARDLEARN_KERNELS=numpy) are skipped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest

from shardlearn.backend import compiled_kernels

MODULES = {"kmeans": compiled_kernels("models.kmeans._kmeans_kernels"),
           "hist": compiled_kernels("models.trees._hist_kernels"),
           "cat": compiled_kernels("models.trees._cat_kernels"),
           "quant": compiled_kernels("models.trees._quant_kernels"),
           "binning": compiled_kernels("data._binning_kernels"),
           "knn": compiled_kernels("models.knn._knn_kernels"),
           "linear": compiled_kernels("models.linear._linear_kernels")}
ERRORS = (ValueError, TypeError)


@dataclass
class Spec:
    module: str
    fname: str
    build: Callable[[], dict]        # the arguments of a valid call, in call order
    outputs: tuple = ()              # buffers the kernel writes
    sizes: tuple = ()                # integer arguments that are sizes (>= 0, or >= 1)
    counts: tuple = ()               # buffers whose length is a count (shortening is valid)
    bad_indices: tuple = ()          # (label, mutate(args)): each makes the call invalid
    check: Callable | None = None    # sanity check of a valid call's result: check(args, result)
    extra: dict = field(default_factory=dict)

    @property
    def fn(self):
        return getattr(MODULES[self.module], self.fname)

    def call(self, args: dict):
        return self.fn(*args.values())

    def buffers(self) -> list[str]:
        return [k for k, v in self.build().items() if isinstance(v, np.ndarray)]


def _set(name, index, value):
    def mutate(a):
        a[name][index] = value
    return mutate


def _assign(name, value):
    def mutate(a):
        a[name] = value
    return mutate


# ------------------------------------------------------------------------------ k-means
def _kmeans_gemm(dt):
    def build():
        g = np.random.default_rng(0)
        r, k, d = 6, 3, 4
        x = g.standard_normal((r, d)).astype(dt)
        c = g.standard_normal((k, d)).astype(dt)
        ct = np.ascontiguousarray((-2.0 * c).T)
        return {"x": x, "dist": x @ ct, "cc": np.einsum("ij,ij->i", c, c).astype(dt),
                "labels": np.zeros(r, np.int32), "sums": np.zeros((k, d)), "counts": np.zeros(k),
                "r": r, "k": k, "d": d, "accumulate": True}
    return build


def _kmeans_tiled(dt, tile):
    def build():
        g = np.random.default_rng(1)
        r, k, d = 7, 3, 4
        x = g.standard_normal((r, d)).astype(dt)
        c = g.standard_normal((k, d)).astype(dt)
        ct = np.zeros((d, tile), dt)
        ct[:, :k] = (-2.0 * c).T
        cc = np.full(tile, np.inf, dt)
        cc[:k] = np.einsum("ij,ij->i", c, c)
        return {"x": x, "ct": ct, "cc": cc, "labels": np.zeros(r, np.int32), "sums": np.zeros((k, d)),
                "counts": np.zeros(k), "r": r, "kp": tile, "d": d, "accumulate": True}
    return build


def _kmeans_fixed(dt, tile):
    """The tiled form with int64 fixed-point sums (KMeans(exact_reduce=True))."""
    def build():
        a = _kmeans_tiled(dt, tile)()
        d = a["d"]
        return {"x": a["x"], "ct": a["ct"], "cc": a["cc"], "scale": np.full(d, 2.0 ** 40), "labels": a["labels"],
                "sums": np.zeros((3, d), np.int64), "counts": np.zeros(3, np.int64), "r": a["r"], "kp": a["kp"],
                "d": d}
    return build


def _sqdist():
    g = np.random.default_rng(3)
    r, m = 5, 3
    return {"x": g.standard_normal((r, 6)), "c": g.standard_normal((m, 6)), "out": np.empty((r, m)),
            "r": r, "m": m, "d": 6}


def _sqdist_check(a, _):
    want = ((a["x"][:, None, :] - a["c"][None]) ** 2).sum(axis=2)
    assert np.allclose(a["out"], want, rtol=1e-12)


def _kmeans_check(a, changed):
    assert 0 <= changed <= a["r"]
    assert a["counts"].sum() == a["r"]
    assert a["labels"].min() >= 0 and a["labels"].max() < len(a["counts"])


def _tile(name, default):
    mod = MODULES["kmeans"]
    return getattr(mod, name) if mod is not None else default


SPECS = []
for _dt, _suffix in ((np.float64, "f64"), (np.float32, "f32")):
    SPECS.append(Spec("kmeans", f"lloyd_gemm_{_suffix}", _kmeans_gemm(_dt), outputs=("labels", "sums", "counts"),
                      sizes=("r", "k", "d"), check=_kmeans_check))
    SPECS.append(Spec("kmeans", f"lloyd_tiled_{_suffix}", _kmeans_tiled(_dt, _tile(f"TILE_{_suffix.upper()}", 8)),
                      outputs=("labels", "sums", "counts"), sizes=("r", "kp", "d"), check=_kmeans_check,
                      bad_indices=(("padded cc finite: a label could pass the clusters of sums",
                                    _set("cc", -1, 0.0)),
                                   ("kp not a multiple of the tile", _assign("kp", 3)))))
    SPECS.append(Spec("kmeans", f"lloyd_tiled_fixed_{_suffix}", _kmeans_fixed(_dt, _tile(f"TILE_{_suffix.upper()}", 8)),
                      outputs=("labels", "sums", "counts"), sizes=("r", "kp", "d"), check=_kmeans_check,
                      bad_indices=(("padded cc finite: a label could pass the clusters of sums",
                                    _set("cc", -1, 0.0)),
                                   ("kp not a multiple of the tile", _assign("kp", 3)))))
SPECS.append(Spec("kmeans", "sqdist_f64", _sqdist, outputs=("out",), sizes=("r", "m", "d"), check=_sqdist_check))


# ------------------------------------------------------------------------ tree kernels
def _histogram():
    g = np.random.default_rng(2)
    n, d, S = 50, 5, 8
    codes = g.integers(0, S, (n, d), dtype=np.uint8)
    rows = np.sort(g.choice(n - 1, 20, replace=False)).astype(np.int32)     # a view of the int32 permutation
    rows[-1] = n - 1                                     # the last row: a shorter codes is out of range
    return {"codes": codes, "n": n, "d": d, "channels": g.standard_normal((2, n)), "cin": 2,
            "rows": rows, "all_rows": 0, "feats": np.arange(d, dtype=np.int64), "S": S,
            "acc": np.empty(d * S * 3), "out": np.zeros((3, d, S)), "hess_is_count": 0, "with_count": 1}


def _histogram_check(a, result):
    assert result is None
    counts = a["out"][2].sum(axis=1)
    assert np.array_equal(counts, np.full(a["d"], len(a["rows"]), float))


def _partition(table: bool):
    def build():
        g = np.random.default_rng(3)
        n, d = 40, 3
        codes = g.integers(0, 10, (n, d), dtype=np.uint8)     # row-major: feature f of row r at r * d + f
        rows = np.sort(g.choice(n - 1, 15, replace=False)).astype(np.int32)
        rows[-1] = n - 1                                     # the last row: a shorter codes is out of range
        a = {"codes": codes, "d": d, "feature": 2, "rows": rows, "tmp": np.empty(len(rows), np.int32)}
        if table:
            a["table"] = (np.arange(256) % 3 == 0).astype(np.uint8)
        else:
            a.update({"thr": 4, "miss_slot": 9, "missing_left": 1})
        return a
    return build


def _partition_check(a, n_left):
    assert 0 <= n_left <= len(a["rows"])
    assert len(np.unique(a["rows"])) == len(a["rows"])


def _add_leaf_value():
    n, K = 30, 2
    return {"scores": np.zeros((n, K)), "K": K, "k": 1, "rows": np.array([0, 5, n - 1], np.int32), "value": 0.5}


def _best_splits(per_node: bool):
    def build():
        g = np.random.default_rng(4)
        k, C, d, S = 2, 3, 4, 6
        hist = np.abs(g.standard_normal((k, C, d, S)))
        hist[:, 2] = np.round(10 * hist[:, 2])
        totals = hist[:, :, 0, :].sum(axis=2)
        nb = np.full((k, d) if per_node else d, S - 1, np.int64)
        return {"hist": hist[:1].copy(), "totals": totals, "n_bins": nb, "per_node": int(per_node),
                "mask": np.ones((k, d), np.uint8), "k": k, "C": C, "d": d, "S": S, "n_dir": 2, "lam": 0.0,
                "min_hess": 1e-3, "tie_rtol": 1e-9, "min_child": 1, "best": np.empty(k, np.int64),
                "best_gain": np.empty(k), "left": np.empty((k, C)), "feat": np.empty(k, np.int64),
                "bin": np.empty(k, np.int64), "miss_left": np.empty(k, np.uint8), "gain": np.empty(k),
                "hist2": hist[1:].copy(), "k1": 1}           # node 1 in its own buffer
    return build


def _best_splits_check(a, result):
    assert result is None
    assert ((a["feat"] >= 0) & (a["feat"] < a["d"])).all()


def _predict_raw():
    # node 0: x0 <= 0.5 -> 1 else 2; node 1: categorical on x2 (bitset row 1 of cat_bits) -> 3 or 4
    n, d = 7, 3
    X = np.zeros((n, d))
    X[:, 0] = np.linspace(0, 1, n)
    X[:, 2] = np.arange(n)                              # bin codes
    cat_bits = np.array([[0], [0b0000_0101]], np.uint8)  # row 1: codes 0 and 2 go left
    return {"XT": np.ascontiguousarray(X.T), "n": n, "d": d,
            "feature": np.array([0, 2, -1, -1, -1], np.int64), "threshold": np.array([0.5, 0, 0, 0, 0.0]),
            "missing_left": np.zeros(5, np.int8), "left": np.array([1, 3, 0, 0, 0], np.int64),
            "right": np.array([2, 4, 0, 0, 0], np.int64), "value": np.arange(5, dtype=float).reshape(5, 1),
            "n_out": 1, "roots": np.array([0], np.int64), "cols": np.array([0], np.int64),
            "out": np.zeros((n, 1)), "n_cols": 1, "idx": np.empty(n, np.int64), "tmp": np.empty(n, np.int64),
            "stack": np.empty(3 * 6, np.int64), "cat_index": np.array([-1, 1, -1, -1, -1], np.int64),
            "cat_bits": cat_bits, "cat_bytes": 1}


def _predict_raw_check(a, result):
    # rows 0..3 have x0 <= 0.5: codes 0 and 2 go left (leaf 3), codes 1, 3 right (leaf 4); rows 4.. leaf 2
    assert a["out"][:, 0].tolist() == [3, 4, 3, 4, 2, 2, 2]


SPECS += [
    Spec("hist", "histogram", _histogram, outputs=("acc", "out"), sizes=("n", "d", "cin", "S"),
         counts=("rows", "feats"), check=_histogram_check,
         bad_indices=(("row == n", _set("rows", -1, 50)), ("row < 0", _set("rows", 0, -1)),
                      ("feature == d", _set("feats", 0, 5)), ("feature < 0", _set("feats", 0, -1)),
                      ("bin code == S", _set("codes", (49, 2), 8)),
                      ("bin code 255", _set("codes", (49, 4), 255)))),
    Spec("hist", "partition", _partition(False), outputs=("rows", "tmp"), sizes=("d",), counts=("rows",),
         check=_partition_check,
         bad_indices=(("row == n", _set("rows", -1, 40)), ("row < 0", _set("rows", 0, -1)),
                      ("feature == d", _assign("feature", 3)), ("feature < 0", _assign("feature", -1)),
                      ("d = 0", _assign("d", 0)))),
    Spec("hist", "partition_table", _partition(True), outputs=("rows", "tmp"), sizes=("d",), counts=("rows",),
         check=_partition_check,
         bad_indices=(("row == n", _set("rows", -1, 40)), ("row < 0", _set("rows", 0, -1)),
                      ("feature == d", _assign("feature", 3)), ("feature < 0", _assign("feature", -1)),
                      ("table entry 2: the left count would pass the rows", _set("table", 7, 2)))),
    Spec("hist", "add_leaf_value", _add_leaf_value, outputs=("scores",), sizes=("K", "k"), counts=("rows",),
         check=lambda a, r: a["scores"][[0, 5, 29], 1].tolist() == [0.5] * 3,
         bad_indices=(("row == n", _set("rows", -1, 30)), ("row < 0", _set("rows", 0, -1)),
                      ("column k == K", _assign("k", 2)))),
    Spec("hist", "best_splits", _best_splits(False), outputs=("best", "best_gain", "left", "feat", "bin", "miss_left", "gain"),
         sizes=("k", "C", "d", "S", "n_dir"), check=_best_splits_check,
         bad_indices=(("n_dir 3", _assign("n_dir", 3)), ("C 2", _assign("C", 2)), ("k1 > k", _assign("k1", 3)))),
    Spec("hist", "best_splits", _best_splits(True), outputs=("best", "best_gain", "left", "feat", "bin", "miss_left", "gain"),
         sizes=("k", "C", "d", "S", "n_dir"), check=_best_splits_check, extra={"id": "per_node"}),
    Spec("hist", "predict_raw", _predict_raw, outputs=("out", "idx", "tmp", "stack"),
         sizes=("n", "d", "n_out", "n_cols", "cat_bytes"), counts=("roots", "stack"), check=_predict_raw_check,
         bad_indices=(("feature == d", _set("feature", 0, 3)), ("left child == n_nodes", _set("left", 0, 5)),
                      ("right child < 0", _set("right", 1, -1)), ("root == n_nodes", _set("roots", 0, 5)),
                      ("output column == n_cols", _set("cols", 0, 1)),
                      ("category-set row == len(cat_bits)", _set("cat_index", 1, 2)),
                      ("a child link that loops", _set("left", 1, 0)),
                      ("a right child that loops (used to hang)", _set("right", 0, 0)),
                      ("n_out > n_cols", _assign("n_out", 2)))),
]


# ---------------------------------------------------------------- quantized boosting
def _gradients():
    g = np.random.default_rng(8)
    n, K = 9, 2
    return {"F": g.standard_normal((n, K)), "K": K, "k": 1, "y": (g.random(n) < 0.5).astype(float),
            "w": g.uniform(0.5, 2, n), "binary": 1, "g": np.empty(n), "h": np.empty(n)}


def _gradients_u8():
    """Binary 0/1 labels as uint8 (``y_u8=1``): one byte a row."""
    a = _gradients()
    a["y"] = a["y"].astype(np.uint8)
    a["y_u8"] = 1
    return a


def _gradients_check(a, result):
    p = 1.0 / (1.0 + np.exp(-a["F"][:, a["k"]]))
    np.testing.assert_allclose(a["g"], (p - a["y"]) * a["w"], rtol=1e-12)
    np.testing.assert_allclose(a["h"], p * (1 - p) * a["w"], rtol=1e-12)
    assert result == (np.abs(a["g"]).max(), a["h"].max())


def _leaf_fixed_sums():
    g = np.random.default_rng(9)
    n = 12
    rows = g.permutation(n).astype(np.int32)
    return {"g": g.standard_normal(n), "h": g.random(n), "rows": rows,
            "spans": np.array([[0, 5], [5, 0], [5, n - 5]], np.int64), "eg": -40, "eh": -41,
            "out": np.empty((3, 2), np.int64)}


def _leaf_fixed_sums_check(a, result):
    fx = [np.rint(np.ldexp(a[c], -a[e])).astype(np.int64) for c, e in (("g", "eg"), ("h", "eh"))]
    ref = [[f[a["rows"][s:s + m]].sum() for f in fx] for s, m in a["spans"]]
    np.testing.assert_array_equal(a["out"], ref)


SPECS += [
    Spec("quant", "gradients", _gradients, outputs=("g", "h"), sizes=("K", "k"), counts=("y",), check=_gradients_check,
         bad_indices=(("column k == K", _assign("k", 2)), ("binary 2", _assign("binary", 2)),
                      ("no hessian buffer for the binary objective", _assign("h", np.empty(0))))),
    Spec("quant", "gradients", _gradients_u8, outputs=("g", "h"), sizes=("K", "k"), counts=("y",),
         check=_gradients_check, extra={"id": "u8"},
         bad_indices=(("column k == K", _assign("k", 2)), ("uint8 labels, not binary", _assign("binary", 0)),
                      ("y_u8 2", _assign("y_u8", 2)))),
    Spec("quant", "leaf_fixed_sums", _leaf_fixed_sums, outputs=("out",), check=_leaf_fixed_sums_check,
         bad_indices=(("row == len(g)", _set("rows", 0, 12)), ("row < 0", _set("rows", 3, -1)),
                      ("a span past the rows", _set("spans", (2, 1), 8)),
                      ("a negative span length", _set("spans", (1, 1), -1)),
                      ("a negative span start", _set("spans", (1, 0), -1)),
                      ("exponent out of range", _assign("eg", 5000)))),
]


# --------------------------------------------------------------------- categorical
def _many_vs_many():
    g = np.random.default_rng(5)
    B, C, V, L = 3, 3, 6, 4
    h = np.abs(g.standard_normal((B, C, V)))
    h[:, 2] = np.round(20 * h[:, 2]) + 1
    return {"h": h, "tot": h.sum(axis=2), "B": B, "C": C, "V": V, "L": L, "max_cat_threshold": 4, "lam": 0.0,
            "cat_smooth": 1.0, "min_child": 1.0, "min_hess": 1e-3, "min_data_per_group": 1.0, "rtol": 1e-9,
            "score": np.empty(B), "order": np.empty((B, L), np.int64), "length": np.empty(B, np.int64)}


def _categorical_splits():
    g = np.random.default_rng(6)
    k, C, d, S = 2, 3, 4, 8
    hist = np.abs(g.standard_normal((k, C, d, S)))
    hist[:, 2] = np.round(20 * hist[:, 2]) + 1
    return {"hist": hist, "totals": hist[:, :, 1, :].sum(axis=2), "k": k, "C": C, "d": d, "S": S,
            "feats": np.array([1, 3], np.int64), "n_bins": np.array([5, 6], np.int64),
            "mask": np.ones((k, 2), np.uint8), "max_cat_to_onehot": 4, "max_cat_threshold": 32, "lambda_l2": 0.0,
            "cat_l2": 1.0, "cat_smooth": 1.0, "min_child": 1.0, "min_hess": 1e-3, "min_data_per_group": 1.0,
            "rtol": 1e-9, "score": np.empty(k), "feature": np.empty(k, np.int64), "cat_left": np.empty((k, S), np.uint8),
            "left": np.empty((k, C)), "l2": np.empty(k)}


SPECS += [
    Spec("cat", "many_vs_many", _many_vs_many, outputs=("score", "order", "length"),
         sizes=("B", "C", "V", "L", "max_cat_threshold"),
         check=lambda a, r: ((a["order"] >= 0) & (a["order"] < a["V"])).all(),
         bad_indices=(("L > V", _assign("L", 7)), ("C - 2 > 64 channels", _assign("C", 67)))),
    Spec("cat", "categorical_splits", _categorical_splits, outputs=("score", "feature", "cat_left", "left", "l2"),
         sizes=("k", "C", "d", "S", "max_cat_threshold"), counts=("feats",),
         check=lambda a, r: set(a["feature"].tolist()) <= {1, 3},
         bad_indices=(("feature == d", _set("feats", 1, 4)), ("feature < 0", _set("feats", 0, -1)))),
]


# ------------------------------------------------------------------------- binning
def _bin_columns():
    g = np.random.default_rng(7)
    n, d = 20, 3
    table = np.full((d, 255), np.inf)
    table[:, :3] = [-1.0, 0.0, 1.0]
    return {"X": g.standard_normal((n, d)), "n": n, "d": d, "rs": d, "cs": 1, "is_f32": False, "table": table,
            "s0": np.full(d, 2, np.int64), "missing": 255, "out": np.empty((d, n), np.uint8),
            "nan_flags": np.zeros(d, np.uint8)}


SPECS += [
    Spec("binning", "bin_columns", _bin_columns, outputs=("out", "nan_flags"), sizes=("n", "d", "rs", "cs"),
         check=lambda a, r: np.array_equal(a["out"], np.stack([np.searchsorted([-1.0, 0.0, 1.0], a["X"][:, f])
                                                               for f in range(a["d"])])),
         bad_indices=(("s0 not a power of two", _set("s0", 1, 3)), ("s0 past the table", _set("s0", 0, 256)),
                      ("missing code > 255", _assign("missing", 256)),
                      ("a column stride past X", _assign("cs", 7)))),
]


# -------------------------------------------------------------------------------- k-NN
def _topk():
    g = np.random.default_rng(5)
    B, m, k = 4, 9, 3
    return {"g": g.standard_normal((B, m)), "s": np.full(m, -2.0), "xx": g.random(m), "base": 10, "B": B, "m": m,
            "k": k, "best_d": np.full((B, k), np.inf), "best_i": np.full((B, k), np.iinfo(np.int64).max)}


def _topk_check(a, result):
    v = a["xx"] + a["s"] * a["g"]
    order = np.argsort(v, axis=1, kind="stable")[:, :a["k"]]
    np.testing.assert_array_equal(a["best_i"], order + a["base"])
    np.testing.assert_array_equal(a["best_d"], np.take_along_axis(v, order, axis=1))


def _topk_counts():
    g = np.random.default_rng(6)
    B, m, k = 4, 9, 5
    return {"g": g.standard_normal((B, m)), "s": np.full(m, -2.0), "xx": g.random(m),
            "ids": np.arange(m, dtype=np.int64) * 3 + 1, "cnt": g.integers(1, 4, m).astype(np.int64), "B": B, "m": m,
            "k": k, "best_d": np.full((B, k), np.inf), "best_i": np.full((B, k), np.iinfo(np.int64).max)}


def _topk_counts_check(a, result):
    """The k best slots of the materialised rows (row j repeated cnt[j] times)."""
    v = np.repeat(a["xx"] + a["s"] * a["g"], a["cnt"], axis=1)
    ids = np.repeat(a["ids"], a["cnt"])
    order = np.argsort(v, axis=1, kind="stable")[:, :a["k"]]
    np.testing.assert_array_equal(a["best_i"], ids[order])
    np.testing.assert_array_equal(a["best_d"], np.take_along_axis(v, order, axis=1))


SPECS += [
    Spec("knn", "topk_update_counts", _topk_counts, outputs=("best_d", "best_i"), sizes=("B", "m", "k"),
         check=_topk_counts_check,
         bad_indices=(("a count of 0", _set("cnt", 2, 0)), ("a negative count", _set("cnt", 0, -1)),
                      ("k = 0", _assign("k", 0)))),
    Spec("knn", "topk_update", _topk, outputs=("best_d", "best_i"), sizes=("B", "m", "k"), check=_topk_check,
         bad_indices=(("negative base row", _assign("base", -1)), ("k = 0", _assign("k", 0)))),
]



# ------------------------------------------------------------------- linear (exact_reduce)
def _rowdot():
    g = np.random.default_rng(4)
    n, d, K = 5, 7, 3
    return {"x": g.standard_normal((n, d)), "at": g.standard_normal((K, d)), "z": np.empty((n, K)),
            "n": n, "d": d, "K": K}


def _rowdot_check(a, result):
    assert result is None
    np.testing.assert_allclose(a["z"], a["x"] @ a["at"].T, rtol=1e-12, atol=1e-12)


def _xtr_fixed():
    g = np.random.default_rng(5)
    n, d, K = 6, 5, 2
    return {"x": g.standard_normal((n, d)), "r": g.standard_normal((n, K)), "scale": np.full((K, d), 2.0 ** 30),
            "g": np.zeros((K, d), dtype=np.int64), "n": n, "d": d, "K": K}


def _xtr_fixed_check(a, result):
    assert result is None
    want = (a["x"].T @ a["r"]).T * 2.0 ** 30
    assert np.abs(a["g"] - want).max() <= a["n"]  # each of n terms rounded by <= 1/2 unit


def _wsum():
    g = np.random.default_rng(6)
    return {"v": g.standard_normal(9), "w": g.uniform(0, 2, 9), "scale": 2.0 ** 30, "n": 9}


def _colrange():
    g = np.random.default_rng(7)
    return {"x": g.standard_normal((8, 5)), "hi": np.full(5, -np.inf), "lo": np.full(5, np.inf), "n": 8, "d": 5}


def _colrange_check(a, result):
    assert np.array_equal(a["hi"], a["x"].max(axis=0)) and np.array_equal(a["lo"], a["x"].min(axis=0))


def _wsum_check(a, result):
    assert abs(result - a["v"] @ a["w"] * 2.0 ** 30) <= a["n"]


SPECS += [
    Spec("linear", "rowdot_f64", _rowdot, outputs=("z",), sizes=("n", "d", "K"), check=_rowdot_check,
         bad_indices=(("K = 0", _assign("K", 0)),)),
    Spec("linear", "xtr_fixed_f64", _xtr_fixed, outputs=("g",), sizes=("n", "d", "K"), check=_xtr_fixed_check,
         bad_indices=(("K = 0", _assign("K", 0)),)),
    Spec("linear", "wsum_fixed_f64", _wsum, sizes=("n",), check=_wsum_check),
    Spec("linear", "colrange_f64", _colrange, outputs=("hi", "lo"), sizes=("n", "d"), check=_colrange_check),
]

def _id(spec: Spec) -> str:
    return spec.fname + (f"[{spec.extra['id']}]" if "id" in spec.extra else
                         f"[{spec.build()['x'].dtype}]" if spec.module == "kmeans" else "")


def _params(per_spec: Callable[[Spec], list]):
    out = []
    for spec in SPECS:
        mark = pytest.mark.skipif(MODULES[spec.module] is None, reason=f"{spec.module} kernels not built "
                                  "(or SHARDLEARN_KERNELS=numpy)")
        for item in per_spec(spec):
            out.append(pytest.param(spec, item, marks=mark, id=f"{_id(spec)}-{item}"))
    return out


def _raises(spec: Spec, args: dict, exc=ERRORS, match=None) -> str:
    with pytest.raises(exc, match=match) as info:
        spec.call(args)
    msg = str(info.value)
    assert msg.startswith(spec.fname + ":"), msg          # the message names the function
    return msg


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("spec,what", _params(lambda s: ["valid"]))
def test_a_correct_arguments_work(spec, what):
    args = spec.build()
    result = spec.call(args)
    if spec.check is not None:
        assert spec.check(args, result) is not False


def _shortenable(spec):
    return [b for b in spec.buffers() if b not in spec.counts]


@pytest.mark.parametrize("spec,name", _params(_shortenable))
def test_b_each_buffer_one_element_too_short(spec, name):
    args = spec.build()
    args[name] = np.ascontiguousarray(args[name]).reshape(-1)[:-1]
    msg = _raises(spec, args)
    assert name in msg or "out of range" in msg or "+inf" in msg, msg


_WRONG = {np.dtype(np.float64): [np.float32, np.int64], np.dtype(np.float32): [np.float64, np.int32],
          np.dtype(np.int64): [np.int32, np.float64], np.dtype(np.int32): [np.int64, np.float32],
          np.dtype(np.uint8): [np.uint16], np.dtype(np.int8): [np.int16], np.dtype(bool): [np.uint16]}


def _retyped(spec):
    a = spec.build()
    return [f"{b}-{np.dtype(t).name}" for b in spec.buffers() for t in _WRONG[a[b].dtype]]


@pytest.mark.parametrize("spec,case", _params(_retyped))
def test_c_wrong_item_size_or_dtype(spec, case):
    name, dtype = case.rsplit("-", 1)
    args = spec.build()
    with np.errstate(all="ignore"):                        # (inf padding, np.empty garbage)
        args[name] = args[name].astype(dtype)
    msg = _raises(spec, args, TypeError)
    assert f": {name}:" in msg and "items expected" in msg, msg


@pytest.mark.parametrize("spec,index", _params(lambda s: list(range(len(s.bad_indices)))))
def test_d_out_of_range_indices(spec, index):
    label, mutate = spec.bad_indices[index]
    args = spec.build()
    mutate(args)
    _raises(spec, args, ValueError)


@pytest.mark.parametrize("spec,name", _params(lambda s: list(s.sizes)))
def test_e_negative_sizes(spec, name):
    args = spec.build()
    args[name] = -1
    msg = _raises(spec, args, ValueError)
    assert name in msg, msg


@pytest.mark.parametrize("spec,name", _params(lambda s: list(s.outputs)))
def test_f_read_only_outputs(spec, name):
    args = spec.build()
    args[name].setflags(write=False)
    msg = _raises(spec, args, TypeError)
    assert f": {name}:" in msg and "writable" in msg, msg
    args = spec.build()
    args[name] = args[name].tobytes()                      # bytes: read-only too
    _raises(spec, args, TypeError)


@pytest.mark.parametrize("spec,name", _params(lambda s: [b for b in s.buffers() if s.build()[b].size > 1]))
def test_strided_buffers_are_rejected(spec, name):
    args = spec.build()
    a = args[name]
    wide = np.zeros((a.size, 2), a.dtype)
    wide[:, 0] = a.reshape(-1)
    args[name] = wide[:, 0]                                 # same values, every other item
    msg = _raises(spec, args, ValueError)
    assert "C-contiguous" in msg, msg


@pytest.mark.parametrize("spec,name", _params(lambda s: list(s.outputs)))
def test_outputs_must_not_overlap_another_argument(spec, name):
    args = spec.build()
    other = next(b for b in spec.buffers() if b != name)    # an input, or an output before this one
    raw = np.zeros(max(args[name].nbytes, args[other].nbytes) // 8 + 1).view(np.uint8)
    for b in (name, other):                                 # both at the start of the same memory
        args[b] = raw[:args[b].nbytes].view(args[b].dtype).reshape(args[b].shape)
    msg = _raises(spec, args, ValueError)
    assert "overlaps" in msg, msg


@pytest.mark.parametrize("spec,name", _params(lambda s: [s.buffers()[0]]))
def test_non_buffers_are_type_errors(spec, name):
    args = spec.build()
    args[name] = [1.0, 2.0]
    _raises(spec, args, TypeError)


@pytest.mark.parametrize("spec,name", _params(lambda s: [x for x in s.sizes
                                                         if x not in ("k", "n_dir", "K", "max_cat_threshold")]))
def test_sizes_whose_products_overflow(spec, name):
    args = spec.build()
    args[name] = 2 ** 62
    _raises(spec, args, ValueError)


@pytest.mark.skipif(MODULES["hist"] is None, reason="hist kernels not built")
def test_histogram_codes_are_not_checked_when_no_code_can_reach_S():
    """With S >= 256 every uint8 code is a valid slot: the copy of the loop without the
    per-code check runs, and gives the same counts."""
    K = MODULES["hist"]
    n, d, S = 40, 3, 256
    codes = np.full((n, d), 255, np.uint8)
    out = np.zeros((3, d, S))
    K.histogram(codes, n, d, np.ones((2, n)), 2, np.arange(n, dtype=np.int32), 0, np.arange(d, dtype=np.int64), S,
                np.empty(d * S * 3), out, 0, 1)
    assert (out[2, :, 255] == n).all() and out[2].sum() == n * d


@pytest.mark.skipif(MODULES["hist"] is None, reason="hist kernels not built")
def test_partition_leaves_a_permutation_of_the_rows_after_a_bad_row():
    K = MODULES["hist"]
    codes = np.zeros((5, 2), np.uint8)
    codes[:, 1] = [0, 5, 1, 6, 2]                           # feature 1 of the row-major codes
    rows = np.array([0, 1, 2, 7, 3, 4], np.int32)
    with pytest.raises(ValueError, match="rows: index 7 at position 3"):
        K.partition(codes, 2, 1, rows, np.empty(6, np.int32), 2, 9, 0)
    assert sorted(rows.tolist()) == [0, 1, 2, 3, 4, 7]


@pytest.mark.skipif(MODULES["hist"] is None, reason="hist kernels not built")
def test_partition_reads_one_feature_of_the_row_major_codes():
    """partition / partition_table on (n, d) row-major codes give the stable partition by
    feature f's column (what they gave on that column itself, feature-major, before)."""
    K = MODULES["hist"]
    g = np.random.default_rng(7)
    n, d = 1000, 5
    codes = g.integers(0, 12, (n, d), dtype=np.uint8)
    rows = np.sort(g.choice(n, 400, replace=False)).astype(np.int32)
    table = (np.arange(256) % 4 == 1).astype(np.uint8)
    for f in range(d):
        go = (codes[rows, f] <= 5) | (codes[rows, f] == 11)
        r = rows.copy()
        assert K.partition(codes, d, f, r, np.empty(len(r), np.int32), 5, 11, 1) == go.sum()
        assert np.array_equal(r, np.concatenate([rows[go], rows[~go]]))
        go = table[codes[rows, f]] == 1
        r = rows.copy()
        assert K.partition_table(codes, d, f, r, np.empty(len(r), np.int32), table) == go.sum()
        assert np.array_equal(r, np.concatenate([rows[go], rows[~go]]))
    with pytest.raises(TypeError, match="tmp: int32 items expected"):
        K.partition(codes, d, 0, rows.copy(), np.empty(len(rows), np.int64), 5, 11, 1)
    with pytest.raises(ValueError, match="feature: must be in"):
        K.partition(codes, d, d, rows.copy(), np.empty(len(rows), np.int32), 5, 11, 1)


@pytest.mark.skipif(MODULES["hist"] is None, reason="hist kernels not built")
def test_messages_name_function_argument_and_sizes():
    K = MODULES["hist"]
    args = _histogram()
    args["out"] = args["out"].reshape(-1)[:-1]
    with pytest.raises(ValueError, match=r"histogram: out: .*needs at least 960 bytes \(\(cin\+1\)\*d\*S = 120 "
                                         r"float64 items\), got 952"):
        K.histogram(*args.values())
    args = _histogram()
    args["rows"] = args["rows"].astype(np.int64)
    with pytest.raises(TypeError, match=r"histogram: rows: int32 items expected \(4 bytes, .*got format '[lq]' "
                                        r"\(8-byte items\)"):
        K.histogram(*args.values())
