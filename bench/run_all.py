"""Run every benchmark in bench/ (``bench_*.py``) one after another; see bench/README.md.

Each benchmark writes its results with the machine record to ``bench/results/NAME.json``
(bench/machine.py) and most also a markdown report next to it (``bench/<topic>.md``). After
them ``scaling_model.py`` fits and predicts, and ``report.py`` writes bench/REPORT.md and
bench/plots/*.png from the results.

``--quick`` (``make bench-quick``) instead runs every script end to end on tiny sizes
(the same code paths: data, fit, predict, the peers, the report) with every output in a
temporary work directory, never the committed reports: a smoke test that no benchmark
has rotted, not a measurement. It fails, naming the script and printing its last output
lines, if any script fails. The scaling model and the report then run on the quick results
(in the work directory): a smoke test of both.

    python bench/run_all.py [NAME ...]              # full size, e.g. NAME = kmeans
    python bench/run_all.py --quick [--work-dir DIR] [NAME ...]
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MPIEXEC = Path(sys.executable).parent / "mpiexec"
QUICK_TIMEOUT = 240  # seconds per script in --quick mode (each takes under 30 on 2 cores)


def quick_args(name: str, w: Path) -> list | None:
    """Tiny sizes for one script, every output under the work directory ``w``; None for a
    script that has none yet (the quick run fails for it: add its settings here)."""
    return {
        "binning": ["--rows", "20000", "--repeats", "1", "--json-out", w / "binning.json"],
        "cluster": ["--layouts", "2x1", "--caps", "1", "--sizes", "8,1M", "--repeats", "1",
                    "--out", w / "cluster.md", "--json-out", w / "cluster.json"],
        "comm": ["--ranks", "2", "--runs", "1", "--sizes", "8,1K,128K,1M", "--out", w / "comm.md",
                 "--results", w / "comm", "--json-out", w / "comm.json"],
        "data": ["--rows", "20000", "--features", "8", "--repeats", "1", "--dir", w / "data", "--peers",
                 "--json-out", w / "data.json"],
        "import": ["--csv-mb", "2", "--repeats", "1", "--pipe-rows", "20000", "--pipe-features", "8",
                   "--work", w / "import", "--out", w / "import.md", "--json-out", w / "import.json"],
        "kmeans": ["--cases", "20000x16k8", "--repeats", "1", "--limits-size", "256",
                   "--data-dir", w / "kmeans", "--out", w / "kmeans.json"],
        "knn": ["--train", "20000", "--queries", "1000", "--work", w / "knn", "--out", w / "knn.md",
                "--json-out", w / "knn.json"],
        "tree_exact": ["--reps", "1", "--sizes", "300", "--out", w / "tree_exact.md",
                       "--json-out", w / "tree_exact.json"],
        "resample": ["--rows", "6000", "--trees", "3", "--out", w / "resample.md", "--json-out", w / "resample.json"],
        "linear": ["--rows", "20000", "--repeats", "1", "--workdir", w / "linear", "--out", w / "linear.md",
                   "--json-out", w / "linear.json"],
        "machine": ["--gemm-size", "256", "--mib", "8", "--repeats", "2", "--json-out", w / "machine.json"],
        "scaling": ["--scale", "0.01", "--repeats", "1", "--ranks", "1,2", "--kinds", "strong",
                    "--peer-threads", "1", "--json-out", w / "scaling.json"],
        "exact_reduce": ["--repeats", "1", "--scale", "0.02", "--data-dir", w / "exact", "--out", w / "exact_reduce.md",
                         "--json-out", w / "exact_reduce.json"],
        "quantized": ["--rows", "20000", "--trees", "5", "--repeats", "1", "--work", w / "quantized",
                      "--out", w / "quantized.md", "--json-out", w / "quantized.json"],
        "ps": ["--rows", "8000", "--features", "8", "--epochs", "2", "--repeats", "1", "--batch-size", "2000",
               "--out", w / "ps.md", "--json-out", w / "ps.json", "--png", w / "ps.png"],
        "search": ["--rows", "2000", "--features", "6", "--trees", "2", "--light", "--workdir", w / "search",
                   "--out", w / "search.md", "--json-out", w / "search.json"],
        "trees": ["--rows", "20000", "--trees", "5", "--repeats", "1", "--work", w / "trees",
                  "--out", w / "trees.md", "--json-out", w / "trees.json"],
        "trees_categorical": ["--rows", "20000", "--trees", "5", "--repeats", "1", "--dir", w / "trees_categorical",
                              "--out", w / "trees_categorical.md", "--json-out", w / "trees_categorical.json"],
        "trees_hist": ["--rows", "20000", "--trees", "3", "--json-out", w / "trees_hist.json"],
        # without CuPy and a GPU it prints "skipped bench_gpu: ..." and exits 0
        "gpu": ["--rows", "20000", "--iters", "3", "--trees", "2", "--ranks", "2", "--no-peers",
                "--workdir", w / "gpu", "--out", w / "gpu.md", "--json-out", w / "gpu.json"],
    }.get(name)


# scripts that run under MPI themselves (the others start their own mpiexec)
UNDER_MPI = {"data": 2}


def command(script: Path, name: str, extra: list) -> list:
    cmd = [sys.executable, str(script)] + [str(x) for x in extra]
    if name in UNDER_MPI:
        cmd = [str(MPIEXEC) if MPIEXEC.exists() else "mpiexec", "-n", str(UNDER_MPI[name])] + cmd
    return cmd


def run_quick(cmd: list, env: dict, cwd: Path) -> tuple:
    """(exit status or "timeout", stdout and stderr together); on a timeout the script's whole
    process group (its mpiexec and every rank) is killed, so no rank is left running."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=QUICK_TIMEOUT)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return "timeout", (out or "") + f"\n(killed after {QUICK_TIMEOUT} s)"


def quick_env() -> dict:
    src = str(ROOT / "src")
    old = os.environ.get("PYTHONPATH")
    return dict(os.environ, UCX_NET_DEVICES=os.environ.get("UCX_NET_DEVICES", "lo"),
                HYDRA_IFACE=os.environ.get("HYDRA_IFACE", "lo"),
                PYTHONPATH=src + (os.pathsep + old if old else ""))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*", help="only these benchmarks (bench_NAME.py)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, outputs in a temporary directory")
    ap.add_argument("--work-dir", help="--quick: write outputs here and keep them (default: a temporary "
                                       "directory, removed after a successful run)")
    a = ap.parse_args(argv)
    scripts = sorted(HERE.glob("bench_*.py"))
    names = {s.stem[len("bench_"):] for s in scripts}
    unknown = set(a.names) - names
    if unknown:
        ap.error(f"no such benchmark: {', '.join(sorted(unknown))} (have {', '.join(sorted(names))})")
    scripts = [s for s in scripts if not a.names or s.stem[len("bench_"):] in a.names]
    if not a.quick:
        failed = []
        for script in scripts:
            name = script.stem[len("bench_"):]
            print(f"== {script.name} (load {os.getloadavg()[0]:.1f})", flush=True)
            if subprocess.run(command(script, name, []), env=quick_env(), cwd=ROOT).returncode != 0:
                failed.append(script.name)
        # the scaling model and the report read bench/results/*.json only (whatever exists)
        for step in (["scaling_model.py"], ["report.py"]):
            print(f"== {step[0]}", flush=True)
            if subprocess.run([sys.executable, str(HERE / step[0])] + step[1:], env=quick_env(), cwd=ROOT).returncode:
                failed.append(step[0])
        if failed:
            print("failed: " + ", ".join(failed))
        return 1 if failed else 0

    work = Path(a.work_dir or tempfile.mkdtemp(prefix="shardlearn-bench-quick-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = quick_env()
    failed, t_all = [], time.perf_counter()
    for script in scripts:
        name = script.stem[len("bench_"):]
        w = work / name
        w.mkdir(exist_ok=True)
        extra = quick_args(name, w)
        t0 = time.perf_counter()
        if extra is None:
            cmd, rc, out = [], "no settings", f"{script.name} has no tiny settings: add them to quick_args in {__file__}"
        else:
            cmd = command(script, name, extra)
            rc, out = run_quick(cmd, env, w)
        dt = time.perf_counter() - t0
        (w / "output.txt").write_text(out)
        notes = [ln for ln in out.splitlines() if ln.startswith("skipped")]
        print(f"{'ok  ' if rc == 0 else 'FAIL'} {script.name:28s} {dt:6.1f} s"
              + ("".join(f"\n     {n}" for n in notes)), flush=True)
        if rc != 0:
            failed.append(script.name)
            tail = out.rstrip().splitlines()[-25:]
            print(f"---- {script.name} failed (exit {rc}): {' '.join(cmd)}\n---- last lines of its output:\n"
                  + "\n".join("  " + ln for ln in tail), flush=True)
    # the scaling model and the report, on the quick results (a smoke test of both)
    for step, extra in (("scaling_model.py", ["--results", work, "--json-out", work / "scaling_model.json"]),
                        ("report.py", ["--results", work, "--out", work / "report"])):
        t0 = time.perf_counter()
        rc, out = run_quick([sys.executable, str(HERE / step)] + [str(x) for x in extra], env, work)
        (work / f"{Path(step).stem}.txt").write_text(out)
        print(f"{'ok  ' if rc == 0 else 'FAIL'} {step:28s} {time.perf_counter() - t0:6.1f} s", flush=True)
        if rc != 0:
            failed.append(step)
            print(f"---- {step} failed (exit {rc}); last lines of its output:\n"
                  + "\n".join("  " + ln for ln in out.rstrip().splitlines()[-25:]), flush=True)
    print(f"quick run: {len(scripts) - len(failed)}/{len(scripts)} benchmarks ok in "
          f"{time.perf_counter() - t_all:.1f} s; outputs in {work}" if failed or a.work_dir else
          f"quick run: {len(scripts)}/{len(scripts)} benchmarks ok in {time.perf_counter() - t_all:.1f} s")
    if failed:
        print("failed: " + ", ".join(failed))
        return 1
    if not a.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
