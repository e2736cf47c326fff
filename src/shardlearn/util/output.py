"""Whole lines to stdout or stderr.

Each line is one ``write`` followed by a flush, so lines printed by several ranks into one
job log never interleave mid-line. Rank selection (usually rank 0) is the caller's:
:meth:`shardlearn.runtime.Context.log` and ``.warn`` are the only callers in the package.
"""
from __future__ import annotations

import sys


def line(msg: str, stream=None) -> None:
    """Write ``msg`` and a newline as one write, then flush (default stream: stdout)."""
    stream = sys.stdout if stream is None else stream
    stream.write(msg + "\n")
    stream.flush()
