"""shardlearn.checkpoint: collective, atomic snapshots; stop on a signal; resume bit for bit."""
import os

import h5py
import pytest

from mpirun import json_lines, run_script

# a toy iterative "fit": x <- f(x, allreduce(...)) per step, with a Checkpoint
TOY = """
import os, signal
import numpy as np
from shardlearn.checkpoint import Checkpoint
from shardlearn.errors import TrainingInterrupted
from shardlearn.runtime import init
ctx = init(topology="native", verbose=False)
X = np.arange(10.0 * (ctx.rank + 1)).reshape(-1, 2)

def fit(ckpt, steps=12, kill_at=None, params=None):
    state = ckpt.start(ctx, "toy", params or {{"steps": steps}}, X) if ckpt else None
    x = np.array([1.0]) if state is None else state["x"]
    first = 1 if state is None else state["_step"] + 1
    for s in range(first, steps + 1):
        x = np.sin(x + ctx.coll.allreduce(X.sum(axis=0) * s)[:1] * 1e-3)
        if kill_at == s and ctx.rank == 1:
            os.kill(os.getpid(), signal.SIGUSR1)
        if ckpt:
            ckpt.step(s, lambda: {{"x": x.copy(), "note": "toy"}})
    if ckpt:
        ckpt.finish()
    return x

ref = fit(None)
d = {d!r}
try:
    fit(Checkpoint(d, every={every}), kill_at=7)
    emit("not stopped")
except TrainingInterrupted as exc:
    emit(["stopped", str(exc)])
resumed = fit(Checkpoint(d, every={every}, resume=True))
emit(["same", bool(np.array_equal(resumed, ref))])
try:
    fit(Checkpoint(d, resume=True), params={{"steps": 13}})
except Exception as exc:
    emit(["mismatch", type(exc).__name__, str(exc)])
"""


@pytest.mark.parametrize("every", [3, None])
def test_signal_stops_every_rank_with_a_checkpoint_and_resume_is_bit_identical(tmp_path, every):
    d = tmp_path / "ck"
    res = json_lines(run_script(3, TOY.format(d=str(d), every=every), tmp_path).stdout)
    stopped = [r for r in res if r[0] == "stopped"]
    assert len(stopped) == 3 and len({r[1] for r in stopped}) == 1, res
    assert "SIGUSR1 at step 7" in stopped[0][1] and "--resume" in stopped[0][1]
    assert [r for r in res if r[0] == "same"] == [["same", True]] * 3
    mism = [r for r in res if r[0] == "mismatch"]
    assert len(mism) == 3 and all(r[1] == "ShardlearnError" and "other parameters (steps: 12 then, 13 now)"
                                  in r[2] for r in mism), mism
    files = sorted(os.listdir(d))
    # every 3 steps: 3, 6, the stop at 7, then 9 and 12 after resuming; the last two kept
    assert files == (["ckpt-00000009.h5", "ckpt-00000012.h5"] if every else ["ckpt-00000007.h5"]), files
    with h5py.File(d / files[-1]) as h:
        assert h.attrs["checkpoint_format"] == 1 and h.attrs["estimator"] == "toy"
        assert h.attrs["step"] == 12 if every == 3 else h.attrs["step"] == 7
