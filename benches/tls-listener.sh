#!/usr/bin/env bash
# HTTPS termination, switchyard against nginx (1 worker): CPU per request and requests per
# CPU-second of the proxy, with the client's connections kept alive (the TLS record layer)
# and with a new connection per request (a full handshake each time).
#
# Makes a CA and an ECDSA P-256 certificate for 127.0.0.1 with openssl; starts the
# harness's two backends on cpu0 and both proxies on cpu1, all on 127.0.0.1, each
# terminating TLS and proxying over plain HTTP with pooled backend connections; then, per
# round and proxy, a 2 s warm-up and a bounded wrk run (wrk on cpu0), reading the proxy's
# utime/stime from /proc before and after. Every process it starts is stopped by PID on
# exit.
#   benches/tls-listener.sh                    # 3 rounds, GET /small, 5 s runs
#   ROUNDS=5 URL_PATH=/large DURATION=5s benches/tls-listener.sh
# Needs: openssl, nginx (with http_ssl_module), wrk, python3, and the harness's backend
# (cargo build --release in ../shared/bench).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
harness_built
cargo build --release --bin switchyard
rounds=${ROUNDS:-3} path=${URL_PATH:-/small} duration=${DURATION:-5s}
run=$(mktemp -d)
make_certificate "$run" proxy
mkdir -p "$run"/nginx/{client_body,proxy,fastcgi,uwsgi,scgi}
# The harness's nginx-w1 peer, listening with TLS on 18443 instead.
sed -e "s#/tmp/bench-run/nginx-w1#$run/nginx#g" \
  -e "s#listen 127.0.0.1:18101 backlog=4096;#listen 127.0.0.1:18443 ssl backlog=4096; ssl_certificate $run/proxy.pem; ssl_certificate_key $run/proxy.key;#" \
  "$bench/conf/nginx-w1.conf" > "$run/nginx.conf"
cat > "$run/switchyard.toml" <<TOML
listen = "127.0.0.1:18444"
[server]
tls_cert_file = "proxy.pem"
tls_key_file = "proxy.key"
[proxy]
cache_enabled = false
$harness_backends
TOML

start 0 "$bin/bench-backend" --port 18081
start 0 "$bin/bench-backend" --port 18082
start 1 target/release/switchyard serve --config "$run/switchyard.toml" --threads 1 --no-admin
ours=${pids[-1]}
start 1 nginx -p "$run/nginx/" -c "$run/nginx.conf"
nginx_master=${pids[-1]}
sleep 2
nginx_worker=$(pgrep -P "$nginx_master" | head -1)

declare -A port=([switchyard]=18444 [nginx-w1]=18443)
declare -A pid=([switchyard]=$ours [nginx-w1]=$nginx_worker)
echo "target connections user_us/req sys_us/req total_us/req kreq/core requests"
for _ in $(seq "$rounds"); do
  for mode in kept-alive new-each; do
    args=(-t1 -c64)
    [[ $mode == new-each ]] && args=(-t1 -c16 -H "Connection: close")
    for t in switchyard nginx-w1; do
      url=https://127.0.0.1:${port[$t]}$path
      cpu_per_request "$t $mode" "${pid[$t]}" "$url" "$duration" "${args[@]}"
    done
  done
done
