"""Checkpoints: a fit's state written collectively and atomically, and resumed bit for bit.

A :class:`Checkpoint` is handed to ``fit(..., checkpoint=...)`` (the CLI's ``--checkpoint
DIR``); in Python, ``with Checkpoint(DIR, every=10) as ck: est.fit(X, y, checkpoint=ck)``
restores the signal handlers however the fit ends. The estimator calls :meth:`Checkpoint.start` once, which returns the state to
resume from (or None), and :meth:`Checkpoint.step` at every step boundary (a Lloyd
iteration, a solver iteration or SGD epoch, a tree), passing a function that returns its
state. ``step`` costs one 8-byte allreduce: the ranks OR their stop requests (a signal on
any rank, :mod:`shardlearn.util.signals`) and "a save is due by the clock", so they
always decide together; when a save is due rank 0 writes ``DIR/ckpt-STEP.h5``:

- atomically (temporary name, fsync of the file, rename, fsync of the directory), so a
  kill at any moment leaves the previous checkpoint intact; the last ``keep`` (2) are kept;
- with a format version, the estimator name, a hash of its parameters and a hash of the
  data description (global rows, features, dtype, and the CLI's paths and part sizes),
  so ``resume`` against other parameters or data refuses with a message naming what differs.

The state is global (the same on every rank: centers, coefficients, solver history,
trees); per-row state (boosting scores, labels) is recomputed from it on resume, so a run
may resume on another number of ranks.

State dicts hold NumPy arrays (HDF5 datasets), nested dicts (groups), and JSON values.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import time

import numpy as np

from .errors import ShardlearnError, TrainingInterrupted
from .persist import jsonable
from .util import faults, signals
from .util.files import atomic_path, remove_stale_temps

FORMAT_VERSION = 1
_NAME = "ckpt-{:08d}.h5"


class Checkpoint:
    """Where and how often a fit saves its state, and whether it resumes.

    Parameters
    ----------
    directory : str
        Checkpoint directory (created if missing).
    every : int, optional
        Save every ``every`` steps.
    seconds : float, optional
        Save when this many seconds have passed since the last save (any rank's clock).
    resume : bool
        Start from the newest checkpoint in ``directory`` (none there: start afresh).
    keep : int
        Checkpoints kept (older ones are deleted after a save).
    data : dict, optional
        Extra description of the data for the fingerprint (the CLI: paths, part sizes).
    signals : bool
        Turn SIGTERM/SIGUSR1/SIGINT into a stop at the next step with a checkpoint.
    """

    def __init__(self, directory, *, every=None, seconds=None, resume=False, keep=2, data=None,
                 signals=True):
        self.directory = str(directory)
        self.every = None if every is None else int(every)
        self.seconds = None if seconds is None else float(seconds)
        self.resume = bool(resume)
        self.keep = int(keep)
        self.data = dict(data or {})
        self.signals = bool(signals)
        self.saved: list[str] = []
        self.resumed_from = None
        self._ctx = None
        if self.every is not None and self.every < 1:
            raise ShardlearnError(f"checkpoint every must be >= 1, got {self.every}")
        if self.seconds is not None and not self.seconds > 0:
            raise ShardlearnError(f"checkpoint seconds must be > 0, got {self.seconds}")

    # --------------------------------------------------------------- start
    def start(self, ctx, estimator: str, params: dict, X, extra_fingerprint: dict | None = None):
        """Bind to a fit (collective). Returns the state to resume from, or None.

        ``X`` is this rank's block (for the global shape); ``extra_fingerprint`` adds
        facts that must match on resume (e.g. the labels' classes).
        """
        self._ctx = ctx
        n = int(ctx.coll.allreduce(np.array([np.shape(X)[0]], dtype=np.int64))[0])
        desc = {"rows": n, "features": int(np.shape(X)[1]) if np.ndim(X) == 2 else None,
                "dtype": str(getattr(X, "dtype", "")), **self.data, **(extra_fingerprint or {})}
        self.estimator = estimator
        self.params_hash = _hash(params)
        self.data_hash = _hash(desc)
        self._params, self._desc = params, desc
        state = None
        with ctx.collective_errors():
            if ctx.rank == 0:
                if os.path.exists(self.directory) and not os.path.isdir(self.directory):
                    raise ShardlearnError(f"checkpoint directory {self.directory} exists and is not a directory")
                os.makedirs(self.directory, exist_ok=True)
                if not os.access(self.directory, os.W_OK):
                    raise ShardlearnError(f"checkpoint directory {self.directory} is not writable")
                if self.resume:
                    state = self._load_newest()
        state = ctx.coll.bcast_obj(state, root=0)
        if self.signals:
            signals.install()
        self._last = time.monotonic()
        self.resumed_from = None if state is None else state["_step"]
        return state

    # ---------------------------------------------------------------- step
    def step(self, step: int, state_fn) -> None:
        """At a step boundary, on every rank: save if due, stop if asked (collective).

        ``state_fn()`` returns the state after ``step`` steps; it is called only when a
        save happens. Raises :class:`TrainingInterrupted` (every rank) after saving when
        any rank received a stop signal.
        """
        ctx = self._ctx
        due_clock = self.seconds is not None and time.monotonic() - self._last >= self.seconds
        flags = ctx.coll.allreduce(np.array([signals.requested(), int(due_clock)], dtype=np.int64), op="max")
        stop, due_clock = int(flags[0]), bool(flags[1])
        due = stop or due_clock or (self.every is not None and step % self.every == 0)
        if due:
            self.save(step, state_fn())
        if stop:
            signals.clear()
            self.finish()  # the fit ends here: Ctrl-C must work again in the caller's program
            where = self.saved[-1] if self.saved else self.directory
            raise TrainingInterrupted(
                f"stopped by {signals.name(stop)} at step {step}; checkpoint {where}: run the same "
                "command again with --resume to continue (Python: Checkpoint(..., resume=True))")

    def save(self, step: int, state: dict) -> str:
        """Write ``state`` as the checkpoint of ``step`` (collective; rank 0 writes)."""
        ctx = self._ctx
        path = os.path.join(self.directory, _NAME.format(step))
        with ctx.collective_errors():
            if ctx.rank == 0:
                try:
                    self._write(path, step, state)
                except OSError as exc:
                    raise ShardlearnError(f"cannot write checkpoint {path}: {exc}") from None
                for old in sorted(glob.glob(os.path.join(self.directory, "ckpt-*.h5")))[:-self.keep]:
                    os.remove(old)
        self.saved.append(path)
        self._last = time.monotonic()
        return path

    def finish(self) -> None:
        """The fit ended: stop listening for signals and forget a late one (idempotent;
        safe in a ``finally``). Using the checkpoint as a context manager calls it."""
        if self.signals:
            signals.uninstall()
            signals.clear()

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.finish()

    # ------------------------------------------------------------ file format
    def _write(self, path, step, state) -> None:
        import h5py

        remove_stale_temps(path)
        with atomic_path(path) as tmp:
            faults.check("checkpoint")
            with h5py.File(tmp, "w") as h:
                h.attrs.update({"checkpoint_format": FORMAT_VERSION, "estimator": self.estimator,
                                "params_hash": self.params_hash, "data_hash": self.data_hash,
                                "params": json.dumps(self._params, default=jsonable),
                                "data": json.dumps(self._desc, default=jsonable), "step": int(step),
                                "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
                _write_state(h.create_group("state"), state)
        _fsync_dir(self.directory)

    def _load_newest(self):
        import h5py

        files = sorted(glob.glob(os.path.join(self.directory, "ckpt-*.h5")))
        if not files:
            return None
        path = files[-1]
        try:
            with h5py.File(path, "r") as h:
                version = int(h.attrs.get("checkpoint_format", 0))
                if version > FORMAT_VERSION:
                    raise ShardlearnError(f"{path}: checkpoint format {version} is newer than this "
                                          f"shardlearn reads ({FORMAT_VERSION}): upgrade shardlearn")
                if h.attrs["estimator"] != self.estimator:
                    raise ShardlearnError(f"{path} is a checkpoint of {h.attrs['estimator']!r}, not "
                                          f"{self.estimator!r}: use another --checkpoint directory")
                if h.attrs["params_hash"] != self.params_hash:
                    raise ShardlearnError(f"{path} was written with other parameters ("
                                          f"{_diff(json.loads(h.attrs['params']), self._params)}): resume "
                                          "with the same options, or use another --checkpoint directory")
                if h.attrs["data_hash"] != self.data_hash:
                    raise ShardlearnError(f"{path} was written for other data ("
                                          f"{_diff(json.loads(h.attrs['data']), self._desc)}): resume on the "
                                          "same data, or use another --checkpoint directory")
                state = _read_state(h["state"])
                state["_step"] = int(h.attrs["step"])
        except OSError as exc:
            raise ShardlearnError(f"{path}: unreadable checkpoint ({exc}); delete it to resume from "
                                  "the one before") from None
        self.resumed_from = state["_step"]
        return state


def _write_state(g, state: dict) -> None:
    meta = {}
    for k, v in state.items():
        if isinstance(v, dict):
            _write_state(g.create_group(k), v)
        elif isinstance(v, np.ndarray):
            g.create_dataset(k, data=v)
        else:
            meta[k] = v
    g.attrs["json"] = json.dumps(meta, default=jsonable)


def _read_state(g) -> dict:
    import h5py

    out = json.loads(g.attrs.get("json", "{}"))
    for k, item in g.items():
        out[k] = _read_state(item) if isinstance(item, h5py.Group) else item[()]
    return out


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=jsonable).encode()).hexdigest()[:16]


def _diff(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new), key=str)
    changed = [f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in keys
               if json.dumps(old.get(k), default=jsonable) != json.dumps(new.get(k), default=jsonable)]
    return "; ".join(changed[:3]) or "details differ"


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
