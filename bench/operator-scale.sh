#!/usr/bin/env bash
# Scale benchmark of sluice-operator against the project's real kube-apiserver harness.
#
#   bench/operator-scale.sh                       # 500 nodes, 10,000 pods, 200 bindings, churn 100/s for 60 s
#   bench/operator-scale.sh --nodes 50 --pods 1000 --bindings 20 --churn-seconds 10   # a quick run
#
# Prints: converge_seconds (operator start → every node has its config), writes_per_node,
# startup_api_requests_total, churn latency percentiles (pod status patched → node config
# carrying the new container id), peak_rss_mib of the operator process. Not a test: figures only.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
cargo build --release -q -p sluice-operator --bin sluice-operator
exec cargo run --release -q -p sluice-operator --example scale -- \
	--operator-bin "$here/target/release/sluice-operator" "$@"
