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
