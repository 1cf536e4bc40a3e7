#!/usr/bin/env bash
# The daemon's memory at rest and during a storm, with everything on: every
# source (expanded driver over netlink and its char device, rtnetlink, FC
# transport, uevents), D-Bus, history and one monitor.
#
# Runs as root, in a network namespace of its own (unshare -n), with a private
# dbus-daemon on a unix:path= socket and the simulator's char device on a FUSE
# mount in a temporary directory. Reads VmRSS and VmHWM of the daemon from
# /proc: at rest after start-up, then floods the expanded driver's netlink
# group with `faultbridge sim flood --rate 1000000 --count N` (N = $COUNT,
# default 1 000 000) while sampling VmRSS, waits until the history writer has
# every row, and reads both again.
#
#   scripts/rss.sh                       # builds the release binary first
#   FAULTBRIDGE_BIN=path/to/faultbridge COUNT=200000 scripts/rss.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/private-bus.sh

if [ "$(id -u)" -ne 0 ]; then
  echo "rss.sh: needs root (network namespace, FUSE, netlink multicast)" >&2
  exit 1
fi
if [ -z "${FAULTBRIDGE_RSS_IN_NETNS:-}" ]; then
  if [ -z "${FAULTBRIDGE_BIN:-}" ]; then
    cargo build --release --locked -p faultbridge --bin faultbridge >&2
    FAULTBRIDGE_BIN="$PWD/target/release/faultbridge"
  fi
  export FAULTBRIDGE_BIN
  exec env FAULTBRIDGE_RSS_IN_NETNS=1 unshare -n "$0" "$@"
fi

bin="$FAULTBRIDGE_BIN"
for tool in dbus-daemon fusermount3 sqlite3 ip; do
  command -v "$tool" >/dev/null || { echo "rss.sh: needs $tool (Debian: dbus-daemon fuse3 sqlite3 iproute2)" >&2; exit 1; }
done
count="${COUNT:-1000000}"
ip link set lo up
dir="$(mktemp -d /tmp/faultbridge-rss.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  fusermount3 -u "$dir/mnt" 2>/dev/null || umount "$dir/mnt" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# A private bus, open to everyone (like a session bus).
start_private_bus "$dir"

# The simulator's char device (FUSE), beside the netlink group it reports.
mkdir "$dir/mnt"
"$bin" sim device --mount "$dir/mnt" --group 1 --control "$dir/control" >"$dir/device.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -e "$dir/mnt/expdrv0" ] && break; sleep 0.05; done
[ -e "$dir/mnt/expdrv0" ] || { echo "rss.sh: the simulated device did not appear" >&2; cat "$dir/device.out" >&2; exit 1; }

cat >"$dir/faultbridge.toml" <<EOF
bus = "$bus"
[sources.expdrv]
netlink_protocol = 2
netlink_group = 1
# The simulator floods as root, from user space.
accept = "root"
device = "$dir/mnt/expdrv0"
[sources.rtnetlink]
enabled = true
[sources.fc]
enabled = true
# This kernel may have no SCSI transport netlink (no FC HBA driver loaded):
# the FC source reads a NETLINK_USERSOCK group instead, at the same cost.
netlink_protocol = 2
netlink_group = 4
[sources.uevent]
enabled = true
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
daemon=$!
pids+=("$daemon")
for _ in $(seq 200); do
  kill -0 "$daemon" 2>/dev/null || break
  "$bin" status --bus "$bus" >/dev/null 2>&1 && break
  sleep 0.05
done
"$bin" status --bus "$bus" >/dev/null 2>&1 || { echo "rss.sh: the daemon did not come up" >&2; cat "$dir/daemon.err" >&2; exit 1; }

mem() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$daemon/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
rows() { sqlite3 "$dir/history.db" 'select count(*) from events' 2>/dev/null || echo -1; }

sleep 3
rest_rss=$(mem VmRSS)
rest_anon=$(mem RssAnon)

# The storm: sample VmRSS every 20 ms while it lasts.
peak=0
"$bin" sim flood --group 1 --rate 1000000 --count "$count" >"$dir/flood.out" 2>&1 &
flood=$!
while kill -0 "$flood" 2>/dev/null; do
  r=$(mem VmRSS); [ "$r" -gt "$peak" ] && peak=$r
  sleep 0.02
done
wait "$flood" || { echo "rss.sh: the flood failed" >&2; cat "$dir/flood.out" >&2; exit 1; }
# Until the history writer has caught up (its row count stops moving).
last=-1
for _ in $(seq 120); do
  r=$(mem VmRSS); [ "$r" -gt "$peak" ] && peak=$r
  n=$(rows)
  [ "$n" = "$last" ] && break
  last=$n
  sleep 0.5
done
sleep 3
after_rss=$(mem VmRSS)
after_anon=$(mem RssAnon)
hwm=$(mem VmHWM)

echo "faultbridge memory, every source + D-Bus + history + 1 monitor ($(uname -r), $(nproc) CPUs)"
echo "  at rest after start-up:        VmRSS $(mib "$rest_rss") MiB (anonymous $(mib "$rest_anon") MiB)"
echo "  during $count records at 1 000 000/s: VmRSS peak sampled $(mib "$peak") MiB, VmHWM $(mib "$hwm") MiB"
echo "  at rest after the storm:       VmRSS $(mib "$after_rss") MiB (anonymous $(mib "$after_anon") MiB; history rows: $last)"
echo "  flood: $(tail -n 1 "$dir/flood.out")"
