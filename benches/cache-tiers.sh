#!/usr/bin/env bash
# The response cache's tiers on 127.0.0.1: requests per second and p99 of GET hits served
# from the local store, from Redis alone (a second proxy whose local store is too small to
# keep anything, so every request asks Redis), from a proxy with both tiers, and of the
# same requests with the cache off (every one to the origin).
#   benches/cache-tiers.sh                          # /small and /large, 5 s each, 32 connections
#   PATHS=/small DURATION=10s CONNS=64 benches/cache-tiers.sh
# The proxy runs on CPU 0 (`--threads 1`), wrk, the origin and redis-server on CPU 1.
# The last column is the `Cache-Status` of one request after each run: a hit from the
# tier measured, not a breaker opened by the load.
# Needs: redis-server, wrk, curl, the harness's backend (cargo build --release in ../shared/bench).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
harness_built
paths=${PATHS:-/small /large}
duration=${DURATION:-5s}
conns=${CONNS:-32}
origin=18181 redis=18179 port=18180
cargo build --release --bin switchyard >/dev/null 2>&1
start 1 "$bin/bench-backend" --port $origin
start 1 redis-server --port $redis --bind 127.0.0.1 --save "" --appendonly no
work=$(mktemp -d)
sleep 0.5

# run NAME ARGS...: a proxy with ARGS, warmed with two requests per path, then wrk per path.
run() {
  local name=$1
  shift
  taskset -c 0 target/release/switchyard serve --listen 127.0.0.1:$port \
    --backends 127.0.0.1:$origin --threads 1 --no-admin "$@" >/dev/null 2>&1 &
  local proxy=$!
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  for path in $paths; do
    curl -s -o /dev/null "http://127.0.0.1:$port$path"
    sleep 0.2 # the shared tier writes on a task of its own
    curl -s -o /dev/null "http://127.0.0.1:$port$path"
    local out
    out=$(taskset -c 1 wrk -t1 -c"$conns" -d"$duration" --latency "http://127.0.0.1:$port$path")
    local rps p99 status
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    status=$(curl -s -D - -o /dev/null "http://127.0.0.1:$port$path" | awk -F': ' 'tolower($1) == "cache-status" {print $2}' | tr -d '\r')
    printf '| %s | %s | %s | %s | %s |\n' "$name" "$path" "$rps" "$p99" "${status:--}"
  done
  kill "$proxy"
  wait "$proxy" 2>/dev/null || true
}

url=redis://127.0.0.1:$redis/0
# A Redis command's timeout of 100 ms instead of the default 10 ms: on a loaded machine
# the default opens the tier's breaker and the run measures the origin instead.
printf '[proxy]\ncache_shared = "%s"\ncache_shared_timeout = "100ms"\n' "$url" >"$work/both.toml"
# A local store too small for any response: every request asks Redis.
printf '[proxy]\ncache_max_size = "1"\ncache_max_object_size = "1"\ncache_shared = "%s"\ncache_shared_timeout = "100ms"\n' \
  "$url" >"$work/redis-only.toml"
echo "| cache | path | req/s | p99 | Cache-Status after the run |"
echo "|---|---|---:|---:|---|"
run "off (origin)" --no-cache
run "local" 
run "local + Redis" --config "$work/both.toml"
run "Redis only" --config "$work/redis-only.toml"
redis-cli -p $redis info stats | awk -F: '/keyspace_hits|keyspace_misses/ {print "redis " $1 ": " $2}' | tr -d '\r'
