# Sourced by the measurement scripts (rss.sh, upgrade-figures.sh).
#
# start_private_bus DIR: starts a dbus-daemon open to every user on
# unix:path=DIR/bus, adds its pid to the caller's `pids` array, and once the
# bus accepts connections (it prints its address only then) sets `bus` to
# that address.
start_private_bus() {
  local dir="$1"
  cat >"$dir/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$dir/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
CONF
  dbus-daemon --config-file="$dir/bus.conf" --nofork --nopidfile --print-address \
    >"$dir/bus.address" 2>/dev/null &
  pids+=($!)
  for _ in $(seq 200); do
    if [ -s "$dir/bus.address" ]; then
      bus="unix:path=$dir/bus"
      return 0
    fi
    sleep 0.05
  done
  echo "the private dbus-daemon did not start" >&2
  return 1
}
