#!/usr/bin/env bash
# What TLS to the backend costs per proxied request, in instructions (callgrind): nginx
# answers GET /small (100 B) on 127.0.0.1 over plain HTTP and over TLS (a CA and
# certificate made for the run with openssl), and benches/callgrind.sh measures switchyard
# proxying to each, with the backend's connections pooled (handshakes happen at the start
# only). Every process it starts is stopped by PID on exit.
#   benches/tls-backend.sh
# Needs: openssl, nginx (with http_ssl_module), valgrind, wrk, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
run=$(mktemp -d)
make_certificate "$run" backend
body=$(printf 'x%.0s' $(seq 100))
cat > "$run/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
master_process off;
pid $run/nginx.pid;
error_log $run/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $run/cb; proxy_temp_path $run/px; fastcgi_temp_path $run/fc;
    uwsgi_temp_path $run/uw; scgi_temp_path $run/sc;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:18480;
        listen 127.0.0.1:18443 ssl;
        ssl_certificate $run/backend.pem;
        ssl_certificate_key $run/backend.key;
        location / { return 200 "$body"; }
    }
}
NGINX
start 0 nginx -p "$run/" -c "$run/nginx.conf"
sleep 1
cargo build --release --bin switchyard
for scheme in http https; do
  port=18480
  [[ $scheme == https ]] && port=18443
  cat > "$run/switchyard-$scheme.toml" <<TOML
[proxy]
backend_ca_file = "ca.pem"
health_check_path = "/small"
[[backends]]
id = "nginx"
url = "$scheme://127.0.0.1:$port"
TOML
  echo -n "$scheme backend: "
  BACKEND=true PROXY="target/release/switchyard serve --config $run/switchyard-$scheme.toml --listen 127.0.0.1:18106 --threads 1 --no-admin --no-cache" \
    benches/callgrind.sh 2>/dev/null | grep "per request"
done
