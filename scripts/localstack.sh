#!/usr/bin/env bash
# The one way to run the embedded local AWS (LocalStack in host mode, no Docker, loopback only).
#
#   scripts/localstack.sh install        venv with exact pins in .local/localstack-venv
#   scripts/localstack.sh start DIR      start on a free 127.0.0.1 port; writes DIR/pid, DIR/port,
#                                        DIR/endpoint and DIR/localstack.log; waits for health
#   scripts/localstack.sh stop DIR       stop by pid (TERM, then KILL)
#   scripts/localstack.sh freeze         rewrite localstack/constraints.txt from the venv
#
# The recipe follows ../shared/LOCALSTACK.md: Python 3.13, pinned packages, hypercorn bound to
# 127.0.0.1, no DNS server, no analytics, no certificate download, no EC2 metadata call, a stub
# Lambda runtime init so nothing is downloaded, and an init hook that stops an S3 DNS lookup.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.local/localstack-venv"
cache="$root/.local/localstack-cache"

die() { echo "localstack.sh: $*" >&2; exit 1; }

find_python313() {
  local c
  for c in "${PYTHON313:-}" python3.13 "$HOME/.pyenv/versions/3.13"*/bin/python3.13 \
           "$(command -v pyenv >/dev/null 2>&1 && echo "$(pyenv root)/versions/3.13.0/bin/python3.13")" \
           /usr/bin/python3.13 /usr/local/bin/python3.13; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  return 1
}

install() {
  if [ -x "$venv/bin/python" ] && cmp -s "$root/localstack/constraints.txt" "$venv/.constraints" 2>/dev/null; then
    return 0
  fi
  local py
  py=$(find_python313) || die "Python 3.13 is required for LocalStack and was not found (tried \$PYTHON313, python3.13 on PATH, pyenv's versions/3.13*). Install it, e.g. 'pyenv install 3.13', or set PYTHON313."
  echo "localstack.sh: installing LocalStack into $venv with $py" >&2
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    -r "$root/localstack/requirements.txt" -c "$root/localstack/constraints.txt"
  cp "$root/localstack/constraints.txt" "$venv/.constraints"
}

free_port() {
  "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start() {
  local dir=${1:?usage: start DIR}
  install
  mkdir -p "$dir" "$cache"
  dir=$(cd "$dir" && pwd)
  local fs="$dir/fs" port
  port=$(free_port)
  # Stub of the Lambda runtime init: without it every CreateFunction tries to download it.
  local arch; arch=$(uname -m); [ "$arch" = aarch64 ] && arch=arm64
  local init="$fs/var/lib/localstack/lib/lambda-runtime/v0.1.41-pre/$arch/var/rapid/init"
  mkdir -p "$(dirname "$init")" "$fs/etc/localstack/init/start.d" "$fs/var/lib/localstack" "$dir/home" "$dir/tmp"
  printf '#!/bin/sh\necho "stub: this local AWS runs no Lambda code" >&2\nexit 1\n' > "$init"
  chmod +x "$init"
  cp "$root/localstack/no_outbound.py" "$fs/etc/localstack/init/start.d/no_outbound.py"
  # Keep the cache between runs: the first call on a fresh cache is ~3 s slower.
  [ -e "$fs/var/lib/localstack/cache" ] || ln -s "$cache" "$fs/var/lib/localstack/cache"
  # LOCALSTACK_TRACE=FILE records every connect/sendto of the local AWS with strace, so a test
  # can prove that it reaches nothing outside loopback.
  local trace=()
  if [ -n "${LOCALSTACK_TRACE:-}" ]; then
    command -v strace >/dev/null || die "LOCALSTACK_TRACE is set but strace is not installed (apt-get install strace)"
    trace=(strace -f -qq --seccomp-bpf -e trace=connect,sendto,sendmsg -e signal=none -o "$LOCALSTACK_TRACE")
  fi
  (
    cd "$dir"
    exec "${trace[@]}" env -i PATH="$PATH" HOME="$dir/home" TMPDIR="$dir/tmp" FILESYSTEM_ROOT="$fs" \
      OVERRIDE_IN_DOCKER=0 GATEWAY_LISTEN="127.0.0.1:$port" GATEWAY_SERVER=hypercorn \
      SERVICES=secretsmanager,apigateway,sts,lambda DNS_ADDRESS=0 DISABLE_EVENTS=1 \
      SKIP_SSL_CERT_DOWNLOAD=1 AWS_EC2_METADATA_DISABLED=true LS_LOG="${LS_LOG:-info}" \
      "$venv/bin/python" -m localstack.runtime.main
  ) > "$dir/localstack.log" 2>&1 &
  local pid=$!
  echo "$pid" > "$dir/pid"
  echo "$port" > "$dir/port"
  echo "http://127.0.0.1:$port" > "$dir/endpoint"
  local deadline=$((SECONDS + ${LOCALSTACK_START_TIMEOUT:-90}))
  until "$venv/bin/python" - "$port" <<'PY' 2>/dev/null
import json, sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/_localstack/health", timeout=2) as r:
    s = json.load(r)["services"]
sys.exit(0 if all(s.get(k) in ("available", "running") for k in ("secretsmanager", "apigateway", "lambda")) else 1)
PY
  do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 40 "$dir/localstack.log" >&2 || true
      die "LocalStack exited during start; log: $dir/localstack.log"
    fi
    if [ $SECONDS -ge $deadline ]; then
      stop "$dir"
      die "LocalStack was not healthy in time; log: $dir/localstack.log"
    fi
    sleep 0.25
  done
  echo "http://127.0.0.1:$port"
}

stop() {
  local dir=${1:?usage: stop DIR}
  [ -f "$dir/pid" ] || return 0
  local pid; pid=$(cat "$dir/pid")
  if kill -0 "$pid" 2>/dev/null; then
    # Under strace the pid is strace's: signal LocalStack (its child) first.
    local kids; kids=$(pgrep -P "$pid" 2>/dev/null || true)
    kill -TERM $kids "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL $kids "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/pid"
}

freeze() {
  { echo "# Exact versions of the LocalStack venv (Python 3.13), frozen from a working install."
    echo "# Regenerate: scripts/localstack.sh freeze"
    "$venv/bin/pip" freeze; } > "$root/localstack/constraints.txt"
  cp "$root/localstack/constraints.txt" "$venv/.constraints"
}

case "${1:-}" in
  install) install ;;
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  freeze) freeze ;;
  *) die "usage: $0 install | start DIR | stop DIR | freeze" ;;
esac
