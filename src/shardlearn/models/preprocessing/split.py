"""``train_test_split`` of row-sharded data, keyed by global row index.

Row ``i`` goes to the test part when its counter-based uniform draw
(:func:`shardlearn.rng.row_uniform` with ``random_state``) is below ``test_size``: the
split of every row is the same for any number of ranks and any row blocks. Unlike
scikit-learn's, whose test part has exactly ``ceil(test_size n)`` rows, this is a
Bernoulli draw per row: the test part has ``test_size n`` rows on average.
"""
from __future__ import annotations

import numpy as np

from ... import rng
from ...errors import ShardlearnError
from ...runtime import context_from


def train_test_split(*arrays, test_size=0.25, random_state=0, row_offset=None, comm=None):
    """Split local arrays (same rows) into train and test parts by global row key.

    Parameters
    ----------
    *arrays : ndarrays with the same number of local rows
    test_size : float in (0, 1)
    random_state : int >= 0
    row_offset : int, optional
        Global index of this rank's first row; default: rows are in rank order (one
        small allgather of the local row counts, so then every rank must call this).
    comm : communicator or Context (used only when ``row_offset`` is None)

    Returns
    -------
    list: ``[a_train, a_test, b_train, b_test, ...]`` as scikit-learn's.
    """
    if not arrays:
        raise ShardlearnError("train_test_split needs at least one array")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ShardlearnError(f"arrays have different row counts {[len(a) for a in arrays]}")
    if not 0.0 < float(test_size) < 1.0:
        raise ShardlearnError(f"test_size must be a fraction in (0, 1), got {test_size}")
    if random_state is None or int(random_state) < 0:
        raise ShardlearnError(f"random_state must be an int >= 0, got {random_state}")
    if row_offset is None:
        ctx = context_from(comm)
        counts = ctx.coll.allgather_obj(n)
        row_offset = sum(counts[:ctx.rank])
    rows = np.arange(int(row_offset), int(row_offset) + n, dtype=np.int64)
    test = rng.row_uniform(int(random_state), rng.stream_id("train_test_split"), rows) < float(test_size)
    out = []
    for a in arrays:
        a = np.asarray(a)
        out += [a[~test], a[test]]
    return out
