#!/usr/bin/env bash
# The whole test suite, on a fresh machine or an old one: installs what the
# tests need when it is missing, then checks formatting and lints, and runs
# every test (unit, property, end-to-end against real sockets, a real
# dbus-daemon and real network namespaces) and the doc examples.
set -euo pipefail
cd "$(dirname "$0")/.."

# --- system packages the tests use (Debian names) ----------------------------
need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
have cc           || need_pkgs+=(gcc libc6-dev)
have ip           || need_pkgs+=(iproute2)
have unshare      || need_pkgs+=(util-linux)
have setpriv      || need_pkgs+=(util-linux)
have dbus-daemon  || need_pkgs+=(dbus-daemon)
have busctl       || need_pkgs+=(systemd)
have gdbus        || need_pkgs+=(libglib2.0-bin)
have fusermount3  || need_pkgs+=(fuse3)
have groff        || need_pkgs+=(groff-base)
have systemd-analyze || need_pkgs+=(systemd)
# The Cockpit page's browser test: cockpit-ws + cockpit-bridge, headless
# Chromium driven by Debian's python3-selenium (hence /usr/bin/python3).
[ -x /usr/lib/cockpit/cockpit-ws ] || [ -x /usr/libexec/cockpit-ws ] || need_pkgs+=(cockpit-ws)
have cockpit-bridge || need_pkgs+=(cockpit-bridge)
[ -d /usr/share/cockpit/shell ] || need_pkgs+=(cockpit-system)
have chromium     || need_pkgs+=(chromium)
have chromedriver || need_pkgs+=(chromium-driver)
/usr/bin/python3 -c 'import selenium' >/dev/null 2>&1 || need_pkgs+=(python3-selenium)
# A real single-node cluster for the Pacemaker tests (and ocf-tester,
# xmllint for its meta-data check; arping for ocf:heartbeat:ethmonitor).
have corosync     || need_pkgs+=(corosync)
have pacemakerd   || need_pkgs+=(pacemaker)
have crm_resource || need_pkgs+=(pacemaker-cli-utils)
have ocf-tester   || need_pkgs+=(resource-agents)
have xmllint      || need_pkgs+=(libxml2-utils)
have arping       || need_pkgs+=(iputils-arping)
have nats-server  || need_pkgs+=(nats-server)
have openssl      || need_pkgs+=(openssl)
# The package test (tests/tests/packages.rs): builds both packages (the
# .rpm with rpmbuild), lints them, and installs them (the .deb depends on
# dbus) in a throw-away root; the file list tests read the RPM's spec with
# rpmspec.
have objcopy      || need_pkgs+=(binutils)
have lintian      || need_pkgs+=(lintian)
have rpmlint      || need_pkgs+=(rpmlint)
have rpm          || need_pkgs+=(rpm)
have rpmbuild     || need_pkgs+=(rpm)
have rpmspec      || need_pkgs+=(rpm)
have cpio         || need_pkgs+=(cpio)
have dbus-send    || need_pkgs+=(dbus-bin)
[ -x /etc/init.d/dbus ] || need_pkgs+=(dbus)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: missing ${need_pkgs[*]} and not root to install them" >&2
    exit 1
  fi
  echo "test.sh: installing ${need_pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
fi

# --- Rust tools ---------------------------------------------------------------
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test.sh: installing cargo-nextest" >&2
  cargo install --locked cargo-nextest
fi
# scripts/package.sh would install it itself, inside the package test's
# time limit: install it first.
if ! cargo deb --version >/dev/null 2>&1; then
  echo "test.sh: installing cargo-deb" >&2
  cargo install --locked cargo-deb --version '^3.8'
fi

# --- privileges: netlink multicast receive and network namespaces -------------
if [ "$(id -u)" -ne 0 ] && [ -z "${FAULTBRIDGE_IN_USERNS:-}" ]; then
  echo "test.sh: not root: re-running inside a user and network namespace (unshare -Urn)" >&2
  exec env FAULTBRIDGE_IN_USERNS=1 unshare -Urn "$0" "$@"
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --doc
# The fuzz targets are a crate of their own (fuzzing itself needs a nightly
# toolchain, see docs/fuzzing.md): they must still build against the
# decoders as they are now.
cargo check --locked --manifest-path ffi/fuzz/Cargo.toml --target-dir target/fuzz --bins --examples
# The end-to-end tests run the real binary: build it before they start.
cargo build --workspace --bins --locked
# The package test packs the release binary: one release build, here, so
# that no test waits for it.
cargo build --release --locked -p faultbridge --bin faultbridge
# Last, so its summary closes the output.
cargo nextest run --workspace --locked --no-fail-fast "$@"
