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

.PHONY: setup demo test test-fast data bench bench-quick bench-report lint clean help

help:
	@echo "make demo   - set up, generate data, train on $(NP) ranks (NP=4 make demo for more)"
	@echo "make test   - run the whole test suite (multi-rank tests included)"
	@echo "make test-fast - the suite without the slow and Slurm tests, stopping at the first failure"
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
