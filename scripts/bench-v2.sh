#!/usr/bin/env bash
# chat.v2 benchmarks: a private redis-server and release binaries on loopback, driven by
# chatroom-bench's v2 modes (Sources/ChatroomBench). Prints every run's JSON line and a
# Markdown summary with the medians of the rounds; docs/BENCHMARKS.md quotes them.
#
#   scripts/bench-v2.sh [all|publish|latency|storm|idle] [quick]
#
#   publish  chat.v2 publishing (P sockets, W sends in flight each) against POST /send/
#            (the existing publish mode), alternating in each round, one server
#   latency  chat.v2 acks at a fixed offered rate (10,000/s over P sockets, paced)
#   storm    two instances on one Redis; 10,000 resumable sockets on A; A killed and
#            restarted while B takes 200 messages/s; then once more with a Redis MONITOR
#   idle     10,000 idle chat.v2 sockets with 10 subscriptions each: server VmRSS per socket
#
# ROUNDS (default 5; storm and idle: STORM_ROUNDS 3, IDLE_ROUNDS 3) sets the rounds. The
# machine is shared: run it as `flock /tmp/cpu.lock scripts/bench-v2.sh` so that heavy
# runs never overlap.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

what="${1:-all}"
size="${2:-full}"
rounds="${ROUNDS:-5}"
storm_rounds="${STORM_ROUNDS:-3}"
idle_rounds="${IDLE_ROUNDS:-3}"
publishers="${PUBLISHERS:-8}"
window="${WINDOW:-64}"
if [ "$size" = quick ]; then
  rounds=1; storm_rounds=1; idle_rounds=1
  seconds=2; storm_sockets=500; idle_sockets=500
else
  seconds="${SECONDS_PER_ROUND:-8}"; storm_sockets="${STORM_SOCKETS:-10000}"; idle_sockets="${IDLE_SOCKETS:-10000}"
fi

ensure_swift
ensure_build_packages redis-server redis-tools
say "building release binaries"
swift build -c release --product chatroom >/dev/null
# 10,000 sockets in the load generator and as many in a server.
bench_setup bench-v2
say "work directory $work (server logs, results.jsonl)"

rows=()
run() {
  local out
  out=$("$bin/chatroom-bench" "$@" 2>>"$work/bench.err") || { tail -20 "$work/bench.err" >&2; die "chatroom-bench $* failed"; }
  grep '^{' <<<"$out" | tee -a "$work/results.jsonl"
  while IFS= read -r line; do rows+=("$line"); say "$line"; done < <(sed -n 's/^ROW //p' <<<"$out")
}

# field NAME MODE [LABEL]: the values of one JSON field over the results of a mode.
field() { grep "\"mode\":\"$2\"" "$work/results.jsonl" | { if [ -n "${3:-}" ]; then grep -F "\"label\":\"$3\""; else cat; fi; } | grep -o "\"$1\":[0-9.]*" | cut -d: -f2; }

if [ "$what" = all ] || [ "$what" = publish ]; then
  start_server
  for round in $(seq 1 "$rounds"); do
    say "publish round $round of $rounds"
    run v2-publish --port "$port" --server-pid "$server" --redis-pid "$redis_pid" --label "chat.v2" --publishers "$publishers" --window "$window" --seconds "$seconds"
    run publish --port "$port" --server-pid "$server" --label "POST /send/" --publishers 32 --seconds "$seconds" --subscribers 0
  done
  stop_server "$server"
fi

if [ "$what" = all ] || [ "$what" = latency ]; then
  start_server
  for round in $(seq 1 "$rounds"); do
    say "ack latency round $round of $rounds"
    run v2-publish --port "$port" --server-pid "$server" --redis-pid "$redis_pid" --label "chat.v2 paced" --publishers "$publishers" --window "$window" --seconds "$seconds" --rate 10000
  done
  stop_server "$server"
fi

storm_round() {
  local label="$1"; shift
  start_server
  local b_port="$port" b_pid="$server"
  # A is started the way the storm restarts it: one command line, exec'd by sh.
  local a_port a_command
  a_port=$(free_port)
  a_command="exec '$bin/chatroom' --port $a_port --broker redis --redis-url redis://127.0.0.1:$redis_port --log-level warning ${load_test_flags[*]} >/dev/null 2>>'$work/server-a.log'"
  sh -c "$a_command" &
  local a_pid=$!
  started_pids+=("$a_pid")
  wait_port "$a_port"
  # shellcheck disable=SC2086
  run v2-storm --port "$a_port" --server-pid "$a_pid" --publish-port "$b_port" --publish-server-pid "$b_pid" --redis-port "$redis_port" --redis-pid "$redis_pid" --label "$label" ${STORM_ARGS:-} \
    --restart-command "$a_command" --restarted-pid-file "$work/a.pid" --sockets "$storm_sockets" "$@"
  local restarted
  restarted=$(cat "$work/a.pid" 2>/dev/null || true)
  [ -n "$restarted" ] && started_pids+=("$restarted") && stop_server "$restarted"
  wait "$a_pid" 2>/dev/null || true
  stop_server "$b_pid"
}

if [ "$what" = all ] || [ "$what" = storm ]; then
  for round in $(seq 1 "$storm_rounds"); do
    say "storm round $round of $storm_rounds"
    storm_round "storm"
  done
  if [ "${MONITOR_ROUND:-1}" = 1 ]; then
    say "storm with a Redis MONITOR (calls per script; slower)"
    storm_round "storm, monitor" --monitor
  fi
fi

if [ "$what" = all ] || [ "$what" = idle ]; then
  for round in $(seq 1 "$idle_rounds"); do
    say "idle round $round of $idle_rounds"
    start_server
    # shellcheck disable=SC2086
    run v2-idle --port "$port" --server-pid "$server" --label "chat.v2 idle" --sockets "$idle_sockets" --subscriptions 10 --channels 100 ${IDLE_ARGS:-}
    stop_server "$server"
  done
fi

{
  echo "$(machine_summary); $rounds rounds ($storm_rounds storm, $idle_rounds idle), medians."
  echo
  if grep -q '"mode":"v2-publish","label":"chat.v2"' "$work/results.jsonl" 2>/dev/null; then
    v2=$(field acks_per_second v2-publish "chat.v2" | median)
    post=$(field requests_per_second publish "POST /send/" | median)
    echo "| publishing, S=0, ${seconds} s a round | median | rounds | server CPU per message (median) |"
    echo "|---|---|---|---|"
    echo "| chat.v2, P=$publishers W=$window | $v2 acks/s | $(field acks_per_second v2-publish "chat.v2" | spread) | $(field server_cpu_us_per_ack v2-publish "chat.v2" | median) µs |"
    echo "| POST /send/, P=32 | $post req/s | $(field requests_per_second publish "POST /send/" | spread) | – |"
    echo "| ratio | $(awk -v a="$v2" -v b="$post" 'BEGIN { if (b > 0) printf "%.1f×", a / b }') | | |"
    echo
  fi
  if grep -q '"label":"chat.v2 paced"' "$work/results.jsonl" 2>/dev/null; then
    echo "| acks at 10,000/s offered, P=$publishers | p50 ms | p99 ms | max ms | acks/s |"
    echo "|---|---|---|---|---|"
    echo "| median of $rounds | $(field ack_p50_ms v2-publish "chat.v2 paced" | median) | $(field ack_p99_ms v2-publish "chat.v2 paced" | median) | $(field ack_max_ms v2-publish "chat.v2 paced" | median) | $(field acks_per_second v2-publish "chat.v2 paced" | median) |"
    echo
  fi
  if grep -q '"mode":"v2-storm"' "$work/results.jsonl" 2>/dev/null; then
    echo "| storm, N=$storm_sockets | listening (s) | all resubscribed (s) | all caught up (s) | lost | duplicated | EVALSHA | XRANGE | HMGET | publishes meanwhile |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    grep '"mode":"v2-storm"' "$work/results.jsonl" | while IFS= read -r json; do
      get() { grep -o "\"$1\":[^,}]*" <<<"$json" | head -1 | cut -d: -f2- | tr -d '"'; }
      calls() { grep -o "\"$1\":{\"calls\":[0-9]*" <<<"$json" | grep -o '[0-9]*$' || echo 0; }
      echo "| $(get label) | $(get listening_after_s) | $(get all_subscribed_after_s) | $(get caught_up_after_s) | $(get lost) | $(get duplicates) | $(calls evalsha) | $(calls xrange) | $(calls hmget) | $(get acked_during_storm) |"
    done
    echo
    echo "Median caught up after (rounds without MONITOR): $(grep '"label":"storm"' "$work/results.jsonl" | grep -o '"caught_up_after_s":[0-9.]*' | cut -d: -f2 | median) s"
    echo
  fi
  if grep -q '"mode":"v2-idle"' "$work/results.jsonl" 2>/dev/null; then
    echo "| idle chat.v2 sockets | per socket (median) | rounds |"
    echo "|---|---|---|"
    echo "| $idle_sockets sockets × 10 subscriptions | $(field bytes_per_socket v2-idle | median) B | $(field bytes_per_socket v2-idle | spread) |"
  fi
} | tee "$work/summary.md"
say "results: $work/results.jsonl, summary: $work/summary.md"
