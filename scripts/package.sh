#!/usr/bin/env bash
# Builds the packages of faultbridge from one release build:
#   DIR/debian/faultbridge_V_ARCH.deb           (binary stripped)
#   DIR/debian/faultbridge-dbgsym_V_ARCH.ddeb   (its debug symbols)
#   DIR/generate-rpm/faultbridge-V.ARCH.rpm     (binary stripped)
#   DIR/generate-rpm/faultbridge-debuginfo-V.ARCH.rpm
# where DIR is cargo's target directory (CARGO_TARGET_DIR, build.target-dir
# or ./target). Installs cargo-deb and cargo-generate-rpm when missing, then
# prints each package's file list (FAULTBRIDGE_PACKAGE_QUIET=1: not).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo deb --version >/dev/null 2>&1 || cargo install --locked cargo-deb --version '^3.8'
cargo generate-rpm --version >/dev/null 2>&1 || cargo install --locked cargo-generate-rpm --version '^0.21'
for tool in objcopy; do
  command -v "$tool" >/dev/null 2>&1 || { echo "package.sh: $tool is missing (Debian package binutils)" >&2; exit 1; }
done

# Where cargo puts its output, however it was told.
target=$(cargo metadata --format-version 1 --no-deps --locked |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target" ] || { echo "package.sh: cargo metadata gave no target_directory" >&2; exit 1; }
release="$target/release"

cargo build --release --locked -p faultbridge --bin faultbridge

# faultbridge(1), a page per subcommand, faultbridge.toml(5), compressed as
# Debian and RPM distributions ship them; the asset
# lists take them from target/release/man (cargo-deb and cargo-generate-rpm
# read target/release/ as the real directory).
rm -rf "$release/man"
"$release/faultbridge" man --dir "$release/man"
gzip -9n "$release"/man/*

# The .deb and the -dbgsym .ddeb: cargo-deb strips the binary itself.
cargo deb -p faultbridge --no-build --locked

# The .rpm: cargo-generate-rpm packages the binary as it finds it, so it
# gets a stripped copy whose .gnu_debuglink names the debuginfo file.
mkdir -p "$release/rpm"
objcopy --only-keep-debug --compress-debug-sections=zlib \
  "$release/faultbridge" "$release/rpm/faultbridge.debug"
objcopy --strip-debug --strip-unneeded \
  --add-gnu-debuglink="$release/rpm/faultbridge.debug" \
  "$release/faultbridge" "$release/rpm/faultbridge"
cargo generate-rpm -p bridge
cargo generate-rpm -p bridge --variant debuginfo

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
deb=$(ls "$target"/debian/faultbridge_"$version"-*.deb)
rpm=$(ls "$target"/generate-rpm/faultbridge-"$version"-*.rpm)
echo "$deb"
echo "$rpm"
[ -n "${FAULTBRIDGE_PACKAGE_QUIET:-}" ] && exit 0
echo "== $deb"; dpkg-deb -c "$deb"
echo "== $rpm"
if command -v rpm >/dev/null 2>&1; then rpm -qlp "$rpm"; else echo "(install the rpm package to list it: rpm -qlp $rpm)"; fi
