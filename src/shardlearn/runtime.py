"""The SPMD context: communicator, ranks, device, threads, errors, logging, timers.

Every rank builds one :class:`Context` with :func:`init`; models take it (or a bare
communicator, via :func:`context_from`) and never reach for ``COMM_WORLD`` themselves,
so a later model-selection layer can hand each candidate a ``Comm.Split`` group.

Layer: above :mod:`shardlearn.comm` and :mod:`shardlearn.backend` (a Context builds the
collectives and binds the GPU), below data, models and the CLI.
"""
from __future__ import annotations

import contextlib
import os
import sys

from .errors import ShardlearnError, agreed
from .util.output import line
from .util.threads import limit_threads
from .util.timers import PhaseTimers


class Context:
    """Everything a rank needs to take part in a distributed fit.

    Attributes
    ----------
    mpi_comm : mpi4py.MPI.Comm
    coll : shardlearn.comm.Collectives
        ``allreduce``/``bcast``/``allgather``/``reduce_scatter`` for the chosen topology.
    rank, size : int
    local_rank, local_size : int
        Position among the ranks on this node (``Split_type(COMM_TYPE_SHARED)``).
    device : {"cpu", "gpu"}
    xp : module
        ``numpy`` or ``cupy``.
    threads : int
        BLAS/OpenMP threads this rank uses.
    timers : PhaseTimers
    """

    def __init__(self, mpi_comm, *, device="cpu", topology="auto", threads=None, verbose=True,
                 stall_timeout=None):
        from . import backend
        from .comm import make_collectives

        self.mpi_comm = mpi_comm
        self.rank = mpi_comm.Get_rank()
        self.size = mpi_comm.Get_size()
        self.verbose = verbose
        self.topology = topology
        self.timers = PhaseTimers()
        node = mpi_comm.Split_type(_shared_type(), key=self.rank)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self.threads = limit_threads(self.local_size, threads)
        self.coll = make_collectives(mpi_comm, topology)
        self.device = device
        self.xp, self.gpu_id, error = None, None, None
        try:  # a node without CuPy or GPUs: one agreed message, not an abort per rank
            self.xp = backend.get_xp(device)
            self.gpu_id = backend.bind_gpu(self.local_rank) if device == "gpu" else None
        except ShardlearnError as exc:
            error = str(exc)
        self.agree(error)
        if device == "gpu" and not backend.fake_gpu():
            from .comm.device import DeviceBuffers  # collective: detects CUDA-aware MPI

            self.coll.device_buffers = DeviceBuffers(mpi_comm)
        if stall_timeout is None and os.environ.get("SHARDLEARN_STALL_TIMEOUT", "").strip():
            stall_timeout = float(os.environ["SHARDLEARN_STALL_TIMEOUT"])
        self.watchdog = StallWatchdog(self, stall_timeout) if stall_timeout else None

    # ------------------------------------------------------------------ logging
    def log(self, msg: str, verbose: bool | None = None) -> None:
        """Print one whole line on stdout from rank 0: the only way progress is printed.

        ``verbose`` overrides the context's own setting (an estimator's ``verbose=``).
        """
        if self.rank == 0 and (self.verbose if verbose is None else verbose):
            line(msg)

    def warn(self, msg: str) -> None:
        """A warning line on stderr from rank 0."""
        if self.rank == 0:
            line(f"shardlearn: warning: {msg}", sys.stderr)

    # ------------------------------------------------------------------- errors
    def agree(self, error: str | None) -> None:
        """Collective error agreement: raise the same ShardlearnError on every rank.

        Each rank passes its own problem (or None). One allreduce finds the lowest
        failing rank; its message is broadcast and every rank raises it. Every rank
        must call this, so nobody is left waiting in a later collective.
        """
        from mpi4py import MPI

        flag = self.rank if error is not None else self.size
        first = self.mpi_comm.allreduce(flag, op=MPI.MIN)
        if first == self.size:
            return
        # every rank raises it: the CLI exits cleanly, no abort needed
        raise agreed(self.mpi_comm.bcast(error, root=first))

    @contextlib.contextmanager
    def collective_errors(self):
        """Run a block of local work, then agree on the outcome across ranks.

        Any exception raised inside the block on any rank (a :class:`ShardlearnError`
        for bad input, but also an ``OSError`` from a full disk or a ``MemoryError``) is
        re-raised on every rank after the block as the same :class:`ShardlearnError`,
        naming the rank and the error; nobody is left waiting in a later collective. The
        block must not itself call collectives.
        """
        error = None
        try:
            yield
        except ShardlearnError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - every local failure must reach every rank
            error = f"rank {self.rank}: {type(exc).__name__}: {exc}"
        self.agree(error)

    @contextlib.contextmanager
    def guard(self, what: str):
        """Abort the whole world with one clear message if the block fails on this rank alone.

        For computations that interleave with collectives (a fit, a prediction): an
        exception on one rank would leave the others blocked in the next collective
        forever, so it ends the job instead (``Abort``), after printing which rank failed,
        where and why. Agreed errors (:class:`ShardlearnError` raised on every rank) pass
        through unchanged.
        """
        try:
            yield
        except ShardlearnError:
            raise
        except BaseException as exc:
            if self.size == 1 or isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            import traceback

            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            line(f"shardlearn: rank {self.rank}: {type(exc).__name__} in {what}: {exc}; aborting all "
                 f"{self.size} ranks (the others would wait for it forever)\n"
                 + "".join(f"[rank {self.rank}] {ln}\n" for ln in text.splitlines()).rstrip("\n"),
                 sys.stderr)
            abort_world(1)
            os._exit(1)  # Abort may return before the launcher ends us: never go on without a model

    # ------------------------------------------------------------------ timings
    def timings(self) -> dict:
        """Seconds per phase on this rank: the timers plus communication."""
        out = {k: round(v, 6) for k, v in self.timers.seconds.items()}
        out["communication"] = round(self.coll.comm_seconds, 6)
        out["total"] = round(self.timers.elapsed(), 6)
        return out

    def free(self) -> None:
        """Release the communicators the collectives duplicated (collective over the ranks)."""
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None
        self.coll.free()

    def describe(self) -> dict:
        """Facts for run reports and model provenance."""
        out = {"ranks": self.size, "topology": self.topology, "device": self.device,
               "threads_per_rank": self.threads, "ranks_on_node_0": self.local_size}
        if self.device == "gpu":  # which way device buffers travel (comm/device.py)
            bufs = self.coll.device_buffers
            out["device_collectives"] = bufs.describe() if bufs is not None else {
                "path": "host (SHARDLEARN_FAKE_GPU: NumPy arrays)"}
        return out


class StallWatchdog:
    """``--stall-timeout S``: when this rank has completed no collective for S seconds,
    every rank prints its Python stack (faulthandler) and where it is, and the job aborts
    with one message naming the stalled rank.

    A daemon thread per rank watches the collectives' counters (``ctx.coll.entered`` /
    ``ctx.coll.calls``). On a stall each rank sends its state to rank 0 on a communicator
    of its own (MPI_THREAD_MULTIPLE); rank 0 names the ranks that are not inside a
    collective (computing or blocked elsewhere), or are behind the others, or did not
    answer, then calls ``Abort``. Rank 0 acts on the first report it receives (the job
    is ending anyway) and acknowledges it, so a reporting rank waits for the verdict rather
    than racing it; only without an acknowledgement within 5 s (rank 0 dead, or stuck in
    compiled code holding the GIL) does a rank abort on its own. Set S above the longest step of the run (reading a
    large shard or binning counts as one step).
    """

    EXIT_STALLED = 4
    TAG_REPORT, TAG_ACK = 9, 10

    def __init__(self, ctx, seconds: float):
        import threading

        from mpi4py import MPI

        import atexit

        self.ctx, self.seconds = ctx, float(seconds)
        self.comm = ctx.mpi_comm.Dup()
        self.multiple = MPI.Query_thread() == MPI.THREAD_MULTIPLE
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="shardlearn-stall-watchdog", daemon=True)
        self.thread.start()
        atexit.register(self._stop.set)  # runs before mpi4py finalizes MPI (atexit is LIFO)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        self.comm.Free()

    def _run(self) -> None:
        import time

        from mpi4py import MPI

        coll = self.ctx.coll
        coordinator = self.multiple and self.ctx.size > 1 and self.ctx.rank == 0
        seen, since = (coll.entered, coll.calls), time.monotonic()
        while not self._stop.wait(min(1.0, self.seconds / 4)):
            now = (coll.entered, coll.calls)
            if now != seen:
                seen, since = now, time.monotonic()
            # rank 0 gives the verdict as soon as any rank reports a stall (that rank
            # ends the job either way), not only when its own timer runs out
            reported = coordinator and self.comm.iprobe(source=MPI.ANY_SOURCE, tag=self.TAG_REPORT)
            if reported or time.monotonic() - since >= self.seconds:
                if not MPI.Is_finalized() and not self._stop.is_set():
                    self._fire(time.monotonic() - since)
                return

    def _state(self) -> dict:
        coll = self.ctx.coll
        waiting = coll.entered > coll.calls
        return {"rank": self.ctx.rank, "entered": coll.entered, "completed": coll.calls,
                "in": coll.current if waiting else None}

    def _fire(self, idle: float) -> None:
        import faulthandler
        import time

        from mpi4py import MPI

        me = self._state()
        where = (f"waiting in collective #{me['entered']} ({me['in']})" if me["in"]
                 else f"not in a collective (last completed #{me['completed']})")
        line(f"shardlearn: rank {self.ctx.rank}: no progress for {idle:.0f} s, {where}; Python stack:",
             sys.stderr)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        if self.multiple and self.ctx.size > 1:
            if self.ctx.rank != 0:
                # Rank 0 names the stalled rank and aborts. It acknowledges first, so we wait
                # for its verdict as long as it is alive; if no acknowledgement comes (rank 0
                # dead, or stuck in compiled code holding the GIL), we abort on our own.
                self._pending = self.comm.isend(me, dest=0, tag=self.TAG_REPORT)
                if self._poll(lambda: self.comm.iprobe(source=0, tag=self.TAG_ACK), 5.0):
                    time.sleep(30.0)  # rank 0 aborts the job within its 3 s collection
                line(f"shardlearn: stalled: rank 0 did not answer (stuck in compiled code, or dead); "
                     f"rank {self.ctx.rank} {where}; aborting all {self.ctx.size} ranks "
                     f"(--stall-timeout {self.seconds:g})", sys.stderr)
            else:
                self._pending = [self.comm.isend(None, dest=r, tag=self.TAG_ACK) for r in range(1, self.ctx.size)]
                states, deadline = {0: me}, time.monotonic() + 3.0
                while len(states) < self.ctx.size and time.monotonic() < deadline:
                    if self.comm.iprobe(source=MPI.ANY_SOURCE, tag=self.TAG_REPORT):
                        st = self.comm.recv(source=MPI.ANY_SOURCE, tag=self.TAG_REPORT)
                        states[st["rank"]] = st
                    else:
                        time.sleep(0.05)
                line(f"shardlearn: stalled: {self._verdict(states)}; aborting all {self.ctx.size} ranks "
                     f"(--stall-timeout {self.seconds:g})", sys.stderr)
        else:
            line(f"shardlearn: stalled: rank {self.ctx.rank} {where}; aborting", sys.stderr)
        abort_world(self.EXIT_STALLED)

    @staticmethod
    def _poll(ready, seconds: float) -> bool:
        import time

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if ready():
                return True
            time.sleep(0.05)
        return False

    def _verdict(self, states: dict) -> str:
        silent = [r for r in range(self.ctx.size) if r not in states]
        outside = [r for r, st in sorted(states.items()) if st["in"] is None]
        waiting = {r: st for r, st in states.items() if st["in"] is not None}
        parts = []
        if outside:
            parts.append(f"rank{'s' if len(outside) > 1 else ''} {', '.join(map(str, outside))} "
                         "made no progress outside any collective (computing, or blocked on I/O)")
        if silent:
            parts.append(f"rank{'s' if len(silent) > 1 else ''} {', '.join(map(str, silent))} did not answer "
                         "(stuck in compiled code, or dead)")
        if waiting and not outside and not silent:
            low = min(st["entered"] for st in waiting.values())
            behind = sorted(r for r, st in waiting.items() if st["entered"] == low)
            if len(behind) < len(waiting):
                parts.append(f"rank{'s' if len(behind) > 1 else ''} {', '.join(map(str, behind))} "
                             f"wait in an earlier collective (#{low}) than the others")
            else:
                parts.append(f"every rank waits in collective #{low}: ranks called it with different "
                             "arguments, or MPI itself is stuck (rerun with SHARDLEARN_CHECK_COLLECTIVES=1)")
        if waiting and (outside or silent):
            parts.append("the others wait in " + ", ".join(sorted({st["in"] for st in waiting.values()})))
        return "; ".join(parts)


def _shared_type():
    from mpi4py import MPI

    return MPI.COMM_TYPE_SHARED


def init(comm=None, *, device: str | None = None, topology: str = "auto", threads: int | None = None,
         verbose: bool = True, stall_timeout: float | None = None) -> Context:
    """Build the SPMD context on ``comm`` (default ``MPI.COMM_WORLD``).

    ``device`` None: ``SHARDLEARN_DEVICE`` if set (``make test-gpu`` runs the model
    tests on the GPU this way), else ``"cpu"``.

    Refuses a Slurm step that started several tasks which each see a world of size 1
    (``srun`` without ``--mpi=pmi2`` for the pip MPICH): that would silently train P
    separate models.
    """
    from mpi4py import MPI

    if device is None:
        device = os.environ.get("SHARDLEARN_DEVICE", "").strip() or "cpu"
    comm = MPI.COMM_WORLD if comm is None else comm
    step_tasks = os.environ.get("SLURM_STEP_NUM_TASKS", "")
    if comm is MPI.COMM_WORLD and comm.Get_size() == 1 and step_tasks.isdigit() and int(step_tasks) > 1:
        raise ShardlearnError(
            f"Slurm started {step_tasks} tasks but each sees an MPI world of size 1: the tasks "
            "are not connected. Launch with 'srun --mpi=pmi2' (or set MpiDefault=pmi2), or use "
            "mpiexec inside the allocation.")
    return Context(comm, device=device, topology=topology, threads=threads, verbose=verbose,
                   stall_timeout=stall_timeout)


_CONTEXT_KEYVAL = None


def _free_contexts(comm, keyval, contexts) -> None:
    """Attribute delete callback: the communicator is being freed, so are its contexts."""
    for ctx in contexts.values():
        ctx.free()


def context_from(comm_or_ctx=None, **kwargs) -> Context:
    """Accept a Context, an mpi4py communicator or None (COMM_WORLD) and return a Context.

    A bare communicator gets one Context per set of options, cached on the communicator
    itself as an MPI attribute: every ``fit``/``score`` on it reuses that Context (and
    the communicators its collectives duplicated), and freeing the communicator frees
    them. Thousands of fits on one communicator create one Context, not thousands.
    Collective over ``comm`` the first time (it duplicates communicators).
    """
    global _CONTEXT_KEYVAL
    if isinstance(comm_or_ctx, Context):
        return comm_or_ctx
    from mpi4py import MPI

    comm = MPI.COMM_WORLD if comm_or_ctx is None else comm_or_ctx
    kwargs.setdefault("verbose", False)
    if _CONTEXT_KEYVAL is None:
        _CONTEXT_KEYVAL = MPI.Comm.Create_keyval(delete_fn=_free_contexts)
    cache = comm.Get_attr(_CONTEXT_KEYVAL)
    if cache is None:
        cache = {}
        comm.Set_attr(_CONTEXT_KEYVAL, cache)
    key = tuple(sorted(kwargs.items()))
    if key not in cache:
        cache[key] = init(comm, **kwargs)
    return cache[key]


ABORT_SETTLE_S = 0.5


def abort_world(code: int) -> None:
    """``MPI_Abort`` the whole job, after giving the launcher time to pass on our last words.

    A rank's message goes through a pipe to the launcher's proxy; ``Abort`` makes the
    proxy kill every rank and exit, and what it had not yet read from the pipe is lost (the
    one line that said why the job ended). Flushing and a short pause (``ABORT_SETTLE_S``)
    before ``Abort`` let it forward the message first; the pause is only paid on the way out.
    """
    import time

    from mpi4py import MPI

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream must not stop the abort
            pass
    time.sleep(ABORT_SETTLE_S)
    MPI.COMM_WORLD.Abort(code)


def install_abort_hook() -> None:
    """Make an uncaught exception on any rank end the whole job.

    Without this, one rank's traceback leaves the others blocked in a collective
    forever (a "half-dead" job). The hook prints the traceback once, prefixed with
    the rank, then calls ``MPI.COMM_WORLD.Abort(1)``.
    """
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        import traceback

        try:
            from mpi4py import MPI

            rank = MPI.COMM_WORLD.Get_rank() if MPI.Is_initialized() else 0
            size = MPI.COMM_WORLD.Get_size() if MPI.Is_initialized() else 1
        except Exception:  # pragma: no cover - mpi4py broken
            previous(exc_type, exc, tb)
            return
        if issubclass(exc_type, KeyboardInterrupt):
            if rank > 0 and size > 1:
                # Ctrl-C on mpiexec reaches every rank: rank 0 says it once and aborts; this
                # rank speaks only if rank 0 did not (it alone was interrupted)
                import time

                time.sleep(1.0)
            line(f"shardlearn: rank {rank}: interrupted (SIGINT / Ctrl-C); stopping all {size} ranks",
                 sys.stderr)
        elif issubclass(exc_type, MPI.Exception):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc_type.__name__
            line(f"shardlearn: rank {rank}: communication with the other ranks failed: another rank "
                 f"probably died (killed, out of memory, node failure); stopping all {size} ranks "
                 f"(MPI: {first[:200]})", sys.stderr)
        else:
            text = "".join(traceback.format_exception(exc_type, exc, tb))
            sys.stderr.write(f"shardlearn: rank {rank}: unexpected error, aborting all {size} ranks\n"
                             + "".join(f"[rank {rank}] {ln}\n" for ln in text.splitlines()))
            sys.stderr.flush()
        code = 130 if issubclass(exc_type, KeyboardInterrupt) else 1  # 128 + SIGINT, as shells do
        if size > 1 and not MPI.Is_finalized():
            abort_world(code)
        sys.exit(code)

    sys.excepthook = hook
