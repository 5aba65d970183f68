#!/usr/bin/env bash
# The network of the two-node test cluster (tests/slurm/start.sh runs it):
#   tests/slurm/network.sh ROOT
# A bridge in this namespace at 10.217.0.1, where the controller is reached, and for each node a
# network namespace joined to it by a veth pair, node1 at 10.217.0.11 and node2 at 10.217.0.12.
# ROOT/hosts names all three for the nodes' own /etc/hosts. Each namespace and link goes to
# ROOT/net before the next is made, so tests/slurm/stop.sh removes what a failed start left.
# Needs CAP_NET_ADMIN, iproute2 and util-linux (unshare); fails with what is missing.
set -euo pipefail
ROOT=$(realpath "${1:?usage: network.sh ROOT}")
BRIDGE=optarena0
SUBNET=10.217.0

command -v ip >/dev/null || { echo "network.sh: no ip command (Debian package iproute2)" >&2; exit 1; }
# the nodes' slurmd get a hostname and an /etc/hosts of their own: check that now, not at their start
unshare --uts --mount --propagation private true
for n in 1 2; do
  if [ -e "/run/netns/optarena-node$n" ]; then
    echo "network.sh: network namespace optarena-node$n exists: is another test cluster running?" \
      "(tests/slurm/stop.sh ROOT)" >&2
    exit 1
  fi
done

ip link add "$BRIDGE" type bridge && echo "link $BRIDGE" >>"$ROOT/net"
ip addr add "$SUBNET.1/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
for n in 1 2; do
  ns=optarena-node$n
  ip netns add "$ns" && echo "netns $ns" >>"$ROOT/net"
  ip link add "optarena-n$n" type veth peer name eth0 netns "$ns" && echo "link optarena-n$n" >>"$ROOT/net"
  ip link set "optarena-n$n" master "$BRIDGE" up
  ip -n "$ns" addr add "$SUBNET.1$n/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
done
{
  echo "127.0.0.1 localhost"
  echo "$SUBNET.1 controller"
  for n in 1 2; do echo "$SUBNET.1$n node$n"; done
} >"$ROOT/hosts"
