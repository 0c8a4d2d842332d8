#!/usr/bin/env bash
# Benchmarks: a private redis-server and the release binary on loopback, driven by
# chatroom-bench (Sources/ChatroomBench). Writes docs/BENCHMARKS.md.
#
#   scripts/bench.sh            every scenario, both brokers
#   scripts/bench.sh quick      small sizes, to check the script itself
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

mode="${1:-full}"
ensure_swift
ensure_build_packages redis-server redis-tools
say "building release binaries"
swift build -c release --product chatroom >/dev/null
# One process may hold at most the hard limit of open files (20,000 on these machines).
bench_setup bench

if [ "$mode" = quick ]; then
  fanouts=("100 200" "1000 50")
  publish_seconds=2
  connection_steps=100,1000
else
  fanouts=("100 10000" "1000 2000" "10000 200")
  publish_seconds=10
  connection_steps=1000,5000,10000,19000
fi

rows=()
jsons=()
run() {
  local out
  out=$("$bin/chatroom-bench" "$@" 2>"$work/bench.err") || { cat "$work/bench.err" >&2; die "chatroom-bench $* failed"; }
  while IFS= read -r line; do jsons+=("$line"); done < <(grep '^{' <<<"$out")
  while IFS= read -r line; do rows+=("$line"); say "$line"; done < <(sed -n 's/^ROW //p' <<<"$out")
}

for broker in redis memory; do
  port=$(free_port)
  "$bin/chatroom" --port "$port" --broker "$broker" --redis-url "redis://127.0.0.1:$redis_port" --log-level warning "${load_test_flags[@]}" >/dev/null 2>>"$work/server.log" &
  server=$!
  started_pids+=("$server")
  wait_port "$port"
  for scenario in "${fanouts[@]}"; do
    read -r subscribers messages <<<"$scenario"
    run fanout --port "$port" --server-pid "$server" --redis-pid "$redis_pid" --label "$broker" --subscribers "$subscribers" --messages "$messages" --publishers 8
  done
  if [ "$broker" = redis ]; then
    # The original article's scenario on one instance: as many sockets as a process may
    # hold here, 100 messages a second.
    if [ "$mode" = quick ]; then article=(500 100); else article=(19000 1000); fi
    run fanout --port "$port" --server-pid "$server" --redis-pid "$redis_pid" --label "redis, 100/s" --rate 100 --subscribers "${article[0]}" --messages "${article[1]}" --publishers 4
    # permessage-deflate: 512-byte messages, sockets that do not ask for it, then sockets that do.
    read -r subscribers messages <<<"${fanouts[1]}"
    run fanout --port "$port" --server-pid "$server" --redis-pid "$redis_pid" --label "redis, 512 B" --padding 512 --subscribers "$subscribers" --messages "$messages" --publishers 8
    run fanout --port "$port" --server-pid "$server" --redis-pid "$redis_pid" --label "redis, 512 B, deflate" --padding 512 --deflate --subscribers "$subscribers" --messages "$messages" --publishers 8
    # Server-Sent Events (GET /events) instead of sockets, the same size.
    run fanout --port "$port" --server-pid "$server" --redis-pid "$redis_pid" --label "redis, SSE" --events --subscribers "$subscribers" --messages "$messages" --publishers 8
  fi
  run publish --port "$port" --server-pid "$server" --label "$broker" --publishers 32 --seconds "$publish_seconds" --subscribers 0
  run publish --port "$port" --server-pid "$server" --label "$broker" --publishers 32 --seconds "$publish_seconds" --subscribers 100
  kill "$server"; wait "$server" 2>/dev/null || true
  if [ "$broker" = redis ]; then
    # A flood from another address: 429s for it, and the measured address's latency.
    # Per-address limit 1000/s here, so the measured 500/s stays under it.
    port=$(free_port)
    "$bin/chatroom" --port "$port" --broker "$broker" --redis-url "redis://127.0.0.1:$redis_port" --log-level warning --send-rate 1000 --send-burst 1000 >/dev/null 2>>"$work/server.log" &
    server=$!
    started_pids+=("$server")
    wait_port "$port"
    if [ "$mode" = quick ]; then flood_messages=500; else flood_messages=2500; fi
    run fanout --port "$port" --server-pid "$server" --label "redis, 500/s" --rate 500 --subscribers 100 --messages "$flood_messages" --publishers 4
    run fanout --port "$port" --server-pid "$server" --label "redis, 500/s, flood" --rate 500 --subscribers 100 --messages "$flood_messages" --publishers 4 --flood-publishers 8
    kill "$server"; wait "$server" 2>/dev/null || true
  fi
  # Memory per idle socket, on a fresh server.
  port=$(free_port)
  "$bin/chatroom" --port "$port" --broker "$broker" --redis-url "redis://127.0.0.1:$redis_port" --log-level warning "${load_test_flags[@]}" >/dev/null 2>>"$work/server.log" &
  server=$!
  started_pids+=("$server")
  wait_port "$port"
  run connections --port "$port" --server-pid "$server" --label "$broker" --steps "$connection_steps"
  kill "$server"; wait "$server" 2>/dev/null || true
done

{
  echo "# Benchmarks"
  echo
  echo "$(machine_summary),"
  echo "release builds. Server, Redis and load generator share the $(nproc) cores."
  echo "Reproduce with \`scripts/bench.sh\`$([ "$mode" = quick ] && echo " quick")."
  echo
  echo "## Fan-out"
  echo
  echo "S subscribers of the original protocol (channel by cookie) on K channels; M messages posted through"
  echo "\`POST /send/\` by P keep-alive publishers as fast as they are answered (at R a second where the size says R). Latency is post start to"
  echo "delivery (p50 / p90 / p99 / max, ms). Server CPU is user + system time from /proc over the run, divided by"
  echo "deliveries. Out of order counts a publisher's messages arriving against that publisher's own order."
  echo "The load generator's own CPU per delivery is in the last column: the three share two cores."
  echo
  echo "| broker | mode | size | delivered / expected | duplicates | out of order | deliveries/s | latency ms | server CPU per delivery | load generator CPU per delivery |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}" | grep -F '| fanout |'
  echo
  echo "## Publishing"
  echo
  echo "| broker | mode | size | answers | throughput | server CPU |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}" | grep -F '| publish |'
  echo
  echo "## Idle sockets"
  echo
  echo "Sockets of the original protocol opened in steps against a fresh server; server resident memory"
  echo "above its idle size, divided by sockets. Then one message is published and must reach every socket."
  echo "One process may hold 20,000 open files here, which caps a server (and the load generator) at about"
  echo "19,900 sockets; the server raises its soft limit to that at start and logs both limits."
  echo
  echo "| broker | mode | size | memory | per socket |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}" | grep -F '| connections |'
  echo
  printf '%s\n' "${rows[@]}" | grep -F '| broadcast |' | sed 's/^/- /'
  echo
  echo "## Raw results"
  echo
  echo '```'
  for json in "${jsons[@]}"; do echo "$json"; done
  echo '```'
  # What the numbers mean, the targets and the profile: written by hand, kept beside.
  if [ -f docs/benchmarks-notes.md ]; then echo; cat docs/benchmarks-notes.md; fi
} > docs/BENCHMARKS.md
say "wrote docs/BENCHMARKS.md"
