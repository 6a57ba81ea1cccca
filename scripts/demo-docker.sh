#!/usr/bin/env bash
# The standalone demo (`scripts/demo.sh --docker` runs it): a few loggen containers, a local rsyslog receiver and sluice-collector
# shipping their lines to it. Shows the lines as they arrive; Ctrl-C stops and removes everything
# this script started. Needs root on Debian 12 (it installs its packages with scripts/setup.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$REPO_ROOT/scripts/setup.sh"
eval "$("$REPO_ROOT/scripts/build.sh" | tail -n1)"
export SLUICE_BIN_DIR

WORK="$(mktemp -d /tmp/sluice-demo.XXXXXX)"
PIDS=()
CONTAINERS=()
OWN_DOCKERD=""
cleanup() {
  trap - EXIT INT TERM
  say "cleaning up"
  for c in "${CONTAINERS[@]}"; do docker_ rm -f "$c" >/dev/null 2>&1 || true; done
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$OWN_DOCKERD" ]; then
    kill -- "-$OWN_DOCKERD" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$OWN_DOCKERD" 2>/dev/null || break; sleep 0.2; done
    kill -9 -- "-$OWN_DOCKERD" 2>/dev/null || true
    grep " $WORK/" /proc/self/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  fi
  rm -rf "$WORK"
  say "done"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
DOCKER_CLI=/usr/bin/docker; [ -x "$DOCKER_CLI" ] || DOCKER_CLI=docker

# 1. Docker: the running daemon if one answers, else our own in $WORK.
if DOCKER_BUILDKIT=0 "$DOCKER_CLI" version >/dev/null 2>&1; then
  DOCKER_ROOT="$("$DOCKER_CLI" info -f '{{.DockerRootDir}}')"
  docker_() { DOCKER_BUILDKIT=0 "$DOCKER_CLI" "$@"; }
  say "using the running Docker daemon (root $DOCKER_ROOT)"
else
  DOCKER_ROOT="$WORK/docker/root"
  mkdir -p "$WORK/docker"
  say "starting a Docker daemon of our own in $WORK/docker"
  setsid /usr/sbin/dockerd --storage-driver=vfs --iptables=false --ip6tables=false --bridge=none \
    --host "unix://$WORK/docker/docker.sock" --data-root "$DOCKER_ROOT" \
    --exec-root "$WORK/docker/exec" --pidfile "$WORK/docker/pid" >"$WORK/docker/dockerd.log" 2>&1 &
  OWN_DOCKERD=$!
  docker_() { DOCKER_BUILDKIT=0 "$DOCKER_CLI" -H "unix://$WORK/docker/docker.sock" "$@"; }
  for _ in $(seq 120); do docker_ version >/dev/null 2>&1 && break; sleep 0.5; done
  docker_ version >/dev/null || die "dockerd did not start; see $WORK/docker/dockerd.log"
fi

# 2. The loggen image (FROM scratch, the static binary only).
mkdir -p "$WORK/image"
cp "$SLUICE_BIN_DIR/loggen" "$WORK/image/"
printf 'FROM scratch\nCOPY loggen /loggen\nENTRYPOINT ["/loggen"]\n' >"$WORK/image/Dockerfile"
docker_ build -q -t sluice-loggen:demo "$WORK/image" >/dev/null

# 3. A local rsyslog receiver (TCP, octet counting) writing what it parsed.
PORT="$(free_port)"
OUT="$WORK/received.log"
cat >"$WORK/rsyslog.conf" <<CONF
global(workDirectory="$WORK" maxMessageSize="4m")
module(load="imtcp")
template(name="demo" type="string" string="%hostname% %app-name% %structured-data% %msg%\n")
ruleset(name="demo") { action(type="omfile" file="$OUT" template="demo") }
input(type="imtcp" address="127.0.0.1" port="$PORT" ruleset="demo")
CONF
/usr/sbin/rsyslogd -n -f "$WORK/rsyslog.conf" -i "$WORK/rsyslogd.pid" >"$WORK/rsyslogd.log" 2>&1 &
PIDS+=($!)
say "rsyslog receiving on 127.0.0.1:$PORT, writing $OUT"

# 4. The collector, with a generated config shipping the demo containers to rsyslog.
cat >"$WORK/sluice.yaml" <<CONF
version: 1
node: demo-host
sources:
  dockerRoot: $DOCKER_ROOT
drains:
  - name: local-rsyslog
    url: syslog://127.0.0.1:$PORT
selectors:
  - name: "sluice-demo-*"
    drains: [local-rsyslog]
CONF
METRICS="127.0.0.1:$(free_port)"
"$SLUICE_BIN_DIR/sluice-collector" --config "$WORK/sluice.yaml" --state-dir "$WORK/state" \
  --listen "$METRICS" --node-name demo-host --allow-destinations 127.0.0.0/8 2>"$WORK/collector.log" &
PIDS+=($!)
say "sluice-collector running (config $WORK/sluice.yaml, metrics http://$METRICS/metrics, log $WORK/collector.log)"

# 5. Demo containers: a few lines per second each; the last one also writes to stderr.
for spec in "web:2:0" "worker:1:0" "batch:3:4"; do
  IFS=: read -r name rate stderr_every <<<"$spec"
  id="$(docker_ run -d --network none --name "sluice-demo-$name-$$" --log-opt max-size=1m --log-opt max-file=3 \
    sluice-loggen:demo --tag "$name" --rate "$rate" --size 40..80 --stderr-every "$stderr_every")"
  CONTAINERS+=("$id")
  say "container sluice-demo-$name-$$ writes $rate lines/s"
done

say "lines arriving at rsyslog (HOSTNAME APP-NAME STRUCTURED-DATA MSG); Ctrl-C to stop and clean up"
touch "$OUT"
tail -F "$OUT" &
PIDS+=($!)
wait "${PIDS[0]}"
