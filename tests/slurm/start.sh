#!/usr/bin/env bash
# Start a private single-node SLURM cluster with accounting, every file under one folder:
#   tests/slurm/start.sh ROOT     then: export SLURM_CONF=ROOT/slurm.conf
# Daemons: munged, MariaDB, slurmdbd, slurmctld, slurmd. Each one's PID goes to ROOT/pids/, which
# tests/slurm/stop.sh reads to stop exactly these processes. Needs root and the Debian packages
# slurm-wlm, munge, slurmdbd and mariadb-server. The ports are fixed (16817-16819 for SLURM,
# 13306 for MariaDB): one cluster per machine at a time.
set -euo pipefail
ROOT=$(realpath "${1:?usage: start.sh ROOT}")
mkdir -p "$ROOT"/{munge,state,spool,log,db,pids}
chmod 700 "$ROOT/munge"
SOCK=$ROOT/munge/munge.socket
export SLURM_CONF=$ROOT/slurm.conf

# wait_for SECONDS COMMAND...: poll until COMMAND succeeds
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then echo "start.sh: timed out waiting for: $*" >&2; return 1; fi
    sleep 0.1
  done
}

# background NAME COMMAND...: start a daemon in the foreground mode of its own session (so a
# Ctrl-C in the caller's terminal does not reach it) and record its PID
background() {
  local name=$1; shift
  setsid "$@" >"$ROOT/log/$name.out" 2>&1 &
  echo $! >"$ROOT/pids/$name"
}

# munge: the credential service every SLURM daemon and client authenticates through
if [ ! -f "$ROOT/munge/munge.key" ]; then
  head -c 1024 /dev/urandom >"$ROOT/munge/munge.key"
  chmod 400 "$ROOT/munge/munge.key"
fi
background munged munged --foreground --force --socket="$SOCK" --key-file="$ROOT/munge/munge.key" \
  --log-file="$ROOT/log/munged.log" --pid-file="$ROOT/munge/munged.pid" --seed-file="$ROOT/munge/munged.seed"
wait_for 10 test -S "$SOCK"

# MariaDB holds the accounting records: without them sacct has nothing to say, and a job that
# ends without a result (cancelled, killed) is invisible to submitit.
if [ ! -d "$ROOT/db/data" ]; then
  mariadb-install-db --user=root --datadir="$ROOT/db/data" --auth-root-authentication-method=normal \
    >"$ROOT/log/mariadb-install.log" 2>&1
fi
background mariadbd mariadbd --user=root --datadir="$ROOT/db/data" --socket="$ROOT/db/mysqld.sock" \
  --port=13306 --bind-address=127.0.0.1 --skip-name-resolve --innodb-buffer-pool-size=64M \
  --pid-file="$ROOT/db/mysqld.pid" --log-error="$ROOT/log/mariadb.log"
wait_for 30 mariadb --socket="$ROOT/db/mysqld.sock" -uroot -e "select 1"
mariadb --socket="$ROOT/db/mysqld.sock" -uroot -e "
  CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"

# slurmdbd reads slurmdbd.conf from SLURM_CONF's folder and refuses it unless only root can read it.
cat >"$ROOT/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$SOCK
DbdHost=localhost
DbdPort=16819
SlurmUser=root
PidFile=$ROOT/slurmdbd.pid
LogFile=$ROOT/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=13306
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONF
chmod 600 "$ROOT/slurmdbd.conf"

# The node offers this machine's cores and three quarters of its memory. AccountingStoragePass
# names the munge socket: without it sacct and slurmctld look for the system's munge socket.
# No cgroups (no systemd here): processes are tracked through /proc.
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 3 / 4)}' /proc/meminfo)
cat >"$SLURM_CONF" <<CONF
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$ROOT/state
SlurmdSpoolDir=$ROOT/spool
SlurmctldPidFile=$ROOT/slurmctld.pid
SlurmdPidFile=$ROOT/slurmd.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=16819
AccountingStoragePass=$SOCK
MailProg=/bin/true
ReturnToService=2
KillWait=5
MinJobAge=300
# getconf, not nproc: nproc obeys OMP_NUM_THREADS, which the tests pin to 1
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(getconf _NPROCESSORS_ONLN) RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

background slurmdbd slurmdbd -D
wait_for 30 sacctmgr -n show cluster
sacctmgr -i add cluster ci >/dev/null 2>&1 || true  # already there on a restart
background slurmctld slurmctld -D
# -N: the node's name in slurm.conf, whatever this machine's hostname is
background slurmd slurmd -D -N localhost
wait_for 60 sh -c 'sinfo -h -o %t | grep -q "^idle"'
