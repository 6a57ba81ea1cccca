#!/usr/bin/env bash
# Builds the static release binaries the tests, the demo and the benchmarks run:
# sluice-collector, loggen and pause (static, so they run in FROM scratch images).
# Prints `SLUICE_BIN_DIR=<dir>` as its last line; when sourced, it also exports SLUICE_BIN_DIR.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TARGET=x86_64-unknown-linux-gnu
say "static release build of sluice-collector, loggen and pause (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
# With --target, RUSTFLAGS apply to the target crates only, not to build scripts and proc macros.
(cd "$REPO_ROOT" && RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --target "$TARGET" -p sluice-collector -p sluice-loggen -p sluice-pause)
SLUICE_BIN_DIR="$CARGO_TARGET_DIR/$TARGET/release"
for bin in sluice-collector loggen pause; do
  [ -x "$SLUICE_BIN_DIR/$bin" ] || die "build did not produce $SLUICE_BIN_DIR/$bin"
done
export SLUICE_BIN_DIR
echo "SLUICE_BIN_DIR=$SLUICE_BIN_DIR"
