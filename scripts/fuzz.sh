#!/usr/bin/env bash
# Coverage-guided fuzzing of the server's input parsers with libFuzzer (docs/FUZZING.md).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]    (default: 600 s, every target)
#
# Builds each target in Fuzz/ outside SwiftPM: its driver and the pure parser files,
# compiled together by swiftc with -sanitize=fuzzer,address. Then, one target at a time:
# replays the committed corpus Fuzz/corpus/<target>/ (the inputs that crashed the server
# once are in it), and fuzzes for SECONDS_PER_TARGET, with Fuzz/<target>.dict if there
# is one, on a copy of that corpus in .build-fuzz/corpus/ (new inputs go there, never
# into the repository; it grows from run to run, delete it to start over). No network. Exits non-zero, naming the input, when a
# target crashes, times out (10 s per input) or passes 2 GB; the inputs are kept in
# .build-fuzz/crashes/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

seconds=${1:-600}
[[ $seconds =~ ^[1-9][0-9]*$ ]] || die "usage: scripts/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]"
shift $(( $# > 0 ? 1 : 0 ))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(form multipart extensions chatv1 chatv2 fields jwt position archive)
command -v swiftc >/dev/null || die "swiftc is needed (Swift 6.2 or later, from swift.org, on PATH)"

# Files that import nothing but Foundation; they use one another (trimmingSpaces is in
# FormData.swift), so every target gets all of them.
parsers=(
  Sources/ChatServer/HTTP/FormData.swift
  Sources/ChatServer/HTTP/Multipart.swift
  Sources/ChatServer/WebSocket/PerMessageDeflate+Negotiation.swift
  Sources/ChatServer/WebSocket/WebSocketKey.swift
  Sources/ChatServer/WebSocket/ChatV1Request.swift
  Sources/ChatServer/WebSocket/ChatV2Request.swift
  Sources/Chat/Offset.swift
  Sources/Chat/SenderName.swift
  Sources/Chat/MessageText.swift
  Sources/Chat/IdempotencyKey.swift
  Sources/Chat/ChannelName.swift
  Sources/ChatServer/Security/Base64URL.swift
  Sources/ChatServer/Security/JWTReading.swift
  Sources/ChatServer/EventStream/EventStreamPosition.swift
  Sources/ChatServer/Security/PageOrigin.swift
  Sources/ChatServer/TranscriptSince.swift
  Sources/ChatArchive/SearchWords.swift
)

scratch=.build-fuzz
mkdir -p "$scratch/bin" "$scratch/logs"
started=$SECONDS

for target in "${targets[@]}"; do
  [ -f "Fuzz/$target.swift" ] && [ -d "Fuzz/corpus/$target" ] || die "no target $target (Fuzz/$target.swift and Fuzz/corpus/$target/)"
  say "building $target"
  # gold warns "Cannot export local symbol __asan_…" for every ASan global: harmless.
  if ! swiftc -parse-as-library -swift-version 6 -sanitize=fuzzer,address -O -g -module-name "Fuzz_$target" \
      -o "$scratch/bin/$target" "Fuzz/$target.swift" "${parsers[@]}" >"$scratch/logs/$target.build.log" 2>&1; then
    grep -v 'Cannot export local symbol' "$scratch/logs/$target.build.log" >&2 || true
    die "could not build $target (log: $scratch/logs/$target.build.log)"
  fi
done

# A trap (fatalError, an overflow, an index out of range) is then reported by libFuzzer
# and ASan; Swift's own backtracer would trip over ASan while reading the crashed process.
export SWIFT_BACKTRACE=enable=no
failed=0
for target in "${targets[@]}"; do
  binary=$scratch/bin/$target
  crashes=$scratch/crashes/$target
  mkdir -p "$crashes" "$scratch/corpus/$target"

  say "$target: replaying Fuzz/corpus/$target ($(find "Fuzz/corpus/$target" -type f | wc -l) inputs)"
  log=$scratch/logs/$target.replay.log
  if ! find "Fuzz/corpus/$target" -type f -print0 | sort -z \
      | xargs -0 "$binary" -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$crashes/" >"$log" 2>&1; then
    input=$(grep -o 'Running: .*' "$log" | tail -n 1 | cut -d' ' -f2-)
    tail -n 40 "$log" >&2
    printf 'error: %s crashed on the committed input %s (log: %s)\n' "$target" "${input:-?}" "$log" >&2
    failed=1
    continue
  fi

  say "$target: fuzzing for $seconds s"
  cp -r "Fuzz/corpus/$target/." "$scratch/corpus/$target/"
  log=$scratch/logs/$target.log
  dictionary=()
  [ -f "Fuzz/$target.dict" ] && dictionary=(-dict="Fuzz/$target.dict")
  if "$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      "${dictionary[@]}" -artifact_prefix="$crashes/" "$scratch/corpus/$target" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    say "$target: no crash in ${runs:-?} runs (coverage ${cov:-?} edges, corpus $(find "$scratch/corpus/$target" -type f | wc -l) inputs)"
  else
    tail -n 40 "$log" >&2
    input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    printf 'error: %s found a crash; input: %s (log: %s)\n' "$target" "${input:-?}" "$log" >&2
    failed=1
  fi
done

say "fuzzing took $(( SECONDS - started )) s"
[ "$failed" = 0 ] || die "a fuzz target failed: see above"
