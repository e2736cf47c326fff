#!/usr/bin/env bash
# Stop the local Slurm started by start_local_slurm.sh: cancel its jobs, then end exactly the
# daemons it started (slurmd, slurmctld, munged), by the PIDs recorded in its directory.
# A PID is only signalled while /proc says it still runs that daemon with this directory's
# files (so a recycled PID is never hit). Nothing else is touched; the directory is kept for
# its logs (start_local_slurm.sh wipes it on the next start).
#
#   tests/slurm/stop_local_slurm.sh [--quiet]
set -uo pipefail

DIR=${SHARDLEARN_SLURM_DIR:-${TMPDIR:-/tmp}/shardlearn-slurm-$(id -u)}
QUIET=0
[[ ${1:-} == --quiet ]] && QUIET=1
say() { ((QUIET)) || echo "stop_local_slurm: $*" >&2; }

export SLURM_CONF=$DIR/slurm.conf

ours() {  # ours NAME PID: PID runs daemon NAME started with files in $DIR
    local cmd
    [[ -r /proc/$2/cmdline ]] || return 1
    cmd=$(tr '\0' ' ' <"/proc/$2/cmdline")
    [[ $cmd == *"$1"* && $cmd == *"$DIR/"* ]]
}

# running jobs first, so their slurmstepd and ranks end with them
if [[ -s $DIR/slurmctld.pid && -s $SLURM_CONF ]] && ours slurmctld "$(<"$DIR/slurmctld.pid")"; then
    timeout 10 scancel --full --quiet --user="$(id -un)" >/dev/null 2>&1 || true
    for _ in $(seq 50); do
        [[ -z $(timeout 5 squeue -h -o %i 2>/dev/null) ]] && break
        sleep 0.2
    done
fi

# TERM all three at once (each takes a second or two to shut down), then KILL stragglers
# (also daemons whose PID file is gone: found by this directory's files on their command line)
declare -A pids=()
for name in slurmd slurmctld munged; do
    pidf=$DIR/$name.pid
    candidates=()
    [[ -s $pidf ]] && candidates+=("$(<"$pidf")")
    for proc in /proc/[0-9]*; do
        [[ $(<"$proc/comm") == "$name" ]] 2>/dev/null && candidates+=("${proc#/proc/}")
    done
    for pid in "${candidates[@]}"; do
        [[ -n ${pids[$name]:-} ]] && break
        ours "$name" "$pid" || continue
        kill -TERM "$pid" 2>/dev/null && pids[$name]=$pid
    done
done
for _ in $(seq 100); do
    left=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
    ((left)) || break
    sleep 0.1
done
stopped=()
for name in "${!pids[@]}"; do
    pid=${pids[$name]}
    if kill -0 "$pid" 2>/dev/null && ours "$name" "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    stopped+=("$name($pid)")
done
rm -f "$DIR"/slurmd.pid "$DIR"/slurmctld.pid "$DIR"/munged.pid 2>/dev/null
say "stopped ${stopped[*]:-nothing (no daemons of ours were running)}; logs in $DIR/log"
exit 0
