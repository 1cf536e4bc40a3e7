#!/usr/bin/env bash
# Builds the .deb and the .rpm of faultbridge into target/debian and
# target/generate-rpm, installing cargo-deb and cargo-generate-rpm when
# missing, and prints each package's file list.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo deb --version >/dev/null 2>&1 || cargo install --locked cargo-deb
cargo generate-rpm --version >/dev/null 2>&1 || cargo install --locked cargo-generate-rpm
cargo build --release --locked -p faultbridge --bin faultbridge
mkdir -p target/man
# faultbridge(1), a page per subcommand, faultbridge.toml(5)
./target/release/faultbridge man --dir target/man
cargo deb -p faultbridge --no-build
cargo generate-rpm -p bridge
deb=$(ls -t target/debian/faultbridge_*.deb | head -1)
rpm=$(ls -t target/generate-rpm/faultbridge-*.rpm | head -1)
echo "== $deb"; dpkg-deb -c "$deb"
echo "== $rpm"
if command -v rpm >/dev/null 2>&1; then rpm -qlp "$rpm"; else echo "(install the rpm package to list it: rpm -qlp $rpm)"; fi
