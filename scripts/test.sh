#!/usr/bin/env bash
# Runs every test: installs what is missing, starts a private redis-server on a spare
# loopback port, a Redis Cluster (3 primaries, 3 replicas) on more and a throwaway
# PostgreSQL cluster (initdb as an unprivileged user) on another, builds (failing
# on a compiler warning in our own code), runs `swift test` against them, and stops them; then the parsers under libFuzzer (scripts/fuzz.sh 15,
# about 2 minutes; CHATROOM_SKIP_FUZZ=1 skips it); then the page's tests in headless Chromium
# (scripts/browser-test.sh, about a minute; CHATROOM_SKIP_BROWSER=1 skips them); then the release
# built and run in a minimal Debian root (scripts/release-test.sh, about 8 minutes from a clean
# clone; CHATROOM_SKIP_RELEASE=1 skips it); then the fault harness in
# its short mode (scripts/faults.sh short, about 2 minutes; CHATROOM_SKIP_FAULTS=1 skips
# it) and the WebSocket conformance suite (scripts/autobahn.sh, about 13 minutes;
# CHATROOM_SKIP_AUTOBAHN=1 skips it; CHATROOM_AUTOBAHN=quick runs cases 1-7 and 10 only, as CI does).
# Arguments go to `swift test`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_swift
ensure_build_packages redis-server redis-tools postgresql

start_private_redis
trap 'stop_private_redis; stop_redis_cluster; stop_private_postgres' EXIT
say "redis-server for the tests on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID)"
start_redis_cluster
say "Redis Cluster for the tests: $CLUSTER_SEEDS (3 primaries, 3 replicas)"
start_private_postgres
say "PostgreSQL for the tests on 127.0.0.1:$POSTGRES_PORT (pid $POSTGRES_PID)"

export CHATROOM_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export CHATROOM_TEST_REDIS_CLUSTER="$CLUSTER_SEEDS"
export CHATROOM_TEST_POSTGRES_URL="$POSTGRES_URL"
build_without_warnings
swift test --skip-build "$@"
stop_private_redis
stop_redis_cluster
stop_private_postgres

if [ "${CHATROOM_SKIP_FUZZ:-0}" != 1 ]; then
  say "the parsers under libFuzzer, 15 s a target"
  bash scripts/fuzz.sh 15
fi

if [ "${CHATROOM_SKIP_BROWSER:-0}" != 1 ]; then
  say "the page in headless Chromium"
  bash scripts/browser-test.sh
fi

if [ "${CHATROOM_SKIP_RELEASE:-0}" != 1 ]; then
  say "the release on a bare Debian root (chroot)"
  bash scripts/release-test.sh
fi

if [ "${CHATROOM_SKIP_FAULTS:-0}" != 1 ]; then
  say "fault harness, short mode"
  bash scripts/faults.sh short
fi

if [ "${CHATROOM_SKIP_AUTOBAHN:-0}" != 1 ]; then
  say "WebSocket conformance (Autobahn|Testsuite)"
  bash scripts/autobahn.sh "${CHATROOM_AUTOBAHN:-full}"
fi
