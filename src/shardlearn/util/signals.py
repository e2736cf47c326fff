"""Stop requests from signals: SIGTERM, SIGUSR1 and SIGINT set a flag instead of killing.

A rank that exits alone leaves the others blocked in a collective, so a signal only
records that a stop was asked for; the training loop looks at the flag at its next step
boundary, where the ranks OR-reduce it (:meth:`shardlearn.checkpoint.Checkpoint.step`),
write a checkpoint together and stop. Slurm sends SIGUSR1 ahead of a time limit with
``#SBATCH --signal=B:USR1@120``, SIGTERM on pre-emption and ``scancel``.
"""
from __future__ import annotations

import signal

STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")

_received: list[int] = []
_previous: dict = {}


def _handler(signum, frame) -> None:
    _received.append(signum)


def install() -> None:
    """Route the stop signals to the flag (main thread only; idempotent)."""
    for name in STOP_SIGNALS:
        num = getattr(signal, name)
        if num not in _previous:
            _previous[num] = signal.signal(num, _handler)


def uninstall() -> None:
    """Restore the handlers that were in place before :func:`install`."""
    for num, old in list(_previous.items()):
        signal.signal(num, old)
        del _previous[num]


def requested() -> int:
    """The first stop signal received since the last :func:`clear` (0: none)."""
    return _received[0] if _received else 0


def clear() -> None:
    _received.clear()


def name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
