#!/usr/bin/env bash
# Scale benchmark of sluice-operator against the project's real kube-apiserver harness.
#
#   bench/operator-scale.sh                       # 500 nodes, 10,000 pods, 200 bindings, churn 100/s for 60 s
#   bench/operator-scale.sh --nodes 50 --pods 1000 --bindings 20 --churn-seconds 10   # a quick run
#
#   bench/operator-scale.sh --operator-log /tmp/op.log   # also keep the operator's debug log
#   bench/operator-scale.sh --apiserver-profile /tmp/api.pprof   # Go CPU profile of the apiserver
#   bench/operator-scale.sh --operator-arg=--write-concurrency=64   # pass flags to the operator
#   REPEAT=3 bench/operator-scale.sh                      # three runs, each on a fresh apiserver
#   BASELINE_OPERATOR=/tmp/old/sluice-operator bench/operator-scale.sh ...   # each run first with
#                                      # that operator binary, then with this tree's (A/B figures)
#
# Prints: converge_seconds (operator start → every node has its config), writes_per_node,
# startup_api_requests_total, churn latency percentiles (pod status patched → node config
# carrying the new container id), where the churn time went (the operator's own lag histogram,
# CPU cores used by apiserver+etcd, operator, bench and the whole machine), peak_rss_mib of the
# operator process; then the health phase (--health-seconds, default 120; 0 skips it): one simulated
# collector per node renews its Lease every 10 s with drain figures while pods churn
# (--health-churn-rate, default 10/s), and it prints the operator's status writes against those
# renewals, status writes per drain per minute, API requests per second by verb and resource, the
# operator's CPU and peak RSS, and the time from a figure change to the LogDrain status (p50/p99
# over every renewal and drain).
# Not a test: figures only.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
# Cargo's own default target dir unless the caller chose one (CARGO_TARGET_DIR), so the operator
# that runs is the one just built.
target="${CARGO_TARGET_DIR:-$here/target}"
cargo build --release -q -p sluice-operator --bin sluice-operator --example scale
for round in $(seq 1 "${REPEAT:-1}"); do
	[[ "${REPEAT:-1}" == 1 ]] || echo "=== run $round of $REPEAT"
	if [[ -n "${BASELINE_OPERATOR:-}" ]]; then
		echo "=== baseline operator: $BASELINE_OPERATOR"
		"$target/release/examples/scale" --operator-bin "$BASELINE_OPERATOR" "$@"
		echo "=== this tree's operator"
	fi
	"$target/release/examples/scale" --operator-bin "$target/release/sluice-operator" "$@"
done
