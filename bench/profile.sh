#!/usr/bin/env bash
# Profile sluice-collector on a workload with perf (cpu-clock sampling: this machine's virtual CPUs
# expose no hardware counters) and print the hottest symbols.
#
#   bench/profile.sh SLUICE_COLLECTOR DOCKER_ROOT LINES OUT_DIR
#
# Usually called by `PERF=1 bench/collector.sh`, which passes the single-file workload. Prints the
# flat profile (self time per symbol) and the time per thread, and leaves perf.data (with DWARF
# call graphs, for `perf report -G`) in OUT_DIR.
set -euo pipefail

if [[ $# -ne 4 ]]; then
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
SLUICE="$1" ROOT="$2" LINES="$3" OUT="$4"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../scripts/lib.sh
[[ -f "$REPO/scripts/lib.sh" ]] && source "$REPO/scripts/lib.sh"
TOOLS="${CARGO_TARGET_DIR:-$REPO/target}/release"
command -v perf >/dev/null || { echo "profile: perf is missing (apt-get install linux-perf)" >&2; exit 1; }

mkdir -p "$OUT/state"
# perf is the shipper's parent here; when bench-run stops it with SIGTERM, perf stops the
# collector and writes perf.data. The figures of this run include perf's own work: the benchmark
# figures come from the unprofiled runs.
"$TOOLS/bench-run" --shipper sluice-perf --workload profile --expect "$LINES" \
    --results "$OUT/results.tsv" --log "$OUT/output.log" --var "DOCKER_ROOT=$ROOT" \
    --render "$REPO/bench/configs/sluice.yaml.tmpl=$OUT/sluice.yaml" -- \
    perf record -F 999 --call-graph dwarf,16384 -e cpu-clock -o "$OUT/perf.data" -- \
    "$SLUICE" --config "$OUT/sluice.yaml" --state-dir "$OUT/state" --listen "127.0.0.1:@FREE_PORT@" \
    --grace-period 2 --allow-destinations 127.0.0.0/8

echo "== flat profile (self time), sluice-collector on $LINES lines"
perf report -i "$OUT/perf.data" --stdio --no-children --sort dso,symbol --percent-limit 0.7 2>/dev/null |
    grep -E '^ +[0-9.]+%' | sed -E 's/[[:space:]]+$//' | cut -c1-160 | head -40 || true
echo "== by thread"
perf report -i "$OUT/perf.data" --stdio --no-children --sort comm --percent-limit 1 2>/dev/null |
    grep -E '^ +[0-9.]+%' | sed -E 's/[[:space:]]+$//' | head -10 || true
echo "== callers: perf report -i $OUT/perf.data --stdio --no-children -G -S '<symbol>'"
