#!/usr/bin/env bash
# The cluster demo: builds what it needs, starts the test harness's control plane and real node
# (upstream kubelet on containerd), `helm install`s the chart, runs demo pods in two namespaces,
# each with its own LogDrain to a local rsyslog receiver, applies examples/cluster/, and shows
# the lines arriving plus `kubectl get logdrains,logbindings -A`; it prints how to use kubectl
# against the cluster. Ctrl-C removes everything (pods, node, control plane, receivers).
#
#   scripts/demo.sh            the cluster demo
#   scripts/demo.sh --docker   the standalone demo instead (Docker containers → sluice-collector → rsyslog)
#
# Needs root on Debian 12 (scripts/setup.sh installs the packages).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case "${1:-}" in
  --docker) shift; exec "$REPO_ROOT/scripts/demo-docker.sh" "$@" ;;
  "") ;;
  -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "demo.sh: unknown argument '$1' (--docker for the standalone demo)" ;;
esac

"$REPO_ROOT/scripts/setup.sh"
eval "$("$REPO_ROOT/scripts/build.sh" | tail -n1)"
eval "$("$REPO_ROOT/scripts/images.sh" | tail -n1)"
SLUICE_HELM="$(sluice_helm_path)"
export SLUICE_BIN_DIR SLUICE_IMAGE_DIR SLUICE_HELM SLUICE_REQUIRE_ALL=1
say "building the demo driver"
(cd "$REPO_ROOT" && cargo build -q --locked -p sluice-tests --example cluster_demo)
# The driver runs in a session of its own: a Ctrl-C at the terminal signals the terminal's
# foreground process group, which would otherwise include the apiserver, kubelet and containerd
# the driver started, and they would die before the driver could take its pods down in order.
# This script takes the Ctrl-C and passes it to the driver, which then removes everything.
setsid "$CARGO_TARGET_DIR/debug/examples/cluster_demo" &
driver=$!
trap 'kill -INT "$driver" 2>/dev/null || true' INT TERM
status=0
while kill -0 "$driver" 2>/dev/null; do
  wait "$driver" && status=0 || status=$?
done
exit "$status"
