"""What every benchmark result records: the machine it ran on, and medians of repeats.

The tiny shared API of bench/ (documented in bench/README.md); a bench script calls::

    import machine                                  # bench/ is on sys.path for bench scripts
    started = machine.snapshot()                    # date and load average at the start
    ...
    row = machine.summary([t1, t2, t3])             # {"median", "min", "max", "n"}
    machine.save(path, "kmeans", {...}, started)    # JSON with "benchmark" and "machine"
    machine.results("bench/results")                # {benchmark: newest result} (the readers)

``save`` writes ``{"benchmark": NAME, "machine": machine(), "started": ..., **data}`` atomically;
bench/report.py reads every such file under bench/results/ (any JSON without a "benchmark" key
is ignored), so a new benchmark slots in by calling ``save``.
"""
from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def snapshot() -> dict:
    """The UTC date and the 1/5/15-minute load averages now."""
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def summary(values) -> dict:
    """Median of repeats with min and max (None entries dropped); all None if no values."""
    v = [float(x) for x in values if x is not None]
    if not v:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _physical_cores() -> int | None:
    try:
        pairs = set()
        phys = core = None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("physical id"):
                phys = line.split(":")[1].strip()
            elif line.startswith("core id"):
                core = line.split(":")[1].strip()
                pairs.add((phys, core))
        return len(pairs) or None
    except OSError:
        return None


def _mem_gib() -> float | None:
    try:
        kb = int(next(ln for ln in Path("/proc/meminfo").read_text().splitlines()
                      if ln.startswith("MemTotal")).split()[1])
        return round(kb / 2 ** 20, 1)
    except (OSError, StopIteration, ValueError):
        return None


@functools.lru_cache(maxsize=1)
def _static() -> dict:
    """The parts that do not change during a run (asked once per process)."""
    import numpy as np

    blas = []
    try:
        from threadpoolctl import threadpool_info

        blas = [{"api": p.get("internal_api"), "version": p.get("version"), "threads": p.get("num_threads"),
                 "architecture": p.get("architecture")} for p in threadpool_info() if p.get("user_api") == "blas"]
    except ImportError:
        pass
    # the MPI library's own version string, asked before (without) MPI_Init in a child process,
    # so calling this never initialises MPI in a benchmark's driver
    mpi = None
    try:
        out = subprocess.run([sys.executable, "-c", "import mpi4py; mpi4py.rc.initialize = False; "
                              "from mpi4py import MPI; import mpi4py as m; "
                              "print(m.__version__); print(MPI.Get_library_version().strip())"],
                             capture_output=True, text=True, timeout=60)
        if out.returncode == 0:
            lines = out.stdout.strip().splitlines()
            mpi = {"mpi4py": lines[0], "library": " ".join(lines[1:3]).strip()}
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"cpu_model": _cpu_model(), "logical_cpus": os.cpu_count(), "physical_cores": _physical_cores(),
            "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "memory_gib": _mem_gib(), "hostname": platform.node(), "os": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__, "blas": blas, "mpi": mpi}


def machine() -> dict:
    """The machine record: CPU model, cores, memory, BLAS (library, version, threads), MPI
    library and version, thread-count environment, and the date and load average now."""
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
           if k in os.environ}
    return {**_static(), "thread_env": env, **snapshot()}


def results(directory) -> dict:
    """{benchmark: result} of every JSON under ``directory`` (recursively) written by :func:`save`
    (the newest per benchmark; other JSON files are skipped), each with ``"_path"`` added."""
    found: dict = {}
    for p in sorted(Path(directory).rglob("*.json")):
        try:
            doc = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("benchmark"), str) and isinstance(doc.get("machine"), dict):
            doc["_path"] = str(p)
            old = found.get(doc["benchmark"])
            if old is None or doc["machine"].get("date", "") >= old["machine"].get("date", ""):
                found[doc["benchmark"]] = doc
    return found


def save(path, benchmark: str, data: dict, started: dict | None = None) -> Path:
    """Write ``data`` as the result of ``benchmark`` to ``path`` (None: bench/results/NAME.json),
    with the machine record and the start snapshot; atomically (temporary file, rename)."""
    path = Path(path) if path else RESULTS / f"{benchmark}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": benchmark, "machine": machine(), "started": started, **data}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    os.replace(tmp, path)
    return path
