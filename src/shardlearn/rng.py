"""Random draws keyed by global row index, so results do not depend on P.

A counter-based generator: the value for (seed, stream, row) is a SplitMix64 hash of
the three, computed vectorised for any set of rows. Any rank can draw the numbers of
its own rows without knowing how the table is split.
"""
from __future__ import annotations

import hashlib

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (element-wise, uint64, wraps modulo 2**64)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def stream_key(seed: int, stream: int) -> int:
    """The 64-bit key of (seed, stream): row ``r`` draws ``mix(r * GOLDEN + key)`` (mod 2**64).

    Public so that a compiled kernel can draw the same bits as :func:`row_bits`.
    """
    key = _mix(np.array([(int(seed) & 0xFFFFFFFFFFFFFFFF)], dtype=np.uint64) ^ _GOLDEN)
    return int(_mix(key ^ np.uint64(int(stream) & 0xFFFFFFFFFFFFFFFF))[0])


def keyed_bits(key: int, rows) -> np.ndarray:
    """64 random bits per global row for a stream's :func:`stream_key`."""
    rows = np.asarray(rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return _mix(rows * _GOLDEN + np.uint64(key))


def row_bits(seed: int, stream: int, rows) -> np.ndarray:
    """64 random bits per row for the given (seed, stream); rows are global indices."""
    return keyed_bits(stream_key(seed, stream), rows)


def row_uniform(seed: int, stream: int, rows) -> np.ndarray:
    """Uniform floats in [0, 1) per global row, float64 (53 random bits)."""
    return (row_bits(seed, stream, rows) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def stream_id(*parts) -> int:
    """A stable stream number from integers or strings (e.g. ('sgd', epoch, step)).

    A string contributes a 64-bit BLAKE2b hash of all its bytes, so names that share a
    prefix ("feature_fraction", "feature_bagging") get unrelated streams.
    """
    h = np.array([0x12345], dtype=np.uint64)
    for p in parts:
        if isinstance(p, str):
            v = int.from_bytes(hashlib.blake2b(p.encode(), digest_size=8).digest(), "little")
        else:
            v = int(p)
        h = _mix(h ^ np.uint64(v & 0xFFFFFFFFFFFFFFFF))
    return int(h[0])
