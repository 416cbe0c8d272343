#!/usr/bin/env bash
# Memory per idle keep-alive client connection: N connections each send one GET /small,
# read the answer and then stay open and silent; the proxy's RSS growth divided by N.
# Measured for switchyard, the bare hyper proxy (minproxy) and nginx (one worker), each
# alone, on 127.0.0.1.
#   benches/idle-conns.sh                       # 5000 and 20000 connections, every target
#   CONNS="5000" TARGETS="switchyard nginx" benches/idle-conns.sh
#   SERVE_ARGS="--no-cache" benches/idle-conns.sh   # flags added to `switchyard serve`
#   SWITCHYARD=path/to/switchyard benches/idle-conns.sh  # that binary, not a fresh build
# Needs: the harness's backend and minproxy (cargo build --release in ../shared/bench),
# nginx (nginx-light), python3; root or a hard descriptor limit above 2 × CONNS.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
harness_built
conns=${CONNS:-5000 20000}
targets=${TARGETS:-switchyard minproxy nginx}
port=18106
max=0
for n in $conns; do ((n > max)) && max=$n; done
# The proxy holds one descriptor per client connection, the holder one per connection.
ulimit -Hn $((2 * max + 4096)) 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
switchyard=${SWITCHYARD:-target/release/switchyard}
[[ -n ${SWITCHYARD:-} ]] || cargo build --release --bin switchyard >/dev/null 2>&1
start - "$bin/bench-backend" --port 18081
start - "$bin/bench-backend" --port 18082
work=$(mktemp -d)
sleep 0.5

# The holder: opens N connections to the proxy, one request each, reads each answer,
# prints "ready N", then holds them until its stdin closes.
cat >"$work/holder.py" <<'EOF'
import asyncio, sys
n, port = int(sys.argv[1]), int(sys.argv[2])
request = b"GET /small HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
async def one(held, gate):
    async with gate:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(request)
        head = await r.readuntil(b"\r\n\r\n")
        length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n")
                      if l.lower().startswith(b"content-length:"))
        await r.readexactly(length)
        assert head.startswith(b"HTTP/1.1 200"), head[:40]
        held.append(w)
async def main():
    held, gate = [], asyncio.Semaphore(256)
    await asyncio.gather(*(one(held, gate) for _ in range(n)))
    print("ready", len(held), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
EOF

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# tree_rss PID: the RSS of PID and its children (nginx's worker), KiB.
tree_rss() {
  local total=0 p
  for p in $1 $(pgrep -P "$1" || true); do total=$((total + $(rss_kib "$p"))); done
  echo $total
}

launch() {
  case $1 in
    switchyard)
      # shellcheck disable=SC2086
      "$switchyard" serve --listen 127.0.0.1:$port --backends 127.0.0.1:18081,127.0.0.1:18082 \
        --threads 1 --no-admin ${SERVE_ARGS:-} >/dev/null 2>&1 &
      ;;
    minproxy)
      "$bin/minproxy" --listen 127.0.0.1:$port --backends 127.0.0.1:18081,127.0.0.1:18082 --threads 0 \
        >/dev/null 2>&1 &
      ;;
    nginx)
      mkdir -p "$work/nginx"
      sed -e "s#/tmp/bench-run/nginx-w1#$work/nginx#g" -e "s/18101/$port/" \
        -e "s/worker_rlimit_nofile 16384/worker_rlimit_nofile $((2 * max + 4096))/" \
        -e "s/worker_connections 8192/worker_connections $((max + 1024))/" \
        "$bench/conf/nginx-w1.conf" >"$work/nginx/nginx.conf"
      nginx -p "$work/nginx/" -c "$work/nginx/nginx.conf" >/dev/null 2>&1 &
      ;;
  esac
  proxy_pid=$!
  pids+=($proxy_pid)
}

printf '| proxy | connections | RSS before (MiB) | RSS held (MiB) | per connection (KiB) |\n'
printf '|---|---:|---:|---:|---:|\n'
for t in $targets; do
  for n in $conns; do
    launch "$t"
    pid=$proxy_pid
    sleep 1
    # Warm up: a few requests, so that backend connections and buffers exist before.
    for _ in 1 2 3 4; do curl -s -o /dev/null "http://127.0.0.1:$port/small"; done
    before=$(tree_rss "$pid")
    coproc HOLD { python3 "$work/holder.py" "$n" "$port"; }
    out=${HOLD[0]} in=${HOLD[1]}
    read -r ready held <&"$out"
    [[ $ready == ready ]] || { echo "holder failed" >&2; exit 1; }
    sleep 2
    after=$(tree_rss "$pid")
    exec {in}>&-
    wait "$HOLD_PID" 2>/dev/null || true
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    awk -v t="$t" -v n="$held" -v b="$before" -v a="$after" \
      'BEGIN { printf "| %s | %d | %.1f | %.1f | %.2f |\n", t, n, b / 1024, a / 1024, (a - b) / n }'
  done
done
