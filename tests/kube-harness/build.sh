#!/usr/bin/env bash
# Builds the Kubernetes test harness (the Go program in this directory:
# kube-apiserver + etcd, kube-controller-manager, kube-scheduler, kubelet and
# kubectl in one multi-call binary) once per source version and prints the
# binary's path.
#
# The binary lands in ${SLUICE_CACHE:-/var/cache/sluice}/bin/ (~/.cache/sluice
# when that is not writable) as kube-harness-<hash>, where <hash> covers
# go.mod, go.sum, every *.go file and this script, so an unchanged harness is
# never rebuilt. Go's own build and module caches (GOCACHE, GOMODCACHE;
# defaults under $HOME) persist on the machine, so even a changed harness only
# recompiles its own package and relinks.
#
# Needs Go >= 1.24 and the Go module proxy; nothing but Go modules is
# downloaded. Exit code 127 means "no usable Go here": the Rust driver then
# skips loudly, or fails under SLUICE_REQUIRE_ALL=1. Progress goes to stderr;
# stdout is only the binary's path.
set -euo pipefail

# Kubernetes version compiled in; must match go.mod (checked below).
K8S_VERSION=v1.34.3

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${SLUICE_CACHE:-/var/cache/sluice}"
# Not root and no SLUICE_CACHE: fall back to the user's cache directory.
if ! mkdir -p "$cache/bin" 2>/dev/null || [[ ! -w "$cache/bin" ]]; then
	cache="${XDG_CACHE_HOME:-$HOME/.cache}/sluice"
fi

# The official tarball's location, for shells whose PATH lacks it.
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	PATH="$PATH:/usr/local/go/bin"
fi
if ! command -v go >/dev/null 2>&1; then
	echo "kube-harness build: no 'go' on PATH (Go >= 1.24 is needed to build the kube-apiserver harness; scripts/setup.sh installs it)" >&2
	exit 127
fi
gover="$(GOTOOLCHAIN=local go env GOVERSION)" # e.g. go1.26.8
gominor="${gover#go1.}"
gominor="${gominor%%.*}"
if [[ ! "$gominor" =~ ^[0-9]+$ ]] || ((gominor < 24)); then
	echo "kube-harness build: $(command -v go) is $gover; Go >= 1.24 is needed to build Kubernetes ${K8S_VERSION#v} (scripts/setup.sh installs it)" >&2
	exit 127
fi
if ! grep -q "k8s.io/kubernetes ${K8S_VERSION}\$" "$here/go.mod"; then
	echo "kube-harness build: go.mod does not pin k8s.io/kubernetes ${K8S_VERSION}; update K8S_VERSION in $0 together with go.mod" >&2
	exit 1
fi

hash="$(cd "$here" && cat go.mod go.sum build.sh $(ls ./*.go | LC_ALL=C sort) | sha256sum | cut -c1-16)"
out="$cache/bin/kube-harness-$hash"
if [[ -x "$out" ]]; then
	touch "$out" # mtime = last use, for the pruning below
	echo "$out"
	exit 0
fi

mkdir -p "$cache/bin"
# One build at a time per machine (test binaries start in parallel); whoever
# waited finds the binary already there.
exec 9>"$cache/bin/.kube-harness.lock"
flock 9
if [[ -x "$out" ]]; then
	echo "$out"
	exit 0
fi
minor="${K8S_VERSION#v1.}"
minor="${minor%%.*}"
ldflags="-s -w"
# Without these the server reports v0.0.0-master on /version.
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
	ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit= -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

echo "kube-harness build: compiling Kubernetes ${K8S_VERSION} (apiserver, etcd, controller-manager, scheduler, kubelet, kubectl) into $out (first build on a machine takes many minutes)" >&2
start=$SECONDS
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
(
	cd "$here"
	GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" \
		go build -trimpath -ldflags "$ldflags" -o "$tmp" .
)
# Atomic publish: concurrent builders race harmlessly to the same content.
mv -f "$tmp" "$out"
# Harness binaries are ~100 MB: drop those no checkout has used for a week.
find "$cache/bin" -maxdepth 1 -name 'kube-harness-*' ! -name "${out##*/}" -mtime +7 -delete 2>/dev/null || true
echo "kube-harness build: done in $((SECONDS - start)) s" >&2
echo "$out"
