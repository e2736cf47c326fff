#!/usr/bin/env bash
# The GPU check of issue 12 on a bare GPU machine, as one command: install what the
# machine lacks, run `make test-gpu` and `bench/bench_gpu.py`, log everything to ONE file.
# Sized to finish in under 8 minutes on one H200 (16 cores): each step has its own time
# limit and the script ends by itself at 460 s, whatever hangs.
#
# The machine is expected to have Python 3.12 with CuPy for its CUDA (cupy-cuda12x or
# cupy-cuda13x), NumPy, SciPy, h5py, scikit-learn, pytest (and pytest-xdist) and a C
# compiler, but no MPI library and no registry to install one from. What it lacks travels
# as wheels in .whl/ (ignored by git), fetched beforehand on a machine with pip:
#
#   jobs/gpu_check.sh fetch        # here, in the repository root: mpich, mpi4py, lightgbm
#                                  # for CPython 3.12 x86-64 into .whl/ (about 18 MB)
#   bash jobs/gpu_check.sh         # there, in the repository root (the device tool: carry
#                                  # [".whl"], timeout_s 540)
#
# The log goes to $OUT/gpu_check.log when OUT is set (the device tool brings $OUT back),
# else ./gpu_check.log; the benchmark's figures to $OUT/gpu.md and $OUT/gpu.json beside it.
# Exit status: 0 when every step passed, else 1 (the summary at the end says which).
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(mpich==5.0.2 mpi4py==4.1.2 lightgbm==4.7.0)
if [[ ${1:-} == fetch ]]; then
    mkdir -p .whl
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> "$(git rev-parse --git-path info/exclude)"
    plats=()
    for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
        plats+=(--platform "$p")
    done
    for w in "${WHEELS[@]}"; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            "${plats[@]}" -d .whl "$w" || exit 1
    done
    ls -l .whl
    exit 0
fi

PY=${PY:-python3}   # the machine's Python with CuPy
OUTDIR=${OUT:-.}
LOG=$OUTDIR/gpu_check.log
exec > >(tee -a "$LOG") 2>&1
T0=$SECONDS
DEADLINE=${GPU_CHECK_SECONDS:-460}
left() { echo $(( DEADLINE - (SECONDS - T0) )); }
declare -A STATUS
step() {  # step NAME LIMIT_SECONDS CMD...: run with a time limit, record the exit status
    local name=$1 limit=$2; shift 2
    local l; l=$(left)
    (( limit > l )) && limit=$l
    if (( limit < 10 )); then
        echo "== $name: skipped, $(left) s left of $DEADLINE"; STATUS[$name]=skipped; return
    fi
    echo "== $name (limit ${limit} s, $(( SECONDS - T0 )) s elapsed): $*"
    local t=$SECONDS
    timeout --kill-after=10 "$limit" "$@"
    local rc=$?
    STATUS[$name]=$rc
    echo "== $name: exit $rc after $(( SECONDS - t )) s"
}

echo "== gpu_check $(date -u +%FT%TZ) on $(hostname), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
nvidia-smi -L || true
nproc; cat /proc/loadavg

# ---- what the machine lacks, from the carried wheels, under /tmp (nothing system-wide):
# an MPI library (the mpich wheel, unpacked) with mpi4py -- unless this Python already has
# mpi4py working with an mpiexec beside it (the tests launch that one) -- and lightgbm
# (the benchmark's peer) unless it imports
PYDIR=$(dirname "$(command -v "$PY")")
have_mpi=0
if "$PY" -c "from mpi4py import MPI; MPI.Get_library_version()" 2>/dev/null && [[ -x $PYDIR/mpiexec ]]; then
    have_mpi=1
    echo "gpu_check: using this Python's own MPI ($PYDIR/mpiexec)"
fi
if compgen -G ".whl/*.whl" >/dev/null; then
    rm -rf /tmp/shardlearn-mpich /tmp/shardlearn-site && mkdir -p /tmp/shardlearn-mpich /tmp/shardlearn-site
    wheels=()
    if (( ! have_mpi )); then
        "$PY" -m zipfile -e .whl/mpich-*.whl /tmp/shardlearn-mpich
        MPICH=$(echo /tmp/shardlearn-mpich/mpich-*.data/data)
        chmod +x "$MPICH"/bin/*
        export PATH=$MPICH/bin:$PATH
        export LD_LIBRARY_PATH=$MPICH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        export MPI4PY_LIBMPI=$MPICH/lib/libmpi.so.12
        wheels+=(.whl/mpi4py-*.whl)
    fi
    "$PY" -c "import lightgbm" 2>/dev/null || wheels+=(.whl/lightgbm-*.whl)
    if (( ${#wheels[@]} )); then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/shardlearn-site "${wheels[@]}" || echo "gpu_check: pip install of ${wheels[*]} failed"
        export PYTHONPATH=/tmp/shardlearn-site${PYTHONPATH:+:$PYTHONPATH}
    fi
elif (( ! have_mpi )); then
    echo "gpu_check: no .whl/ here and no MPI beside $PY: run 'jobs/gpu_check.sh fetch' first and carry .whl"
fi
export UCX_NET_DEVICES=lo HYDRA_IFACE=lo PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
if (( have_mpi )); then export MPIEXEC=$PYDIR/mpiexec; else MPIEXEC=$(command -v mpiexec || true); export MPIEXEC; fi
"$PY" - <<'EOF'
import sys
print("python", sys.version.split()[0])
for name in ("numpy", "scipy", "h5py", "sklearn", "lightgbm", "mpi4py", "cupy", "pytest", "xdist"):
    try:
        mod = __import__(name)
        print(f"  {name} {getattr(mod, '__version__', '?')}")
    except Exception as exc:
        print(f"  {name}: MISSING ({type(exc).__name__}: {exc})")
try:
    import cupy
    p = cupy.cuda.runtime.getDeviceProperties(0)
    print("  GPU:", p["name"].decode(), f"{p['totalGlobalMem'] / 2**30:.0f} GiB, CUDA runtime",
          cupy.cuda.runtime.runtimeGetVersion())
except Exception as exc:
    print("  no GPU through CuPy:", exc)
from mpi4py import MPI
print("  MPI:", MPI.Get_library_version().splitlines()[0],
      "| Query_cuda_support:", getattr(MPI, "Query_cuda_support", lambda: "not in this mpi4py")())
EOF

# ---- without CuPy and a device the rest would only skip: say so in the summary
step gpu 60 "$PY" -c "import cupy; n = cupy.cuda.runtime.getDeviceCount(); print(n, 'CUDA device(s)'); assert n > 0"

# ---- the package's C kernels for this Python (the CPU path the benchmark compares with),
# compiled in place as setup.py would, without needing the machine's setuptools to read
# pyproject.toml; without them the models run their NumPy code (same results, slower)
cat > /tmp/shardlearn-build-kernels.py <<'EOF'
import subprocess, sys, sysconfig
from pathlib import Path
cc = (sysconfig.get_config_var("CC") or "cc").split()
inc, suffix = sysconfig.get_paths()["include"], sysconfig.get_config_var("EXT_SUFFIX")
bad = 0
for src in sorted(Path("src").glob("shardlearn/**/_*_kernels.c")):
    target = src.with_name(src.stem + suffix)
    r = subprocess.run(cc + ["-O3", "-std=c99", "-ffp-contract=fast", "-shared", "-fPIC", f"-I{inc}",
                             str(src), "-o", str(target)], capture_output=True, text=True)
    print(("built " if r.returncode == 0 else "FAILED ") + str(target), r.stderr[-800:])
    bad += r.returncode != 0
sys.exit(1 if bad else 0)
EOF
step kernels 90 "$PY" /tmp/shardlearn-build-kernels.py
"$PY" -c "from shardlearn.backend import kernels_name as k; print('kernels:', k('models.kmeans._kmeans_kernels'), k('models.trees._hist_kernels'))"

# ---- the model suite on the GPU (1..4 ranks of each test share the one GPU) + GPU-only tests
XDIST=""
"$PY" -c "import xdist" 2>/dev/null && XDIST="-n 4"
if command -v make >/dev/null; then
    step test-gpu 200 make --no-print-directory test-gpu GPU_PY="$PY" PYTEST_ARGS="-p no:cacheprovider $XDIST"
else  # no make on the machine: the same two commands as the Makefile's test-gpu recipe
    step test-gpu 200 bash -c "SHARDLEARN_DEVICE=gpu '$PY' -m pytest -q -rs -m 'not slow and not slurm' \
        -p no:cacheprovider $XDIST tests/test_kmeans.py tests/test_linear.py tests/test_trees.py; a=\$?; \
        '$PY' -m pytest -q -rs -p no:cacheprovider $XDIST tests/test_gpu_device.py tests/test_gpu_kernels.py; \
        b=\$?; [ \$a -eq 0 ] && [ \$b -eq 0 ]"
fi

# ---- the benchmark (its own data, under /tmp): figures to $OUT/gpu.md and gpu.json
step bench-gpu 330 "$PY" bench/bench_gpu.py --workdir /tmp/shardlearn-bench-gpu \
    --out "$OUTDIR/gpu.md" --json-out "$OUTDIR/gpu.json"
cp /tmp/shardlearn-bench-gpu/bench_gpu.log "$OUTDIR/bench_gpu_commands.log" 2>/dev/null || true

echo "== summary after $(( SECONDS - T0 )) s:"
rc=0
for name in gpu kernels test-gpu bench-gpu; do
    echo "   $name: ${STATUS[$name]:-not run}"
    [[ ${STATUS[$name]:-1} == 0 ]] || rc=1
done
sleep 1  # let tee write the last lines to the log
exit $rc
