#!/usr/bin/env bash
# The same jobs as jobs/*.sbatch, on one machine with mpiexec (no Slurm).
#
#   jobs/local.sh kmeans                          # NP=2 ranks, data/blobs, k=8
#   NP=4 K=16 DATA=data/blobs jobs/local.sh kmeans --max-iter 50
#   TEST_DATA=data/classification jobs/local.sh logistic
#   TREES=50 LEAVES=15 jobs/local.sh gbdt
#
# Parameters (environment), as in the batch scripts:
#   NP         ranks                                          (default 2)
#   DATA       HDF5 file or directory of part files (default data/blobs for kmeans, else
#              data/classification; 'make data' writes those)
#   K          kmeans: clusters (default 8)
#   OBJECTIVE, TREES, LEAVES   gbdt: objective, rounds, leaves (default binary, 100, 31)
#   TEST_DATA  logistic/gbdt: evaluate on this held-out set after training
#   OUT        model file (default runs/MODEL-local.h5); REPORT (default OUT with .json)
#   MPIEXEC    the launcher (default: mpiexec beside the active python, else on PATH)
#   SHARDLEARN_VENV   a venv to activate first (default: use the python on PATH)
# Arguments after MODEL go to 'shardlearn train MODEL' as they are.
set -euo pipefail

usage() { echo "usage: jobs/local.sh kmeans|logistic|gbdt|MODEL [train options...]" >&2; exit 2; }
(($# >= 1)) || usage
MODEL=$1; shift
[[ $MODEL == -* ]] && usage

# shellcheck source=/dev/null
if [[ -n ${SHARDLEARN_VENV:-} ]]; then source "$SHARDLEARN_VENV/bin/activate"; fi
# one machine: keep MPI traffic on loopback (override for a multi-host mpiexec)
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo} HYDRA_IFACE=${HYDRA_IFACE:-lo}

NP=${NP:-2}
[[ $MODEL == kmeans ]] && default_data=data/blobs || default_data=data/classification
DATA=${DATA:-$default_data}
TEST_DATA=${TEST_DATA:-}
OUT=${OUT:-runs/$MODEL-local.h5}
REPORT=${REPORT:-${OUT%.h5}.json}
mkdir -p "$(dirname "$OUT")" "$(dirname "$REPORT")"
PY=$(command -v python || command -v python3)
MPIEXEC=${MPIEXEC:-$(dirname "$PY")/mpiexec}
[[ -x $MPIEXEC ]] || MPIEXEC=$(command -v mpiexec) || { echo "local.sh: no mpiexec found (make setup installs one)" >&2; exit 2; }
# BLAS threads per rank: the machine's cores shared by the ranks
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / NP > 0 ? $(nproc) / NP : 1 ))}

model_args=()
case $MODEL in
    kmeans) model_args=(--k "${K:-8}") ;;
    gbdt)   model_args=(--objective "${OBJECTIVE:-binary}" --n-estimators "${TREES:-100}"
                        --num-leaves "${LEAVES:-31}") ;;
esac

RUN=("$MPIEXEC" -n "$NP")
echo "$MODEL: $NP ranks on $(hostname -s), data $DATA"
"${RUN[@]}" "$PY" -m shardlearn train "$MODEL" --data "$DATA" ${model_args[@]+"${model_args[@]}"} \
    --out "$OUT" --report "$REPORT" "$@"
if [[ -n $TEST_DATA ]]; then
    "${RUN[@]}" "$PY" -m shardlearn evaluate --model "$OUT" --data "$TEST_DATA"
fi
echo "$MODEL done: model $OUT, report $REPORT"
