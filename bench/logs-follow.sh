#!/usr/bin/env bash
# `kubectl sluice logs -f` under load: time from a line written to it printed, and the
# collector's CPU and shipping rate without a follower, with a fast one and with a slow one.
# See bench/README.md ("Follow latency"). Not part of CI.
#
#   bench/logs-follow.sh                      # 50 pods, 2,000 lines/s in all, 20 s per phase
#   PODS=10 RATE=500 PHASE_SECONDS=5 bench/logs-follow.sh
#
# Environment: PODS, RATE (lines/s in all), PHASE_SECONDS, SLOW_MS (the slow follower's pause
# per line, default 5); SLUICE_BIN_DIR (the static collector; else scripts/build.sh runs).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$REPO_ROOT"
if [[ -z "${SLUICE_BIN_DIR:-}" ]]; then
  eval "$("$REPO_ROOT/scripts/build.sh" | tail -n1)"
fi
export SLUICE_BIN_DIR SLUICE_REQUIRE_ALL=1
# The dev profile: the plugin and the operator's logs API are I/O-bound; the collector measured
# is the static release build.
cargo bench --locked -p kubectl-sluice --bench logs_follow --profile dev
