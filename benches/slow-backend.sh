#!/usr/bin/env bash
# The slow-backend scenario (a gray failure) under each balancer: three loopback backends
# answering after BASE_MS (2 ms); the release proxy in front of them with one balancer;
# three wrk phases of PHASE seconds (5) with 64 connections: before, during (backend c
# answers 10x slower: 20 ms) and after. Prints, per balancer and phase, the throughput,
# the error rate (non-2xx answers and socket errors over requests), the p99 latency, and
# the share of the requests backend c received (from the proxy's /metrics). Everything
# runs on 127.0.0.1 and every process it starts is stopped by PID on exit.
#   benches/slow-backend.sh
#   PHASE=10 BALANCERS="round_robin peak_ewma" benches/slow-backend.sh
# Needs: wrk, curl, python3; builds the release proxy and the test backend
# (`switchyard-test-backend`, which `/control/delay/MS` slows down).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
phase=${PHASE:-5} base=${BASE_MS:-2}
balancers=${BALANCERS:-round_robin least_request peak_ewma}
[[ -n ${NO_BUILD:-} ]] || {
  cargo build --release --bin switchyard
  cargo build -p switchyard-tests --bin switchyard-test-backend
}
proxy=target/release/switchyard backend=target/debug/switchyard-test-backend
run=$(mktemp -d)
cat > "$run/switchyard.toml" <<TOML
listen = "127.0.0.1:18150"
[admin]
listen = "127.0.0.1:18151"
[proxy]
cache_enabled = false
[[backends]]
id = "a"
url = "http://127.0.0.1:18152"
[[backends]]
id = "b"
url = "http://127.0.0.1:18153"
[[backends]]
id = "c"
url = "http://127.0.0.1:18154"
TOML
for i in 2 3 4; do start - "$backend" "127.0.0.1:1815$i" "backend$i"; done
delay() { curl -sf "http://127.0.0.1:1815$1/control/delay/$2" >/dev/null; }

# Requests backend c, and all backends, have answered so far (the proxy's counters).
answered() {
  curl -sf http://127.0.0.1:18151/metrics | python3 -c '
import re, sys
c = total = 0
for line in sys.stdin:
    m = re.match(r"switchyard_backend_requests_total\{([^}]*)\} (\d+)", line)
    if m:
        total += int(m.group(2))
        c += int(m.group(2)) if "backend=\"c\"" in m.group(1) else 0
print(c, total)'
}

# One wrk phase: prints "req/s errors% p99 c-share%".
phase() {
  local out c1 t1 c2 t2
  read -r c1 t1 < <(answered)
  out=$(wrk -t2 -c64 -d"${phase}s" --latency http://127.0.0.1:18150/)
  read -r c2 t2 < <(answered)
  python3 - "$c1" "$t1" "$c2" "$t2" <<PY
import re, sys
out = """$out"""
c1, t1, c2, t2 = map(int, sys.argv[1:])
n = int(re.search(r"(\d+) requests in", out).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
bad = sum(map(int, re.findall(r"Non-2xx or 3xx responses: (\d+)", out)))
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
bad += sum(map(int, sock.groups())) if sock else 0
p99 = re.search(r"99%\s+(\S+)", out).group(1)
share = 100 * (c2 - c1) / max(t2 - t1, 1)
print(f"{rps:9.0f} {100 * bad / max(n, 1):6.2f}% {p99:>8} {share:5.1f}%")
PY
}

printf '%-14s %-7s %9s %7s %8s %6s\n' balancer phase req/s errors p99 c-share
for balancer in $balancers; do
  for i in 2 3 4; do delay "$i" "$base"; done
  "$proxy" serve --config "$run/switchyard.toml" --balancer "$balancer" \
    >"$run/proxy-$balancer.log" 2>&1 & pids+=($!)
  until curl -sf -o /dev/null http://127.0.0.1:18150/; do sleep 0.2; done
  wrk -t2 -c64 -d1s http://127.0.0.1:18150/ >/dev/null # warm-up
  printf '%-14s %-7s %s\n' "$balancer" before "$(phase)"
  delay 4 $((base * 10))
  printf '%-14s %-7s %s\n' "$balancer" during "$(phase)"
  delay 4 "$base"
  printf '%-14s %-7s %s\n' "$balancer" after "$(phase)"
  kill "${pids[-1]}"
  wait "${pids[-1]}" 2>/dev/null || true
done
