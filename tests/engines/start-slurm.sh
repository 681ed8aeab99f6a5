#!/usr/bin/env bash
# Start a private single-node SLURM (munge + slurmctld + slurmd) for tests.
#
#   bash tests/engines/start-slurm.sh        # prints: export SLURM_CONF=...
#   eval "$(bash tests/engines/start-slurm.sh)"
#
# Idempotent: installs the Debian packages only when missing, and exits 0 at
# once when the daemons of this state directory already answer. Everything
# (keys, sockets, state, logs, pid files) lives in $MOTOKO_SLURM_DIR
# (default /tmp/motoko-slurm), so nothing of the system's own configuration
# is touched except /etc/slurm/slurm.conf, written only when absent (or ours)
# so that plain `sbatch` finds the cluster without SLURM_CONF.
# Diagnostics go to stderr; stdout carries only the export line.
set -euo pipefail

DIR="${MOTOKO_SLURM_DIR:-/tmp/motoko-slurm}"
CONF="$DIR/etc/slurm.conf"
NODE="$(hostname -s)"
CPUS="${MOTOKO_SLURM_CPUS:-8}"   # more than the cores: tiny jobs then overlap (~2x throughput)
MARKER="# written by motoko tests/engines/start-slurm.sh"
export SLURM_CONF="$CONF"

say() { echo "start-slurm: $*" >&2; }

alive() {  # alive PIDFILE: the process named in PIDFILE exists
    [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

node_idle() {
    sinfo -h -N -o '%T' 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'
}

install_packages() {
    local missing=0 tool
    for tool in sbatch squeue scancel sacct sinfo slurmctld slurmd munged; do
        command -v "$tool" >/dev/null 2>&1 || missing=1
    done
    [[ $missing == 0 ]] && return 0
    say "installing SLURM and munge (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    # No init system here: keep the packages' scripts from starting daemons
    # with the system configuration (we start our own below).
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added_policy=1
    fi
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends slurm-wlm slurmctld slurmd slurm-client munge >&2
    [[ $added_policy == 1 ]] && rm -f "$policy"
    return 0
}

start_munge() {
    local m="$DIR/munge"
    if alive "$m/run/munged.pid"; then return 0; fi
    # The key directory is private (0700); the socket directory must be 0755
    # or munged refuses it.
    mkdir -p "$m/etc" "$m/run" "$m/log" "$m/lib"
    chmod 0700 "$m/etc" "$m/lib" "$m/log"
    chmod 0755 "$m" "$m/run"
    if [[ ! -s "$m/etc/munge.key" ]]; then
        dd if=/dev/urandom of="$m/etc/munge.key" bs=1024 count=1 status=none
    fi
    chown -R munge:munge "$m"
    chmod 0400 "$m/etc/munge.key"
    runuser -u munge -- munged \
        --key-file="$m/etc/munge.key" --socket="$m/run/munge.socket.2" \
        --pid-file="$m/run/munged.pid" --log-file="$m/log/munged.log" \
        --seed-file="$m/lib/munged.seed"
}

write_conf() {
    mkdir -p "$DIR/etc" "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/run"
    cat >"$CONF" <<CONF
$MARKER
ClusterName=motoko
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/run/munge.socket.2
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# slurmd must advertise the CPUs of this file, not the machine's 2 cores
SlurmdParameters=config_overrides
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# No slurmdbd: final states come from squeue (MinJobAge) and sacct -c (jobcomp)
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.log
# Start jobs at once instead of ~2.5 s after sbatch
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,bf_interval=1
# Time limits are enforced to the second, and killed jobs go quickly
OverTimeLimit=0
KillWait=2
InactiveLimit=0
MinJobAge=120
MaxArraySize=10001
MaxJobCount=50000
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=1024 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    # Let plain `sbatch` find this cluster, unless the system has its own.
    if [[ ! -e /etc/slurm/slurm.conf ]] || head -1 /etc/slurm/slurm.conf | grep -qF "$MARKER"; then
        mkdir -p /etc/slurm && cp "$CONF" /etc/slurm/slurm.conf
    fi
}

start_slurm() {
    alive "$DIR/run/slurmctld.pid" || slurmctld -f "$CONF"
    local i
    for i in $(seq 1 100); do
        scontrol -o ping 2>/dev/null | grep -q 'UP' && break
        sleep 0.1
    done
    alive "$DIR/run/slurmd.pid" || slurmd -f "$CONF"
}

wait_idle() {
    local i
    for i in $(seq 1 300); do
        node_idle && return 0
        # A node left down/drained by an earlier run of these daemons
        if (( i % 20 == 0 )); then
            scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
        fi
        sleep 0.1
    done
    say "the node did not become idle within 30 s; sinfo says:"
    sinfo -N -l >&2 || true
    say "logs: $DIR/log/slurmctld.log $DIR/log/slurmd.log"
    return 1
}

main() {
    if [[ $EUID -ne 0 ]]; then
        say "must run as root (it installs packages and starts daemons)"
        exit 1
    fi
    if [[ -s "$CONF" ]] && alive "$DIR/munge/run/munged.pid" && alive "$DIR/run/slurmctld.pid" \
        && alive "$DIR/run/slurmd.pid" && node_idle; then
        echo "export SLURM_CONF=$CONF"
        exit 0
    fi
    install_packages
    mkdir -p "$DIR" && chmod 0755 "$DIR"
    start_munge
    write_conf
    start_slurm
    wait_idle
    say "SLURM is up (node $NODE, $CPUS CPUs, state in $DIR)"
    echo "export SLURM_CONF=$CONF"
}

main "$@"
