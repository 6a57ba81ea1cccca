#!/usr/bin/env bash
# Provide a runnable syslog-ng without installing it through dpkg (Debian's rsyslog and
# syslog-ng-core conflict, and rsyslog is the one apt installs).
#
# Source this file, then call `syslog_ng_ensure`; it sets SYSLOG_NG_BIN, SYSLOG_NG_MODULES and
# SYSLOG_NG_LD_PATH. It reuses an extraction made by scripts/setup.sh (or an earlier run) under
# SYSLOG_NG_ROOT (default $SLUICE_SYSLOG_NG_ROOT, else /var/cache/sluice/syslog-ng/root) and only downloads the .debs
# (`apt-get download`, no dpkg registration) when none is there yet.

SYSLOG_NG_ROOT="${SYSLOG_NG_ROOT:-${SLUICE_SYSLOG_NG_ROOT:-/var/cache/sluice/syslog-ng/root}}"

syslog_ng_ensure() {
    local bin="$SYSLOG_NG_ROOT/usr/sbin/syslog-ng"
    if [[ ! -x "$bin" ]]; then
        echo "bench: extracting syslog-ng into $SYSLOG_NG_ROOT (apt-get download + dpkg -x)" >&2
        local debs
        debs="$(dirname "$SYSLOG_NG_ROOT")/debs"
        mkdir -p "$debs" "$SYSLOG_NG_ROOT"
        # The package and those of its libraries that a plain Debian 12 lacks; the rest
        # (glib, json-c, openssl, systemd) are already there as rsyslog's or the base system's.
        local pkgs=(syslog-ng-core libivykis0 libnet1 libwrap0 libjson-c5)
        if ! (cd "$debs" && apt-get download "${pkgs[@]}" >&2); then
            apt-get update >&2
            (cd "$debs" && apt-get download "${pkgs[@]}" >&2) || {
                echo "bench: could not download syslog-ng-core with apt-get download" >&2
                return 1
            }
        fi
        local deb
        for deb in "$debs"/*.deb; do
            dpkg -x "$deb" "$SYSLOG_NG_ROOT"
        done
    fi
    SYSLOG_NG_BIN="$bin"
    SYSLOG_NG_MODULES="$SYSLOG_NG_ROOT/usr/lib/syslog-ng/3.38"
    [[ -d "$SYSLOG_NG_MODULES" ]] || SYSLOG_NG_MODULES="$(ls -d "$SYSLOG_NG_ROOT"/usr/lib/syslog-ng/3.* | head -n1)"
    SYSLOG_NG_LD_PATH="$SYSLOG_NG_ROOT/usr/lib/x86_64-linux-gnu:$SYSLOG_NG_ROOT/usr/lib/syslog-ng"
    export SYSLOG_NG_BIN SYSLOG_NG_MODULES SYSLOG_NG_LD_PATH
}
