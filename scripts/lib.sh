# Shared by the scripts in scripts/. Source it; do not run it.

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Installs the Debian packages that are missing (as root, or through sudo).
ensure_packages() {
  local missing=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "need root or sudo to install: ${missing[*]}"
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The build's own system libraries (hiredis, zlib, pkg-config to find them), and any
# packages a script needs besides.
ensure_build_packages() {
  ensure_packages pkg-config libhiredis-dev zlib1g-dev "$@"
}

ensure_swift() {
  command -v swift >/dev/null || die "Swift 6.2 or later is needed: install a toolchain from swift.org and put it on PATH"
}

# The system-wide redis-server package starts a service on port 6379 when installed;
# that is fine for scripts/run.sh. Tests never use it: they start their own.

# Starts a private redis-server on a free loopback port with no persistence.
# Sets REDIS_PID and REDIS_PORT. Extra arguments go to redis-server.
start_private_redis() {
  local dir
  dir=$(mktemp -d "${TMPDIR:-/tmp}/chatroom-redis.XXXXXX")
  for _ in $(seq 1 20); do
    REDIS_PORT=$(random_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no \
      --logfile "$dir/redis.log" "$@" &
    REDIS_PID=$!
    for _ in $(seq 1 50); do
      if redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then return 0; fi
      kill -0 "$REDIS_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  done
  die "could not start redis-server on a free port (log: $dir/redis.log)"
}

stop_private_redis() {
  if [ -n "${REDIS_PID:-}" ]; then
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=""
  fi
}

# Starts a throwaway PostgreSQL cluster on a free loopback port, owned by an unprivileged
# user (PostgreSQL refuses to run as root; as root the cluster belongs to `nobody`), with
# a database `chatroom` that user owns. Sets POSTGRES_PID, POSTGRES_PORT, POSTGRES_DIR and
# POSTGRES_URL. Needs the `postgresql` package (ensure_packages postgresql).
start_private_postgres() {
  postgres_runner
  POSTGRES_DIR=$(mktemp -d "${TMPDIR:-/tmp}/chatroom-postgres.XXXXXX")
  [ "$(id -u)" -ne 0 ] || chown nobody "$POSTGRES_DIR"
  "${pg_run[@]}" "$pg_bin/initdb" -D "$POSTGRES_DIR/data" -U "$pg_owner" --auth=trust --no-sync -E UTF8 >"$POSTGRES_DIR/initdb.log" 2>&1 \
    || die "initdb failed (log: $POSTGRES_DIR/initdb.log)"
  for _ in $(seq 1 20); do
    POSTGRES_PORT=$(free_port)
    if launch_postgres; then
      "${pg_run[@]}" "$pg_bin/createdb" -h 127.0.0.1 -p "$POSTGRES_PORT" -U "$pg_owner" chatroom
      POSTGRES_URL="postgres://$pg_owner@127.0.0.1:$POSTGRES_PORT/chatroom?sslmode=disable"
      return 0
    fi
  done
  die "could not start PostgreSQL on a free port (log: $POSTGRES_DIR/postgres.log)"
}

# pg_bin, pg_owner and pg_run (how to run a PostgreSQL program: as `nobody` when root).
postgres_runner() {
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -x "$pg_bin/initdb" ] || die "PostgreSQL's initdb not found under /usr/lib/postgresql: install the postgresql package"
  pg_owner=$(id -un)
  pg_run=()
  if [ "$(id -u)" -eq 0 ]; then
    pg_owner=nobody
    pg_run=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
  fi
}

# Starts the server of $POSTGRES_DIR on $POSTGRES_PORT (sets POSTGRES_PID); fails if it
# does not answer within 10 s.
launch_postgres() {
  # Tests trade durability for speed; POSTGRES_DURABLE=1 (the fault runs, which kill the
  # server) keeps commits: synchronous_commit=off loses the last ones a crash interrupts.
  # fsync=off loses nothing when only the server dies, not the machine.
  local commits=(-c synchronous_commit=off)
  [ "${POSTGRES_DURABLE:-0}" = 1 ] && commits=()
  "${pg_run[@]}" "$pg_bin/postgres" -D "$POSTGRES_DIR/data" -p "$POSTGRES_PORT" -c listen_addresses=127.0.0.1 \
    -c unix_socket_directories="$POSTGRES_DIR" -c fsync=off "${commits[@]}" -c full_page_writes=off \
    >>"$POSTGRES_DIR/postgres.log" 2>&1 &
  POSTGRES_PID=$!
  for _ in $(seq 1 100); do
    "${pg_run[@]}" "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$POSTGRES_PORT" 2>/dev/null && return 0
    kill -0 "$POSTGRES_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill "$POSTGRES_PID" 2>/dev/null || true
  wait "$POSTGRES_PID" 2>/dev/null || true
  return 1
}

# The private PostgreSQL dies (SIGKILL, as in a crash), and later comes back on its data
# and port.
kill_private_postgres() {
  local child
  # Its own processes first (children of the server this script started), then it.
  for child in $(pgrep -P "$POSTGRES_PID" || true); do kill -9 "$child" 2>/dev/null || true; done
  kill -9 "$POSTGRES_PID" 2>/dev/null || true
  wait "$POSTGRES_PID" 2>/dev/null || true
}

restart_private_postgres() {
  postgres_runner
  launch_postgres || die "PostgreSQL did not come back (log: $POSTGRES_DIR/postgres.log)"
}

stop_private_postgres() {
  if [ -n "${POSTGRES_PID:-}" ]; then
    kill -INT "$POSTGRES_PID" 2>/dev/null || true  # a fast shutdown
    wait "$POSTGRES_PID" 2>/dev/null || true
    POSTGRES_PID=""
    rm -rf "$POSTGRES_DIR"
  fi
}

# Ports and processes for scripts that start servers of their own (bench.sh, compare.sh,
# profile.sh, faults.sh, autobahn.sh).

port_is_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Below the kernel's ephemeral range (32768 and up by default), so that no client socket
# of a load test already holds the port as its own local end.
random_port() {
  local low
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  echo $(( RANDOM % (low - 20000) + 20000 ))
}

free_port() {
  local port
  while :; do
    port=$(random_port)
    port_is_free "$port" && { echo "$port"; return; }
  done
}

wait_port() {
  for _ in $(seq 1 100); do port_is_free "$1" || return 0; sleep 0.1; done
  die "nothing listens on port $1"
}

# Every process a script starts goes into started_pids; stop_started kills them all.
# Start processes directly, never in $( ): they must be children of the main shell.
started_pids=()
stop_started() {
  [ "$BASHPID" = "$$" ] || return 0  # only the main shell, not a $( ) subshell
  for pid in "${started_pids[@]:-}"; do [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}

# For the benchmark scripts: a redis-server without persistence in directory $1 on a free
# port, stopped by stop_started. Sets redis_port and redis_pid.
start_bench_redis() {
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$1" --logfile "$1/redis.log" >/dev/null &
  redis_pid=$!
  started_pids+=("$redis_pid")
  wait_port "$redis_port"
}

# The preamble of the benchmark scripts: the release load generator built (its
# directory in $bin), the open-file limit raised to the hard limit (one process may hold
# at most that many sockets), a temporary directory in $work (named after $1), every
# started process stopped on exit, and a private redis-server (start_bench_redis).
bench_setup() {
  swift build -c release --product chatroom-bench >/dev/null
  bin="$(swift build -c release --show-bin-path)"
  ulimit -n "$(ulimit -Hn)"
  work=$(mktemp -d "${TMPDIR:-/tmp}/chatroom-$1.XXXXXX")
  trap stop_started EXIT
  start_bench_redis "$work"
}

# For the benchmark scripts, after bench_setup: a chatroom on a free port against the
# bench Redis, with the load-test flags and any ARGS…; sets port and server.
start_server() {
  port=$(free_port)
  "$bin/chatroom" --port "$port" --broker redis --redis-url "redis://127.0.0.1:$redis_port" --log-level warning "${load_test_flags[@]}" "$@" \
    >/dev/null 2>>"$work/server.log" &
  server=$!
  started_pids+=("$server")
  wait_port "$port"
}

stop_server() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# The median of the numbers on standard input ("–" for none), and their range.
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "–"; else print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
spread() { sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) printf "%s–%s", lo, hi }'; }

# Load tests publish thousands of messages a second and open thousands of sockets from
# one loopback address: the per-address limits that protect a public server are lifted.
load_test_flags=(--send-rate 0 --history-rate 0 --socket-message-rate 0 --max-sockets-per-address 100000 --new-channels-per-minute 0 --max-connections-per-address 100000)

# One line for a results page: the date, the machine and the Redis version.
machine_summary() {
  local cpu memory
  cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
  memory=$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
  echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores ($cpu), $memory, $(. /etc/os-release; echo "$PRETTY_NAME"), $(redis-server --version | cut -d' ' -f1-3)"
}

# A Redis Cluster of three primaries and three replicas on loopback, for the tests:
# sets CLUSTER_SEEDS (host:port,…), CLUSTER_PIDS and CLUSTER_DIR. Node timeout is one
# second, so a failover after a crash takes a few seconds. Bus ports are chosen too
# (cluster-port), below the ephemeral range like the data ports.
start_redis_cluster() {
  CLUSTER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/chatroom-cluster.XXXXXX")
  CLUSTER_PIDS=""
  CLUSTER_SEEDS=""
  local nodes="" port bus i
  for i in 1 2 3 4 5 6; do
    port=$(free_port)
    bus=$(free_port)
    mkdir -p "$CLUSTER_DIR/$port"
    redis-server --port "$port" --cluster-port "$bus" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file nodes.conf --cluster-node-timeout 1000 --dir "$CLUSTER_DIR/$port" \
      --save "" --appendonly no --logfile "$CLUSTER_DIR/$port/redis.log" &
    CLUSTER_PIDS="$CLUSTER_PIDS $!"
    nodes="$nodes 127.0.0.1:$port"
    CLUSTER_SEEDS="${CLUSTER_SEEDS:+$CLUSTER_SEEDS,}127.0.0.1:$port"
  done
  for node in $nodes; do
    for _ in $(seq 1 50); do
      redis-cli -p "${node#*:}" ping 2>/dev/null | grep -q PONG && break
      sleep 0.1
    done
  done
  # shellcheck disable=SC2086
  redis-cli --cluster create $nodes --cluster-replicas 1 --cluster-yes >"$CLUSTER_DIR/create.log" 2>&1 \
    || die "redis-cli --cluster create failed (log: $CLUSTER_DIR/create.log)"
  for node in $nodes; do
    for _ in $(seq 1 100); do
      redis-cli -p "${node#*:}" cluster info 2>/dev/null | grep -q "cluster_state:ok" && break
      sleep 0.1
    done
  done
  # Replicas in sync, so that a failover can happen from the start.
  for node in $nodes; do
    for _ in $(seq 1 100); do
      redis-cli -p "${node#*:}" info replication 2>/dev/null | grep -q -e "role:master" -e "master_link_status:up" && break
      sleep 0.1
    done
  done
}

stop_redis_cluster() {
  local pid
  for pid in ${CLUSTER_PIDS:-}; do kill "$pid" 2>/dev/null || true; done
  for pid in ${CLUSTER_PIDS:-}; do wait "$pid" 2>/dev/null || true; done
  CLUSTER_PIDS=""
}

# `swift build --build-tests`, failing on any compiler warning in the project's own
# code (Sources/, Tests/): the code builds without warnings, and this keeps it so. Only
# what the build compiles is seen, so a fresh clone checks everything.
build_without_warnings() {
  local log status
  log=$(mktemp)
  set +e
  swift build --build-tests "$@" 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" != 0 ]; then rm -f "$log"; return "$status"; fi
  local warnings
  warnings=$(grep -E "^$PWD/(Sources|Tests)/[^:]+:[0-9]+:[0-9]+: warning:" "$log" | sort -u || true)
  rm -f "$log"
  if [ -n "$warnings" ]; then
    printf '%s\n' "$warnings" >&2
    die "the build has warnings in the project's own code (above): fix them"
  fi
}
