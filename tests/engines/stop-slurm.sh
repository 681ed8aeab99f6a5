#!/usr/bin/env bash
# Stop the private SLURM started by start-slurm.sh (slurmd, slurmctld, munged).
#
# Idempotent: daemons that are not running are skipped. Only the processes
# named in this state directory's pid files are signalled. The state directory
# is kept (pass --purge to remove it, e.g. to start from a clean queue).
set -euo pipefail

DIR="${MOTOKO_SLURM_DIR:-/tmp/motoko-slurm}"

stop_pidfile() {  # stop_pidfile FILE: TERM the process, KILL it after 10 s
    local file="$1" pid i
    [[ -s "$file" ]] || return 0
    pid="$(cat "$file")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

stop_pidfile "$DIR/run/slurmd.pid"
stop_pidfile "$DIR/run/slurmctld.pid"
stop_pidfile "$DIR/munge/run/munged.pid"
if [[ "${1:-}" == "--purge" ]]; then
    rm -rf "$DIR"
fi
echo "stop-slurm: stopped (state in $DIR)" >&2
