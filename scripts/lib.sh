# Shared helpers for sluice's scripts (sourced, not run).
# Machine-level cache: survives fresh clones, so CI does not rebuild or re-download everything.
SLUICE_CACHE="${SLUICE_CACHE:-/var/cache/sluice}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SLUICE_CACHE REPO_ROOT
# Build into the machine cache unless the caller chose a target dir.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SLUICE_CACHE/target}"
# Where scripts/setup.sh unpacks syslog-ng (it conflicts with rsyslog in apt, so it is not installed).
export SLUICE_SYSLOG_NG_ROOT="${SLUICE_SYSLOG_NG_ROOT:-$SLUICE_CACHE/syslog-ng/root}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf '\033[1;31merror: %s\033[0m\n' "$*" >&2; exit 1; }

# helm, built by scripts/setup.sh into the machine cache (one binary per pinned version).
HELM_VERSION=v3.19.5
HELM_K8S_MINOR=34   # the k8s.io/* v0.34 modules helm v3.19.5 is built with (its Makefile's default)
export HELM_VERSION HELM_K8S_MINOR
sluice_helm_path() { printf '%s/bin/helm-%s\n' "$SLUICE_CACHE" "$HELM_VERSION"; }
