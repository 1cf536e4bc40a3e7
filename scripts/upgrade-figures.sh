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
# build: faultbridge-next; each round starts the running build afresh), and reads from the history database how
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

# The in-process subscriber measured: the daemon's own stdout printer
# (`run --print json`, a subscription like any embedder's), which an upgrade
# hands on: the side that acts prints, on the same output. A reader stamps
# each chunk of lines with CLOCK_MONOTONIC as it arrives and writes
# "sequence latency_ns" per fault (latency: the record's timestamp_ns, the
# moment the simulator built its datagram, to that arrival).
cat >"$dir/lat.py" <<'PY'
import os, re, sys, time
out = open(sys.argv[1], "w", buffering=1 << 16)
pat = re.compile(rb'"sequence":(\d+).*?"timestamp_ns":(\d+)|"timestamp_ns":(\d+).*?"sequence":(\d+)')
rest = b""
while True:
    chunk = os.read(0, 1 << 16)
    now = time.monotonic_ns()
    if not chunk:
        break
    data = rest + chunk
    lines = data.split(b"\n")
    rest = lines.pop()
    for line in lines:
        if b'"type":"fault"' not in line:
            continue
        m = pat.search(line)
        if m:
            seq, ts = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
            out.write("%d %d\n" % (int(seq), now - int(ts)))
    out.flush()
PY
py=/usr/bin/python3
[ -x "$py" ] || py=python3
# Each round starts the running build afresh and upgrades it to the other.
start_daemon() {
  rm -f "$dir/print"
  mkfifo "$dir/print"
  "$py" "$dir/lat.py" "$dir/lat-$1.txt" <"$dir/print" &
  pids+=($!)
  "$bin" run --print json --config "$dir/faultbridge.toml" >"$dir/print" 2>>"$dir/daemon.err" &
  pids+=($!)
  for _ in $(seq 200); do
    "$bin" upgrade status --bus "$bus" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "upgrade-figures.sh: the daemon did not come up" >&2
  cat "$dir/daemon.err" >&2
  exit 1
}
# Stops the daemon that acts now (pid $1) and waits until it has gone.
stop_daemon() {
  kill "$1" 2>/dev/null || true
  for _ in $(seq 200); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.05
  done
}

q() { sqlite3 "$dir/history.db" "$1" 2>/dev/null || echo 0; }
# Records of sequence FIRST..LAST recorded, and told as lost.
recorded() { q "select count(*) from events where kind = 'fault' and source = 'expdrv' and sequence between $1 and $2"; }
lost() { q "select coalesce(sum(last_sequence - sequence + 1), 0) from events where kind = 'lost' and source = 'expdrv' and sequence between $1 and $2"; }
now_ms() { date +%s%3N; }
# In-process latency of the faults of sequence FIRST..LAST the printer saw:
# "p50 p99 max" in microseconds and how many it saw.
latency() {
  "$py" - "$dir/lat-$3.txt" "$1" "$2" <<'PY'
import sys
path, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
v = sorted(int(l.split()[1]) for l in open(path) if first <= int(l.split()[0]) <= last)
if not v:
    print("- - - 0")
else:
    q = lambda p: v[min(len(v) - 1, int(p * len(v)))] / 1000
    print("%.0f %.0f %.0f %d" % (q(0.5), q(0.99), v[-1] / 1000, len(v)))
PY
}
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
lat_rows=()
seq_next=1
for round in $(seq "$rounds"); do
  start_daemon "$round"
  read -r r0 l0 t0 < <(flood_and_wait "$seq_next")
  sleep 0.3
  lat0=$(latency "$seq_next" $(( seq_next + count - 1 )) "$round")
  seq_next=$(( seq_next + count ))
  upgrade_to="$next"
  read -r r1 l1 t1 < <(flood_and_wait "$seq_next" do_upgrade)
  sleep 0.3
  lat1=$(latency "$seq_next" $(( seq_next + count - 1 )) "$round")
  lat_rows+=("$round|$lat0|$lat1")
  seq_next=$(( seq_next + count ))
  j="$dir/commit.json"
  pid=$(jq -r .pid "$j"); pids+=("$pid")
  steps=""
  for s in PrepareSplit ExecuteSplit PrepareMerge ExecuteMerge Commit; do
    steps="$steps $(ms "$(jq -r ".step_times_ns.$s // 0" "$j")")"
  done
  printf "%-6s %-22s %-22s %-12s%s\n" "$round" "$r0/$l0/$t0" "$r1/$l1/$t1" "$(ms "$(jq -r .acting_gap_ns "$j")") ms" "$steps"
  stop_daemon "$pid"
done
echo "rec: records in the history; lost: records told as Lost; ms: flood start to the last one recorded"
echo
echo "in-process latency (the acting side's stdout subscriber; record built -> line read), microseconds"
printf "%-6s %-34s %s\n" round "at rest: p50 p99 max (records)" "upgrading: p50 p99 max (records)"
for row in "${lat_rows[@]}"; do
  IFS='|' read -r rd a b <<<"$row"
  read -r a50 a99 amax an <<<"$a"
  read -r b50 b99 bmax bn <<<"$b"
  printf "%-6s %-34s %s\n" "$rd" "$a50 $a99 $amax ($an)" "$b50 $b99 $bmax ($bn)"
done
echo "upgrading: every record of the flood, printed by the old side up to the hand-over and by the new one after"
