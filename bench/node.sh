#!/usr/bin/env bash
# The collector pod's CPU and peak memory on the real node (figures, not a test): builds the
# images (scripts/images.sh), starts the harness's control plane and node, `helm install`s the
# chart, and runs a loggen pod at each rate for SECONDS, measuring the collector container's
# cgroup (tests/examples/node_bench.rs says how).
#
#   bench/node.sh [SECONDS] [RATE...]      defaults: 30 s at 1000 and 10000 lines/s
#
# Needs root and what scripts/setup.sh installs. Holds the machine's node lock
# (/run/sluice-e2e.lock) while it runs, like the real-node tests.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$REPO_ROOT"
eval "$("$REPO_ROOT/scripts/images.sh" | tail -n1)"
SLUICE_HELM="$(sluice_helm_path)"
export SLUICE_IMAGE_DIR SLUICE_HELM SLUICE_REQUIRE_ALL=1
cargo run -q --locked -p sluice-tests --example node_bench -- "$@"
