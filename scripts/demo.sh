#!/usr/bin/env bash
# make demo: builds, starts the embedded local AWS and the function (cargo lambda watch), runs
# scripts/demo.py, and always stops both by pid, on failure and on Ctrl-C too.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export AWS_EC2_METADATA_DISABLED=true AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN

state="$root/.local/demo"
watch_pid=""
in_namespace=""
cleanup() {
  if [ -n "$watch_pid" ] && kill -0 "$watch_pid" 2>/dev/null; then
    if [ -n "$in_namespace" ]; then
      # unshare ignores TERM while it waits; killing the namespace's first process (cargo-lambda)
      # makes the kernel end every process in the namespace.
      kill -KILL $(pgrep -P "$watch_pid") 2>/dev/null || true
    else
      kill -TERM "$watch_pid" 2>/dev/null || true
    fi
    for _ in $(seq 1 20); do kill -0 "$watch_pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$watch_pid" 2>/dev/null || true
  fi
  scripts/localstack.sh stop "$state" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== installing and building (first run: a few minutes)"
scripts/localstack.sh install
make -s lambda-tools
cargo build --locked --quiet

echo "== starting the local AWS (LocalStack, 127.0.0.1 only)"
rm -rf "$state"
endpoint=$(scripts/localstack.sh start "$state")
echo "   $endpoint"

echo "== starting the function under its Lambda Runtime API (cargo lambda watch)"
port=$(.local/localstack-venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
watch=(.local/lambda-venv/bin/cargo-lambda lambda watch --ignore-changes -A 127.0.0.1 -P "$port")
# cargo lambda watch signals widely when it stops; as root, give it a PID namespace of its own so
# that only its own processes can be reached.
if [ "$(id -u)" = 0 ] && unshare -fp --mount-proc --kill-child true 2>/dev/null; then
  watch=(unshare -fp --mount-proc --kill-child "${watch[@]}")
  in_namespace=1
fi
AWS_ENDPOINT_URL="$endpoint" "${watch[@]}" > "$state/function.log" 2>&1 &
watch_pid=$!
ready=""
for _ in $(seq 1 240); do
  # Any answer from the invoke endpoint (an error for an empty event is fine) means it is up.
  if .local/localstack-venv/bin/python -c 'import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=b"{}"), timeout=2)
except urllib.error.HTTPError:
    pass' "http://127.0.0.1:$port/2015-03-31/functions/api-key-rotator/invocations" 2>/dev/null; then
    ready=1; break
  fi
  kill -0 "$watch_pid" 2>/dev/null || { cat "$state/function.log" >&2; exit 1; }
  sleep 0.5
done
[ -n "$ready" ] || { echo "the function did not start; log: $state/function.log" >&2; exit 1; }

.local/localstack-venv/bin/python scripts/demo.py --endpoint "$endpoint" --invoke-port "$port" \
  --cargo-lambda "$root/.local/lambda-venv/bin/cargo-lambda" --function-log "$state/function.log" \
  --operator "$root/target/debug/api-key-rotator"
echo "   function log: $state/function.log"
