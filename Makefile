# shardlearn — the front door. `make demo` and `make test` work on a fresh clone with
# nothing but Python 3.10+: they create .venv and pip-install an MPI runtime first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
NP     ?= 2
RUNS   ?= runs
# keep MPI traffic on loopback (one workstation / CI); a cluster overrides these
export UCX_NET_DEVICES ?= lo
export HYDRA_IFACE ?= lo
MPIRUN := $(BIN)/mpiexec
SL     := $(BIN)/shardlearn

.PHONY: setup demo test test-fast test-gpu test-gpu-fake data bench bench-quick bench-report lint clean help

help:
	@echo "make demo   - set up, generate data, train on $(NP) ranks (NP=4 make demo for more)"
	@echo "make test   - run the whole test suite (multi-rank tests included)"
	@echo "make test-fast - the suite without the slow and Slurm tests, stopping at the first failure"
	@echo "make test-gpu - the model tests with every fit on the GPU, and the GPU-only tests (skips without a GPU)"
	@echo "make test-gpu-fake - the same model tests through the GPU code paths with NumPy (no GPU needed)"
	@echo "make setup  - create $(VENV) with mpi4py, numpy, h5py and the MPICH wheel"
	@echo "make data   - generate the demo datasets under data/"
	@echo "make bench  - every benchmark, then bench/REPORT.md and its plots (bench/README.md)"
	@echo "make bench-quick - every benchmark end to end on tiny sizes (~1.5 min), outputs in a temp dir"
	@echo "make bench-report - bench/REPORT.md and its plots again from bench/results/*.json"
	@echo "make lint   - byte-compile and check style"
	@echo "make clean  - remove generated data, runs and caches (keeps $(VENV))"

setup: $(VENV)/.installed

# re-install when the package metadata or a C kernel changes (pip builds the kernels)
KERNELS := $(shell find src -name '_*_kernels.c' -o -name '_kernel_args.h')
$(VENV)/.installed: pyproject.toml setup.py $(KERNELS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,mpich]'
	@touch $@

data: setup
	@mkdir -p data
	$(MPIRUN) -n $(NP) $(SL) make-data blobs --rows 200000 --features 16 --centers 8 --seed 1 --out data/blobs
	$(MPIRUN) -n $(NP) $(SL) make-data classification --rows 200000 --features 20 --seed 2 --out data/classification
	$(MPIRUN) -n $(NP) $(SL) make-data regression --rows 200000 --features 20 --seed 3 --out data/regression

demo: data
	@mkdir -p $(RUNS)
	$(MPIRUN) -n $(NP) $(SL) info data/blobs
	$(MPIRUN) -n $(NP) $(SL) shard data/classification --out data/classification-5 --parts 5
	$(MPIRUN) -n $(NP) $(SL) info data/classification-5
	$(MPIRUN) -n $(NP) $(SL) bench-comm --sizes 8,1K,128K,1M --json-out $(RUNS)/bench-comm.json
	$(MPIRUN) -n $(NP) $(SL) train kmeans --data data/blobs --k 8 --out $(RUNS)/kmeans.h5
	$(MPIRUN) -n $(NP) $(SL) predict --model $(RUNS)/kmeans.h5 --data data/blobs --out $(RUNS)/kmeans-labels.h5
	$(MPIRUN) -n $(NP) $(SL) evaluate --model $(RUNS)/kmeans.h5 --data data/blobs
	$(MPIRUN) -n $(NP) $(SL) train logistic --data data/classification-5 --out $(RUNS)/logistic.h5
	$(MPIRUN) -n $(NP) $(SL) evaluate --model $(RUNS)/logistic.h5 --data data/classification
	$(MPIRUN) -n $(NP) $(SL) train ridge --data data/regression --alpha 1.0 --out $(RUNS)/ridge.h5
	$(MPIRUN) -n $(NP) $(SL) predict --model $(RUNS)/ridge.h5 --data data/regression --out $(RUNS)/ridge-pred.h5
	$(MPIRUN) -n $(NP) $(SL) train gbdt --data data/classification --objective binary --n-estimators 50 --validation-fraction 0.1 --metric auc --out $(RUNS)/gbdt.h5 --json-dump $(RUNS)/gbdt-trees.json
	$(MPIRUN) -n $(NP) $(SL) evaluate --model $(RUNS)/gbdt.h5 --data data/classification
	$(MPIRUN) -n $(NP) $(SL) train forest --data data/classification --n-estimators 20 --max-depth 10 --out $(RUNS)/forest.h5
	$(MPIRUN) -n $(NP) $(SL) evaluate --model $(RUNS)/forest.h5 --data data/classification
	@echo "demo finished: outputs in $(RUNS)/"

test: setup
	$(BIN)/python -m pytest -q -rs tests

test-fast: setup
	$(BIN)/python -m pytest -q -x -m "not slurm and not slow" tests

# The model suite with every fit on the GPU (SHARDLEARN_DEVICE=gpu: the 1..4 ranks of each
# test share the one GPU), then the GPU-only tests (CUDA kernels against their NumPy
# references, CuPy fits against the CPU path at 1 and 2 ranks; not tests/test_model_files.py:
# the GPU does not promise the CPU path's bits). Without CuPy or a CUDA
# device it says so and skips. It does not depend on `setup` (a GPU node may have no
# registry): GPU_PY=python3 uses the machine's Python (jobs/gpu_check.sh does).
GPU_PY ?= $(BIN)/python
PYTEST_ARGS ?=
GPU_SUITE := tests/test_kmeans.py tests/test_linear.py tests/test_trees.py
GPU_TESTS := tests/test_gpu_device.py tests/test_gpu_kernels.py
test-gpu:
	@if $(GPU_PY) -c "import sys, cupy; sys.exit(cupy.cuda.runtime.getDeviceCount() < 1)" 2>/dev/null; then \
		SHARDLEARN_DEVICE=gpu $(GPU_PY) -m pytest -q -rs -m "not slow and not slurm" $(PYTEST_ARGS) $(GPU_SUITE) ; a=$$? ; \
		$(GPU_PY) -m pytest -q -rs $(PYTEST_ARGS) $(GPU_TESTS) ; b=$$? ; \
		echo "make test-gpu: model suite on the GPU exit $$a, GPU tests exit $$b" ; [ $$a -eq 0 ] && [ $$b -eq 0 ] ; \
	else echo "make test-gpu: skipped (no CuPy or no CUDA GPU for $(GPU_PY))" ; fi

# the model suites through the device code paths with NumPy standing in for CuPy
# (SHARDLEARN_FAKE_GPU=1): catches a device-path mistake without a GPU
test-gpu-fake: setup
	SHARDLEARN_DEVICE=gpu SHARDLEARN_FAKE_GPU=1 $(BIN)/python -m pytest -q -rs -m "not slow and not slurm" $(GPU_SUITE)

# every benchmark (bench/results/*.json), then bench/scaling_model.py and bench/report.py
# (bench/REPORT.md, bench/plots/*.png); slow: run it on a quiet machine
bench: setup
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/run_all.py

# rebuild the scaling model and bench/REPORT.md from the results already in bench/results
bench-report: setup
	$(BIN)/python bench/scaling_model.py
	$(BIN)/python bench/report.py

# a smoke run, not a measurement: the committed bench/*.md reports are not touched
bench-quick: setup
	$(BIN)/python bench/run_all.py --quick

lint: setup
	$(BIN)/python -m pip install -q ruff
	$(BIN)/python -m compileall -q src tests bench
	$(BIN)/ruff check src tests bench

clean:
	rm -rf $(RUNS) data/*/ data/*.h5 .pytest_cache bench/results/*/
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
