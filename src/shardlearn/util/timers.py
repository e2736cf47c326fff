"""Wall-clock seconds summed per named phase."""
from __future__ import annotations

import contextlib
import time


class PhaseTimers:
    """Wall-clock seconds summed per named phase (``compute``, ``io``, ...).

    Communication time is counted by the collectives object itself, so a phase that
    contains collectives should not be named ``communication``.
    """

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def phase(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start
