"""What exact, order-independent sums cost: k-means ``--exact-reduce`` and linear gradients.

Issue #17's second part. Two measurements, both written to bench/results/exact_reduce.json
(via machine.py) and summarised in bench/exact_reduce.md (the write-up there is by hand:
this script prints the tables).

1. **k-means, the product code.** ``KMeans(exact_reduce=True)`` against the float path on
   bench_kmeans.py's data (blobs; 1,000,000 x 32, k = 16, where the float path uses the
   tiled kernel, and 200,000 x 64, k = 64, where it uses BLAS GEMM + the argmin kernel and
   the exact path the tiled kernel; float64 and float32) under ``mpiexec -n 2`` (one thread
   per rank): ms per Lloyd iteration = (t(fit, max_iter=21) - t(fit, max_iter=1)) / 20 with
   the first k rows as the initial centers and tol = 0, the slowest rank's wall time, float
   and exact interleaved, median (min-max) over ``--repeats``; also t(fit, max_iter=1) (the
   moments, one iteration and the final pass) and one k-means++ and one k-means|| fit each.

2. **Linear models: the gradient pass.** The logistic loss's pass over one rank's share of
   bench_linear.py's data (``--linear-rows`` x 64 float64; 500,000 = 1,000,000 over 2 ranks),
   in the product's row blocks (models/linear/_objective.py's CHUNK_ELEMENTS), one thread:
   float (today): ``z = X_b @ a`` and ``g += X_b.T @ r`` by BLAS GEMV, the loss by ``np.dot``;
   exact: ``z`` by a compiled row-by-row dot (a fixed order of additions per row, so a row's
   value does not depend on its block), ``g`` by a compiled loop that rounds every
   ``x_ij r_i`` to an int64 fixed-point unit (magic-number rounding, as the k-means kernel)
   and adds integers, the loss as int64 fixed point. The two compiled loops are built here
   with the system C compiler (``-O3 -mavx2 -mfma``); they are not part of the package.

3. **Linear models, the product code** (``--parts linear_fit``). ``LogisticRegression`` and
   ``Ridge(solver="lbfgs")`` with and without ``exact_reduce=True`` on bench_linear.py's data
   (make_classification / make_regression, ``--linear-fit-rows`` x 64 float64, C = 1, alpha =
   1, tol 1e-6) under ``mpiexec -n 2`` (one thread per rank), float and exact interleaved:
   the wall time to reach scikit-learn lbfgs's final objective (logistic: the objective of
   one ``sklearn.linear_model.LogisticRegression(solver="lbfgs")`` fit, as bench_linear.py;
   ridge: scikit-learn ``Ridge``'s exact solution's objective, + 1e-9 relative), the whole
   fit, one loss+gradient evaluation (the oracle alone, median of 10), and the coefficients'
   distance to the float fit and to scikit-learn. The slowest rank's times.

Run: ``flock /tmp/shardlearn-bench.lock python bench/bench_exact_reduce.py [--repeats 5]``
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "src"))
import machine  # noqa: E402
from bench_kmeans import env, make_data, mpiexec, result  # noqa: E402

CASES = [(1_000_000, 32, 16), (200_000, 64, 64)]


# ------------------------------------------------------------------------------ k-means
def worker(a) -> None:
    import h5py

    from shardlearn.data import read_shard
    from shardlearn.models.kmeans import KMeans
    from shardlearn.runtime import init

    ctx = init(threads=1, verbose=False)
    X = read_shard(a.data, ctx).X
    with h5py.File(a.data, "r") as h:
        c0 = h["X"][:a.k].astype(np.float64)

    def timed(exact, **kw):
        ctx.mpi_comm.Barrier()
        t = time.perf_counter()
        km = KMeans(a.k, tol=0.0, comm=ctx, exact_reduce=exact, **kw).fit(X)
        t = time.perf_counter() - t
        return float(ctx.coll.allreduce(np.array([t]), op="max")[0]), km

    t1 = {False: [], True: []}
    per_iter = {False: [], True: []}
    centers = {}
    for _ in range(a.repeats):
        for exact in (False, True):          # interleaved: load drifts hit both alike
            one = timed(exact, init=c0, max_iter=1)[0]
            t21, km = timed(exact, init=c0, max_iter=21)
            t1[exact].append(one)
            per_iter[exact].append((t21 - one) / 20)
            centers[exact] = km.cluster_centers_.astype(np.float64)
    out = {"n": int(ctx.coll.allreduce(np.array([X.shape[0]]))[0]), "d": X.shape[1], "k": a.k,
           "dtype": str(X.dtype), "ranks": ctx.size}
    for exact, name in ((False, "float"), (True, "exact")):
        out[name] = {"per_iter": machine.summary(per_iter[exact]), "fit_1_iter": machine.summary(t1[exact])}
    scale = np.abs(centers[False]).max()
    out["centers_max_rel_diff"] = float(np.abs(centers[True] - centers[False]).max() / scale)
    if a.inits:
        for init_ in ("k-means++", "k-means||"):
            for exact, name in ((False, "float"), (True, "exact")):
                _, km = timed(exact, init=init_, max_iter=1, random_state=0)
                out[name][f"init_{init_}"] = km.init_seconds_
    if ctx.rank == 0:
        print("RESULT " + json.dumps(out), flush=True)


def run_kmeans(a) -> list:
    ddir = Path(a.data_dir)
    ddir.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, d, k in CASES:
        n = max(1000, int(n * a.scale))
        for dt in ("float64", "float32"):
            path = ddir / f"blobs_{n}x{d}_k{k}_{dt}.h5"
            make_data(path, n, d, k, dt)
            cmd = [mpiexec(), "-n", "2", sys.executable, __file__, "--worker", "--data", str(path), "--k", str(k),
                   "--repeats", str(a.repeats)] + (["--inits"] if dt == "float64" else [])
            load0 = os.getloadavg()[0]
            row = result(subprocess.run(cmd, capture_output=True, text=True, env=env(1), timeout=3600))
            row["load_average"] = [load0, os.getloadavg()[0]]
            tile = 16 if dt == "float32" else 8  # the kernel's TILE_F32 / TILE_F64 (_lloyd.TILED_MAX_KD)
            row["form_float"] = "tiled" if -(-k // tile) * tile * d <= 2048 else "gemm"
            row["overhead"] = row["exact"]["per_iter"]["median"] / row["float"]["per_iter"]["median"] - 1
            rows.append(row)
            print(json.dumps({key: v for key, v in row.items()}), flush=True)
    return rows


# ------------------------------------------------------------------------ linear models
LINEAR_C = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
typedef double v4 __attribute__((vector_size(32)));

/* z[i] = x_i . a, four lanes over j then a fixed pairwise fold: the same order for every row */
static void rowdot(const double *x, const double *a, double *z, Py_ssize_t n, Py_ssize_t d)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        const double *xi = x + i * d;
        v4 acc = {0, 0, 0, 0};
        Py_ssize_t j = 0;
        for (; j + 4 <= d; j += 4) {
            v4 xv, av;
            memcpy(&xv, xi + j, 32);
            memcpy(&av, a + j, 32);
            acc += xv * av;
        }
        double s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        for (; j < d; j++)
            s += xi[j] * a[j];
        z[i] = s;
    }
}

/* g[j] += round(x_ij r_i scale_j) as int64: the magic-number rounding of _kmeans_kernels.c */
static void xtr_fixed(const double *x, const double *r, const double *scale, int64_t *g, Py_ssize_t n,
                      Py_ssize_t d)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        const double *xi = x + i * d;
        const double ri = r[i];
        for (Py_ssize_t j = 0; j < d; j++) {
            double m = xi[j] * ri * scale[j] + 6755399441055744.0;
            int64_t b;
            memcpy(&b, &m, 8);
            g[j] += b - 0x4338000000000000LL;
        }
    }
}

static PyObject *py_rowdot(PyObject *self, PyObject *args)
{
    Py_buffer x, a, z;
    Py_ssize_t n, d;
    if (!PyArg_ParseTuple(args, "y*y*w*nn", &x, &a, &z, &n, &d))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rowdot(x.buf, a.buf, z.buf, n, d);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&x); PyBuffer_Release(&a); PyBuffer_Release(&z);
    Py_RETURN_NONE;
}

static PyObject *py_xtr_fixed(PyObject *self, PyObject *args)
{
    Py_buffer x, r, s, g;
    Py_ssize_t n, d;
    if (!PyArg_ParseTuple(args, "y*y*y*w*nn", &x, &r, &s, &g, &n, &d))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    xtr_fixed(x.buf, r.buf, s.buf, g.buf, n, d);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&x); PyBuffer_Release(&r); PyBuffer_Release(&s); PyBuffer_Release(&g);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {{"rowdot", py_rowdot, METH_VARARGS, ""},
                                {"xtr_fixed", py_xtr_fixed, METH_VARARGS, ""}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "exact_linear", "", -1, methods};
PyMODINIT_FUNC PyInit_exact_linear(void) { return PyModule_Create(&module); }
"""


def build_linear(work: Path):
    inc, ext = sysconfig.get_paths()["include"], sysconfig.get_config_var("EXT_SUFFIX")
    c, so = work / "exact_linear.c", work / f"exact_linear{ext}"
    c.write_text(LINEAR_C)
    subprocess.run([os.environ.get("CC", "cc"), "-shared", "-fPIC", "-O3", "-mavx2", "-mfma", "-std=c99",
                    f"-I{inc}", str(c), "-o", str(so)], check=True)
    spec = importlib.util.spec_from_file_location("exact_linear", so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_linear(a) -> dict:
    from threadpoolctl import threadpool_limits

    from shardlearn.models.kmeans._exact import fixed_scales, quantize
    from shardlearn.models.linear._objective import CHUNK_ELEMENTS

    n, d = max(1000, int(a.linear_rows * a.scale)), 64
    g = np.random.default_rng(0)
    X = g.standard_normal((n, d))
    y = (g.random(n) < 0.5).astype(np.float64)
    w = g.standard_normal(d) * 0.1
    step = max(1, CHUNK_ELEMENTS // d)
    # the units: |x_ij r_i| <= max|x_j| (|r| <= 1 for the logistic loss), |loss_i| <= bound
    gscale = fixed_scales(np.abs(X).max(axis=0), n)
    with tempfile.TemporaryDirectory(prefix="exact-linear-") as tmp:
        mod = build_linear(Path(tmp))

        def float_pass(grad_only=False):
            G, loss_sum = np.zeros(d), 0.0
            for lo in range(0, n, step):
                Xc = X[lo:lo + step]
                z = Xc @ w
                p = 1.0 / (1.0 + np.exp(-z))
                r = p - y[lo:lo + step]
                if not grad_only:
                    loss_sum += float(np.dot(np.ones(len(z)), np.logaddexp(0.0, z) - y[lo:lo + step] * z))
                G += Xc.T @ r
            return G, loss_sum

        def exact_pass():
            G = np.zeros(d, dtype=np.int64)
            loss_q = 0
            z = np.empty(step)
            for lo in range(0, n, step):
                Xc = X[lo:lo + step]
                zc = z[:Xc.shape[0]]
                mod.rowdot(Xc, w, zc, Xc.shape[0], d)
                p = 1.0 / (1.0 + np.exp(-zc))
                r = p - y[lo:lo + step]
                loss = np.logaddexp(0.0, zc) - y[lo:lo + step] * zc
                loss_q += int(quantize(loss, 2.0 ** 30).sum())  # a fixed unit: the cost is what is measured
                mod.xtr_fixed(Xc, r, gscale, G, Xc.shape[0], d)
            return G / gscale, loss_q / 2.0 ** 30

        r_all = g.random(n) - 0.5

        def xtr_blas():
            G = np.zeros(d)
            for lo in range(0, n, step):
                G += X[lo:lo + step].T @ r_all[lo:lo + step]
            return G

        def xtr_exact():
            G = np.zeros(d, dtype=np.int64)
            for lo in range(0, n, step):
                Xc = X[lo:lo + step]
                mod.xtr_fixed(Xc, r_all[lo:lo + step], gscale, G, Xc.shape[0], d)
            return G

        forms = {"pass_float": float_pass, "pass_exact": exact_pass, "xtr_blas": xtr_blas, "xtr_exact": xtr_exact}
        times = {f: [] for f in forms}
        load0 = os.getloadavg()[0]
        with threadpool_limits(limits=1, user_api="blas"):
            for f in forms.values():
                f()  # warm up
            for _ in range(a.repeats):
                for name, f in forms.items():
                    t = time.perf_counter()
                    f()
                    times[name].append(time.perf_counter() - t)
            gf, lf = float_pass()
            ge, le = exact_pass()
    out = {"n": n, "d": d, "block_rows": step, "load_average": [load0, os.getloadavg()[0]],
           "seconds": {k: machine.summary(v) for k, v in times.items()},
           "grad_max_rel_diff": float(np.abs(gf - ge).max() / np.abs(gf).max()),
           "loss_rel_diff": abs(lf - le) / abs(lf)}
    s = out["seconds"]
    out["overhead_pass"] = s["pass_exact"]["median"] / s["pass_float"]["median"] - 1
    out["overhead_xtr"] = s["xtr_exact"]["median"] / s["xtr_blas"]["median"] - 1
    print(json.dumps(out), flush=True)
    return out



# ------------------------------------------------------------- linear models, product code
def linear_fit_worker(a) -> None:
    from shardlearn.data import read_shard
    from shardlearn.models.linear import LogisticRegression, Ridge
    from shardlearn.runtime import init

    import scipy.linalg  # noqa: F401  (imported lazily by the models: keep it out of the timings)

    ctx = init(threads=1, verbose=False, topology="native")
    targets = json.loads(a.targets)
    out = {"ranks": ctx.size}
    for name, path in (("logistic", a.data), ("ridge", a.ridge_data)):
        shard = read_shard(path, ctx, need_y=True)
        runs = {False: [], True: []}
        coefs = {}
        for _ in range(a.repeats):
            for exact in (False, True):
                ctx.mpi_comm.Barrier()
                t0 = time.perf_counter()
                if name == "logistic":
                    m = LogisticRegression(C=1.0, tol=1e-6, max_iter=200, comm=ctx, exact_reduce=exact)
                else:
                    m = Ridge(alpha=1.0, solver="lbfgs", tol=1e-6, max_iter=200, comm=ctx, exact_reduce=exact)
                m.fit(shard.X, shard.y)
                total = time.perf_counter() - t0
                hist = m.history_
                setup = m.fit_seconds_ - hist[-1]["seconds"]
                reach = next((setup + h["seconds"] for h in hist if h["loss"] <= targets[name]), None)
                t = ctx.coll.allreduce(np.array([total, np.inf if reach is None else reach,
                                                 hist[-1].get("evals", len(hist))]), op="max")
                runs[exact].append({"total": float(t[0]), "reach": None if not np.isfinite(t[1]) else float(t[1]),
                                    "n_iter": m.n_iter_, "evals": int(t[2]), "loss": m.loss_})
                coefs[exact] = np.append(m.coef_, m.intercept_)
        # the oracle alone: one loss+gradient evaluation at the fitted coefficients
        ev = {}
        for exact in (False, True):
            m = (LogisticRegression(C=1.0, max_iter=1, comm=ctx, exact_reduce=exact) if name == "logistic" else
                 Ridge(alpha=1.0, solver="lbfgs", max_iter=1, comm=ctx, exact_reduce=exact))
            captured = {}
            orig = m._run_solver

            def grab(ctx_, solver, obj, *args, _orig=orig, **kw):
                captured["obj"] = obj
                return _orig(ctx_, solver, obj, *args, **kw)
            m._run_solver = grab
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m.fit(shard.X, shard.y)
            obj = captured["obj"]
            w = np.full(obj.p, 0.01)
            times = []
            for _ in range(10):
                ctx.mpi_comm.Barrier()
                t0 = time.perf_counter()
                obj(w)
                times.append(float(ctx.coll.allreduce(np.array([time.perf_counter() - t0]), op="max")[0]))
            ev[exact] = machine.summary(times)
        out[name] = {"float": runs[False], "exact": runs[True], "eval_float": ev[False], "eval_exact": ev[True],
                     "coef_float": coefs[False].tolist(), "coef_exact": coefs[True].tolist()}
        del shard
    if ctx.rank == 0:
        print("RESULT " + json.dumps(out), flush=True)


def run_linear_fit(a) -> dict:
    import h5py
    from sklearn.linear_model import LogisticRegression as SKLogistic, Ridge as SKRidge
    from threadpoolctl import threadpool_limits

    from bench_linear import make_data as linear_data

    n, d = max(2000, int(a.linear_fit_rows * a.scale)), 64
    work = Path(a.data_dir)
    work.mkdir(parents=True, exist_ok=True)
    p_logit, p_ridge = work / f"logit-{n}x{d}.h5", work / f"ridge-{n}x{d}.h5"
    linear_data(p_logit, p_ridge, n, d)
    with h5py.File(p_logit, "r") as h:
        X, y = h["X"][()], h["y"][()]
    with threadpool_limits(2):
        t0 = time.perf_counter()
        sk = SKLogistic(C=1.0, solver="lbfgs").fit(X, y)
        sk_seconds = time.perf_counter() - t0
    z = X @ sk.coef_[0] + sk.intercept_[0]
    t_logit = float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * float(sk.coef_[0] @ sk.coef_[0]) / n)
    sk_logit = np.append(sk.coef_[0], sk.intercept_[0])
    del X, y, z
    with h5py.File(p_ridge, "r") as h:
        X, y = h["X"][()], h["y"][()]
    with threadpool_limits(2):
        t0 = time.perf_counter()
        skr = SKRidge(alpha=1.0).fit(X, y)
        skr_seconds = time.perf_counter() - t0
    r = X @ skr.coef_ + skr.intercept_ - y
    # shardlearn's ridge objective: (1/2 sum r^2 + alpha/2 ||w||^2) / n
    t_ridge = float((0.5 * r @ r + 0.5 * float(skr.coef_ @ skr.coef_)) / n) * (1 + 1e-9)
    sk_ridge = np.append(skr.coef_, skr.intercept_)
    del X, y, r
    cmd = [mpiexec(), "-n", "2", sys.executable, __file__, "--linear-fit-worker", "--data", str(p_logit),
           "--ridge-data", str(p_ridge), "--targets", json.dumps({"logistic": t_logit, "ridge": t_ridge}),
           "--repeats", str(a.repeats)]
    load0 = os.getloadavg()[0]
    row = result(subprocess.run(cmd, capture_output=True, text=True, env=env(1), timeout=3600))
    out = {"n": n, "d": d, "load_average": [load0, os.getloadavg()[0]],
           "sklearn_seconds": {"logistic": sk_seconds, "ridge": skr_seconds}}
    for name, ref in (("logistic", sk_logit), ("ridge", sk_ridge)):
        res = row[name]
        cf, ce = np.array(res["coef_float"]), np.array(res["coef_exact"])
        rel = lambda a_, b_: float(np.linalg.norm(a_ - b_) / np.linalg.norm(b_))  # noqa: E731
        entry = {"eval_float": res["eval_float"], "eval_exact": res["eval_exact"],
                 "coef_rel_diff_exact_float": rel(ce, cf), "coef_rel_diff_exact_sklearn": rel(ce, ref),
                 "coef_rel_diff_float_sklearn": rel(cf, ref)}
        for mode in ("float", "exact"):
            runs = res[mode]
            entry[mode] = {"reach": machine.summary([x["reach"] for x in runs]),
                           "total": machine.summary([x["total"] for x in runs]),
                           "n_iter": runs[-1]["n_iter"], "evals": runs[-1]["evals"], "loss": runs[-1]["loss"]}
        f, e = entry["float"], entry["exact"]
        entry["overhead_reach"] = (e["reach"]["median"] / f["reach"]["median"] - 1
                                   if e["reach"]["median"] and f["reach"]["median"] else None)
        entry["overhead_total"] = e["total"]["median"] / f["total"]["median"] - 1
        entry["overhead_eval"] = res["eval_exact"]["median"] / res["eval_float"]["median"] - 1
        out[name] = entry
    print(json.dumps(out), flush=True)
    return out

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--data")
    ap.add_argument("--k", type=int)
    ap.add_argument("--inits", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the benchmarks' rows")
    ap.add_argument("--linear-rows", type=int, default=500_000)
    ap.add_argument("--linear-fit-rows", type=int, default=1_000_000)
    ap.add_argument("--linear-fit-worker", action="store_true")
    ap.add_argument("--ridge-data")
    ap.add_argument("--targets")
    ap.add_argument("--parts", default="kmeans,linear,linear_fit")
    ap.add_argument("--data-dir", default="/tmp/shardlearn-bench-kmeans")
    ap.add_argument("--out", default=None, help="a copy of the printed tables (markdown)")
    ap.add_argument("--json-out", default=str(HERE / "results" / "exact_reduce.json"))
    a = ap.parse_args()
    if a.worker:
        worker(a)
        return
    if a.linear_fit_worker:
        linear_fit_worker(a)
        return
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    started = machine.snapshot()
    parts = a.parts.split(",")
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "repeats": a.repeats, "scale": a.scale,
           "command": "python bench/bench_exact_reduce.py " + " ".join(sys.argv[1:])}
    if "kmeans" in parts:
        res["kmeans"] = run_kmeans(a)
    if "linear" in parts:
        res["linear"] = run_linear(a)
    if "linear_fit" in parts:
        res["linear_fit"] = run_linear_fit(a)
    machine.save(a.json_out, "exact_reduce", res, started)
    md = report(res)
    if a.out:
        Path(a.out).write_text(md)
    print(md)


def _ms(s) -> str:
    return f"{s['median'] * 1e3:.1f} ({s['min'] * 1e3:.1f}-{s['max'] * 1e3:.1f})"


def report(res) -> str:
    lines = [f"{res['date']}, `{res['command']}`", ""]
    if "kmeans" in res:
        lines += ["| data | dtype | float form | ms/iter float | ms/iter exact | cost | fit(1 iter) float / exact s "
                  "| k-means++ init float / exact s | k-means\\|\\| init float / exact s | load |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["kmeans"]:
            f, e = r["float"], r["exact"]
            inits = [f"{f[key]:.2f} / {e[key]:.2f}" if key in f else "-" for key in ("init_k-means++", "init_k-means||")]
            lines.append(f"| {r['n']:,} x {r['d']}, k = {r['k']} | {r['dtype']} | {r['form_float']} | "
                         f"{_ms(f['per_iter'])} | {_ms(e['per_iter'])} | **{r['overhead'] * 100:+.0f} %** | "
                         f"{f['fit_1_iter']['median']:.2f} / {e['fit_1_iter']['median']:.2f} | {inits[0]} | {inits[1]} | "
                         f"{r['load_average'][0]:.1f}-{r['load_average'][1]:.1f} |")
    if "linear" in res:
        li = res["linear"]
        s = li["seconds"]
        lines += ["", f"Linear, {li['n']:,} x {li['d']} float64, blocks of {li['block_rows']} rows, one thread, "
                  f"load {li['load_average'][0]:.1f}-{li['load_average'][1]:.1f}:", "",
                  "| part | float (BLAS GEMV) ms | exact (compiled fixed point) ms | cost |", "|---|---|---|---|",
                  f"| X^T r | {_ms(s['xtr_blas'])} | {_ms(s['xtr_exact'])} | **{li['overhead_xtr'] * 100:+.0f} %** |",
                  f"| whole logistic pass (z, loss, X^T r) | {_ms(s['pass_float'])} | {_ms(s['pass_exact'])} | "
                  f"**{li['overhead_pass'] * 100:+.0f} %** |"]
    if "linear_fit" in res:
        lf = res["linear_fit"]
        lines += ["", f"Linear models, product code, {lf['n']:,} x {lf['d']} float64, mpiexec -n 2 x 1 thread, load "
                  f"{lf['load_average'][0]:.1f}-{lf['load_average'][1]:.1f}:", "",
                  "| model | to scikit-learn's objective float / exact s | cost | whole fit float / exact s | cost "
                  "| one evaluation float / exact ms | cost | iterations float / exact | exact vs float / vs sklearn |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name in ("logistic", "ridge"):
            e = lf[name]
            f_, x_ = e["float"], e["exact"]
            reach = (f"{f_['reach']['median']:.2f} / {x_['reach']['median']:.2f}"
                     if f_["reach"]["median"] and x_["reach"]["median"] else "not reached")
            cost = f"**{e['overhead_reach'] * 100:+.0f} %**" if e["overhead_reach"] is not None else "-"
            lines.append(f"| {name} (lbfgs) | {reach} | {cost} | {f_['total']['median']:.2f} / "
                         f"{x_['total']['median']:.2f} | {e['overhead_total'] * 100:+.0f} % | "
                         f"{_ms(e['eval_float'])} / {_ms(e['eval_exact'])} | {e['overhead_eval'] * 100:+.0f} % | "
                         f"{f_['n_iter']} / {x_['n_iter']} | {e['coef_rel_diff_exact_float']:.1e} / "
                         f"{e['coef_rel_diff_exact_sklearn']:.1e} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
