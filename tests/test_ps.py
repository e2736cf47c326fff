"""Parameter-server SGD (aggregation="ps") against allreduce SGD on P = 1, 2, 4 ranks.

s = 0 (bulk-synchronous) is the allreduce SGD result up to the order of the additions
(stated tolerance: 1e-9 relative in the parameters) for every linear model, with one or
two servers, an empty rank, fewer rows than ranks and a straggler. Stale-synchronous and
asynchronous runs end near it. A dead server, a dead worker, a worker that raises and a
stalled worker end the job (no hang).
"""
import json
import time

import numpy as np
import pytest

from mpirun import json_lines, run_cli, run_script

FIT_SCRIPT = """
import numpy as np
from shardlearn.errors import ShardlearnError
from shardlearn.runtime import init
from shardlearn.util.blocks import block_bounds
from shardlearn.checkpoint import Checkpoint
from shardlearn.models.linear import Lasso, LinearRegression, LinearSVC, LogisticRegression, Ridge
ctx = init(topology="native", verbose=False)
D = np.load({path!r})
def part(a, skew=False):
    if skew and ctx.size > 1:   # rank 1 holds no rows
        b = [block_bounds(a.shape[0], ctx.size, r) for r in range(ctx.size)]
        b[0], b[1] = (0, b[1][1]), (b[1][1], b[1][1])
        lo, hi = b[ctx.rank]
    else:
        lo, hi = block_bounds(a.shape[0], ctx.size, ctx.rank)
    return a[lo:hi], lo
(Xb, o), (yb, _), (Xr, _), (yr, _), (Xm, _), (ym, _) = (part(D[k]) for k in ("Xb", "yb", "Xr", "yr", "Xm", "ym"))
sgd = dict(solver="sgd", epochs=4, batch_size=32, learning_rate=0.1, tol=None, comm=ctx)
def coefs(m):
    return np.concatenate([np.ravel(m.coef_), np.ravel(m.intercept_)]).tolist()
out = {{}}
models = {{"logistic": (LogisticRegression, dict(C=2.0), Xb, yb), "multi": (LogisticRegression, {{}}, Xm, ym),
          "ridge": (Ridge, dict(alpha=3.0), Xr, yr), "linear": (LinearRegression, {{}}, Xr, yr),
          "svm": (LinearSVC, dict(C=0.5), Xb, yb), "svm_ovr": (LinearSVC, dict(C=0.5), Xm, ym)}}
for name, (cls, kw, X, y) in models.items():
    ref = cls(**kw, **sgd).fit(X, y, row_offset=o)
    out[name] = {{"allreduce": coefs(ref), "loss": ref.loss_}}
    for tag, extra in (("ps0", {{}}), ("ps0_2servers", dict(servers=min(2, ctx.size))),
                       ("ps0_straggler", dict(straggler=f"{{ctx.size - 1}}:3")),
                       ("ps1", dict(staleness=1)), ("ps4_mean", dict(staleness=4, ps_average="mean")),
                       ("async", dict(staleness="inf"))):
        m = cls(**kw, **sgd, aggregation="ps", **extra).fit(X, y, row_offset=o)
        out[name][tag] = coefs(m)
        out[name][tag + "_loss"] = m.loss_
        out[name][tag + "_hist"] = len(m.history_)
# s = 0 pushes in rank order: bit-identical on a rerun
again = LogisticRegression(C=2.0, **sgd, aggregation="ps").fit(Xb, yb, row_offset=o)
out["ps0_repeat_identical"] = coefs(again) == out["logistic"]["ps0"]
# the RMA time (and the waits) is in the context's communication seconds, as a collective's
c0 = ctx.coll.comm_seconds
timed = LogisticRegression(C=2.0, **sgd, aggregation="ps", straggler=f"{{ctx.size - 1}}:2").fit(Xb, yb, row_offset=o)
dc, rma = ctx.coll.comm_seconds - c0, timed.history_[-1]["rma_ms"] / 1e3
out["rma_counted"] = all(ctx.coll.allgather_obj(bool(rma > 0 and dc >= rma - 1e-3
                                                     and timed.history_[-1]["comm_seconds"] >= rma - 1e-3)))
# an empty rank; fewer rows than ranks (3 rows)
(Xs, os_), (ys, _) = part(D["Xb"], True), part(D["yb"], True)
out["skew"] = [coefs(LogisticRegression(**sgd, aggregation=a).fit(Xs, ys, row_offset=os_)) for a in ("allreduce", "ps")]
(Xt, ot), (yt, _) = part(D["Xb"][:3]), part(D["yb"][:3])
out["tiny"] = [coefs(Ridge(**sgd, aggregation=a).fit(Xt, yt, row_offset=ot)) for a in ("allreduce", "ps")]
# lasso: L1 as a subgradient under ps (not the allreduce's proximal step)
out["lasso"] = [coefs(Lasso(alpha=0.5, **dict(sgd, epochs=20), aggregation=a).fit(Xr, yr, row_offset=o))
                for a in ("allreduce", "ps")]
errors = []
for kw in (dict(solver="lbfgs", aggregation="ps"), dict(aggregation="ring"), dict(aggregation="ps", servers=99),
           dict(aggregation="ps", momentum=0.9), dict(aggregation="ps", validation_fraction=0.2),
           dict(aggregation="ps", staleness=-1), dict(aggregation="ps", ps_average="median"),
           dict(straggler="one:two"), dict(aggregation="ps", servers=0)):
    try:
        LogisticRegression(**dict(sgd, **kw)).fit(Xb, yb)
        errors.append("no error")
    except ShardlearnError as exc:
        errors.append(str(exc))
try:
    LogisticRegression(**sgd, aggregation="ps").fit(Xb, yb, checkpoint=Checkpoint({tmp!r} + "/ck"))
    errors.append("no error")
except ShardlearnError as exc:
    errors.append(str(exc))
out["errors"] = errors
emit(out)
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from sklearn.datasets import make_classification, make_regression

    Xb, yb = make_classification(200, 5, n_informative=4, n_redundant=0, random_state=0)
    Xm, ym = make_classification(200, 5, n_informative=4, n_redundant=0, n_classes=3, random_state=1)
    Xr, yr = make_regression(200, 5, n_informative=4, noise=1.0, random_state=2)
    yr = yr / yr.std()
    path = tmp_path_factory.mktemp("ps") / "data.npz"
    np.savez(path, Xb=Xb, yb=yb, Xm=Xm, ym=ym, Xr=Xr, yr=yr)
    return dict(path=str(path))


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    out = {}
    for P in (1, 2, 4):
        tmp = tmp_path_factory.mktemp(f"ps{P}")
        res = json_lines(run_script(P, FIT_SCRIPT.format(path=data["path"], tmp=str(tmp)), tmp, timeout=240).stdout)
        assert len(res) == P
        # the model is the same on every rank, also for stale and asynchronous runs
        assert all(json.dumps(r, sort_keys=True) == json.dumps(res[0], sort_keys=True) for r in res)
        out[P] = res[0]
    return out


def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


MODELS = ("logistic", "multi", "ridge", "linear", "svm", "svm_ovr")


def test_bulk_synchronous_equals_allreduce(runs):
    for P, r in runs.items():
        for name in MODELS:
            ref = r[name]["allreduce"]
            for tag in ("ps0", "ps0_2servers", "ps0_straggler"):
                assert rel(r[name][tag], ref) < 1e-9, (P, name, tag, rel(r[name][tag], ref))
            assert r[name]["ps0_loss"] == pytest.approx(r[name]["loss"], rel=1e-9), (P, name)
            assert r[name]["ps0_hist"] == 4
        assert rel(r["skew"][1], r["skew"][0]) < 1e-9, P
        assert rel(r["tiny"][1], r["tiny"][0]) < 1e-9, P
        assert rel(runs[P]["logistic"]["ps0"], runs[1]["logistic"]["ps0"]) < 1e-9  # any P: the same batches
        assert r["ps0_repeat_identical"], P


def test_rma_time_is_communication(runs):
    for P in runs:
        assert runs[P]["rma_counted"] is True


def test_stale_and_async_end_near_allreduce(runs):
    # bounded staleness changes the trajectory (P = 1 cannot be stale: it is the allreduce result),
    # not where 4 epochs of SGD get to: within 15% in the parameters (measured at most 7%: the lasso)
    far = {}
    for P, r in runs.items():
        for name in MODELS:
            ref = r[name]["allreduce"]
            for tag in ("ps1", "ps4_mean", "async"):
                far[(P, name, tag)] = rel(r[name][tag], ref)
                assert np.isfinite(r[name][tag + "_loss"])
            if P == 1:
                assert rel(r[name]["ps1"], ref) < 1e-9 and rel(r[name]["async"], ref) < 1e-9
        # lasso: the subgradient of L1 (ps) against the proximal step (allreduce): 7% apart at P = 1
        far[(P, "lasso", "ps0")] = rel(r["lasso"][1], r["lasso"][0])
    assert max(far.values()) < 0.15, sorted(far.items(), key=lambda kv: -kv[1])[:5]


def test_bad_parameters(runs):
    for P, r in runs.items():
        e = r["errors"]
        assert "needs solver='sgd'" in e[0]
        assert "choose allreduce or ps" in e[1]
        assert "servers=99" in e[2] and f"{P} ranks" in e[2]
        assert "no momentum" in e[3]
        assert "validation_fraction" in e[4]
        assert "staleness must be" in e[5]
        assert "weighted or mean" in e[6]
        assert "RANK:FACTOR" in e[7]
        assert "servers must be >= 1" in e[8]
        assert "cannot checkpoint" in e[9]


FAULT_SCRIPT = """
import numpy as np
from shardlearn.runtime import init
from shardlearn.models.linear import LogisticRegression
ctx = init(topology="native", verbose=False)
rng = np.random.default_rng(ctx.rank)
X = rng.normal(size=(300, 4)); y = (X[:, 0] > 0).astype(float)
LogisticRegression(solver="sgd", aggregation="ps", staleness={staleness!r}, epochs=50, batch_size=16, tol=None,
                   comm=ctx, straggler={straggler!r}).fit(X, y)
emit("finished")
"""

FAULTS = {  # name: (SHARDLEARN_FAULT, staleness, straggler, extra env)
    "server-killed": ("step@0:kill", 0, None, {}),
    "worker-killed": ("step@2:kill", "inf", None, {}),
    "worker-raises": ("step@1:oserror#2", 4, None, {}),
    "worker-stalls": ("", 0, "1:100000", {"SHARDLEARN_PS_TIMEOUT": "3"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(FAULTS))
def test_dead_or_stuck_rank_ends_the_job(tmp_path, case):
    fault, staleness, straggler, env = FAULTS[case]
    for attempt in range(2):
        t0 = time.perf_counter()
        proc = run_script(3, FAULT_SCRIPT.format(staleness=staleness, straggler=straggler), tmp_path, timeout=90,
                          check=False, env={"SHARDLEARN_FAULT": fault, **env})
        assert proc.returncode != 0, proc.stdout
        assert "finished" not in proc.stdout
        assert time.perf_counter() - t0 < 90
        # once, in a loaded CI run, the job ended (exit 1, in time) with no output at all, not
        # even the launcher's Abort line: the message check below cannot judge such a run, so
        # it is run once more (the ending itself, checked above, is what this test is for)
        if proc.stdout or proc.stderr:
            break
    if case == "worker-raises":
        assert "No space left on device" in proc.stderr + proc.stdout
    if case == "worker-stalls":
        assert "no worker advanced for 3s" in proc.stderr + proc.stdout, proc.stderr


def test_cli_ps_options(tmp_path):
    import h5py
    from sklearn.datasets import make_classification

    X, y = make_classification(300, 5, random_state=0)
    with h5py.File(tmp_path / "d.h5", "w") as h:
        h["X"], h["y"] = X, y.astype(np.float64)
    proc = run_cli(3, "train", "svm", "--data", tmp_path / "d.h5", "--out", tmp_path / "m.h5", "--solver", "sgd",
                   "--loss", "hinge", "--aggregation", "ps", "--servers", "2", "--staleness", "inf",
                   "--straggler", "1:2", "--epochs", "3", cwd=tmp_path)
    assert "sgd iter    3" in proc.stdout and "slowest_clock=" in proc.stdout and "rma_ms=" in proc.stdout, proc.stdout
    report = json.loads((tmp_path / "m.json").read_text())
    # the parameter server's RMA time is in the report's communication seconds
    rma = [h["rma_ms"] for h in report["history"]]
    assert rma[-1] > 0 and report["seconds"]["communication"] >= rma[-1] / 1e3 - 1e-3, (rma, report["seconds"])
    assert all(r["communication"] > 0 for r in report["ranks"])
    assert report["params"]["aggregation"] == "ps" and report["params"]["staleness"] == "inf"
    assert report["params"]["servers"] == 2 and "parameter server" in report["stop_reason"]
    bad = run_cli(2, "train", "ridge", "--data", tmp_path / "d.h5", "--out", tmp_path / "r.h5",
                  "--staleness", "-2", check=False, cwd=tmp_path)
    assert bad.returncode != 0 and "--staleness" in bad.stderr
