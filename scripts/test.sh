#!/usr/bin/env bash
# THE test command (CI runs it through .ci/run): setup → static build → fmt → clippy → tests → drift checks.
# Every end-to-end test runs against real parts (Docker, rsyslog, syslog-ng, HTTP); with
# SLUICE_REQUIRE_ALL=1 a test whose part is missing fails instead of skipping.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

"$REPO_ROOT/scripts/setup.sh"
eval "$("$REPO_ROOT/scripts/build.sh" | tail -n1)"
# The real node's tests import these (FROM scratch around static binaries; no pulls). The
# collector, loggen and pause binaries are the ones just built; the operator's is built here once
# and is then cached in $CARGO_TARGET_DIR like the others.
eval "$("$REPO_ROOT/scripts/images.sh" collector operator loggen pause | tail -n1)"
export SLUICE_BIN_DIR SLUICE_IMAGE_DIR SLUICE_REQUIRE_ALL=1
SLUICE_HELM="$(sluice_helm_path)"   # the pinned helm, for tests/tests/chart.rs
export SLUICE_HELM

say "cargo fmt --all -- --check"
cargo fmt --all -- --check

say "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "cargo test --workspace (SLUICE_BIN_DIR=$SLUICE_BIN_DIR SLUICE_REQUIRE_ALL=1)"
cargo test --workspace --locked --no-fail-fast

# ---- drift checks: regenerate generated files and fail when they differ from the commit ----
say "drift check: crds/ is what crdgen writes from the Rust types"
generated="$(mktemp -d)"
trap 'rm -rf "$generated"' EXIT
cargo run -q --locked -p sluice-api --features crd --bin crdgen -- "$generated"
diff -ru "$generated" crds/ || die "crds/ is stale: run cargo run -p sluice-api --features crd --bin crdgen"
say "drift check: charts/sluice/crds/ is crds/"
diff -ru crds/ charts/sluice/crds/ || die "charts/sluice/crds/ differs from crds/: cp crds/*.yaml charts/sluice/crds/"
# ---- end of drift checks ----

say "all checks passed"
