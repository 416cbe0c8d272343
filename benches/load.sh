#!/usr/bin/env bash
# Runs the shared load harness (../shared/bench/run.sh: nginx, HAProxy, a bare hyper proxy
# and the backend directly, on loopback) with switchyard in the `ours` slot.
#   benches/load.sh                                   # REPS=6, /small and /large
#   TARGETS="minproxy-ct nginx-w1 ours" REPS=3 PATHS=/small benches/load.sh
#   SERVE_ARGS="--no-cache --no-metrics" benches/load.sh   # flags added to `switchyard serve`
# The harness's backend sends no Cache-Control, so with the cache on (the default) every
# request after the first is a cache hit: compare with `varnish`. Pass --no-cache to
# measure proxying.
# Needs: apt-get install -y wrk nginx-light haproxy (see the harness's README).
set -euo pipefail
cd "$(dirname "$0")/.."
harness=${HARNESS:-../shared/bench/run.sh}
cargo build --release --bin switchyard
bin=$(mktemp -d)/switchyard
cp target/release/switchyard "$bin"
export OURS_CMD="$bin serve --listen {LISTEN} --backends {BACKENDS} --threads {THREADS} --no-admin ${SERVE_ARGS:-}"
export TARGETS=${TARGETS:-"direct minproxy minproxy-ct nginx-w1 haproxy-t1 ours"}
export REPS=${REPS:-6} DURATION=${DURATION:-10s} PATHS=${PATHS:-"/small /large"}
exec "$harness"
