#!/usr/bin/env bash
# Where the server's time goes during a fan-out: a private redis-server, the release
# binary and chatroom-bench on loopback, the server under `perf record -g`.
#
#   scripts/profile.sh [subscribers] [messages]     (defaults: 1000 4000)
#
# Prints the fan-out's result (recorded while messages flow, not while sockets connect) and the symbols above 0.7% of the server's samples; the
# recording stays in the temporary directory printed at the end (`perf report -i`).
# Instruction counts come from callgrind on the micro-benchmarks instead
# (Microbench/README.md): Debian's valgrind 3.19 crashes on any Swift program that
# uses Swift concurrency, which the server does.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

subscribers="${1:-1000}"
messages="${2:-4000}"
ensure_swift
ensure_build_packages redis-server redis-tools linux-perf
swift build -c release --product chatroom >/dev/null
bench_setup profile

port=$(free_port)
"$bin/chatroom" --port "$port" --broker redis --redis-url "redis://127.0.0.1:$redis_port" --log-level warning "${load_test_flags[@]}" >/dev/null 2>"$work/server.log" &
server=$!
started_pids+=("$server")
wait_port "$port"
# Record only while messages flow: the load generator waits, subscribed, until the
# pause file is gone.
"$bin/chatroom-bench" fanout --port "$port" --server-pid "$server" --label perf --pause-file "$work/subscribed" \
  --subscribers "$subscribers" --messages "$messages" --publishers 8 --timeout 600 >"$work/bench.out" &
bench_pid=$!
started_pids+=("$bench_pid")
for _ in $(seq 1 1200); do [ -e "$work/subscribed" ] && break; sleep 0.1; done
perf record -F 999 -g -p "$server" -o "$work/perf.data" 2>"$work/perf.log" &
perf_pid=$!
started_pids+=("$perf_pid")
sleep 0.5
rm -f "$work/subscribed"
wait "$bench_pid"
sed -n 's/^ROW //p' "$work/bench.out"

kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
perf report -i "$work/perf.data" --no-children --sort symbol --percent-limit 0.7 --stdio 2>/dev/null \
  | grep -E '^ +[0-9]' | head -40 | cut -c1-160
echo "recording in $work/perf.data"
