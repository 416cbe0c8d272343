#!/usr/bin/env bash
# System calls and TCP segments per proxied request, for switchyard and nginx (1 worker)
# side by side: what the kernel is asked to do per request, which decides most of a
# proxy's CPU on loopback (the counts do not move with machine load, unlike timings).
#
# Starts the harness's two backends (ports 18481/18482), switchyard (18486) and nginx
# (18487), all on 127.0.0.1. For each proxy: system calls counted by `strace -c` on the
# proxy's process during a bounded wrk run, then TCP segments from `nstat` (machine-wide:
# wrk and the backends send the same for either proxy, so differences are the proxy's).
# Every process it starts is stopped by PID on exit.
#   benches/syscalls.sh                         # GET /small, -c64, 3 s per run
#   URL_PATH=/large benches/syscalls.sh
#   SWITCHYARD=path/to/switchyard benches/syscalls.sh
# Needs: strace, nstat (iproute2), wrk, nginx, curl, and the harness's backend.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
harness_built
path=${URL_PATH:-/small} duration=${DURATION:-3s}
if [[ -z "${SWITCHYARD:-}" ]]; then
  cargo build --release --bin switchyard
  SWITCHYARD=target/release/switchyard
fi
run=$(mktemp -d)
mkdir -p "$run"/nginx/{client_body,proxy,fastcgi,uwsgi,scgi}
sed "s#/tmp/bench-run/nginx-w1#$run/nginx#g; s#18081#18481#g; s#18082#18482#g; s#18101#18487#g" \
  "$bench/conf/nginx-w1.conf" > "$run/nginx.conf"

start 0 "$bin/bench-backend" --port 18481
start 0 "$bin/bench-backend" --port 18482
start 1 "$SWITCHYARD" serve --listen 127.0.0.1:18486 \
  --backends 127.0.0.1:18481,127.0.0.1:18482 --threads 1 --no-admin --no-cache
ours=${pids[-1]}
start 1 nginx -p "$run/nginx/" -c "$run/nginx.conf"
nginx_master=${pids[-1]}
sleep 2
nginx_worker=$(pgrep -P "$nginx_master" | head -1)

load() { taskset -c 0 wrk -t1 -c64 -d"$duration" "$1" | awk '/requests in/ {print $1}'; }

for t in "switchyard 18486 $ours" "nginx-w1 18487 $nginx_worker"; do
  read -r name port pid <<<"$t"
  url="http://127.0.0.1:$port$path"
  curl -s -o /dev/null "$url"
  strace -c -f -p "$pid" -o "$run/$name.strace" 2>/dev/null &
  tracer=$!
  sleep 1
  n=$(load "$url")
  kill -INT "$tracer"
  wait "$tracer" || true
  echo "== $name, $path: system calls per request ($n requests under strace)"
  awk -v n="$n" 'NR > 2 && $NF != "total" && $4 + 0 > 0 {
      errors = ($5 ~ /^[0-9]+$/) ? $5 : 0
      printf "  %-14s %7.3f   (%.3f failed)\n", $NF, $4 / n, errors / n }' "$run/$name.strace" |
    sort -k2 -nr | head -8
  nstat -n >/dev/null
  n=$(load "$url")
  echo "   TCP segments per request ($n requests):"
  nstat | awk -v n="$n" '/^(TcpOutSegs|TcpExtTCPPureAcks|TcpExtDelayedACKs|TcpActiveOpens) / {
      printf "  %-18s %7.3f\n", $1, $2 / n }'
done
