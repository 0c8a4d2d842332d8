#!/usr/bin/env bash
# POST /send/ against nginx + nchan on the same Redis, with the same load generator:
# P keep-alive publishers for T seconds, one request in flight each and then pipelined,
# the two servers alternating for R rounds. Prints the median of each.
#
#   scripts/bench-nchan.sh [rounds] [publishers] [seconds] [pipeline] [chatroom binary]
#   (defaults: 5 32 8 16 .build/release/chatroom)
#
# Chatroom runs with its per-address limits lifted (nchan has none). nchan publishes at
# /pub?id=bench_publish (nchan_publisher, nchan_redis_pass to the same redis-server),
# nginx with two workers on the machine's two cores. Server CPU is user + system time
# from /proc (for nginx, its workers' and master's together) over the run, divided by
# the requests answered; Redis's CPU per request is beside it.
# Installs nginx and libnginx-mod-nchan (Debian) if missing. Loopback only; every
# process started is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

rounds="${1:-5}"; publishers="${2:-32}"; seconds="${3:-8}"; pipeline="${4:-16}"
chatroom="${5:-}"
ensure_swift
ensure_build_packages redis-server redis-tools nginx libnginx-mod-nchan
nchan_module=/usr/lib/nginx/modules/ngx_nchan_module.so
[ -f "$nchan_module" ] || die "nchan's module is not at $nchan_module"
if [ -z "$chatroom" ]; then
  swift build -c release --product chatroom >/dev/null
  chatroom="$(swift build -c release --show-bin-path)/chatroom"
fi
bench_setup nchan
bench="$bin/chatroom-bench"

nginx_port=$(free_port)
mkdir -p "$work/nginx/logs" "$work/nginx/tmp"
cat > "$work/nginx/nginx.conf" <<EOF
load_module $nchan_module;
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  # Keep-alive connections stay up for the whole run (the default ends one after 1,000 requests).
  keepalive_requests 100000000;
  access_log off;
  client_body_temp_path $work/nginx/tmp;
  upstream redis_server { nchan_redis_server redis://127.0.0.1:$redis_port; }
  server {
    listen 127.0.0.1:$nginx_port;
    location = /pub {
      nchan_publisher;
      nchan_channel_id \$arg_id;
      nchan_redis_pass redis_server;
    }
    location = /sub {
      nchan_subscriber;
      nchan_channel_id \$arg_id;
      nchan_redis_pass redis_server;
    }
  }
}
EOF

start_nginx() {
  nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -g 'daemon off;' 2>>"$work/nginx/logs/stderr.log" &
  nginx_pid=$!
  started_pids+=("$nginx_pid")
  wait_port "$nginx_port"
  # Its workers are its children.
  sleep 0.5
  nginx_workers=$(pgrep -P "$nginx_pid" | paste -sd, -)
}

for round in $(seq 1 "$rounds"); do
  for depth in 1 "$pipeline"; do
    for side in chatroom nchan; do
      if [ "$side" = chatroom ]; then
        port=$(free_port)
        "$chatroom" --port "$port" --broker redis --redis-url "redis://127.0.0.1:$redis_port" --log-level warning "${load_test_flags[@]}" >/dev/null 2>>"$work/server.log" &
        server=$!
        started_pids+=("$server")
        wait_port "$port"
        line=$("$bench" publish --port "$port" --server-pid "$server" --redis-pid "$redis_pid" --label "chatroom" --publishers "$publishers" \
          --pipeline "$depth" --seconds "$seconds" | grep '^{')
        kill "$server"; wait "$server" 2>/dev/null || true
      else
        start_nginx
        line=$("$bench" publish --port "$nginx_port" --server-pid "$nginx_pid" --more-pids "$nginx_workers" --redis-pid "$redis_pid" --label "nchan" \
          --publishers "$publishers" --pipeline "$depth" --seconds "$seconds" --path "/pub?id=bench_publish" | grep '^{')
        kill "$nginx_pid"; wait "$nginx_pid" 2>/dev/null || true
      fi
      echo "$line" >> "$work/$side-$depth.jsonl"
      say "round $round $side pipeline $depth: $line"
    done
  done
done

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { grep -o "\"$1\":[0-9.]*" "$work/$2.jsonl" | cut -d: -f2; }
echo "| server | P=$publishers, in flight per connection | requests/s (median of $rounds) | server CPU µs per request | Redis CPU µs per request | refused (sum) |"
echo "|---|---|---|---|---|---|"
for depth in 1 "$pipeline"; do
  for side in chatroom nchan; do
    echo "| $side | $depth$([ "$depth" = 1 ] && echo ' (keep-alive)' || echo ' (pipelined)') | $(field requests_per_second "$side-$depth" | median) | $(field server_cpu_us_per_request "$side-$depth" | median) | $(field redis_cpu_us_per_request "$side-$depth" | median) | $(field refused "$side-$depth" | paste -sd+ | bc) |"
  done
done
echo "raw results: $work"
