#!/usr/bin/env bash
# Before/after on one noisy machine: runs the same load against two server binaries,
# alternating, and prints the median of each.
#
#   scripts/compare.sh [--publish|--v2-publish|--connections] BEFORE AFTER [rounds] [subscribers] [messages] [broker]
#
# By default a fan-out (S subscribers, M messages); --publish: 32 publishers for 8 s
# (subscribers as given, 0 by default); --v2-publish: 8 chat.v2 sockets with 64 sends in
# flight each for 8 s (both binaries must speak chat.v2); --connections: idle sockets up
# to 19,000, the server's memory per socket at the top step.
#
# Both binaries must accept the load-test flags in scripts/lib.sh (--send-rate and the
# other per-address limits; --history-rate since 2026-11-27). E.g. keep a copy of the release binary, change the code,
# rebuild, then
#   scripts/compare.sh /tmp/chatroom-before .build/release/chatroom 5 1000 2000
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

what=fanout
case "${1:-}" in
  --publish) what=publish; shift ;;
  --v2-publish) what=v2-publish; shift ;;
  --connections) what=connections; shift ;;
esac
[ $# -ge 2 ] || die "usage: scripts/compare.sh [--publish|--v2-publish|--connections] BEFORE AFTER [rounds] [subscribers] [messages] [broker]"
default_subscribers=1000; [ "$what" = fanout ] || default_subscribers=0
before="$1"; after="$2"; rounds="${3:-5}"; subscribers="${4:-$default_subscribers}"; messages="${5:-2000}"; broker="${6:-redis}"
[ -x "$before" ] && [ -x "$after" ] || die "both binaries must exist and be executable"
bench_setup compare
bench="$bin/chatroom-bench"

for round in $(seq 1 "$rounds"); do
  for side in before after; do
    binary="$before"; [ "$side" = after ] && binary="$after"
    port=$(free_port)
    "$binary" --port "$port" --broker "$broker" --redis-url "redis://127.0.0.1:$redis_port" --log-level warning "${load_test_flags[@]}" >/dev/null 2>>"$work/server.log" &
    server=$!
    started_pids+=("$server")
    wait_port "$port"
    case "$what" in
      fanout) line=$("$bench" fanout --port "$port" --server-pid "$server" --label "$side" --subscribers "$subscribers" --messages "$messages" --publishers 8 | grep '^{') ;;
      publish) line=$("$bench" publish --port "$port" --server-pid "$server" --label "$side" --publishers 32 --seconds 8 --subscribers "$subscribers" | grep '^{') ;;
      v2-publish) line=$("$bench" v2-publish --port "$port" --server-pid "$server" --redis-pid "$redis_pid" --label "$side" --publishers 8 --window 64 --seconds 8 --subscribers "$subscribers" | grep '^{') ;;
      connections) line=$("$bench" connections --port "$port" --server-pid "$server" --label "$side" --steps 1000,19000 | grep '^{' | tail -1) ;;
    esac
    kill "$server"; wait "$server" 2>/dev/null || true
    echo "$line" >> "$work/$side.jsonl"
    say "round $round $side: $line"
  done
done

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { grep -o "\"$1\":[0-9.]*" "$work/$2.jsonl" | cut -d: -f2; }
case "$what" in
  fanout)
    echo "| S=$subscribers M=$messages $broker, $rounds rounds | deliveries/s (median) | server µs per delivery (median) | p99 ms (median) | lost (sum) |"
    echo "|---|---|---|---|---|"
    for side in before after; do
      echo "| $side | $(field deliveries_per_second "$side" | median) | $(field server_cpu_us_per_delivery "$side" | median) | $(field p99_ms "$side" | median) | $(field lost "$side" | paste -sd+ | bc) |"
    done ;;
  *)
    # The other commands' JSON fields, each as a median.
    keys=$(grep -oE '"[a-z_0-9]+":[0-9.]+' "$work/before.jsonl" | cut -d'"' -f2 | sort -u)
    echo "| $what, $broker, S=$subscribers, $rounds rounds (median) | $(echo $keys | sed 's/ / | /g') |"
    echo "|---$(for _ in $keys; do printf '|---'; done)|"
    for side in before after; do
      echo "| $side | $(for key in $keys; do printf '%s | ' "$(field "$key" "$side" | median)"; done)"
    done ;;
esac
