#!/usr/bin/env bash
# The collector benchmark: sluice-collector against rsyslog and syslog-ng on the same Docker
# json-file workloads, each shipping to a counting TCP syslog receiver. See bench/README.md.
#
#   bench/collector.sh                 # full run (2,000,000 lines single file; 200 x 10,000 lines)
#   bench/collector.sh --quick         # the same at 1/10 scale (harness check, ~2 minutes)
#   SHIPPERS="rsyslog syslog-ng" bench/collector.sh      # a subset
#   SHIPPERS="standin rsyslog" bench/collector.sh        # the naive stand-in instead of sluice
#   BASELINE_COLLECTOR=/path/to/older/sluice-collector SHIPPERS="rsyslog baseline sluice" \
#     bench/collector.sh                 # A/B: another build of the collector, run in turn with sluice
#
# Environment:
#   BENCH_DIR        work directory (workloads ~1 GiB, configs, logs, results); default /var/tmp/sluice-bench
#   SHIPPERS         which shippers, in order; default "rsyslog syslog-ng sluice"
#   WORKLOADS        which workloads; default "single many many-drain-down"
#   SLUICE_COLLECTOR path of sluice-collector; else $SLUICE_BIN_DIR/sluice-collector, else the
#                    static release build of scripts/build.sh (run here)
#   BASELINE_COLLECTOR  the collector the shipper "baseline" runs (an older build: the report
#                    prints sluice against it as well as against the best peer)
#   SINGLE_LINES, MANY_CONTAINERS, MANY_LINES   workload sizes (defaults 2000000, 200, 10000)
#   REPEAT           runs per shipper and workload (default 1); the table shows the median run
#                    (by lines per CPU second) and the largest peak RSS
#   PERF=1           also record a perf profile (cpu-clock) of sluice on the single-file workload
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_DIR="${BENCH_DIR:-/var/tmp/sluice-bench}"
SHIPPERS="${SHIPPERS:-rsyslog syslog-ng sluice}"
WORKLOADS="${WORKLOADS:-single many many-drain-down}"
SINGLE_LINES="${SINGLE_LINES:-2000000}"
MANY_CONTAINERS="${MANY_CONTAINERS:-200}"
MANY_LINES="${MANY_LINES:-10000}"
REPEAT="${REPEAT:-1}"
SEED=20261121

usage() { sed -n '2,24p' "$0" | sed -n '/^#/!q;p' | sed 's/^# \{0,1\}//'; }
case "${1:-}" in
"") ;;
--quick)
    SINGLE_LINES=$((SINGLE_LINES / 10))
    MANY_LINES=$((MANY_LINES / 10))
    BENCH_DIR="$BENCH_DIR-quick"
    ;;
-h | --help) usage; exit 0 ;;
*) echo "bench: unknown argument $1" >&2; usage >&2; exit 2 ;;
esac

say() { echo "bench: $*" >&2; }

# --- tools -------------------------------------------------------------------------------------
# The project's build cache (scripts/lib.sh: CARGO_TARGET_DIR defaults to /var/cache/sluice/target).
if [[ -f "$REPO/scripts/lib.sh" ]]; then
    # shellcheck source=../scripts/lib.sh
    source "$REPO/scripts/lib.sh"
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
say "building the benchmark tools (cargo build --release -p sluice-bench)"
(cd "$REPO" && cargo build --release -q -p sluice-bench)
TOOLS="$TARGET_DIR/release"

find_sluice() {
    local c
    for c in "${SLUICE_COLLECTOR:-}" "${SLUICE_BIN_DIR:+$SLUICE_BIN_DIR/sluice-collector}"; do
        if [[ -n "$c" && -x "$c" ]]; then
            echo "$c"
            return
        fi
    done
    if [[ -x "$REPO/scripts/build.sh" ]]; then
        say "building sluice-collector with scripts/build.sh (static release)"
        local dir
        dir="$("$REPO/scripts/build.sh" | sed -n 's/^SLUICE_BIN_DIR=//p' | tail -n1)"
        echo "$dir/sluice-collector"
        return
    fi
    say "building sluice-collector (cargo build --release -p sluice-collector)"
    (cd "$REPO" && cargo build --release -q -p sluice-collector)
    echo "$TARGET_DIR/release/sluice-collector"
}

for s in $SHIPPERS; do
    case "$s" in
    sluice) SLUICE="$(find_sluice)"; say "sluice-collector: $SLUICE" ;;
    rsyslog) command -v rsyslogd >/dev/null || { say "rsyslogd is missing: run scripts/setup.sh (or apt-get install rsyslog)"; exit 1; } ;;
    syslog-ng)
        # shellcheck source=lib/syslog-ng.sh
        source "$REPO/bench/lib/syslog-ng.sh"
        syslog_ng_ensure
        ;;
    standin) ;;
    baseline)
        [[ -x "${BASELINE_COLLECTOR:-}" ]] || { say "the shipper baseline needs BASELINE_COLLECTOR, the path of another sluice-collector build"; exit 2; }
        say "baseline: $BASELINE_COLLECTOR"
        ;;
    *) say "unknown shipper $s (known: sluice baseline rsyslog syslog-ng standin)"; exit 2 ;;
    esac
done

# --- workloads ---------------------------------------------------------------------------------
mkdir -p "$BENCH_DIR"
SINGLE_ROOT="$BENCH_DIR/workload-single"
MANY_ROOT="$BENCH_DIR/workload-many"
"$TOOLS/gen-workload" --root "$SINGLE_ROOT" --containers 1 --lines-per-container "$SINGLE_LINES" --seed "$SEED"
"$TOOLS/gen-workload" --root "$MANY_ROOT" --containers "$MANY_CONTAINERS" --lines-per-container "$MANY_LINES" --seed "$SEED"
MANY_TOTAL=$((MANY_CONTAINERS * MANY_LINES))

RUN_DIR="$BENCH_DIR/run-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RUN_DIR"
RESULTS="$RUN_DIR/results.tsv"
CONFIGS="$REPO/bench/configs"
say "results and logs in $RUN_DIR"

# run_one SHIPPER WORKLOAD-NAME DOCKER-ROOT EXPECTED-LINES ROUND
run_one() {
    local shipper="$1" workload="$2" root="$3" expect="$4"
    local state="$RUN_DIR/$workload-$shipper-$5"
    mkdir -p "$state/state"
    local run=("$TOOLS/bench-run" --shipper "$shipper" --workload "$workload" --expect "$expect"
        --results "$RESULTS" --log "$state/output.log" --var "DOCKER_ROOT=$root" --var "STATE_DIR=$state/state")
    local sluice_cfg=sluice.yaml.tmpl
    if [[ "$workload" == *drain-down ]]; then
        sluice_cfg=sluice-drain-down.yaml.tmpl
        run+=(--linger 15)
    fi
    case "$shipper" in
    sluice | baseline | standin)
        local bin="$TOOLS/standin-collector" allow=()
        [[ "$shipper" == sluice ]] && bin="$SLUICE"
        [[ "$shipper" == baseline ]] && bin="$BASELINE_COLLECTOR"
        # The receiver is on loopback, which drains may not reach unless allowed (builds from
        # before that rule have no such flag).
        "$bin" --help | grep -- --allow-destinations >/dev/null && allow=(--allow-destinations 127.0.0.0/8)
        "${run[@]}" --render "$CONFIGS/$sluice_cfg=$state/sluice.yaml" -- \
            "$bin" --config "$state/sluice.yaml" --state-dir "$state/state" --listen "127.0.0.1:@FREE_PORT@" \
                "${allow[@]}"
        ;;
    rsyslog)
        "${run[@]}" --render "$CONFIGS/rsyslog.conf.tmpl=$state/rsyslog.conf" -- \
            rsyslogd -n -f "$state/rsyslog.conf" -i "$state/rsyslogd.pid"
        ;;
    syslog-ng)
        "${run[@]}" --render "$CONFIGS/syslog-ng.conf.tmpl=$state/syslog-ng.conf" -- \
            env "LD_LIBRARY_PATH=$SYSLOG_NG_LD_PATH" "$SYSLOG_NG_BIN" -F --no-caps \
            -f "$state/syslog-ng.conf" --module-path="$SYSLOG_NG_MODULES" \
            --persist-file="$state/state/syslog-ng.persist" --pidfile="$state/syslog-ng.pid" \
            --control="$state/syslog-ng.ctl"
        ;;
    esac
}

# Shippers run one after another, each from a clean state directory, never concurrently.
for round in $(seq 1 "$REPEAT"); do
for workload in $WORKLOADS; do
    case "$workload" in
    single) for s in $SHIPPERS; do run_one "$s" single "$SINGLE_ROOT" "$SINGLE_LINES" "$round" || say "$s on single failed"; done ;;
    many) for s in $SHIPPERS; do run_one "$s" many "$MANY_ROOT" "$MANY_TOTAL" "$round" || say "$s on many failed"; done ;;
    many-drain-down)
        # Only sluice has the per-drain cursors this case is about.
        for s in $SHIPPERS; do
            if [[ "$s" == sluice || "$s" == baseline || "$s" == standin ]]; then
                run_one "$s" many-drain-down "$MANY_ROOT" "$MANY_TOTAL" "$round" || say "$s on many-drain-down failed"
            fi
        done
        ;;
    *) say "unknown workload $workload (known: single many many-drain-down)"; exit 2 ;;
    esac
done
done

if [[ "${PERF:-0}" == 1 && " $SHIPPERS " == *" sluice "* ]]; then
    "$REPO/bench/profile.sh" "$SLUICE" "$SINGLE_ROOT" "$SINGLE_LINES" "$RUN_DIR/profile" || say "profiling failed"
fi

echo
echo "sluice collector benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r)," \
    "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "single: 1 container x $SINGLE_LINES lines; many: $MANY_CONTAINERS containers x $MANY_LINES lines;" \
    "lines of 100-200 bytes (json-file lines ~80 bytes longer)"
"$TOOLS/bench-report" --results "$RESULTS" --subject "$( [[ " $SHIPPERS " == *" sluice "* ]] && echo sluice || echo standin)"
