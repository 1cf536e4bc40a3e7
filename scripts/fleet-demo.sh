#!/usr/bin/env bash
# The fleet in one command: one NATS JetStream server, three faultbridge
# daemons (node1, node2, node3), each in a network namespace of its own with
# its own driver simulator, forwarding to the server over a veth pair;
# `faultbridge fleet watch` shows the faults of all three as they arrive.
# Then the server is killed (SIGKILL) in the middle of a flood of every host
# and started again, and `faultbridge fleet status` shows every fault of
# every host in the stream, once.
#
#   sudo scripts/fleet-demo.sh              # builds the release binary first
#   sudo FAULTBRIDGE_BIN=target/debug/faultbridge COUNT=5000 scripts/fleet-demo.sh
#
# Needs root (network namespaces), nats-server (Debian: nats-server) and ip
# (iproute2). Runs in a network namespace of its own (unshare -n); what it
# starts is stopped and removed when it ends, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "fleet-demo.sh: needs root (network namespaces, netlink multicast)" >&2
  exit 1
fi
for tool in nats-server ip unshare; do
  command -v "$tool" >/dev/null || { echo "fleet-demo.sh: needs $tool (Debian: nats-server iproute2 util-linux)" >&2; exit 1; }
done
if [ -z "${FAULTBRIDGE_FLEET_IN_NETNS:-}" ]; then
  if [ -z "${FAULTBRIDGE_BIN:-}" ]; then
    cargo build --release --locked -p faultbridge --bin faultbridge >&2
    FAULTBRIDGE_BIN="$PWD/target/release/faultbridge"
  fi
  FAULTBRIDGE_BIN="$(realpath "$FAULTBRIDGE_BIN")"
  export FAULTBRIDGE_BIN
  exec env FAULTBRIDGE_FLEET_IN_NETNS=1 unshare -n "$0" "$@"
fi

fb="$FAULTBRIDGE_BIN"
count="${COUNT:-20000}"
ip link set lo up
dir="$(mktemp -d /tmp/faultbridge-fleet.XXXXXX)"
pids=()
nets=()
nats_pid=""
cleanup() {
  for p in "${pids[@]}" $nats_pid; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in "${nets[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# --- the server: JetStream, a free port (-p -1), on every address ------------
start_nats() {
  nats-server -js -a 0.0.0.0 -p "$1" -n fleet-demo -sd "$dir/js" 2>>"$dir/nats.log" &
  nats_pid=$!
}
: >"$dir/nats.log"
start_nats -1
for _ in $(seq 100); do
  port="$(sed -n 's/.*Listening for client connections on 0.0.0.0:\([0-9]*\).*/\1/p' "$dir/nats.log" | head -1)"
  [ -n "$port" ] && break
  sleep 0.05
done
[ -n "${port:-}" ] || { echo "fleet-demo.sh: nats-server did not start:" >&2; cat "$dir/nats.log" >&2; exit 1; }
url="nats://127.0.0.1:$port"
say "JetStream server on port $port"

# --- three hosts: a namespace, a veth pair, a daemon, a simulator -------------
for i in 1 2 3; do
  ns="fbdemo$$n$i"
  ip netns add "$ns"
  nets+=("$ns")
  ip link add "fbo$i" type veth peer name "fbi$i" netns "$ns"
  ip addr add "10.232.$i.1/30" dev "fbo$i"
  ip link set "fbo$i" up
  ip netns exec "$ns" ip addr add "10.232.$i.2/30" dev "fbi$i"
  ip netns exec "$ns" ip link set "fbi$i" up
  ip netns exec "$ns" ip link set lo up
  cat >"$dir/node$i.toml" <<CONF
bus = "none"
[sources.expdrv]
accept = "root"
netlink_protocol = 2
netlink_group = 1
[history]
path = "$dir/node$i.db"
[forward.nats]
servers = ["nats://10.232.$i.1:$port"]
host = "node$i"
CONF
  ip netns exec "$ns" "$fb" run --config "$dir/node$i.toml" 2>"$dir/node$i.log" &
  pids+=($!)
  echo "node$i: namespace $ns, 10.232.$i.2 -> server at 10.232.$i.1:$port"
done
sim() { local i="$1"; shift; ip netns exec "fbdemo$$n$i" "$fb" sim "$@" >/dev/null; }
sleep 1

say "faultbridge fleet watch (live): a few faults on each host"
"$fb" fleet watch --nats "$url" &
watch_pid=$!
pids+=("$watch_pid")
sleep 0.5
sim 1 send -k NIC.eth0 --severity fatal
sim 2 send -k FC.host3 --severity fatal
sim 3 send -k HA/SS.db1 --severity error
sim 1 send -k NIC.eth0 --clear --seq 2
sim 2 send -k "FC.host 4" --seq 2 --severity warning
sleep 1.5
kill "$watch_pid" 2>/dev/null || true
wait "$watch_pid" 2>/dev/null || true

say "a flood of $count records on every host; the server is killed in the middle"
for i in 1 2 3; do
  seq0=$([ "$i" = 3 ] && echo 2 || echo 3)
  sim "$i" flood --rate 20000 --count "$count" --seq "$seq0" &
  flood[$i]=$!
done
sleep 0.4
{ kill -KILL "$nats_pid"; wait "$nats_pid"; } 2>/dev/null || true
echo "nats-server killed (SIGKILL)"
for i in 1 2 3; do wait "${flood[$i]}"; done
echo "floods done; every daemon records on, and says it cannot reach the server:"
sleep 1
grep -h "forward:" "$dir"/node*.log | grep -v "connected to\|created stream" | sort -u | head -3 | sed 's/^/  /'

say "the server starts again (same port, same store)"
start_nats "$port"
want=$((3 * count + 5))
for _ in $(seq 600); do
  got="$("$fb" fleet status --nats "$url" --json 2>/dev/null | sed -n 's/.*"messages":\([0-9]*\).*/\1/p' || true)"
  [ "${got:-0}" -ge "$want" ] && break
  [ -n "${FLEET_DEMO_DEBUG:-}" ] && echo "got ${got:-?}" >&2
  sleep 0.1
done
"$fb" fleet status --nats "$url"
if [ "${got:-0}" -eq "$want" ]; then
  say "every record of every host is in the stream once: $got of $want"
else
  say "the stream holds $got messages, $want expected"
  exit 1
fi
