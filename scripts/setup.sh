#!/usr/bin/env bash
# Installs everything sluice's demo, tests and benchmarks need on a fresh Debian 12 machine.
# Idempotent: run it as often as you like; it only does what is missing. Needs root and network
# access to Debian's package mirrors (and the Go module proxy for the kube-apiserver harness).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "$(id -u)" = 0 ] || die "scripts/setup.sh installs system packages: run it as root"
mkdir -p "$SLUICE_CACHE"

# Packages installed normally. rsyslog is the default syslog receiver; docker.io gives real
# json-file logs; the lib* packages are syslog-ng's runtime dependencies (installing them does
# not conflict with rsyslog, only syslog-ng-core itself does). containerd, runc, the CNI
# plugins (bridge, host-local, loopback), iptables and iproute2 run the harness's real node
# (tests/kube-harness/src/node.rs).
APT_PACKAGES=(docker.io rsyslog rsyslog-gnutls openssl ca-certificates curl
  libivykis0 libnet1 libpcre3 libwrap0 libjson-c5 libglib2.0-0 libcap2 libssl3
  containerd runc containernetworking-plugins iptables iproute2)

apt_updated=0
apt_update_once() {
  if [ "$apt_updated" = 0 ]; then
    say "apt-get update"
    apt-get update -q >/dev/null
    apt_updated=1
  fi
}

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt_update_once
  say "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
else
  say "apt packages present: ${APT_PACKAGES[*]}"
fi

# syslog-ng: apt refuses to install it next to rsyslog, so download the package and unpack it
# into the cache; the test harness runs it from there (LD_LIBRARY_PATH, --module-path).
if [ -x "$SLUICE_SYSLOG_NG_ROOT/usr/sbin/syslog-ng" ]; then
  say "syslog-ng present in $SLUICE_SYSLOG_NG_ROOT"
else
  say "unpacking syslog-ng-core into $SLUICE_SYSLOG_NG_ROOT (not registered with dpkg: it conflicts with rsyslog)"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  chmod 755 "$work"   # apt's sandbox user must be able to write the download there
  if ! (cd "$work" && apt-get download -q syslog-ng-core >/dev/null 2>&1); then
    apt_update_once
    (cd "$work" && apt-get download -q syslog-ng-core >/dev/null)
  fi
  rm -rf "$SLUICE_SYSLOG_NG_ROOT.tmp"
  mkdir -p "$SLUICE_SYSLOG_NG_ROOT.tmp"
  dpkg -x "$work"/syslog-ng-core_*.deb "$SLUICE_SYSLOG_NG_ROOT.tmp"
  rm -rf "$SLUICE_SYSLOG_NG_ROOT"
  mv "$SLUICE_SYSLOG_NG_ROOT.tmp" "$SLUICE_SYSLOG_NG_ROOT"
fi
LD_LIBRARY_PATH="$SLUICE_SYSLOG_NG_ROOT/usr/lib/syslog-ng" \
  "$SLUICE_SYSLOG_NG_ROOT/usr/sbin/syslog-ng" --version >/dev/null \
  || die "the unpacked syslog-ng does not run (missing library?); remove $SLUICE_SYSLOG_NG_ROOT and retry"

# Rust: the machine provides stable Rust through rustup; make sure the pieces CI uses are there.
command -v cargo >/dev/null || die "cargo not found: install stable Rust (rustup) first"
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    say "rustup component add $component"
    rustup component add "$component"
  fi
done

# The Kubernetes harness (a Go program of the project's own: apiserver, etcd, controller-manager,
# scheduler, kubelet, kubectl); its script caches the binary.
if [ -x "$REPO_ROOT/tests/kube-harness/build.sh" ]; then
  say "building the Kubernetes harness (tests/kube-harness/build.sh)"
  "$REPO_ROOT/tests/kube-harness/build.sh" >&2
fi

# helm, for the chart's lint/template/dry-run tests and the README's install commands: built once
# from the Go module proxy into the machine cache (no release tarball, no other download).
# HELM_VERSION is also read by scripts/lib.sh (sluice_helm); v3.19 is built on the same
# Kubernetes libraries (v0.34) as the kube-apiserver harness.
helm_bin="$(sluice_helm_path)"
if [ -x "$helm_bin" ]; then
  say "helm present: $helm_bin"
else
  command -v go >/dev/null || die "building helm needs Go (>= 1.24) on PATH"
  say "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION (once; into $SLUICE_CACHE/bin)"
  helm_work="$(mktemp -d)"
  # The ldflags of helm's own Makefile: its version, and the Kubernetes version that `helm
  # template` and `helm lint` assume (default 1.20 otherwise, which fails the chart's kubeVersion).
  helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for pkg in pkg/lint/rules pkg/chartutil; do
    helm_ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$HELM_K8S_MINOR"
  done
  GOBIN="$helm_work" GOTOOLCHAIN=local CGO_ENABLED=0 go install -trimpath -ldflags "$helm_ldflags" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mkdir -p "$SLUICE_CACHE/bin"
  mv "$helm_work/helm" "$helm_bin"
  rm -rf "$helm_work"
fi
"$helm_bin" version --short >/dev/null || die "$helm_bin does not run; remove it and rerun scripts/setup.sh"

# ---- other components' setup steps go here (keep them idempotent and say what they do) ----

say "setup complete"
