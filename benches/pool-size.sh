#!/usr/bin/env bash
# Backend connections the pool keeps: opened during a burst of 64 client connections, then
# what is left once traffic drops to 2 connections at a time. Reads the pool counters from
# the admin API (`GET /backends`). Everything runs on 127.0.0.1 and every process it
# starts is stopped by PID on exit.
#   benches/pool-size.sh                       # 5 s idle timeout, 10 s burst, 16 s steady
#   IDLE=10s STEADY=30 benches/pool-size.sh
# Needs: wrk, curl, python3, and the harness's backend (cargo build --release in ../shared/bench).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
harness_built
cargo build --release --bin switchyard
idle=${IDLE:-5s} burst=${BURST:-10s} steady=${STEADY:-16}
run=$(mktemp -d)
cat > "$run/switchyard.toml" <<TOML
listen = "127.0.0.1:18140"
[admin]
listen = "127.0.0.1:18141"
[proxy]
idle_conn_timeout = "$idle"
cache_enabled = false
$harness_backends
TOML

start - "$bin/bench-backend" --port 18081
start - "$bin/bench-backend" --port 18082
target/release/switchyard serve --config "$run/switchyard.toml" --threads 1 \
  >"$run/proxy.log" 2>&1 & pids+=($!)
sleep 1

pool() {
  curl -s http://127.0.0.1:18141/backends | python3 -c '
import json, sys
pools = [b["pool"] for b in json.load(sys.stdin)]
total = {k: sum(p[k] for p in pools) for k in ("open", "created", "reused")}
total["closed_idle_timeout"] = sum(p["closed"]["idle_timeout"] for p in pools)
print(" ".join(f"{k}={v}" for k, v in total.items()))'
}

echo "burst: wrk -c64 -d$burst: $(wrk -t1 -c64 -d"$burst" http://127.0.0.1:18140/small | awk '/requests in/ {print $1}') requests"
echo "after the burst:            $(pool)"
wrk -t1 -c2 -d"${steady}s" http://127.0.0.1:18140/small >/dev/null &
steady_wrk=$!
pids+=($steady_wrk)
for t in $(seq 4 4 "$((steady - 1))"); do
  sleep 4
  echo "steady, 2 connections, ${t}s: $(pool)"
done
wait "$steady_wrk"
