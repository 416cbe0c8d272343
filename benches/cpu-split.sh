#!/usr/bin/env bash
# User and kernel CPU per proxied request, for switchyard and its peers side by side: where
# a kreq/core gap comes from (the proxy's own code, or its system calls).
#
# Starts the harness's two backends on cpu0, and switchyard, the bare hyper proxy (both
# runtimes) and nginx (1 worker) on cpu1, all on 127.0.0.1; then, for each proxy in turn,
# a 2 s warm-up and a bounded wrk run (wrk on cpu0), reading the proxy's utime/stime from
# /proc before and after. Every process it starts is stopped by PID on exit.
#   benches/cpu-split.sh                       # 3 rounds, GET /small, 5 s runs
#   ROUNDS=5 URL_PATH=/large DURATION=5s benches/cpu-split.sh
#   SERVE_ARGS="--no-cache --no-metrics" benches/cpu-split.sh   # flags added to `serve`
# Needs: wrk, nginx, python3, and the harness's builds (cargo build --release in ../shared/bench).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
harness_built
[[ -x $bin/minproxy ]] || {
  echo "build the harness first: (cd $bench && cargo build --release)" >&2
  exit 1
}
cargo build --release --bin switchyard
rounds=${ROUNDS:-3} path=${URL_PATH:-/small} duration=${DURATION:-5s}
run=$(mktemp -d)
mkdir -p "$run"/nginx/{client_body,proxy,fastcgi,uwsgi,scgi}
sed "s#/tmp/bench-run/nginx-w1#$run/nginx#g" "$bench/conf/nginx-w1.conf" > "$run/nginx.conf"

start 0 "$bin/bench-backend" --port 18081
start 0 "$bin/bench-backend" --port 18082
backends=127.0.0.1:18081,127.0.0.1:18082
# shellcheck disable=SC2086
start 1 target/release/switchyard serve --listen 127.0.0.1:18106 --backends $backends \
  --threads 1 --no-admin ${SERVE_ARGS:---no-cache}
ours=${pids[-1]}
start 1 "$bin/minproxy" --listen 127.0.0.1:18100 --backends $backends --threads 1
minproxy=${pids[-1]}
start 1 "$bin/minproxy" --listen 127.0.0.1:18120 --backends $backends --threads 0
minproxy_ct=${pids[-1]}
start 1 nginx -p "$run/nginx/" -c "$run/nginx.conf"
nginx_master=${pids[-1]}
sleep 2
nginx_worker=$(pgrep -P "$nginx_master" | head -1)

declare -A port=([switchyard]=18106 [minproxy]=18100 [minproxy-ct]=18120 [nginx-w1]=18101)
declare -A pid=([switchyard]=$ours [minproxy]=$minproxy [minproxy-ct]=$minproxy_ct [nginx-w1]=$nginx_worker)
echo "target user_us/req sys_us/req total_us/req kreq/core requests"
for _ in $(seq "$rounds"); do
  for t in switchyard minproxy minproxy-ct nginx-w1; do
    cpu_per_request "$t" "${pid[$t]}" "http://127.0.0.1:${port[$t]}$path" "$duration" -t1 -c64
  done
done
