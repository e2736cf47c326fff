"""The fit's global state at a step boundary: what a checkpoint saves, and how a resume
restores it (:class:`_FitState`).

Steps, numbered on across the ``n_init`` runs: a run's initialisation (step 0 for the
first run), then each of its Lloyd iterations; the last iteration of a run includes the
run's final pass and the choice of the best run so far. A saved state is one of

- run ``run`` after ``iter`` Lloyd iterations (``iter`` 0: initialisation done): its
  centers, the centers its last iteration labelled the rows with (``prev``, from which
  the labels that the next iteration's changed-label count compares against are
  recomputed), its iteration log and initialisation seconds;
- run ``run`` finished (``done``): the next step is run ``run + 1``'s initialisation.

Both carry the global mean and variances (the coordinates and the tolerance), the random
generator's state after the run's initialisation (the later runs' draws), and the best
finished run: centers, inertia, iterations, log, and how it ended (on strict convergence
its labels are the last pass's, labelled with ``used``; otherwise the final pass's, from
its centers), so that its per-row labels are recomputed, on any number of ranks.

Everything here is the same on every rank. Centers are centred float64 (k x d).
"""
from __future__ import annotations

import json

import numpy as np

#: the columns of an iteration log saved as an array (one dataset, not max_iter JSON dicts)
LOG_FIELDS = ("iter", "inertia", "center_shift", "changed", "seconds", "comm_seconds")
_INT_FIELDS = ("iter", "changed")


def log_to_array(log: list) -> np.ndarray:
    out = np.zeros((len(log), len(LOG_FIELDS)))
    for i, row in enumerate(log):
        out[i] = [row[f] for f in LOG_FIELDS]
    return out


def log_from_array(arr) -> list:
    arr = np.asarray(arr, dtype=np.float64).reshape(-1, len(LOG_FIELDS))
    return [{f: (int(v) if f in _INT_FIELDS else float(v)) for f, v in zip(LOG_FIELDS, row)} for row in arr]


class _FitState:
    """The global state of a k-means fit across its runs (see the module docstring)."""

    def __init__(self, mean: np.ndarray, var: np.ndarray, n_init: int):
        self.mean, self.var, self.n_init = mean, var, n_init
        self.step = -1        # the last completed step (global numbering)
        self.run = 0          # the run in progress (or the last finished one)
        self.first_run = 0    # where the runs loop starts (later after a resume)
        self.best = None      # dict: the best finished run so far

    def state(self, rng, *, run: int, iter: int = 0, centers=None, prev=None, log=(), t_init=0.0,
              done: bool = False) -> dict:
        """The state after the current step: run ``run`` in progress, or ``done``."""
        out = {"mean": self.mean, "var": self.var, "n_init": self.n_init,
               "rng": json.dumps(rng.bit_generator.state), "run": int(run), "done": bool(done)}
        if not done:
            out.update({"iter": int(iter), "centers": np.asarray(centers, dtype=np.float64),
                        "log": log_to_array(log), "init_seconds": float(t_init)})
            if prev is not None:
                out["prev_centers"] = np.asarray(prev, dtype=np.float64)
        if self.best is not None:
            b = self.best
            out["best"] = {"centers": b["centers"], "inertia": float(b["inertia"]), "n_iter": int(b["n_iter"]),
                           "log": log_to_array(b["log"]), "init_seconds": float(b["t_init"]),
                           "strict": bool(b["strict"])}
            if b["used"] is not None:
                out["best"]["used"] = b["used"]
        return out

    def restore(self, state: dict, rng) -> dict | None:
        """Take over a saved state; return the run in progress to continue (None: start
        run ``first_run`` from its initialisation, or none is left)."""
        self.step = int(state["_step"])
        rng.bit_generator.state = json.loads(state["rng"])
        b = state.get("best")
        if b is not None:
            self.best = {"centers": np.asarray(b["centers"], dtype=np.float64), "inertia": float(b["inertia"]),
                         "n_iter": int(b["n_iter"]), "log": log_from_array(b["log"]),
                         "t_init": float(b["init_seconds"]), "strict": bool(b["strict"]),
                         "used": None if "used" not in b else np.asarray(b["used"], dtype=np.float64),
                         "labels": None}
        self.run = int(state["run"])
        if state["done"]:
            self.first_run = self.run + 1
            return None
        self.first_run = self.run
        return {"centers": np.asarray(state["centers"], dtype=np.float64), "iter": int(state["iter"]),
                "prev": None if "prev_centers" not in state else np.asarray(state["prev_centers"], dtype=np.float64),
                "log": log_from_array(state["log"]), "t_init": float(state["init_seconds"])}
