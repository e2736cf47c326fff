"""Deterministic synthetic datasets: ``blobs``, ``classification``, ``regression``.

Rows depend only on the seed and the generator's options, never on the number of
ranks or part files: the table is cut into fixed blocks of :data:`BLOCK_ROWS` rows,
and block ``b`` draws its numbers from its own streams
``np.random.default_rng([seed, kind, 1, b, stream])``. Global parameters (cluster
centres, coefficients) come from ``default_rng([seed, kind, 0, stream])``. Every
stream is drawn in row order, so the first ``m`` rows of a block are the same whether
``m`` or all rows are drawn: any rank can generate any row range on its own, in
chunks, without ever holding the whole table (10^8 rows are fine).

Python API::

    X, y = generate("blobs", rows=1000, features=8, seed=0, centers=4)       # all rows
    X, y = generate("blobs", rows=1000, features=8, seed=0, centers=4,
                    start=200, stop=300)                                     # rows 200..299
    gen = Generator("regression", features=8, seed=0); gen.params["coef"]  # true model

Command line: ``shardlearn make-data KIND --rows N --features D --out PATH``
(:func:`make_data`, the collective writer behind it).

Generators
----------
blobs
    Like ``sklearn.datasets.make_blobs``: ``centers`` centres drawn uniformly from
    [-10, 10]^d; each row picks a centre uniformly and adds N(0, cluster_std^2) noise;
    ``y`` is the centre index (int64).
classification
    Like ``sklearn.datasets.make_classification``: columns are ``[informative |
    redundant | noise]``. ``informative`` features come from Gaussian clusters (two
    per class when the hypercube has room, else one), each with its own random linear
    map and centred on a distinct vertex of the hypercube [-1, 1]^informative;
    ``(d - informative) // 2`` redundant features are random linear combinations of the
    informative ones; the rest is N(0, 1) noise. A fraction ``noise`` of the labels is
    replaced by a uniformly drawn class. ``y`` is the class (int64, ``classes`` values).
regression
    Like ``sklearn.datasets.make_regression``: X ~ N(0, 1); ``y = X[:, :informative] @ coef
    + noise * N(0, 1)`` with ``coef ~ 100 * U(0, 1)`` (float64).

``missing`` sets that fraction of the entries of X to NaN (independently per entry,
keyed by row block too), after ``y`` was computed from the complete row.
Values are drawn in float64 and cast, so a float32 dataset equals the float64 one
rounded to float32.
"""
from __future__ import annotations

import json
import time

import numpy as np

from ..errors import ShardlearnError
from ..util.files import atomic_h5, atomic_path

#: rows per random-stream block; part of the data definition (changing it changes the data)
BLOCK_ROWS = 65536
KINDS = ("blobs", "classification", "regression")
_KIND_ID = {"blobs": 1, "classification": 2, "regression": 3}
# stream numbers inside a block / for the global parameters
_S_LABEL, _S_NOISE, _S_FLIP, _S_FLIPCLASS, _S_YERR, _S_MISSING = range(1, 7)
_P_CENTERS, _P_VERTICES, _P_MAPS, _P_REDUNDANT, _P_COEF = range(1, 6)

DEFAULTS = {"centers": 8, "cluster_std": 1.0, "classes": 2, "informative": None,
            "noise": 0.1, "missing": 0.0}


class Generator:
    """A synthetic dataset definition: global parameters plus per-block row streams.

    Parameters
    ----------
    kind : {"blobs", "classification", "regression"}
    features : int
        Number of columns d.
    seed : int
        Non-negative seed; the only source of randomness.
    centers, cluster_std : blobs options.
    classes, informative, noise : classification/regression options (``noise`` is the
        label-flip fraction for classification, the noise std for regression).
    missing : float
        Fraction of X entries set to NaN.

    Attributes
    ----------
    params : dict
        The true parameters (``centers``; ``centroids``/``maps``/``redundant``;
        ``coef``), for tests and examples.
    options : dict
        The options that matter for this kind (recorded in make-data output files).
    """

    def __init__(self, kind: str, features: int, seed: int = 0, **opts):
        unknown = set(opts) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"unknown generator options: {', '.join(sorted(unknown))}")
        o = {**DEFAULTS, **{k: v for k, v in opts.items() if v is not None}}
        check_options(kind, features, seed, **o)
        self.kind, self.features, self.seed = kind, int(features), int(seed)
        self.missing = float(o["missing"])
        d = self.features
        if kind == "blobs":
            self.options = {"centers": int(o["centers"]), "cluster_std": float(o["cluster_std"])}
            self.params = {"centers": self._prng(_P_CENTERS).uniform(-10.0, 10.0, (self.options["centers"], d))}
        elif kind == "classification":
            k = int(o["informative"]) if o["informative"] is not None else max(1, d // 2)
            K = int(o["classes"])
            per_class = 2 if k < 63 and 2 ** k >= 2 * K else 1
            n_clusters = K * per_class
            self.options = {"classes": K, "informative": k, "redundant": (d - k) // 2,
                            "clusters_per_class": per_class, "noise": float(o["noise"])}
            self.params = {"centroids": 2.0 * self._vertices(k, n_clusters) - 1.0,
                           "maps": self._prng(_P_MAPS).uniform(-1.0, 1.0, (n_clusters, k, k)),
                           "redundant": self._prng(_P_REDUNDANT).uniform(-1.0, 1.0, (k, (d - k) // 2))}
        else:
            k = int(o["informative"]) if o["informative"] is not None else max(1, d // 2)
            self.options = {"informative": k, "noise": float(o["noise"])}
            self.params = {"coef": 100.0 * self._prng(_P_COEF).random(k)}
        if self.missing:
            self.options["missing"] = self.missing

    # ------------------------------------------------------------------ streams
    def _prng(self, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _KIND_ID[self.kind], 0, stream])

    def _brng(self, block: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _KIND_ID[self.kind], 1, block, stream])

    def _vertices(self, k: int, n: int) -> np.ndarray:
        """``n`` distinct vertices of the unit hypercube {0, 1}^k, as float rows."""
        rng = self._prng(_P_VERTICES)
        if k <= 20:
            codes = rng.permutation(2 ** k)[:n]
            return ((codes[:, None] >> np.arange(k)) & 1).astype(np.float64)
        while True:  # 2^k >> n: a collision is rare; draw again if one happens
            v = rng.integers(0, 2, (n, k))
            if len(np.unique(v, axis=0)) == n:
                return v.astype(np.float64)

    # --------------------------------------------------------------------- rows
    @property
    def y_dtype(self) -> np.dtype:
        return np.dtype(np.float64 if self.kind == "regression" else np.int64)

    def rows(self, start: int, stop: int, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
        """Global rows ``[start, stop)``: ``X`` (m x d, ``dtype``) and ``y`` (m,)."""
        start, stop = int(start), int(stop)
        if not 0 <= start <= stop:
            raise ValueError(f"bad row range [{start}, {stop})")
        X = np.empty((stop - start, self.features), dtype=dtype)
        y = np.empty(stop - start, dtype=self.y_dtype)
        pos = start
        while pos < stop:
            b = pos // BLOCK_ROWS
            lo, hi = pos - b * BLOCK_ROWS, min(stop - b * BLOCK_ROWS, BLOCK_ROWS)
            i, j = pos - start, pos - start + hi - lo
            if lo == 0 and X.dtype == np.float64:  # whole prefix wanted: draw straight into X
                _, y[i:j] = self._block(b, hi, out=X[i:j])
            else:
                Xb, yb = self._block(b, hi)  # the first `hi` rows of block b
                X[i:j] = Xb[lo:hi]
                y[i:j] = yb[lo:hi]
            pos += hi - lo
        return X, y

    def _block(self, b: int, m: int, out=None) -> tuple[np.ndarray, np.ndarray]:
        """The first ``m`` rows of block ``b`` in float64 (into ``out`` if given, C-contiguous)."""
        d = self.features
        X = np.empty((m, d)) if out is None else out
        self._brng(b, _S_NOISE).standard_normal(out=X)
        if self.kind == "blobs":
            C = self.params["centers"]
            y = self._brng(b, _S_LABEL).integers(0, len(C), m)
            if self.options["cluster_std"] != 1.0:
                X *= self.options["cluster_std"]
            X += np.take(C, y, axis=0)
        elif self.kind == "classification":
            y = self._classification_block(b, X)
        else:
            k = self.options["informative"]
            y = _rows_times(X[:, :k], self.params["coef"][:, None])[:, 0]
            if self.options["noise"]:
                y += self.options["noise"] * self._brng(b, _S_YERR).standard_normal(m)
        if self.missing:
            X[self._brng(b, _S_MISSING).random((m, d)) < self.missing] = np.nan
        return X, y

    def _classification_block(self, b: int, X: np.ndarray) -> np.ndarray:
        """Turn the block's N(0, 1) draws ``X`` into classification rows in place; return y."""
        o, p = self.options, self.params
        k, K, r = o["informative"], o["classes"], o["redundant"]
        n_clusters, m = len(p["centroids"]), X.shape[0]
        cluster = self._brng(b, _S_LABEL).integers(0, n_clusters, m)
        Z = X[:, :k].copy()
        # each cluster: its own linear map of the Gaussian, shifted to its vertex
        order = np.argsort(cluster, kind="stable")
        bounds = np.searchsorted(cluster[order], np.arange(n_clusters + 1))
        for c in range(n_clusters):
            idx = order[bounds[c]:bounds[c + 1]]
            if idx.size:
                X[idx, :k] = _rows_times(Z[idx], p["maps"][c]) + p["centroids"][c]
        if r:
            X[:, k:k + r] = _rows_times(X[:, :k], p["redundant"])
        y = cluster % K
        if o["noise"]:
            flip = self._brng(b, _S_FLIP).random(m) < o["noise"]
            y[flip] = self._brng(b, _S_FLIPCLASS).integers(0, K, m)[flip]
        return y

    def describe(self) -> dict:
        """JSON-able record of what generated the data (stored in each part file)."""
        return {"kind": self.kind, "seed": self.seed, "features": self.features,
                "block_rows": BLOCK_ROWS, "options": self.options}


def _rows_times(Z: np.ndarray, A: np.ndarray) -> np.ndarray:
    """``Z @ A`` summed in a fixed order (column by column of ``Z``), not by BLAS.

    BLAS picks kernels (and so summation orders) by the number of rows, so ``Z @ A``
    for one row can differ in the last bit from the same row inside a larger block.
    Here every output element is ``((z0*a0 + z1*a1) + z2*a2) + ...`` whatever the
    number of rows or threads, which keeps generated rows bit-identical for any row
    range, rank count or part count.
    """
    # work transposed (features x rows) so every step streams over contiguous rows
    Zt = np.ascontiguousarray(Z.T)
    out = np.empty((A.shape[1], Z.shape[0]))
    tmp = np.empty_like(out)
    np.multiply(A[0][:, None], Zt[0], out=out)
    for j in range(1, Zt.shape[0]):
        np.multiply(A[j][:, None], Zt[j], out=tmp)
        out += tmp
    return out.T


def check_options(kind, features, seed, *, centers=8, cluster_std=1.0, classes=2, informative=None,
                  noise=0.1, missing=0.0, rows=None) -> None:
    """Raise :class:`ShardlearnError` with a clear message for invalid generator options."""
    if kind not in KINDS:
        raise ShardlearnError(f"unknown generator {kind!r}: choose one of {', '.join(KINDS)}")
    if rows is not None and rows < 1:
        raise ShardlearnError(f"--rows must be at least 1 (got {rows})")
    if features < 1:
        raise ShardlearnError(f"--features must be at least 1 (got {features})")
    if seed < 0:
        raise ShardlearnError(f"--seed must be non-negative (got {seed})")
    if not 0.0 <= missing < 1.0:
        raise ShardlearnError(f"--missing is a fraction of entries in [0, 1) (got {missing})")
    if kind == "blobs":
        if centers < 1:
            raise ShardlearnError(f"--centers must be at least 1 (got {centers})")
        if not cluster_std >= 0:
            raise ShardlearnError(f"--cluster-std must be non-negative (got {cluster_std})")
        return
    k = informative if informative is not None else max(1, features // 2)
    if not 1 <= k <= features:
        raise ShardlearnError(f"--informative must be between 1 and --features={features} (got {k})")
    if kind == "classification":
        if classes < 2:
            raise ShardlearnError(f"--classes must be at least 2 (got {classes})")
        if k < 63 and 2 ** k < classes:
            raise ShardlearnError(f"{classes} classes need at least {int(np.ceil(np.log2(classes)))} "
                                  f"informative features (one hypercube vertex per class); got {k}")
        if not 0.0 <= noise <= 1.0:
            raise ShardlearnError(f"classification --noise is the fraction of randomised labels, in [0, 1] (got {noise})")
    elif not noise >= 0:
        raise ShardlearnError(f"regression --noise is a standard deviation, non-negative (got {noise})")


def generate(kind: str, rows: int, features: int, seed: int = 0, start: int = 0, stop: int | None = None,
             dtype=np.float64, **opts) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[start, stop)`` of a synthetic dataset with ``rows`` rows, in memory.

    The result equals the same rows of the file ``make-data`` writes with the same
    options, for any number of ranks and parts.

    Parameters
    ----------
    kind : {"blobs", "classification", "regression"}
    rows, features : int
        Size of the whole table (``stop`` defaults to ``rows``).
    seed : int
    start, stop : int
        Global row range.
    dtype : float32 or float64
    **opts
        ``centers``, ``cluster_std``, ``classes``, ``informative``, ``noise``, ``missing``.

    Returns
    -------
    X : ndarray (stop - start, features)
    y : ndarray (stop - start,), int64 labels (blobs, classification) or float64 targets
    """
    stop = rows if stop is None else stop
    if not 0 <= start <= stop <= rows:
        raise ValueError(f"row range [{start}, {stop}) outside [0, {rows})")
    return Generator(kind, features, seed, **opts).rows(start, stop, dtype)


def make_data(kind: str, rows: int, features: int, out: str, ctx, *, parts: int | None = None,
              seed: int = 0, dtype="float64", **opts) -> dict:
    """Write a synthetic dataset, every rank its own parts (collective).

    ``opts`` are the generator options (:data:`DEFAULTS`: ``centers, cluster_std, classes,
    informative, noise, missing``). ``parts`` None means 1 for a ``.h5`` output,
    else the number of ranks. Part ``i`` is written by rank ``i % P``, block by block
    (memory per rank: one block), under a temporary name and renamed into place. A
    one-file output under several ranks is drawn by all ranks and written by rank 0.
    Returns the report dict (rank 0 also logs a summary line).
    """
    from . import tools

    parts = parts if parts is not None else (1 if tools.is_single_file(out) else ctx.size)
    opts = {**DEFAULTS, **opts}
    gen = None
    with ctx.collective_errors():
        unknown = sorted(set(opts) - set(DEFAULTS))
        if unknown:
            raise ShardlearnError(f"make-data: unknown option {unknown[0]!r}; known: {', '.join(DEFAULTS)}")
        check_options(kind, features, seed, rows=rows, **opts)
        gen = Generator(kind, features, seed, **opts)
    dtype = np.dtype(dtype)
    record = json.dumps({**gen.describe(), "rows": int(rows), "dtype": dtype.name})
    gen_seconds = [0.0]

    with tools.staged_output(out, parts, ctx) as paths:
        def write_one(path, i, lo, hi):
            with atomic_h5(path) as h:
                h.attrs["generator"] = record
                h.attrs.update({"part_index": i, "part_start": lo, "parts": len(paths)})
                X = h.create_dataset("X", shape=(hi - lo, gen.features), dtype=dtype)
                Y = h.create_dataset("y", shape=(hi - lo,), dtype=gen.y_dtype)
                a = lo
                while a < hi:  # block-aligned chunks: each block is drawn once
                    b = min(hi, (a // BLOCK_ROWS + 1) * BLOCK_ROWS)
                    t0 = time.perf_counter()
                    Xc, yc = gen.rows(a, b, dtype)
                    gen_seconds[0] += time.perf_counter() - t0
                    X.write_direct(Xc, dest_sel=np.s_[a - lo:b - lo])
                    Y.write_direct(yc, dest_sel=np.s_[a - lo:b - lo])
                    a = b

        with ctx.timers.phase("io"):
            if len(paths) == 1 and ctx.size > 1:  # one file: all ranks draw, rank 0 writes
                nbytes, seconds = _write_one_file_pipelined(paths[0], gen, rows, dtype, record, ctx)
                writers = ctx.size
            else:
                nbytes, seconds = tools.write_parts(paths, rows, ctx, write_one)
                writers = min(ctx.size, len(paths))  # ranks that own at least one part
    rate = rows / seconds / writers if seconds > 0 else float("inf")
    ctx.log(f"make-data {kind}: {rows} rows x {features} features {dtype.name} -> "
            f"{out} ({len(paths)} part{'s' if len(paths) > 1 else ''}, {tools._human_bytes(nbytes)}) "
            f"in {seconds:.2f} s, {writers} rank{'s' if writers > 1 else ''} generating "
            f"({rate:,.0f} rows/s per rank)")
    return {"command": "make-data", "kind": kind, "rows": int(rows), "features": int(features),
            "dtype": dtype.name, "out": str(out), "parts": len(paths), "seed": int(seed),
            "options": gen.options, "bytes": nbytes, "write_seconds": round(seconds, 4),
            "generating_ranks": writers, "generate_seconds_rank0": round(gen_seconds[0], 4),
            "rows_per_second_per_rank": round(rate, 1)}


def _write_one_file_pipelined(path, gen, n, dtype, record, ctx) -> tuple[int, float]:
    """Write a one-part dataset with every rank generating: block ``c`` is drawn by rank
    ``c % P`` and sent to rank 0, which writes the blocks in order.

    HDF5 files have one writer, but drawing the rows is the slow part (~P x faster
    this way). Memory per rank: one block in flight (blocking sends give back-pressure).
    If rank 0 cannot write, it still receives every block, so no rank is left blocked
    in a send, and the error is agreed afterwards. Returns ``(bytes, seconds)``.
    """
    import os

    from mpi4py import MPI

    comm, rank, size = ctx.mpi_comm, ctx.rank, ctx.size
    t0 = time.perf_counter()
    blocks = [(a, min(n, a + BLOCK_ROWS)) for a in range(0, n, BLOCK_ROWS)]
    error, nbytes = None, 0
    if rank != 0:
        for c in range(rank, len(blocks), size):
            X, y = gen.rows(*blocks[c], dtype)
            comm.Send(X, dest=0, tag=11)
            comm.Send(y, dest=0, tag=12)
    else:
        try:
            with atomic_path(path) as tmp:
                error = _receive_and_write(tmp, gen, blocks, dtype, record, ctx)
                if error is not None:
                    error = f"{path}: {error}"
                    raise OSError(error)  # leave no file behind
            nbytes = os.path.getsize(path)
        except OSError as exc:
            error = error or f"{path}: write failed ({exc})"
    ctx.agree(error)
    seconds = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    return int(comm.bcast(nbytes, root=0)), float(seconds)


def _receive_and_write(tmp, gen, blocks, dtype, record, ctx) -> str | None:
    """Rank 0's side of :func:`_write_one_file_pipelined`: draw or receive every block in
    order and write it to ``tmp``. Every block is received even after a write error, so
    no sender is left blocked. Returns the first error, or None."""
    import h5py

    comm, size, n = ctx.mpi_comm, ctx.size, blocks[-1][1] if blocks else 0
    error, h = None, None
    try:
        try:
            h = h5py.File(tmp, "w")
            h.attrs["generator"] = record
            h.attrs.update({"part_index": 0, "part_start": 0, "parts": 1})
            h.create_dataset("X", shape=(n, gen.features), dtype=dtype)
            h.create_dataset("y", shape=(n,), dtype=gen.y_dtype)
        except OSError as exc:
            error = f"cannot create ({exc})"
        for c, (a, b) in enumerate(blocks):
            if c % size == 0:
                X, y = gen.rows(a, b, dtype)
            else:  # the sends of one rank arrive in order (MPI non-overtaking)
                X, y = np.empty((b - a, gen.features), dtype), np.empty(b - a, gen.y_dtype)
                comm.Recv(X, source=c % size, tag=11)
                comm.Recv(y, source=c % size, tag=12)
            if error is None:
                try:
                    h["X"].write_direct(X, dest_sel=np.s_[a:b])
                    h["y"].write_direct(y, dest_sel=np.s_[a:b])
                except OSError as exc:
                    error = f"write failed ({exc})"
    finally:
        if h is not None:
            h.close()
    return error


__all__ = ["Generator", "generate", "make_data", "check_options", "BLOCK_ROWS", "KINDS"]
