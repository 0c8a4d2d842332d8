#!/usr/bin/env bash
# The archive's benchmarks: a private redis-server and PostgreSQL (durable commits), a
# release build of chatroom, on loopback. Prints every result and a Markdown summary;
# docs/BENCHMARKS.md quotes them.
#
#   scripts/bench-archive.sh [all|publish|reads] [quick]
#
#   publish  chat.v2 sends paced at RATE (default 20,000/s) over 8 sockets and 8 channels,
#            ROUNDS rounds alternating a server without an archive and one with
#            --archive-url postgres://…: ack latency (p50, p99) of each, and with the
#            archive how fast it took the messages in (rows counted in PostgreSQL until
#            it has them all) and how long after the last ack it had them
#   reads    1,000,000 messages in one archived channel (written into PostgreSQL
#            directly); then /search (a word in one message, in 0.1 %, in 1 % and in 10 %
#            of them) and /history pages of 100 from the archive at random places, one
#            request at a time on a kept connection: p50 and p99 of each
#
# The machine is shared: run it as `flock /tmp/cpu.lock scripts/bench-archive.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

what="${1:-all}"
size="${2:-full}"
rounds="${ROUNDS:-5}"
rate="${RATE:-20000}"
seconds="${SECONDS_PER_ROUND:-8}"
rows_total="${ROWS:-1000000}"
requests="${REQUESTS:-1000}"
if [ "$size" = quick ]; then
  rounds=1; seconds=2; rows_total=20000; requests=100
fi

ensure_swift
ensure_build_packages redis-server redis-tools postgresql python3
say "building release binaries"
swift build -c release --product chatroom >/dev/null
bench_setup bench-archive
trap 'stop_private_postgres; stop_started' EXIT
POSTGRES_DURABLE=1 start_private_postgres
postgres_runner
psql() { "${pg_run[@]}" "$pg_bin/psql" -h 127.0.0.1 -p "$POSTGRES_PORT" -U "$pg_owner" -d chatroom -v ON_ERROR_STOP=1 -qtA "$@"; }
say "work directory $work; PostgreSQL on port $POSTGRES_PORT"

# field NAME LABEL: one JSON field over the results of a label.
field() { grep -F "\"label\":\"$2\"" "$work/results.jsonl" | grep -o "\"$1\":[0-9.]*" | cut -d: -f2; }
now_ms() { date +%s%3N; }
# CPU seconds of PostgreSQL so far: the server and its processes (children of it).
pg_cpu() {
  local pid total=0 ticks
  for pid in "$POSTGRES_PID" $(pgrep -P "$POSTGRES_PID" || true); do
    ticks=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
    total=$(( total + ticks ))
  done
  awk -v t="$total" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'
}

summary=()

if [ "$what" = all ] || [ "$what" = publish ]; then
  for round in $(seq 1 "$rounds"); do
    for archive in no yes; do
      say "publish round $round of $rounds, archive: $archive"
      if [ "$archive" = yes ]; then start_server --archive-url "$POSTGRES_URL"; label="with the archive"; else start_server; label="without"; fi
      before=$(psql -c "SELECT count(*) FROM messages" 2>/dev/null || echo 0)
      pg_before=$(pg_cpu)
      started=$(now_ms)
      out=$("$bin/chatroom-bench" v2-publish --port "$port" --server-pid "$server" --redis-pid "$redis_pid" --label "$label" \
        --publishers 8 --window 64 --channels 8 --seconds "$seconds" --rate "$rate" 2>>"$work/bench.err") \
        || { tail -20 "$work/bench.err" >&2; die "chatroom-bench failed"; }
      acked_at=$(now_ms)
      line=$(grep '^{' <<<"$out")
      acked=$(grep -o '"acknowledged":[0-9]*' <<<"$line" | cut -d: -f2)
      extra=""
      if [ "$archive" = yes ]; then
        # Until PostgreSQL holds every acknowledged message (at most 120 s).
        kept=0
        for _ in $(seq 1 1200); do
          kept=$(( $(psql -c "SELECT count(*) FROM messages") - before ))
          [ "$kept" -ge "$acked" ] && break
          sleep 0.1
        done
        done_at=$(now_ms)
        [ "$kept" -ge "$acked" ] || say "the archive has $kept of $acked after 120 s"
        archive_rate=$(awk -v n="$kept" -v ms=$(( done_at - started )) 'BEGIN { printf "%.0f", n * 1000 / ms }')
        pg_us=$(awk -v a="$(pg_cpu)" -v b="$pg_before" -v n="$kept" 'BEGIN { printf "%.1f", (a - b) * 1e6 / (n > 0 ? n : 1) }')
        extra=",\"archived\":$kept,\"archive_behind_ms\":$(( done_at - acked_at )),\"archived_per_second\":$archive_rate,\"postgres_cpu_us_per_message\":$pg_us"
      fi
      echo "${line%\}}$extra}" | tee -a "$work/results.jsonl"
      stop_server "$server"
    done
  done
  summary+=("Publishing at $rate messages/s (chat.v2, 8 sockets, 8 channels, ${seconds} s a round), $rounds rounds each, alternating; medians:")
  summary+=("")
  summary+=("| server | acks/s | ack p50 | ack p99 | p99 of the rounds | server CPU a message | PostgreSQL CPU a message | archived per second (first send to last row) | the archive behind the last ack |")
  summary+=("|---|---|---|---|---|---|---|---|---|")
  for label in "without" "with the archive"; do
    per="–"; behind="–"; pg="–"
    if [ "$label" != without ]; then
      per="$(field archived_per_second "$label" | median)/s"
      behind="$(field archive_behind_ms "$label" | median) ms"
      pg="$(field postgres_cpu_us_per_message "$label" | median) µs"
    fi
    summary+=("| $label | $(field acks_per_second "$label" | median) | $(field ack_p50_ms "$label" | median) ms | **$(field ack_p99_ms "$label" | median) ms** | $(field ack_p99_ms "$label" | spread) ms | $(field server_cpu_us_per_ack "$label" | median) µs | $pg | $per | $behind |")
  done
  summary+=("")
fi

if [ "$what" = all ] || [ "$what" = reads ]; then
  start_server --archive-url "$POSTGRES_URL"
  wait_until_ready() { for _ in $(seq 1 100); do psql -c "SELECT 1 FROM archive_schema" >/dev/null 2>&1 && return 0; sleep 0.1; done; die "the archive was not prepared"; }
  wait_until_ready
  say "writing $rows_total messages into PostgreSQL"
  started=$(now_ms)
  # Words of a vocabulary in four bands: w1…w9 in ~10 % of messages each, c1…c99 in ~1 %,
  # m1…m999 in ~0.1 %, and an order number that is in one message only.
  psql <<SQL
INSERT INTO messages (channel, epoch, "offset", time, kind, sender, name, data)
SELECT 'bench_archive', 'e1', g, 1800000000000 + g * 100, 'm', 'bench', 'Bench',
       'w' || (g % 10) || ' c' || ((g * 7) % 100) || ' m' || ((g * 13) % 1000) || ' order ' || (100000000 + g) || ' about the delivery and the invoice'
FROM generate_series(1, $rows_total) AS g;
ANALYZE messages;
SQL
  say "written in $(( ($(now_ms) - started) / 1000 )) s"
  python3 - "$port" "$rows_total" "$requests" <<'PY' | tee -a "$work/results.jsonl"
import http.client, json, random, sys, time
port, rows, requests = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
random.seed(7)
connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
def timed(path):
    started = time.perf_counter()
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status != 200:
        raise SystemExit(f"{path}: {response.status} {body[:200]!r}")
    return elapsed, json.loads(body)
def quantile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]
cases = {
    "search: one message": lambda: f"/search?channel=bench_archive&q=order%20{100000000 + random.randint(1, rows)}",
    "search: 0.1 %": lambda: f"/search?channel=bench_archive&q=m{random.randint(0, 999)}",
    "search: 1 %": lambda: f"/search?channel=bench_archive&q=c{random.randint(0, 99)}",
    "search: 10 %": lambda: f"/search?channel=bench_archive&q=w{random.randint(0, 9)}",
    "history: 100 before a random offset": lambda: f"/history?channel=bench_archive&epoch=e1&before={random.randint(101, rows)}&limit=100",
}
for label, path in cases.items():
    for _ in range(10):
        timed(path())  # warm-up
    latencies, found = [], 0
    for _ in range(requests):
        elapsed, answer = timed(path())
        latencies.append(elapsed)
        found += len(answer["messages"])
    print(json.dumps({"mode": "archive-read", "label": label, "requests": requests, "rows": rows,
                      "messages_per_answer": round(found / requests, 1),
                      "p50_ms": round(quantile(latencies, 0.5), 2), "p99_ms": round(quantile(latencies, 0.99), 2),
                      "max_ms": round(max(latencies), 2)}))
PY
  stop_server "$server"
  summary+=("Reading $rows_total archived messages of one channel (PostgreSQL), $requests requests each, one at a time on one kept connection:")
  summary+=("")
  summary+=("| request | messages an answer | p50 | p99 | max |")
  summary+=("|---|---|---|---|---|")
  while IFS= read -r line; do
    label=$(grep -o '"label": "[^"]*"' <<<"$line" | cut -d'"' -f4)
    get() { grep -o "\"$1\": [0-9.]*" <<<"$line" | awk '{print $2}'; }
    summary+=("| $label | $(get messages_per_answer) | $(get p50_ms) ms | **$(get p99_ms) ms** | $(get max_ms) ms |")
  done < <(grep '"archive-read"' "$work/results.jsonl")
  summary+=("")
fi

echo
echo "$(machine_summary), $(postgres --version 2>/dev/null || "$pg_bin/postgres" --version)."
echo
for line in "${summary[@]}"; do echo "$line"; done
