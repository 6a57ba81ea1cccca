#!/usr/bin/env bash
# Builds sluice's container images FROM scratch and exports each as a docker-archive tarball that
# `ctr -n k8s.io images import` (containerd) and `docker load` accept. No registry, no pulls:
# the static binaries (gnu target, crt-static, as scripts/build.sh) are the only content.
#
#   scripts/images.sh [--out DIR] [--tag TAG] [NAME...]     NAME: collector operator loggen pause
#
# Images are named sluice.local/<name>:<tag> (tag: --tag, $SLUICE_IMAGE_TAG, default "dev"; never
# "latest", whose default pull policy is Always). A private dockerd (own socket, data root and
# exec root in a temp dir, no network setup, vfs storage) builds them and is stopped by its pid
# on exit, failures included. Prints `SLUICE_IMAGE_DIR=<dir>` as its last line; the archives are
# <dir>/<name>.tar (default dir: $CARGO_TARGET_DIR/images).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

out="$CARGO_TARGET_DIR/images"
tag="${SLUICE_IMAGE_TAG:-dev}"
names=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    collector|operator|loggen|pause) names+=("$1"); shift ;;
    *) die "images.sh: unknown argument '$1' (images: collector operator loggen pause)" ;;
  esac
done
[ "${#names[@]}" -gt 0 ] || names=(collector operator loggen pause)
[[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "images.sh: '$tag' is not a valid image tag"
[ "$tag" != latest ] || die "images.sh: the tag 'latest' makes Kubernetes pull (pullPolicy Always); pick another"
[ "$(id -u)" = 0 ] || die "images.sh starts its own dockerd: run it as root"
command -v dockerd >/dev/null && command -v docker >/dev/null \
  || die "images.sh needs dockerd and docker (apt package docker.io; scripts/setup.sh installs it)"

TARGET=x86_64-unknown-linux-gnu
declare -A package=([collector]=sluice-collector [operator]=sluice-operator [loggen]=sluice-loggen [pause]=sluice-pause)
declare -A binary=([collector]=sluice-collector [operator]=sluice-operator [loggen]=loggen [pause]=pause)
cargo_args=()
for n in "${names[@]}"; do cargo_args+=(-p "${package[$n]}"); done
say "static release build of ${cargo_args[*]} (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
(cd "$REPO_ROOT" && RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --target "$TARGET" "${cargo_args[@]}")
bin_dir="$CARGO_TARGET_DIR/$TARGET/release"

work="$(mktemp -d /tmp/sluice-images.XXXXXX)"
dockerd_pid=""
cleanup() {
  if [ -n "$dockerd_pid" ] && kill -0 "$dockerd_pid" 2>/dev/null; then
    kill -TERM "$dockerd_pid"
    for _ in $(seq 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$dockerd_pid" 2>/dev/null || true
  fi
  # vfs layers and the exec root may hold mounts: unmount below the temp dir, deepest first.
  awk -v p="$work" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r | xargs -r -n1 umount -l
  rm -rf "$work"
}
trap cleanup EXIT

say "starting a private dockerd in $work"
dockerd --storage-driver=vfs --iptables=false --ip6tables=false --bridge=none --shutdown-timeout=2 \
  --host="unix://$work/docker.sock" --data-root="$work/root" --exec-root="$work/exec" \
  --pidfile="$work/docker.pid" >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
docker_() { DOCKER_BUILDKIT=0 docker -H "unix://$work/docker.sock" "$@"; }
for _ in $(seq 300); do
  docker_ version >/dev/null 2>&1 && break
  kill -0 "$dockerd_pid" 2>/dev/null || { tail -n 20 "$work/dockerd.log" >&2; die "dockerd exited"; }
  sleep 0.2
done
docker_ version >/dev/null 2>&1 || { tail -n 20 "$work/dockerd.log" >&2; die "dockerd did not answer within 60 s"; }

mkdir -p "$out"
for n in "${names[@]}"; do
  image="sluice.local/$n:$tag"
  ctx="$work/ctx-$n"
  mkdir -p "$ctx"
  cp "$bin_dir/${binary[$n]}" "$ctx/"
  cp "$REPO_ROOT/images/$n.Dockerfile" "$ctx/Dockerfile"
  say "docker build $image"
  docker_ build -q -t "$image" "$ctx" >/dev/null 2>"$work/build-$n.log" \
    || { cat "$work/build-$n.log" >&2; die "docker build of $image failed"; }
  docker_ save -o "$out/$n.tar.tmp" "$image"
  mv -f "$out/$n.tar.tmp" "$out/$n.tar"
  echo "$image -> $out/$n.tar ($(du -h "$out/$n.tar" | cut -f1))" >&2
done
echo "SLUICE_IMAGE_DIR=$out"
