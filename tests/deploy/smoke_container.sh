#!/usr/bin/env bash
# Runs a built trainyard binary the way the image and the Helm chart run it, without a
# container runtime: in private mount and network namespaces, the root filesystem
# read-only, a tmpfs on /tmp, a world-writable root-owned "volume" (like an emptyDir or a
# fresh PVC) whose data/ subfolder is the data dir, a non-root user, the listen addresses
# and TRAINYARD_* variables of the chart, and the production values' trainyard.toml.
# Checks /healthz and /readyz, that a job runs and can write /tmp, and that SIGTERM ends
# the server cleanly.
#
#   tests/deploy/smoke_container.sh /path/to/trainyard     (as root: unshare, mount)
#
# The user is nobody (65534): the server needs its uid in /etc/passwd, and the image's
# account (10001) does not exist on this machine.
set -euo pipefail

BIN=$(realpath "$1")
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"

if [[ $(id -u) -ne 0 ]]; then
  echo "smoke_container.sh: needs root (unshare, mount)" >&2
  exit 2
fi

WORK=$(mktemp -d /var/tmp/trainyard-deploy-smoke.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/vol" "$WORK/etc"
chmod 1777 "$WORK/vol"
chmod 755 "$WORK" "$WORK/etc"
install -m 0755 "$BIN" "$WORK/trainyard"
"$PY" - "$HERE/values-production.yaml" "$WORK/etc/trainyard.toml" <<'EOF'
import sys, yaml
values = yaml.safe_load(open(sys.argv[1]))
open(sys.argv[2], "w").write(values["config"]["toml"])
EOF
chmod 644 "$WORK/etc/trainyard.toml"

cat >"$WORK/inside.sh" <<'EOF'
set -uo pipefail
W=$1
ip link set lo up
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount --bind "$W/vol" "$W/vol"
mount -o remount,bind,ro /
if touch /etc/.trainyard-smoke 2>/dev/null; then echo "the root filesystem is still writable"; exit 1; fi
as_user() { setpriv --reuid=65534 --regid=65534 --clear-groups env -i PATH=/usr/bin:/bin "$@"; }
cd "$W/vol"
# exec in the background subshell, so that $! is the server's own pid.
(exec setpriv --reuid=65534 --regid=65534 --clear-groups env -i PATH=/usr/bin:/bin \
  TRAINYARD_LISTEN=0.0.0.0:8080 TRAINYARD_GRPC_LISTEN=0.0.0.0:8081 \
  TRAINYARD_DATA_DIR="$W/vol/data" TRAINYARD_CONFIG="$W/etc/trainyard.toml" \
  TRAINYARD_CPUS=2 TRAINYARD_MEMORY_MB=2000 TRAINYARD_LOG_FORMAT=json RUST_LOG=info \
  "$W/trainyard" up >/tmp/server.log 2>&1) &
pid=$!
trap 'kill "$pid" 2>/dev/null' EXIT
trap 'exit 1' TERM INT
fail() { echo "$1"; echo "--- server log"; tail -20 /tmp/server.log; kill "$pid" 2>/dev/null; exit 1; }
for _ in $(seq 1 100); do
  curl -sf http://127.0.0.1:8080/readyz >/dev/null && break
  kill -0 "$pid" 2>/dev/null || fail "the server exited at start"
  sleep 0.2
done
[[ $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/healthz) == 200 ]] || fail "/healthz is not 200"
[[ $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/readyz) == 200 ]] || fail "/readyz is not 200"
[[ $(stat -c %a "$W/vol/data") == 700 ]] || fail "the data dir is not 0700"
grep -q '"memory_limit":"Some(4294967296)"' /tmp/server.log || fail "trainyard.toml's [serve] memory_limit was not applied"
out=$(as_user TRAINYARD_DATA_DIR="$W/vol/data" TRAINYARD_SERVER=http://127.0.0.1:8080 \
  "$W/trainyard" run -- sh -c 'echo scratch >/tmp/job-scratch && echo "job ran as $(id -u)"' 2>&1) \
  || fail "the job failed: $out"
grep -q "job ran as 65534" <<<"$out" || fail "unexpected job output: $out"
kill -TERM "$pid"
wait "$pid"
rc=$?
[[ $rc -eq 0 ]] || fail "the server exited $rc on SIGTERM"
echo "server up with a read-only root, job ran, clean exit on SIGTERM"
EOF

timeout 120 unshare --mount --net --propagation private bash "$WORK/inside.sh" "$WORK"
