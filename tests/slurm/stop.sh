#!/usr/bin/env bash
# Stop the daemons tests/slurm/start.sh started, by the PIDs it recorded, and remove the
# network namespaces and links it made:
#   tests/slurm/stop.sh ROOT
# The SLURM daemons go first, together, then the database and munge they were talking to.
# A daemon still there after 10 s is killed.
ROOT=${1:?usage: stop.sh ROOT}

stop() {
  local pids=() name pid
  for name in "$@"; do
    [ -f "$ROOT/pids/$name" ] || continue
    pid=$(cat "$ROOT/pids/$name")
    kill "$pid" 2>/dev/null && pids+=("$pid")
    rm -f "$ROOT/pids/$name"
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  done
}

stop slurmd-localhost slurmd-node1 slurmd-node2 slurmctld slurmdbd
stop mariadbd munged

# Newest first; a namespace takes its end of a veth pair along, and so the other end too.
if [ -f "$ROOT/net" ]; then
  tac "$ROOT/net" | while read -r kind name; do
    case $kind in
      netns) ip netns delete "$name" 2>/dev/null ;;
      link) ip link delete "$name" 2>/dev/null ;;
    esac
  done
  rm -f "$ROOT/net"
fi
exit 0
