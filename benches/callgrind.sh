#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind (repeatable, unlike wall time):
# starts two bench backends and the proxy under valgrind, sends a bounded wrk load to
# 127.0.0.1, and divides the total instruction count by the requests served.
#   benches/callgrind.sh                      # switchyard, current-thread runtime, GET /small
#   URL_PATH=/large benches/callgrind.sh      # the 64 KiB response instead
#   SERVE_ARGS="--no-cache --no-metrics" benches/callgrind.sh   # flags added to `serve`
#   PROXY="path/to/minproxy --listen 127.0.0.1:18100 --backends 127.0.0.1:18081,127.0.0.1:18082 --threads 0" PORT=18100 benches/callgrind.sh
# Needs: valgrind, wrk, curl, and the harness's backend (cargo build --release in ../shared/bench).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
backend=${BACKEND:-$bin/bench-backend}
port=${PORT:-18106}
if [[ -z "${PROXY:-}" ]]; then
  cargo build --release --bin switchyard
  PROXY="target/release/switchyard serve --listen 127.0.0.1:$port --backends 127.0.0.1:18081,127.0.0.1:18082 --threads 1 --no-admin ${SERVE_ARGS:-}"
fi
out=$(mktemp -d)
start - "$backend" --port 18081
start - "$backend" --port 18082
# shellcheck disable=SC2086
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out/cg" $PROXY >/dev/null 2>"$out/valgrind.log" &
proxy=$!
pids+=($proxy)
# Until the proxy answers (valgrind starts slowly on a busy machine).
for _ in $(seq 120); do
  curl -s -o /dev/null "http://127.0.0.1:$port${URL_PATH:-/small}" && break
  sleep 1
done
# Count only what serving costs: start-up (config, runtime, first connections) is zeroed.
# valgrind takes the command when the program next runs, so one request wakes an idle proxy.
callgrind_control -z "$proxy" >/dev/null &
zero=$!
curl -s -o /dev/null "http://127.0.0.1:$port${URL_PATH:-/small}"
wait "$zero"
n=$(wrk -t1 -c8 -d10s "http://127.0.0.1:$port${URL_PATH:-/small}" | awk '/requests in/ {print $1}')
kill -TERM "$proxy"; wait "$proxy" 2>/dev/null || true
total=$(callgrind_annotate "$out/cg" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "requests: $n  instructions: $total  per request: $((total / n))"
echo "profile: $out/cg (callgrind_annotate --inclusive=yes $out/cg)"
