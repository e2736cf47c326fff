"""util.rowsel: the rows a fit on ``rows=`` reads, gathered a bounded chunk at a time."""
from __future__ import annotations

import numpy as np
import pytest

from shardlearn.errors import ShardlearnError
from shardlearn.util.rowsel import CHUNK_BYTES, CHUNK_ROWS, RowView, row_index, take_chunks


@pytest.mark.parametrize("d, dtype", [(1, np.float64), (20, np.float64), (20, np.float32), (300, np.float64)])
def test_take_chunks_gathers_every_selected_row_in_chunks_bounded_by_bytes(d, dtype):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40_000, d)).astype(dtype)
    idx = np.flatnonzero(rng.random(len(X)) < 0.7)
    pieces = list(take_chunks(X, idx))
    assert np.array_equal(np.concatenate([c for _, _, c in pieces]), X[idx])
    assert [lo for lo, _, _ in pieces] == [0] + [hi for _, hi, _ in pieces[:-1]]
    rows = max(len(c) for _, _, c in pieces)
    # as many rows as fit CHUNK_BYTES, at least 1024, at most CHUNK_ROWS
    assert rows == min(len(idx), CHUNK_ROWS, max(1024, CHUNK_BYTES // (d * X.itemsize)))
    assert rows * d * X.itemsize <= max(CHUNK_BYTES, 1024 * d * X.itemsize)
    # no selection: slices of X itself; an explicit size is kept
    assert all(np.shares_memory(c, X) for _, _, c in take_chunks(X, None))
    assert {len(c) for _, _, c in take_chunks(X, idx, 5000)} <= {5000, len(idx) % 5000}


def test_row_index_and_row_view():
    assert row_index(None, 5) is None
    assert row_index(np.array([True, False, True]), 3).tolist() == [0, 2]
    with pytest.raises(ShardlearnError):
        row_index(np.array([2, 1]), 3)
    X = np.arange(12.0).reshape(6, 2)
    v = RowView(X, np.array([1, 3, 4]))
    assert v.shape == (3, 2) and len(v) == 3 and np.array_equal(v[0:2], X[[1, 3]]) and np.array_equal(v[2], X[4])
