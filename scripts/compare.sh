#!/usr/bin/env bash
# Before/after on one noisy machine: runs the same fan-out against two server binaries,
# alternating, and prints the median of each.
#
#   scripts/compare.sh BEFORE AFTER [rounds] [subscribers] [messages] [broker]
#
# Both binaries must accept the load-test flags in scripts/lib.sh (--send-rate and the
# other per-address limits; --history-rate since 2026-11-27). E.g. keep a copy of the release binary, change the code,
# rebuild, then
#   scripts/compare.sh /tmp/chatroom-before .build/release/chatroom 5 1000 2000
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

[ $# -ge 2 ] || die "usage: scripts/compare.sh BEFORE AFTER [rounds] [subscribers] [messages] [broker]"
before="$1"; after="$2"; rounds="${3:-5}"; subscribers="${4:-1000}"; messages="${5:-2000}"; broker="${6:-redis}"
[ -x "$before" ] && [ -x "$after" ] || die "both binaries must exist and be executable"
swift build -c release --product chatroom-bench >/dev/null
bench="$(swift build -c release --show-bin-path)/chatroom-bench"
ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d "${TMPDIR:-/tmp}/chatroom-compare.XXXXXX")
trap stop_started EXIT
start_bench_redis "$work"

for round in $(seq 1 "$rounds"); do
  for side in before after; do
    binary="$before"; [ "$side" = after ] && binary="$after"
    port=$(free_port)
    "$binary" --port "$port" --broker "$broker" --redis-url "redis://127.0.0.1:$redis_port" --log-level warning "${load_test_flags[@]}" >/dev/null 2>>"$work/server.log" &
    server=$!
    started_pids+=("$server")
    wait_port "$port"
    line=$("$bench" fanout --port "$port" --server-pid "$server" --label "$side" --subscribers "$subscribers" --messages "$messages" --publishers 8 | grep '^{')
    kill "$server"; wait "$server" 2>/dev/null || true
    echo "$line" >> "$work/$side.jsonl"
    say "round $round $side: $(grep -o '"deliveries_per_second":[0-9]*' <<<"$line" | cut -d: -f2)/s, $(grep -o '"server_cpu_us_per_delivery":[0-9.]*' <<<"$line" | cut -d: -f2) µs, lost $(grep -o '"lost":[0-9]*' <<<"$line" | cut -d: -f2)"
  done
done

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { grep -o "\"$1\":[0-9.]*" "$work/$2.jsonl" | cut -d: -f2; }
echo "| S=$subscribers M=$messages $broker, $rounds rounds | deliveries/s (median) | server µs per delivery (median) | p99 ms (median) | lost (sum) |"
echo "|---|---|---|---|---|"
for side in before after; do
  echo "| $side | $(field deliveries_per_second "$side" | median) | $(field server_cpu_us_per_delivery "$side" | median) | $(field p99_ms "$side" | median) | $(field lost "$side" | paste -sd+ | bc) |"
done
