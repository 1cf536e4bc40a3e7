#!/usr/bin/env bash
# Figures of the live upgrade for docs/performance.md: the time of each step,
# how long acting paused when it moved from one side to the other, and the
# ingest of a steady flood through a whole upgrade beside the same flood
# without one.
#
# Runs as root, in a network namespace of its own (unshare -n), with a private
# dbus-daemon on a unix:path= socket. The daemon has D-Bus, history and one
# monitor. Each round floods the expanded driver's netlink group with
# `faultbridge sim flood --rate RATE --count COUNT` twice: once at rest, once
# while `faultbridge upgrade split, merge, commit, finish` runs (to the other
# build: faultbridge-next, then back), and reads from the history database how
# many records arrived, how many were told as lost, and how long until the
# last one was recorded. Step times and the acting pause come from
# `faultbridge upgrade status --json`.
#
#   scripts/upgrade-figures.sh            # builds the release binaries first
#   ROUNDS=5 RATE=50000 COUNT=250000 scripts/upgrade-figures.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/private-bus.sh

if [ "$(id -u)" -ne 0 ]; then
  echo "upgrade-figures.sh: needs root (network namespace, netlink multicast)" >&2
  exit 1
fi
if [ -z "${FAULTBRIDGE_UPGRADE_IN_NETNS:-}" ]; then
  if [ -z "${FAULTBRIDGE_BIN:-}" ]; then
    cargo build --release --locked -p faultbridge --bin faultbridge >&2
    cargo build --release --locked -p faultbridge-tests --bin faultbridge-next >&2
    FAULTBRIDGE_BIN="$PWD/target/release/faultbridge"
    FAULTBRIDGE_NEXT="$PWD/target/release/faultbridge-next"
  fi
  export FAULTBRIDGE_BIN FAULTBRIDGE_NEXT
  exec env FAULTBRIDGE_UPGRADE_IN_NETNS=1 unshare -n "$0" "$@"
fi

bin="$FAULTBRIDGE_BIN"
next="${FAULTBRIDGE_NEXT:?set FAULTBRIDGE_NEXT to the second build (faultbridge-next)}"
for tool in dbus-daemon sqlite3 jq ip; do
  command -v "$tool" >/dev/null || { echo "upgrade-figures.sh: needs $tool" >&2; exit 1; }
done
rounds="${ROUNDS:-3}"
rate="${RATE:-20000}"
count="${COUNT:-100000}"
ip link set lo up
dir="$(mktemp -d /tmp/faultbridge-upgrade.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

start_private_bus "$dir"

cat >"$dir/faultbridge.toml" <<EOF
bus = "$bus"
[sources.expdrv]
netlink_protocol = 2
netlink_group = 1
accept = "root"
recv_buffer = 8388608
[history]
path = "$dir/history.db"
[[monitor]]
name = "mrw-eth0"
category = "NIC"
keyword = "eth0"
adapter = "exec"
command = "/bin/true"
EOF

"$bin" run --config "$dir/faultbridge.toml" 2>"$dir/daemon.err" &
pids+=($!)
for _ in $(seq 200); do
  "$bin" upgrade status --bus "$bus" >/dev/null 2>&1 && break
  sleep 0.05
done
"$bin" upgrade status --bus "$bus" >/dev/null 2>&1 || { echo "upgrade-figures.sh: the daemon did not come up" >&2; cat "$dir/daemon.err" >&2; exit 1; }

q() { sqlite3 "$dir/history.db" "$1" 2>/dev/null || echo 0; }
# Records of sequence FIRST..LAST recorded, and told as lost.
recorded() { q "select count(*) from events where kind = 'fault' and source = 'expdrv' and sequence between $1 and $2"; }
lost() { q "select coalesce(sum(last_sequence - sequence + 1), 0) from events where kind = 'lost' and source = 'expdrv' and sequence between $1 and $2"; }
now_ms() { date +%s%3N; }
ms() { awk -v n="$1" 'BEGIN { printf "%.1f", n / 1e6 }'; }

# Floods COUNT records from sequence $1 and waits until the history holds
# each one or a loss naming it; prints "recorded lost milliseconds".
flood_and_wait() {
  local first=$1 last=$(( $1 + count - 1 ))
  local start; start=$(now_ms)
  "$bin" sim flood --group 1 --seq "$first" --rate "$rate" --count "$count" >"$dir/flood.out" 2>&1 &
  local f=$!
  [ -n "${2:-}" ] && "$2"
  wait "$f" || { echo "upgrade-figures.sh: the flood failed" >&2; cat "$dir/flood.out" >&2; exit 1; }
  local r l
  for _ in $(seq 600); do
    r=$(recorded "$first" "$last"); l=$(lost "$first" "$last")
    [ $(( r + l )) -ge "$count" ] && break
    sleep 0.05
  done
  echo "$r $l $(( $(now_ms) - start ))"
}

upgrade_to=""
do_upgrade() {
  sleep 0.5
  "$bin" upgrade split --bus "$bus" --new-binary "$upgrade_to" >/dev/null
  "$bin" upgrade merge --bus "$bus" >/dev/null
  "$bin" upgrade commit --bus "$bus" --json >"$dir/commit.json"
  "$bin" upgrade finish --bus "$bus" >/dev/null
}

echo "faultbridge live upgrade, $count records at $rate/s per flood, $rounds rounds ($(uname -r), $(nproc) CPUs)"
printf "%-6s %-22s %-22s %-12s %s\n" round "at rest: rec/lost/ms" "upgrading: rec/lost/ms" "acting gap" "steps (ms): PrepareSplit ExecuteSplit PrepareMerge ExecuteMerge Commit"
seq_next=1
for round in $(seq "$rounds"); do
  read -r r0 l0 t0 < <(flood_and_wait "$seq_next")
  seq_next=$(( seq_next + count ))
  if [ $(( round % 2 )) -eq 1 ]; then upgrade_to="$next"; else upgrade_to="$bin"; fi
  read -r r1 l1 t1 < <(flood_and_wait "$seq_next" do_upgrade)
  seq_next=$(( seq_next + count ))
  j="$dir/commit.json"
  pid=$(jq -r .pid "$j"); pids+=("$pid")
  steps=""
  for s in PrepareSplit ExecuteSplit PrepareMerge ExecuteMerge Commit; do
    steps="$steps $(ms "$(jq -r ".step_times_ns.$s // 0" "$j")")"
  done
  printf "%-6s %-22s %-22s %-12s%s\n" "$round" "$r0/$l0/$t0" "$r1/$l1/$t1" "$(ms "$(jq -r .acting_gap_ns "$j")") ms" "$steps"
done
echo "rec: records in the history; lost: records told as Lost; ms: flood start to the last one recorded"
