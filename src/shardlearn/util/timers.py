"""Wall-clock seconds summed per named phase."""
from __future__ import annotations

import time

_clock = time.perf_counter


class _Phase:
    """One timed block of :meth:`PhaseTimers.phase` (a plain object with ``__enter__`` /
    ``__exit__``: a tree's split steps enter a few phases each, and a generator-based
    context manager cost several times more per block)."""

    __slots__ = ("timers", "name", "t0")

    def __init__(self, timers, name):
        self.timers, self.name = timers, name

    def __enter__(self):
        self.t0 = _clock()
        return None

    def __exit__(self, *exc):
        s = self.timers.seconds
        s[self.name] = s.get(self.name, 0.0) + _clock() - self.t0
        return False


class PhaseTimers:
    """Wall-clock seconds summed per named phase (``compute``, ``io``, ...).

    Communication time is counted by the collectives object itself, so a phase that
    contains collectives should not be named ``communication``.
    """

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.start = time.perf_counter()

    def phase(self, name: str) -> _Phase:
        """``with timers.phase(name):`` adds the block's wall-clock seconds to ``name``
        (also when it raises; blocks of the same name may nest)."""
        return _Phase(self, name)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start
