#!/usr/bin/env bash
# Start a private SLURM cluster with accounting, every file under one folder:
#   tests/slurm/start.sh ROOT [NODES]     then: export SLURM_CONF=ROOT/slurm.conf
# NODES=2 (the default): two nodes, node1 and node2, each a slurmd in network, UTS and mount
# namespaces of its own (tests/slurm/network.sh): its own address, hostname and /etc/hosts, as
# two machines of a cluster have. munged, MariaDB, slurmdbd and slurmctld run in this namespace;
# munge's socket is a file, which the namespaces share. Exits 3, having started nothing, when
# the namespaces cannot be made. NODES=1: one node, `localhost`, on the loopback address.
# Each daemon's PID goes to ROOT/pids/, each namespace and link to ROOT/net; tests/slurm/stop.sh
# reads them to stop and remove exactly these. Needs root and the Debian packages slurm-wlm,
# munge, slurmdbd and mariadb-server (and iproute2 for NODES=2). The ports (16817-16819 for
# SLURM, 13306 for MariaDB), the namespaces' names and the subnet are fixed: one cluster per
# machine at a time.
set -euo pipefail
ROOT=$(realpath "${1:?usage: start.sh ROOT [NODES]}")
NODES=${2:-2}
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
# Ctrl-C in the caller's terminal does not reach it) and record its PID; every command in the
# chain execs the next, so the PID is the daemon's
background() {
  local name=$1; shift
  setsid "$@" >"$ROOT/log/$name.out" 2>&1 &
  echo $! >"$ROOT/pids/$name"
}

if [ "$NODES" = 2 ]; then
  # 3: the caller may start NODES=1 instead, after stop.sh has removed what network.sh made
  bash "$(dirname "$0")/network.sh" "$ROOT" || exit 3
  CONTROLLER=10.217.0.1 NODES_AT="node1=10.217.0.11 node2=10.217.0.12"
else
  CONTROLLER=127.0.0.1 NODES_AT=localhost=127.0.0.1
fi

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

# Each node offers this machine's cores (a job may put two tasks on one node) and three
# quarters of its memory. SlurmctldHost: the controller checks the name (localhost), the nodes
# and clients connect to the address. AccountingStoragePass names the munge socket: without it
# sacct and slurmctld look for the system's munge socket. %n in the slurmd paths is the node's
# name, which keeps the two nodes' spools, logs and PID files apart. No cgroups (no systemd
# here): processes are tracked through /proc.
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 3 / 4)}' /proc/meminfo)
CPUS=$(getconf _NPROCESSORS_ONLN)  # not nproc: it obeys OMP_NUM_THREADS, which the tests pin to 1
cat >"$SLURM_CONF" <<CONF
ClusterName=ci
SlurmctldHost=localhost($CONTROLLER)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$ROOT/state
SlurmdSpoolDir=$ROOT/spool/%n
SlurmctldPidFile=$ROOT/slurmctld.pid
SlurmdPidFile=$ROOT/slurmd-%n.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$CONTROLLER
AccountingStoragePort=16819
AccountingStoragePass=$SOCK
MailProg=/bin/true
ReturnToService=2
KillWait=5
MinJobAge=300
CONF
for node_at in $NODES_AT; do
  echo "NodeName=${node_at%=*} NodeAddr=${node_at#*=} CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN" >>"$SLURM_CONF"
done
echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP" >>"$SLURM_CONF"

background slurmdbd slurmdbd -D
wait_for 30 sacctmgr -n show cluster
sacctmgr -i add cluster ci >/dev/null 2>&1 || true  # already there on a restart
background slurmctld slurmctld -D
# -N: the node's name in slurm.conf, whatever this machine's hostname is. In its namespaces a
# node's slurmd, and every job step it starts, has the node's name as hostname and the cluster's
# hosts file as /etc/hosts (a private bind mount: this machine's /etc/hosts stays as it is).
# nsenter, not `ip netns exec`: that one mounts a /sys without the cgroup mounts slurmd reads.
for node_at in $NODES_AT; do
  node=${node_at%=*}
  mkdir -p "$ROOT/spool/$node"
  if [ "$node" = localhost ]; then
    background "slurmd-$node" slurmd -D -N "$node"
  else
    background "slurmd-$node" nsenter --net="/run/netns/optarena-$node" unshare --uts --mount \
      --propagation private sh -c "hostname $node && mount --bind '$ROOT/hosts' /etc/hosts && exec slurmd -D -N $node"
  fi
done
wait_for 60 sh -c "[ \$(sinfo -h -N -o %t | grep -c '^idle') = $NODES ]"
