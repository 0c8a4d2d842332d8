#!/usr/bin/env bash
# Runs the chat on this machine: installs what is missing, starts a local Redis if none
# answers at $REDIS_URL (default redis://127.0.0.1:6379), builds the release binary and
# runs it. Arguments go to `chatroom` (see `chatroom --help`), e.g. --port 8080.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_swift
ensure_build_packages redis-server redis-tools

export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
if ! redis-cli -u "$REDIS_URL" ping 2>/dev/null | grep -q PONG; then
  case "$REDIS_URL" in
    redis://127.0.0.1:*|redis://localhost:*)
      port="${REDIS_URL##*:}"; port="${port%%/*}"
      say "no Redis answers at $REDIS_URL; starting one on 127.0.0.1:$port"
      mkdir -p .run
      redis-server --port "$port" --bind 127.0.0.1 --dir "$PWD/.run" --appendonly yes --daemonize yes \
        --pidfile "$PWD/.run/redis-$port.pid" --logfile "$PWD/.run/redis-$port.log"
      for _ in $(seq 1 50); do redis-cli -u "$REDIS_URL" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
      redis-cli -u "$REDIS_URL" ping 2>/dev/null | grep -q PONG || die "Redis did not start; see .run/redis-$port.log"
      ;;
    *) die "no Redis answers at $REDIS_URL; start it, or run with --broker memory" ;;
  esac
fi

say "building the release binary"
swift build -c release --product chatroom
binary="$(swift build -c release --show-bin-path)/chatroom"
port=8000
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --port) port="${args[$((i + 1))]:-$port}" ;;
    --port=*) port="${args[$i]#--port=}" ;;
  esac
done
say "Chatroom: open http://127.0.0.1:$port/ (Ctrl-C stops it)"
exec "$binary" "$@"
