#!/usr/bin/env bash
# Micro-benchmarks of the hot path (Microbench/, ordo-one/benchmark) and callgrind's
# instruction count of the in-process fan-out. Writes docs/MICROBENCHMARKS.md.
#
#   scripts/microbench.sh
#
# The first run builds ordo-one/benchmark and its dependencies (a few minutes); the
# server's own builds never do.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_swift
ensure_build_packages valgrind binutils

cd Microbench
say "building the micro-benchmarks (release)"
swift build -c release >/dev/null
bin="$(swift build -c release --show-bin-path)"
say "running the micro-benchmarks"
table=$(swift package --disable-sandbox benchmark --no-progress --format markdown 2>/dev/null | sed -n '/^## /,$p')
cd ..

# callgrind cannot read Swift's DWARF 5 (Debian's valgrind 3.19): count a copy without
# debug info; function names still come from the symbol table. Collect only inside
# InProcessFanout.deliver, not while the sockets are set up or their writes collected.
work=$(mktemp -d "${TMPDIR:-/tmp}/chatroom-microbench.XXXXXX")
objcopy --strip-debug "$bin/FanoutCount" "$work/FanoutCount"
deliver=$(nm "$work/FanoutCount" | awk '/InProcessFanoutC7deliver/ && !found {print $3; found = 1}')
counts=()
for format in raw chatv1; do
  valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.$format" --toggle-collect="$deliver" \
    "$work/FanoutCount" 1000 200 "$format" >/dev/null 2>"$work/valgrind.$format.log" \
    || die "callgrind failed: $work/valgrind.$format.log"
  total=$(callgrind_annotate "$work/callgrind.$format" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
  counts+=("| $format | $total | $(( total / 200000 )) |")
  say "callgrind $format: $(( total / 200000 )) instructions per delivery"
done

{
  echo "# Micro-benchmarks"
  echo
  echo "$(machine_summary). Reproduce with \`scripts/microbench.sh\`."
  echo
  echo "The hot path's per-message work without the network (Microbench/Benchmarks/HotPath): the"
  echo "RESP parse of one pub/sub message through hiredis' reader, reading the envelope, making"
  echo "the frames of both wire formats, and one message fanned out to 1,000 in-process sockets"
  echo "(\`InProcessFanout\`: the server's \`ChatSocket\` handlers on NIO's \`EmbeddedChannel\`; for the"
  echo "fan-out, one iteration is 1,000 deliveries). Malloc, retain and release counts are exact"
  echo "per iteration; times are this noisy machine's. Hardware instruction counters are not"
  echo "available in these VMs, so instructions come from callgrind below."
  echo
  echo "$table"
  echo
  echo "## Instructions per delivery (callgrind)"
  echo
  echo "\`FanoutCount\` delivers 200 messages, one drain each, to 1,000 in-process sockets under"
  echo "\`valgrind --tool=callgrind\`, counting only inside \`InProcessFanout.deliver\` (encode once,"
  echo "the hub's walk, each socket's write and flush). \`EmbeddedChannel\`'s own write bookkeeping"
  echo "is counted too and is most of it: a real socket's write ends in the kernel instead."
  echo
  echo "| format | instructions | per delivery |"
  echo "|---|---|---|"
  printf '%s\n' "${counts[@]}"
} > docs/MICROBENCHMARKS.md
say "wrote docs/MICROBENCHMARKS.md"
