"""Parameter-server SGD with bounded staleness (``aggregation="ps"``): :func:`ps_sgd`.

The classic alternative to allreduce SGD (Li et al. 2014; PMLS/Petuum, Ho et al. 2013):
``S`` server ranks each own a contiguous slice of the parameter vector; every rank is a
worker that pulls the parameters, computes the gradient of its rows of the step's
mini-batch and pushes its update ``-lr * g_p``, which the servers add into their slice.

Transport: MPI one-sided communication (RMA), not point-to-point. A server here is a
rank that also works (every rank holds rows of the data), so with point-to-point it
would have to interrupt its own gradient computation to answer every pull and push,
i.e. run a second thread or poll; with RMA the server's slice is a window
(``MPI.Win.Allocate``) that the workers read with ``Get_accumulate(NO_OP)`` (an atomic
read, element by element) and update with ``Accumulate(SUM)`` (atomic adds in any order),
and the server's CPU is not involved at all. Within a node MPICH serves these from
shared memory without the target entering MPI (tested); across nodes set
``MPICH_ASYNC_PROGRESS=1`` so that a computing target still makes RMA progress. Passive
target: every rank opens one shared ``Lock_all`` epoch for the whole fit and completes
its operations with ``Flush``.

Consistency (``staleness``), by the workers' clocks (steps completed), kept in a small
window on rank 0 next to the per-epoch loss sums and times:

- ``s = 0`` — bulk-synchronous: before step ``t`` a worker waits until every worker has
  pushed ``t`` updates, and before pushing step ``t`` until every worker has pulled its
  parameters of step ``t`` (so no one reads a half-updated step). With one server and
  ``ps_average="weighted"`` this is the allreduce SGD (same batches, same steps) up to
  the order of the floating-point additions (tests/test_ps.py: within 1e-9 relative). The
  workers push one after the other in rank order (each waits for the previous rank's clock),
  so the servers add the updates in the same order every run: bit-reproducible, like
  allreduce (for s > 0 the interleaving of steps depends on timing, by design);
- ``0 < s < inf`` — stale-synchronous parallel (SSP): a worker at clock ``t`` waits only
  until the slowest has completed ``t - s`` steps; it may see fresher updates too;
- ``s = inf`` — asynchronous: no waiting at all.

Aggregation (``ps_average``): ``weighted`` — each worker scales its gradient sum by the
global batch weight of the step, so the updates of one step add up to the batch-weighted
mean gradient (the allreduce result). The batch weights of all steps are known before the
first step (batches are keyed by global row, :func:`._solvers.epoch_batches`): ONE
allreduce of ``epochs x steps`` numbers before the clocks start. ``mean`` — each worker
pushes ``1/P`` of its own batch-mean gradient (workers count equally whatever their
batch size). The regulariser is added once per step (by rank 0 for ``weighted``, ``1/P``
by each for ``mean``). L1 (lasso, ``penalty="l1"``) enters as the subgradient
``l1 * sign(w)``: a proximal step cannot be split into additive pushes. Momentum, early
stopping on a validation split and checkpoints are not offered with ``ps``: every worker
runs all ``epochs`` at its own pace.

Communication time: every RMA operation (``Get_accumulate``, ``Accumulate``, ``Flush``) and
every staleness wait (polling the clocks, sleeps included: the PS's counterpart of the time
an allreduce spends waiting for the slowest rank) is timed and added to the context's
communication seconds (``ctx.coll.comm_seconds``, the run report's ``communication`` and
the progress lines' ``comm``), its payload to ``bytes_sent``; ``rma_ms`` in the history is
the part the parameter server spent (``wait_ms`` the waits among it).

Never hangs: a wait that sees no worker advance for ``SHARDLEARN_PS_TIMEOUT`` seconds
(default 300) raises TimeoutError, which ``ctx.guard`` turns into an abort of the job; an
exception on any rank aborts the job the same way, and a rank that dies ends the job
through the launcher (tests/test_ps.py kills a server and a worker).

``--straggler RANK:FACTOR`` (:func:`slow_down`): that rank sleeps ``FACTOR - 1`` times
its compute time after every gradient computation, allreduce or ps alike (for
bench/bench_ps.py and the tests).
"""
from __future__ import annotations

import contextlib
import math
import os
import time

import numpy as np

from ...errors import ShardlearnError
from ._solvers import OptimResult, epoch_batches, learning_rate_at

AGGREGATIONS = ("allreduce", "ps")
AVERAGES = ("weighted", "mean")
TIMEOUT_ENV = "SHARDLEARN_PS_TIMEOUT"


def staleness_value(s) -> float:
    """``staleness`` as an int >= 0 or ``math.inf`` (from ``"inf"``, ``None`` is 0)."""
    if s is None:
        return 0
    if isinstance(s, str):
        if s.strip().lower() in ("inf", "async", "infinity"):
            return math.inf
        try:
            s = int(s)
        except ValueError:
            raise ShardlearnError(f"staleness must be a whole number >= 0 or 'inf', got {s!r}") from None
    if isinstance(s, float) and math.isinf(s) and s > 0:
        return math.inf
    if not float(s) == int(s) or int(s) < 0:
        raise ShardlearnError(f"staleness must be a whole number >= 0 or 'inf', got {s!r}")
    return int(s)


def parse_straggler(text):
    """``"RANK:FACTOR"`` -> ``(rank, factor)``; None -> None."""
    if text is None or text == "":
        return None
    try:
        rank, factor = str(text).split(":")
        rank, factor = int(rank), float(factor)
    except ValueError:
        raise ShardlearnError(f"straggler must be RANK:FACTOR (e.g. 1:4), got {text!r}") from None
    if rank < 0 or not factor >= 1.0 or not math.isfinite(factor):
        raise ShardlearnError(f"straggler {text!r}: RANK must be >= 0 and FACTOR a finite number >= 1")
    return rank, factor


def check_params(est, solver: str) -> None:
    """The aggregation parameters of a linear estimator (local: the caller agrees)."""
    if est.aggregation not in AGGREGATIONS:
        raise ShardlearnError(f"aggregation {est.aggregation!r}: choose allreduce or ps")
    parse_straggler(est.straggler)
    if est.aggregation != "ps":
        return
    if solver != "sgd":
        raise ShardlearnError(f"aggregation='ps' is a way to combine SGD gradients: it needs solver='sgd' "
                              f"(not {solver!r})")
    if int(est.servers) < 1:
        raise ShardlearnError(f"servers must be >= 1, got {est.servers}")
    staleness_value(est.staleness)
    if est.ps_average not in AVERAGES:
        raise ShardlearnError(f"ps_average {est.ps_average!r}: choose weighted or mean")
    if float(est.momentum) > 0:
        raise ShardlearnError("aggregation='ps' takes no momentum (the servers only add the workers' updates)")
    if float(est.validation_fraction) > 0:
        raise ShardlearnError("aggregation='ps' runs every epoch on every worker: validation_fraction "
                              "(early stopping) needs aggregation='allreduce'")


def check_job(est, solver: str, size: int, checkpoint) -> None:
    """What ``aggregation="ps"`` needs of the job: at most one server per rank, no checkpoint."""
    if est.aggregation != "ps" or solver != "sgd":
        return
    if int(est.servers) > size:
        raise ShardlearnError(f"servers={est.servers} but the job has {size} ranks: a server is a rank "
                              f"(use --servers <= {size})")
    if checkpoint is not None:
        raise ShardlearnError("aggregation='ps' cannot checkpoint (the workers' clocks are not aligned at "
                              "epoch ends): drop --checkpoint or use allreduce")


def slow_down(obj, ctx, straggler) -> None:
    """Make this rank a straggler if ``straggler`` names it: sleep ``factor - 1`` times the
    compute time of every local loss+gradient pass of ``obj``."""
    spec = parse_straggler(straggler)
    if spec is None or spec[0] != ctx.rank or spec[1] == 1.0:
        return
    factor, local = spec[1], obj._local

    def slow(*args, **kwargs):
        t0 = time.perf_counter()
        out = local(*args, **kwargs)
        time.sleep((factor - 1.0) * (time.perf_counter() - t0))
        return out

    obj._local = slow


class ParameterServer:
    """The parameter slices (on ranks ``0..S-1``) and the clocks (on rank 0) as RMA windows.

    Collective to create and to :meth:`close`; everything between is one-sided. Rank 0's
    "meta" window holds float64 ``[pushed clock x P, pulled clock x P, epoch loss x E,
    epoch end time x E]`` (clocks are exact in float64 up to 2**53 steps).

    ``comm_seconds``: the time in RMA operations and waits (nested ones counted once), also
    added to ``coll.comm_seconds`` when ``coll`` (the context's collectives) is given.
    """

    def __init__(self, comm, w0: np.ndarray, servers: int, epochs: int, timeout: float, coll=None):
        from mpi4py import MPI

        self.MPI, self.comm = MPI, comm
        self.rank, self.P = comm.Get_rank(), comm.Get_size()
        self.p, self.S, self.E, self.timeout = w0.size, servers, epochs, timeout
        self.bounds = np.linspace(0, self.p, servers + 1).round().astype(np.int64)
        lo, hi = self._slice(self.rank)
        own = hi - lo if self.rank < servers else 0
        self.win = MPI.Win.Allocate(8 * own, 8, comm=comm)
        self.n_meta = 2 * self.P + 2 * epochs
        self.meta = MPI.Win.Allocate(8 * self.n_meta if self.rank == 0 else 0, 8, comm=comm)
        if own:
            np.frombuffer(self.win.tomemory(), dtype=np.float64)[:] = w0[lo:hi]
        if self.rank == 0:
            np.frombuffer(self.meta.tomemory(), dtype=np.float64)[:] = 0.0
        comm.Barrier()  # initial values in place before anyone reads them
        self.win.Lock_all()
        self.meta.Lock_all()
        self.one = np.ones(1)
        self.wait_seconds = 0.0
        self.comm_seconds = 0.0
        self.coll = coll
        self._depth = 0

    @contextlib.contextmanager
    def _timed(self, nbytes: int = 0):
        """Count the enclosed one-sided communication (outermost level only) as communication."""
        self._depth += 1
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                dt = time.perf_counter() - t0
                self.comm_seconds += dt
                if self.coll is not None:
                    self.coll.comm_seconds += dt
            if self.coll is not None:
                self.coll.bytes_sent += int(nbytes)

    def _slice(self, j):
        if j >= self.S:
            return 0, 0
        return int(self.bounds[j]), int(self.bounds[j + 1])

    def pull(self) -> np.ndarray:
        """The current parameters, read atomically per element from every server."""
        w = np.empty(self.p)
        with self._timed():
            for j in range(self.S):
                lo, hi = self._slice(j)
                if hi > lo:
                    self.win.Get_accumulate(w[lo:hi], w[lo:hi], j, op=self.MPI.NO_OP)
            for j in range(self.S):
                self.win.Flush(j)
        return w

    def push(self, delta: np.ndarray) -> None:
        """Add ``delta`` to the parameters (atomic adds on the servers), completed on return."""
        with self._timed(8 * self.p):
            for j in range(self.S):
                lo, hi = self._slice(j)
                if hi > lo:
                    self.win.Accumulate(np.ascontiguousarray(delta[lo:hi]), j, op=self.MPI.SUM)
            for j in range(self.S):
                self.win.Flush(j)

    def _meta_add(self, index: int, value: float, op=None) -> None:
        with self._timed(8):
            self.meta.Accumulate(np.array([value]), 0, target=(index, 1, self.MPI.DOUBLE),
                                 op=op or self.MPI.SUM)
            self.meta.Flush(0)

    def tick(self, which: int) -> None:
        """Count one more step pushed (``which=0``) or pulled (``1``) by this worker."""
        self._meta_add(which * self.P + self.rank, 1.0)

    def add_epoch(self, ep: int, loss: float, seconds: float) -> None:
        """Add this worker's loss share of epoch ``ep`` (1-based); record its end time (max)."""
        base = 2 * self.P
        self._meta_add(base + ep - 1, loss)
        self._meta_add(base + self.E + ep - 1, seconds, self.MPI.MAX)

    def read_meta(self) -> np.ndarray:
        out = np.empty(self.n_meta)
        with self._timed():
            self.meta.Get_accumulate(out, out, 0, op=self.MPI.NO_OP)
            self.meta.Flush(0)
        return out

    def wait_for(self, which: int, rank: int, at_least: float) -> None:
        """Block until worker ``rank``'s clock ``which`` is >= ``at_least`` (same timeout)."""
        with self._timed():
            self._wait_for(which, rank, at_least)

    def _wait_for(self, which, rank, at_least):
        t0 = last = time.perf_counter()
        sleep, seen = 0.0, None
        while True:
            clock = float(self.read_meta()[which * self.P + rank])
            if clock >= at_least:
                self.wait_seconds += time.perf_counter() - t0
                return
            now = time.perf_counter()
            if clock != seen:
                seen, last = clock, now
            elif now - last > self.timeout:
                raise TimeoutError(f"parameter server: no worker advanced for {self.timeout:.0f}s while rank "
                                   f"{self.rank} waited for rank {rank} to reach clock {int(at_least)} (dead or "
                                   f"stalled). Raise {TIMEOUT_ENV} if a rank is just slow")
            sleep = min(2e-3, max(5e-5, sleep * 2))
            time.sleep(sleep)

    def wait(self, which: int, at_least: float) -> float:
        """Block until every worker's clock ``which`` is >= ``at_least``; return the
        slowest clock seen. Raises TimeoutError (which ``ctx.guard`` turns into an abort of
        the job) after ``timeout`` seconds without any worker advancing (a dead or stalled rank)."""
        with self._timed():
            return self._wait(which, at_least)

    def _wait(self, which, at_least):
        t0 = last = time.perf_counter()
        sleep, seen = 0.0, None
        while True:
            clocks = self.read_meta()[which * self.P:(which + 1) * self.P]
            slowest = float(clocks.min())
            if slowest >= at_least:
                self.wait_seconds += time.perf_counter() - t0
                return slowest
            now = time.perf_counter()
            if seen is None or float(clocks.sum()) != seen:
                seen, last = float(clocks.sum()), now
            elif now - last > self.timeout:
                lag = int(np.argmin(clocks))
                # not a ShardlearnError: only the waiting ranks see it, so ctx.guard must abort the
                # job (an agreed error would let them leave while the stuck rank holds the world)
                raise TimeoutError(
                    f"parameter server: no worker advanced for {self.timeout:.0f}s while rank {self.rank} waited "
                    f"for clock {int(at_least)}; rank {lag} is stuck at {int(clocks[lag])} (dead or stalled). "
                    f"Raise {TIMEOUT_ENV} if a rank is just slow")
            # back off from 50 us to 2 ms: a spinning waiter would take a core from the workers
            sleep = min(2e-3, max(5e-5, sleep * 2))
            time.sleep(sleep)

    def close(self) -> None:
        """End the access epochs and free the windows (collective)."""
        self.win.Unlock_all()
        self.meta.Unlock_all()
        self.win.Free()
        self.meta.Free()


def _timeout() -> float:
    try:
        return float(os.environ.get(TIMEOUT_ENV, "300"))
    except ValueError:
        raise ShardlearnError(f"{TIMEOUT_ENV} must be a number of seconds") from None


def ps_sgd(ctx, obj, w0, *, global_rows, train_local, n_train_total, seed=0, batch_size=256, epochs=10,
           learning_rate=0.01, schedule="invscaling", power_t=0.5, l1=0.0, servers=1, staleness=0,
           average="weighted", progress, callback=None, trace=None) -> OptimResult:
    """Mini-batch SGD through a parameter server (see the module docstring).

    The batches and the step-size schedule are those of :func:`._solvers.sgd` (step ``t``
    of a worker is global step ``t``). Every rank must call it. Returns the same
    :class:`OptimResult` on every rank: the parameters after every worker's last push, and
    ``loss`` the mean mini-batch objective of the last epoch over all workers.
    """
    P, rank = ctx.size, ctx.rank
    n_steps = max(1, -(-int(n_train_total) // int(batch_size)))
    total = n_steps * epochs
    X, tgt, sw = obj.X, obj.t, obj.s
    if average == "weighted":  # every step's global batch weight: the denominators, known up front
        wb = np.zeros(total)
        for ep in range(1, epochs + 1):
            batches = epoch_batches(seed, ep, global_rows, train_local, n_steps)
            wb[(ep - 1) * n_steps:ep * n_steps] = [sw[r].sum() for r in batches]
        wb = ctx.coll.allreduce(wb)
    zero = np.zeros(2 + obj.d * obj.K + obj.K)
    ps = ParameterServer(ctx.mpi_comm, np.asarray(w0, dtype=np.float64), servers, epochs, _timeout(), coll=ctx.coll)
    t, lr, t_start = 0, learning_rate, time.perf_counter()
    mask = obj.l1_mask
    share = 1.0 if average == "weighted" else 1.0 / P
    for ep in range(1, epochs + 1):
        batches = epoch_batches(seed, ep, global_rows, train_local, n_steps)
        acc = gmax = 0.0
        for s, rows in enumerate(batches):
            if staleness != math.inf:
                ps.wait(0, t - staleness)
            w = ps.pull()
            if staleness == 0:
                ps.tick(1)
            with ctx.timers.phase("compute"):
                buf = obj._local(w, X[rows], tgt[rows], sw[rows], None)
            if average == "weighted":
                Wb = wb[t] if wb[t] > 0 else 1.0
                f, g = obj._assemble(w, buf, Wb)
                if rank != 0:  # the regulariser once per step: from rank 0
                    fr, gr = obj._assemble(w, zero, 1.0)
                    f, g = f - fr, g - gr
            else:
                Wp = float(sw[rows].sum())
                f, g = obj._assemble(w, buf, Wp if Wp > 0 else 1.0)
            if l1 > 0 and (rank == 0 or average == "mean"):
                f += l1 * float(np.abs(w[mask]).sum())
                g = g + l1 * np.where(mask, np.sign(w), 0.0)
            f, g = f * share, g * share
            lr = learning_rate_at(schedule, learning_rate, t, total, power_t)
            if staleness == 0:  # nobody changes step t's parameters before everyone has read them
                ps.wait(1, t + 1)
                if rank > 0:  # pushes in rank order: the same sum order every run (bit-reproducible)
                    ps.wait_for(0, rank - 1, t + 1)
            acc += f
            if s == n_steps - 1:  # the epoch's loss share and end time, in before the clock says done
                ps.add_epoch(ep, acc / n_steps, time.perf_counter() - t_start)
            ps.push(-lr * g)
            ps.tick(0)
            gmax = max(gmax, float(np.max(np.abs(g))) if g.size else 0.0)
            t += 1
        elapsed = time.perf_counter() - t_start
        if trace is not None:
            trace.append((elapsed, ps.pull()))
        # rank 0's view: the epoch loss summed so far (complete once every worker is done
        # with the epoch; the history gets the complete value at the end)
        meta = ps.read_meta()
        progress.record(ep, meta[2 * P + ep - 1], gmax, lr, None, steps=t,
                        slowest_clock=int(meta[:P].min()), wait_ms=round(ps.wait_seconds * 1e3, 1),
                        rma_ms=round(ps.comm_seconds * 1e3, 3))
        if callback is not None:
            callback(ep, dict)
    # the end: every push is in; then every rank reads the same final parameters
    n_done = ep  # all epochs: a stop decided on one worker's stale view would split the workers
    ps.wait(0, total)
    w = ps.pull()
    meta = ps.read_meta()
    ps.close()
    losses = meta[2 * P:2 * P + epochs]
    times = meta[2 * P + epochs:]
    for entry in progress.history:
        i = entry["iter"] - 1
        entry["loss"] = float(losses[i])
        entry["seconds_all_workers"] = float(times[i])
    loss = float(losses[n_done - 1])
    finite = np.isfinite(loss) and np.all(np.isfinite(w))
    reason = (f"epochs exhausted (parameter server: {servers} server(s), staleness {staleness}, "
              f"{average} average)") if finite else "diverged (lower --learning-rate)"
    return OptimResult(w, loss, np.nan, n_done, t, False, reason, progress.history)
