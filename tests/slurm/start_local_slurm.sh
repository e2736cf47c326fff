#!/usr/bin/env bash
# Start a private, single-node Slurm on this machine for the tests (and for trying jobs/).
#
#   tests/slurm/start_local_slurm.sh --install-only   # only install the packages (root)
#   tests/slurm/start_local_slurm.sh          # prints the directory; then:
#   source /tmp/shardlearn-slurm-0/env.sh     # SLURM_CONF=... for sinfo/sbatch/squeue
#   sbatch --wait jobs/kmeans.sbatch
#   tests/slurm/stop_local_slurm.sh
#
# What it does:
#   - installs Debian's slurmctld, slurmd, slurm-client and munge with apt-get when missing
#     (needs root);
#   - writes munge's key, socket and logs, and slurm.conf with all state, spool, pid and log
#     files under one directory (SHARDLEARN_SLURM_DIR, default /tmp/shardlearn-slurm-$UID),
#     so nothing in /etc or /var is used and a system Slurm or munge is left alone;
#   - starts munged (as the munge user), slurmctld -i and slurmd -N localhost, remembering
#     their PIDs under that directory (stop_local_slurm.sh ends exactly those);
#   - waits until `sinfo` says the node is idle.
# Everything talks over 127.0.0.1 only: SlurmctldHost=localhost(127.0.0.1), NodeAddr=127.0.0.1.
# No cgroups (proctrack/linuxproc, task/none), no accounting daemon (jobcomp/filetxt instead).
#
# Idempotent: when the daemons from an earlier run in the same directory still answer, it
# reuses them; leftover state from a crashed run is stopped and wiped first.
# Exit codes: 0 ready; 3 cannot install/run here (not root, no apt-get): callers skip;
# 1 anything else (see the logs under the directory).
#
# Settings (environment):
#   SHARDLEARN_SLURM_DIR      where everything lives (default /tmp/shardlearn-slurm-$UID);
#                             one directory = one cluster, so several can run side by side
#   SHARDLEARN_SLURM_CPUS     CPUs the node advertises (default max(nproc, 4): 4-rank jobs
#                             fit on 2 cores)
#   SHARDLEARN_SLURM_PORT     slurmctld port (default the first free of 16817, 16827, ...;
#                             slurmd takes the next one)
#   SHARDLEARN_SLURM_TIMEOUT  seconds to wait for an idle node (default 60)
set -euo pipefail

DIR=${SHARDLEARN_SLURM_DIR:-${TMPDIR:-/tmp}/shardlearn-slurm-$(id -u)}
NCPU=$(nproc)
CPUS=${SHARDLEARN_SLURM_CPUS:-$(( NCPU > 4 ? NCPU : 4 ))}
TIMEOUT=${SHARDLEARN_SLURM_TIMEOUT:-60}
GPUS=2
# one of 6000 blocks of 10000 job ids, so two clusters (or two runs) do not share ids
FIRST_JOB_ID=$(( ((RANDOM << 15 | RANDOM) % 6000) * 10000 + 1000 ))
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { echo "start_local_slurm: $*" >&2; }
cannot() { say "cannot run a local Slurm here: $*"; exit 3; }

# ---------------------------------------------------------------- packages
need_install=()
for prog in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
    command -v "${prog%%:*}" >/dev/null 2>&1 || need_install+=("${prog#*:}")
done
if ((${#need_install[@]})); then
    [[ $(id -u) -eq 0 ]] || cannot "${need_install[*]} missing and not root (apt-get install needs root)"
    command -v apt-get >/dev/null 2>&1 || cannot "${need_install[*]} missing and no apt-get"
    say "installing ${need_install[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # the package scripts must not start the system's own daemons: deny service starts
    # for the duration of the install (policy-rc.d, honoured by invoke-rc.d)
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
    fi
    ok=1
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge; } >"${TMPDIR:-/tmp}/shardlearn-slurm-apt.log" 2>&1 || ok=0
    ((made_policy)) && rm -f "$policy"
    ((ok)) || { tail -n 20 "${TMPDIR:-/tmp}/shardlearn-slurm-apt.log" >&2
                cannot "apt-get install slurmctld slurmd slurm-client munge failed"; }
fi
[[ $(id -u) -eq 0 ]] || cannot "slurmd must run as root to start jobs (this is uid $(id -u))"
getent passwd munge >/dev/null || cannot "no 'munge' user (is the munge package installed?)"
command -v runuser >/dev/null || cannot "no runuser (util-linux) to start munged as the munge user"
# --install-only: the packages above and nothing else (the multi-node tests start their own daemons)
[[ ${1:-} == --install-only ]] && exit 0

export SLURM_CONF=$DIR/slurm.conf

# ------------------------------------------------ reuse a running instance
alive() {  # alive NAME: the PID in $DIR/NAME.pid is running that daemon
    local pidf=$DIR/$1.pid pid
    [[ -s $pidf ]] || return 1
    pid=$(<"$pidf")
    [[ -r /proc/$pid/cmdline ]] || return 1
    local cmd
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline")
    [[ $cmd == *"$1"* && $cmd == *"$DIR/"* ]]
}
if alive munged && alive slurmctld && alive slurmd \
        && [[ $(timeout 10 sinfo -h -n localhost -o %T 2>/dev/null) == idle* ]]; then
    say "reusing the running local Slurm in $DIR"
    echo "$DIR"
    exit 0
fi
# leftovers of an earlier run (a crashed daemon, stale state): stop what is ours, wipe the rest
[[ -d $DIR ]] && say "stopping and wiping leftovers in $DIR"
SHARDLEARN_SLURM_DIR=$DIR "$HERE/stop_local_slurm.sh" --quiet || true
rm -rf "$DIR"

# ------------------------------------------------------------------- ports
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [[ -n ${SHARDLEARN_SLURM_PORT:-} ]]; then
    CTLD_PORT=$SHARDLEARN_SLURM_PORT
else  # the first free pair from 16817, 16827, ... (another local Slurm may hold one)
    for CTLD_PORT in $(seq 16817 10 17007); do
        listening "$CTLD_PORT" || listening $((CTLD_PORT + 1)) || break
    done
fi
SLURMD_PORT=$((CTLD_PORT + 1))
if listening "$CTLD_PORT" || listening "$SLURMD_PORT"; then
    say "port $CTLD_PORT or $SLURMD_PORT on 127.0.0.1 is in use (set SHARDLEARN_SLURM_PORT)"; exit 1
fi

# ------------------------------------------------------------------ layout
mkdir -p "$DIR"/{state,spool,log,munge,jobs}
chmod 755 "$DIR"
chown munge:munge "$DIR/munge"
chmod 711 "$DIR/munge"  # munged: socket dir must be searchable by all
MUNGE_SOCKET=$DIR/munge/munge.socket

cat >"$SLURM_CONF" <<EOF
# single-node Slurm for shardlearn's tests, written by tests/slurm/start_local_slurm.sh
ClusterName=shardlearn
# job ids differ from run to run (the state is wiped at each start): MPICH names its shared
# memory after the PMI job id (JOBID.STEP under srun), and a segment left behind by an aborted
# job would otherwise be picked up by the next run's job with the same id (corrupt MPI_Init)
FirstJobId=$FIRST_JOB_ID
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups: plain process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# finished jobs for 'sacct -c' (there is no slurmdbd)
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# MPI is left to the job: the scripts in jobs/ say 'srun --mpi=pmi2' (PMIx does not work
# with the pip MPICH); plain srun stays unconnected so the tests can check it is refused
MpiDefault=none
# fast turnaround for tiny jobs: schedule batch jobs at once, purge finished jobs after 5 s
# (keeps 'sbatch --wait' polling every 2 s), refuse impossible requests instead of pending
SchedulerParameters=batch_sched_delay=0
MinJobAge=5
EnforcePartLimits=ALL
ReturnToService=2
KillWait=5
# two pretend GPUs (see gres.conf below), so the GPU job script's --gpus-per-task
# request is scheduled and bound by a real Slurm; the ranks then compute on CPU (no CUDA)
GresTypes=gpu
# the node may advertise more CPUs than it has, so 4-rank jobs run on 2 cores
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost CPUs=$CPUS Gres=gpu:$GPUS State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=60 State=UP OverSubscribe=FORCE
EOF

cat >"$DIR/gres.conf" <<EOF
# Slurm drops file-less GPUs, so each pretend GPU names a harmless device file; without
# cgroups Slurm only uses them to number the GPUs (CUDA_VISIBLE_DEVICES per task)
NodeName=localhost Name=gpu File=/dev/null
NodeName=localhost Name=gpu File=/dev/zero
EOF

cat >"$DIR/env.sh" <<EOF
# source this to use the local Slurm of tests/slurm/start_local_slurm.sh
export SLURM_CONF=$SLURM_CONF
export UCX_NET_DEVICES=lo HYDRA_IFACE=lo
EOF

# ----------------------------------------------------------------- daemons
failed() {
    say "$1"
    for f in "$DIR"/log/*.log "$DIR"/munge/*.log; do
        [[ -s $f ]] && { echo "---- $f" >&2; tail -n 15 "$f" >&2; }
    done
    SHARDLEARN_SLURM_DIR=$DIR "$HERE/stop_local_slurm.sh" --quiet || true
    exit 1
}
wait_for() {  # wait_for SECONDS CMD...: poll every 0.2 s
    local n=$(( $1 * 5 )); shift
    while ((n-- > 0)); do "$@" && return 0; sleep 0.2; done
    return 1
}

runuser -u munge -- mungekey --create --keyfile="$DIR/munge/munge.key" >/dev/null 2>&1 \
    || failed "mungekey could not create $DIR/munge/munge.key"
runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/munge/munged.pid" --seed-file="$DIR/munge/munged.seed" \
    --log-file="$DIR/munge/munged.log" \
    || failed "munged did not start"
wait_for 10 test -s "$DIR/munge/munged.pid" || failed "munged wrote no PID file"
cp "$DIR/munge/munged.pid" "$DIR/munged.pid"
wait_for 10 test -S "$MUNGE_SOCKET" || failed "munged opened no socket"

slurmctld -i -f "$SLURM_CONF" || failed "slurmctld did not start"
wait_for 15 test -s "$DIR/slurmctld.pid" || failed "slurmctld wrote no PID file"
slurmd -N localhost -f "$SLURM_CONF" || failed "slurmd did not start"
wait_for 15 test -s "$DIR/slurmd.pid" || failed "slurmd wrote no PID file"

node_idle() { [[ $(timeout 5 sinfo -h -n localhost -o %T 2>/dev/null) == idle* ]]; }
wait_for "$TIMEOUT" node_idle || failed "node 'localhost' not idle after ${TIMEOUT}s: $(sinfo -h -N -o '%N %T %E' 2>&1)"
say "ready: $CPUS CPUs on node localhost, partition debug; source $DIR/env.sh"
echo "$DIR"
