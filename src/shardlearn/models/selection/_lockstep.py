"""Several fits on one group in lockstep: their collectives packed into one per step.

A group of ranks training one GBDT candidate makes one histogram collective per split: a
few KiB that two ranks spend most of their time waiting for (latency, and each rank
waiting for the other to be scheduled on shared cores). Fits of several candidates or
folds on the same group's rows are independent, so their collectives can travel
together: :func:`run_lanes` runs ``L`` fits ("lanes") side by side, each in a thread of
its own with a :class:`LaneContext` (a :class:`~shardlearn.runtime.Context` whose
collectives and error agreement go through a shared :class:`Hub`), and the hub turns each
*round* (every unfinished lane's next collective) into one packed ``allreduce`` per
(op, dtype) plus the few other collectives (object gathers, broadcasts) in lane order.

Why this is safe and deterministic: every lane's sequence of collectives is the same on
every rank of the group (an SPMD fit takes every decision from reduced values), so round
``r`` holds the same calls, in the same lane order, on every rank, and the packed buffers
line up. A lane that ends (its fit and scoring done, or an agreed error) leaves the
rounds on every rank at the same round. Packing changes no value: an allreduce is
element-wise, and with ``P = 2`` the sum ``a + b`` is the same bits whatever the message
size; with ``P > 2`` MPI may pick another summation order for the larger packed message,
a reassociation like the one between different ``P``. Only the thread that completes a
round calls MPI, while the others wait, so MPI sees one caller at a time.

Threads share one core per rank with the GIL: the lanes' compute runs one after the
other, as it would one fit after another; what lockstep saves is the number of
latency-bound collectives (divided by ``L``) at the cost of ``L`` fits' working memory
(for GBDT: the binned codes, scores, gradients and open-leaf histograms of each lane) and
of a thread hand-over per lane and round. Measured (bench/search.md): it pays off where
every collective waits for the other rank to be scheduled (a loaded machine), not on a
quiet one, where a small collective costs ~30 µs; hence ``lockstep=1`` by default.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from ...errors import ShardlearnError, agreed
from ...runtime import Context
from ...util.timers import PhaseTimers

_PACKABLE = frozenset((np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.int64), np.dtype(np.int32)))


class Hub:
    """The rounds of ``n_lanes`` lanes on ``group`` (a Context).

    One lane runs at a time (a baton): a lane that posts its collective (or ends) hands
    over to the next lane that has not posted in this round; the last one runs the round
    and hands over to the first unfinished lane. No two lanes compete for the GIL or the
    core, and each thread is woken only when it is its turn.
    """

    def __init__(self, group: Context, n_lanes: int):
        self.group = group
        self.lock = threading.Lock()
        self.wake = [threading.Event() for _ in range(n_lanes)]
        self.active = list(range(n_lanes))
        self.posted: dict[int, tuple] = {}
        self.results: dict[int, tuple] = {}
        #: real collectives made and rounds run (packed allreduces count once)
        self.collectives = 0
        self.rounds = 0
        if n_lanes:
            self.wake[0].set()

    def wait_turn(self, lane: int) -> None:
        self.wake[lane].wait()
        self.wake[lane].clear()

    def call(self, lane: int, kind: str, args: tuple):
        """Post ``lane``'s next collective, run others until its round is done; its result."""
        with self.lock:
            self.posted[lane] = (kind, args)
            nxt = self._hand_over(lane)
        if nxt != lane:
            self.wake[nxt].set()
            self.wait_turn(lane)
        ok, value = self.results.pop(lane)
        if not ok:
            raise value
        return value

    def finish(self, lane: int) -> None:
        """``lane`` makes no more collectives: the baton goes on."""
        with self.lock:
            self.active.remove(lane)
            nxt = self._hand_over(lane) if self.active else None
        if nxt is not None:
            self.wake[nxt].set()

    def _hand_over(self, lane: int) -> int:
        """The lane to run next after ``lane`` posted or ended (lock held); runs the round when
        every unfinished lane has posted."""
        later = [i for i in self.active if i > lane and i not in self.posted]
        if later:
            return later[0]
        if len(self.posted) < len(self.active):     # an earlier lane has not posted yet
            return next(i for i in self.active if i not in self.posted)
        self._run_round()
        return self.active[0]

    def _run_round(self) -> None:
        """Run the posted collectives (lock held; every other lane waits for its turn)."""
        coll = self.group.coll
        posted = sorted(self.posted.items())
        self.posted = {}
        out = {}
        try:
            # allreduces: one packed buffer per (op, dtype), in order of first appearance
            packs: dict[tuple, list] = {}
            for lane, (kind, args) in posted:
                if kind == "allreduce":
                    x, op = args
                    if type(x) is np.ndarray and x.dtype in _PACKABLE:
                        packs.setdefault((op, x.dtype), []).append((lane, x))
            done = set()
            for (op, dtype), items in packs.items():
                if len(items) == 1:
                    lane, x = items[0]
                    out[lane] = self._do(lambda: coll.allreduce(x, op))
                else:
                    flat = np.concatenate([x.reshape(-1) for _, x in items])
                    res = self._do(lambda: coll.allreduce(flat, op))
                    at = 0
                    for lane, x in items:
                        out[lane] = res if not res[0] else (True, res[1][at:at + x.size].reshape(x.shape))
                        at += x.size
                done.update(lane for lane, _ in items)
                self.collectives += 1
            for lane, (kind, args) in posted:
                if lane in done:
                    continue
                out[lane] = self._do(lambda: getattr(coll, kind)(*args))
                self.collectives += 1
        except BaseException as exc:    # noqa: BLE001 - every waiting lane must wake up
            for lane, _ in posted:
                out.setdefault(lane, (False, exc))
        self.results.update(out)
        self.rounds += 1

    @staticmethod
    def _do(fn):
        try:
            return True, fn()
        except Exception as exc:  # noqa: BLE001 - handed to the lane that made the call
            return False, exc


class LaneCollectives:
    """The collectives interface of one lane: every call is posted to the hub."""

    topology = "lockstep"

    def __init__(self, hub: Hub, lane: int):
        real = hub.group.coll
        self.hub, self.lane = hub, lane
        self.comm, self.rank, self.size = real.comm, real.rank, real.size
        self.device_buffers = None
        self.comm_seconds = 0.0      # time this lane waited for its rounds
        self.bytes_sent = 0
        self.calls = self.entered = 0
        self.current = ""

    def _call(self, kind, *args):
        self.entered += 1
        self.current = kind
        t0 = time.perf_counter()
        try:
            return self.hub.call(self.lane, kind, args)
        finally:
            self.comm_seconds += time.perf_counter() - t0
            self.calls += 1

    def allreduce(self, x, op: str = "sum"):
        if isinstance(x, np.ndarray) and x.size:
            self.bytes_sent += x.nbytes
        return self._call("allreduce", x, op)

    def bcast(self, x, root: int = 0):
        return self._call("bcast", x, root)

    def allgather(self, x):
        return self._call("allgather", x)

    def reduce_scatter(self, x, op: str = "sum"):
        return self._call("reduce_scatter", x, op)

    def alltoallv(self, send, recv) -> None:
        return self._call("alltoallv", send, recv)

    def bcast_obj(self, obj, root: int = 0):
        return self._call("bcast_obj", obj, root)

    def allgather_obj(self, obj) -> list:
        return self._call("allgather_obj", obj)

    def barrier(self) -> None:
        return self._call("barrier")

    def free(self) -> None:
        pass


class LaneContext(Context):
    """A :class:`~shardlearn.runtime.Context` for one lane: the group's facts, its own
    phase timers, collectives through the hub (error agreement too)."""

    def __init__(self, group: Context, hub: Hub, lane: int):     # noqa: D107 - no Context.__init__
        self.__dict__.update({k: v for k, v in group.__dict__.items() if k not in ("coll", "timers", "watchdog")})
        self.coll = LaneCollectives(hub, lane)
        self.timers = PhaseTimers()
        self.watchdog = None        # the group's own watchdog sees the packed collectives
        self.lane = lane

    def agree(self, error: str | None) -> None:
        message = first_error(self, error)
        if message is not None:
            raise agreed(message)

    def free(self) -> None:
        pass


def first_error(ctx: Context, error: str | None) -> str | None:
    """The message of the lowest rank of ``ctx`` whose ``error`` is not None, on every rank,
    or None when no rank has one (collective, through ``ctx.coll``: a lane's hub too)."""
    flag = ctx.rank if error is not None else ctx.size
    first = int(ctx.coll.allreduce(np.array([flag], dtype=np.int64), op="min")[0])
    return None if first == ctx.size else ctx.coll.bcast_obj(error, root=first)


def agreed_value(ctx: Context, fn):
    """``fn()``'s value, or the error message the ranks of ``ctx`` agree on (collective)."""
    err, value = None, None
    try:
        value = fn()
    except ShardlearnError as exc:
        err = " ".join(str(exc).split())
    message = first_error(ctx, err)
    return value if message is None else message


def run_lanes(group: Context, fns: list) -> tuple[list, dict]:
    """Run ``fns[i](lane_ctx)`` for every lane side by side (collective over ``group``).

    Returns (their values, facts: rounds, collectives, the lanes' summed phase seconds). A
    lane's exception other than an agreed :class:`ShardlearnError` (which ``fns`` record
    themselves) ends the job as :meth:`Context.guard` does: the other ranks' lanes would
    wait for its collectives forever.
    """
    hub = Hub(group, len(fns))
    ctxs = [LaneContext(group, hub, i) for i in range(len(fns))]
    values = [None] * len(fns)
    failed = []

    def body(i):
        hub.wait_turn(i)
        try:
            with group.guard("a lockstep fit"):
                values[i] = fns[i](ctxs[i])
        except BaseException as exc:    # noqa: BLE001 - agreed errors end the lane, on every rank alike
            failed.append((i, exc))
        finally:
            hub.finish(i)

    threads = [threading.Thread(target=body, args=(i,), name=f"shardlearn-lane-{i}", daemon=True)
               for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        raise failed[0][1]
    phases: dict[str, float] = {}
    for c in ctxs:
        for k, v in c.timers.seconds.items():
            phases[k] = phases.get(k, 0.0) + v
        phases["lane_wait"] = phases.get("lane_wait", 0.0) + c.coll.comm_seconds
    return values, {"rounds": hub.rounds, "collectives": hub.collectives, "phases": phases}
