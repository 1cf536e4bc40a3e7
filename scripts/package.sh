#!/usr/bin/env bash
# Builds the packages of faultbridge from one release build:
#   DIR/debian/faultbridge_V_ARCH.deb           (binary stripped)
#   DIR/debian/faultbridge-dbgsym_V_ARCH.ddeb   (its debug symbols)
#   DIR/rpm/faultbridge-V-R.ARCH.rpm            (binary stripped)
#   DIR/rpm/faultbridge-debuginfo-V-R.ARCH.rpm  (its debug symbols)
# where DIR is cargo's target directory (CARGO_TARGET_DIR, build.target-dir
# or ./target), V the workspace's version and R the RPM's release (1).
#
#   scripts/package.sh [--rpm-release R] [deb] [rpm]
#
# builds the packages named (both when none is), prints the path of the
# .deb, then of the .rpm, then each package's file list
# (FAULTBRIDGE_PACKAGE_QUIET=1: not). The .deb's file list is
# [package.metadata.deb] in bridge/Cargo.toml (cargo-deb, installed when
# missing); the .rpm's is dist/rpm/faultbridge.spec (rpmbuild, from the
# Debian package rpm, installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

release_rpm=1 want_deb= want_rpm=
while [ $# -gt 0 ]; do
  case $1 in
    --rpm-release) release_rpm=${2:?--rpm-release needs a value}; shift 2 ;;
    deb) want_deb=1; shift ;;
    rpm) want_rpm=1; shift ;;
    *) echo "package.sh: unknown argument $1 (usage: package.sh [--rpm-release R] [deb] [rpm])" >&2; exit 2 ;;
  esac
done
case $release_rpm in
  '' | *[!0-9A-Za-z.+~_]*) echo "package.sh: --rpm-release $release_rpm: letters, digits and .+~_ only" >&2; exit 2 ;;
esac
[ -n "$want_deb$want_rpm" ] || want_deb=1 want_rpm=1

if [ -n "$want_deb" ]; then
  cargo deb --version >/dev/null 2>&1 || cargo install --locked cargo-deb --version '^3.8'
fi
if [ -n "$want_rpm" ] && ! command -v rpmbuild >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "package.sh: rpmbuild is missing (Debian package rpm) and not root to install it" >&2
    exit 1
  fi
  echo "package.sh: installing rpm (rpmbuild)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends rpm >&2
fi
for tool in objcopy; do
  command -v "$tool" >/dev/null 2>&1 || { echo "package.sh: $tool is missing (Debian package binutils)" >&2; exit 1; }
done

# Where cargo puts its output, however it was told.
target=$(cargo metadata --format-version 1 --no-deps --locked |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target" ] || { echo "package.sh: cargo metadata gave no target_directory" >&2; exit 1; }
release="$target/release"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
[ -n "$version" ] || { echo "package.sh: no version in Cargo.toml" >&2; exit 1; }

cargo build --release --locked -p faultbridge --bin faultbridge

# faultbridge(1), a page per subcommand, faultbridge.toml(5), compressed as
# Debian and RPM distributions ship them; both file lists take them from
# target/release/man (cargo-deb reads target/release/ as the real
# directory, the spec is given it).
rm -rf "$release/man"
"$release/faultbridge" man --dir "$release/man"
gzip -9n "$release"/man/*

# The .deb and the -dbgsym .ddeb: cargo-deb strips the binary itself.
deb=
if [ -n "$want_deb" ]; then
  cargo deb -p faultbridge --no-build --locked
  deb=$(ls "$target"/debian/faultbridge_"$version"-*.deb)
fi

# The .rpm and the -debuginfo .rpm: the spec copies the files as they are,
# so it gets a stripped binary whose .gnu_debuglink names the debug file.
rpm=
if [ -n "$want_rpm" ]; then
  mkdir -p "$release/rpm"
  objcopy --only-keep-debug --compress-debug-sections=zlib \
    "$release/faultbridge" "$release/rpm/faultbridge.debug"
  objcopy --strip-debug --strip-unneeded \
    --add-gnu-debuglink="$release/rpm/faultbridge.debug" \
    "$release/faultbridge" "$release/rpm/faultbridge"
  # rpmbuild's own tree (BUILD, BUILDROOT…) is scratch in a temporary
  # directory (rpmbuild runs its scripts by a path it does not quote, so
  # that tree must not be under a target directory with a space in it);
  # the packages go to $target/rpm.
  scratch=$(mktemp -d /tmp/faultbridge-rpmbuild.XXXXXX)
  trap 'rm -rf "$scratch"' EXIT
  mkdir -p "$scratch/tmp" "$target/rpm"
  log="$scratch/rpmbuild.log"
  if ! rpmbuild -bb \
    --define "_topdir $scratch" \
    --define "_tmppath $scratch/tmp" \
    --define "_rpmdir $target/rpm" \
    --define '_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm' \
    --define "fb_version $version" \
    --define "fb_release $release_rpm" \
    --define "fb_source $PWD" \
    --define "fb_built $release" \
    dist/rpm/faultbridge.spec >"$log" 2>&1; then
    cat "$log" >&2
    echo "package.sh: rpmbuild failed" >&2
    exit 1
  fi
  grep -i '^warning' "$log" >&2 || :
  rpm=$(sed -n "s|^Wrote: \(.*/faultbridge-$version-$release_rpm\.[^/]*\.rpm\)\$|\1|p" "$log")
  [ -n "$rpm" ] || { cat "$log" >&2; echo "package.sh: rpmbuild wrote no faultbridge package" >&2; exit 1; }
fi

[ -z "$deb" ] || echo "$deb"
[ -z "$rpm" ] || echo "$rpm"
[ -n "${FAULTBRIDGE_PACKAGE_QUIET:-}" ] && exit 0
[ -z "$deb" ] || { echo "== $deb"; dpkg-deb -c "$deb"; }
[ -z "$rpm" ] || { echo "== $rpm"; rpm -qlvp "$rpm"; }
