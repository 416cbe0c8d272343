#!/usr/bin/env bash
# Soak: the release `switchyard` binary under SOAK_SECS of mixed load on 127.0.0.1, with
# one backend flapping and a SIGHUP every minute; prints a table of the proxy's RSS, open
# descriptors, threads and backend pool connections sampled every 10 s, and PASS or FAIL.
#   benches/soak.sh                     # 600 s
#   SOAK_SECS=90 benches/soak.sh        # a short run
# Knobs: SOAK_SECS (600), FLAP_EVERY (30 s: backend b2 is killed, then started again
# after FLAP_DOWN, 2 s), HUP_EVERY (60 s), SAMPLE_EVERY (10 s), WARMUP (30 s: samples
# before it are not held to the 5 % bound), FLAP_GRACE (5 s: failures from a kill until
# this long after the restart are the flapping's), PROXY_THREADS (2), PORT (18300: the
# proxy; +1 its admin API, +11 and +12 the backends).
# The load (benches/soak/main.rs, `switchyard-soak`): two workers each of HTTP/1.1
# keep-alive (100 B and 256 KiB GETs), a new connection per request, h2c, uploads
# (1-256 KiB), cache hits and misses (64 paths, max-age=2), and WebSocket sessions (ten
# echoed messages, then close).
# Pass: no failed request outside the flapping's windows (those inside are counted and
# printed), and after WARMUP the level of RSS and of descriptors is flat: each minute's
# median within 5 % of the run's median, and no single sample more than 10 % from it
# (a sample can catch a burst in flight; a leak moves the level). Descriptors: or within
# 8, what the four workers opening a connection per request or session can hold at once,
# a client and a backend descriptor each.
# The curve: with python3's matplotlib (or gnuplot) at hand, the samples are also drawn
# to SOAK_PLOT (default: soak.png in the run's scratch directory, printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SOAK_SECS:-600}
flap_every=${FLAP_EVERY:-30}
flap_down=${FLAP_DOWN:-2}
hup_every=${HUP_EVERY:-60}
sample_every=${SAMPLE_EVERY:-10}
warmup=${WARMUP:-30}
grace=${FLAP_GRACE:-5}
threads=${PROXY_THREADS:-2}
port=${PORT:-18300}
admin=$((port + 1))
b1=$((port + 11))
b2=$((port + 12))

cargo build --release -p switchyard-cli -p switchyard-benches --bins >/dev/null 2>&1
target=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
pids=()
b2_pid=
stop_all() {
  for p in "${pids[@]}" $b2_pid; do kill "$p" 2>/dev/null || true; done
}
trap stop_all EXIT

"$target/switchyard-soak" backend "127.0.0.1:$b1" b1 >/dev/null 2>&1 &
pids+=($!)
start_b2() {
  "$target/switchyard-soak" backend "127.0.0.1:$b2" b2 >/dev/null 2>&1 &
  b2_pid=$!
}
start_b2
cat >"$work/switchyard.toml" <<EOF
listen = "127.0.0.1:$port"

[admin]
listen = "127.0.0.1:$admin"

[server]
http2 = true

[[backends]]
id = "b1"
url = "http://127.0.0.1:$b1"

[[backends]]
id = "b2"
url = "http://127.0.0.1:$b2"
EOF
"$target/switchyard" serve --config "$work/switchyard.toml" --threads "$threads" \
  >"$work/proxy.log" 2>&1 &
proxy=$!
pids+=($proxy)
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$admin/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

now_ms() { date +%s%3N; }
"$target/switchyard-soak" load "127.0.0.1:$port" "$secs" >"$work/load.out" &
load=$!
pids+=($load)

# sample ELAPSED: one row of the table.
sample() {
  local rss fds threads pool
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$proxy/status")
  threads=$(awk '/^Threads/ {print $2}' "/proc/$proxy/status")
  fds=$(ls "/proc/$proxy/fd" | wc -l)
  pool=$(curl -sf "http://127.0.0.1:$admin/backends" |
    jq -r '[.[] | .pool.open // 0] | add // 0' 2>/dev/null || echo "?")
  printf '%s %s %s %s %s\n' "$1" "$rss" "$fds" "$threads" "$pool" >>"$work/samples"
  printf '| %5s | %8s | %5s | %7s | %16s |\n' "$1" "$rss" "$fds" "$threads" "$pool"
}

echo "switchyard soak: ${secs}s, b2 killed every ${flap_every}s (down ${flap_down}s), SIGHUP every ${hup_every}s"
echo
echo "|   t s | RSS KiB  |   fds | threads | pool connections |"
echo "|------:|---------:|------:|--------:|-----------------:|"
start=$(date +%s)
sample 0
: >"$work/flaps"
for ((t = 1; t <= secs; t++)); do
  # The next whole second since the start.
  sleep "$(python3 -c "import time; print(max(0, $start + $t - time.time()))")"
  if ((t % flap_every == 0 && t + flap_down < secs)); then
    kill -9 "$b2_pid" 2>/dev/null || true
    wait "$b2_pid" 2>/dev/null || true
    down=$(now_ms)
    sleep "$flap_down"
    start_b2
    echo "$down $(now_ms)" >>"$work/flaps"
  fi
  if ((t % hup_every == 0)); then
    kill -HUP "$proxy"
  fi
  if ((t % sample_every == 0)); then
    sample "$t"
  fi
  kill -0 "$proxy" 2>/dev/null || {
    echo "the proxy exited" >&2
    tail "$work/proxy.log" >&2
    exit 1
  }
done
wait "$load" || true
echo

# The curve, when something can draw it: RSS and descriptors over time, flaps marked.
plot=${SOAK_PLOT:-$work/soak.png}
if python3 -c 'import matplotlib' 2>/dev/null; then
  python3 - "$work" "$plot" "$start" <<'EOF'
import sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
work, out, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [list(map(int, l.split()[:4])) for l in open(f"{work}/samples")]
t = [r[0] for r in rows]
fig, rss_ax = plt.subplots(figsize=(8, 3.5))
rss_ax.plot(t, [r[1] / 1024 for r in rows], "b-o", markersize=3)
rss_ax.set_xlabel("seconds")
rss_ax.set_ylabel("RSS (MiB)", color="b")
rss_ax.set_ylim(bottom=0)
fds_ax = rss_ax.twinx()
fds_ax.plot(t, [r[2] for r in rows], "g-s", markersize=3)
fds_ax.set_ylabel("open descriptors", color="g")
fds_ax.set_ylim(bottom=0)
for line in open(f"{work}/flaps"):
    rss_ax.axvline(int(line.split()[0]) / 1000 - start, color="r", alpha=0.15)
rss_ax.set_title("switchyard soak: RSS (blue) and descriptors (green); red: b2 killed")
fig.tight_layout()
fig.savefig(out, dpi=90)
EOF
  echo "curve: $plot"
elif command -v gnuplot >/dev/null; then
  gnuplot -e "set terminal png size 720,320; set output '$plot'; set y2tics; \
    plot '$work/samples' using 1:(\$2/1024) with linespoints title 'RSS (MiB)', \
    '' using 1:3 axes x1y2 with linespoints title 'descriptors'"
  echo "curve: $plot"
fi

python3 - "$work" "$grace" "$warmup" <<'EOF'
import sys
work, grace, warmup = sys.argv[1], int(sys.argv[2]) * 1000, int(sys.argv[3])
flaps = [tuple(map(int, l.split())) for l in open(f"{work}/flaps")]
inside, outside, totals = 0, [], []
for line in open(f"{work}/load.out"):
    parts = line.split()
    if parts[0] == "FAIL":
        at = int(parts[1])
        if any(down - 1000 <= at <= up + grace for down, up in flaps):
            inside += 1
        else:
            outside.append(line.strip())
    elif parts[0] == "TOTAL":
        totals.append((parts[1], int(parts[2]), int(parts[3])))
print("| load | ok | failed |")
print("|---|---:|---:|")
for kind, ok, failed in totals:
    print(f"| {kind} | {ok} | {failed} |")
ok = sum(t[1] for t in totals)
print(f"\nrequests and sessions: {ok} ok; failed: {inside} during the {len(flaps)} flaps "
      f"(kill - 1 s to restart + {grace // 1000} s), {len(outside)} outside them")
for line in outside[:20]:
    print("  " + line)
rows = [list(map(int, l.split()[:4])) for l in open(f"{work}/samples")]
steady = [r for r in rows if r[0] >= warmup]
verdict = not outside and bool(totals) and ok > 0
def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]
for name, col, slack in [("RSS", 1, 0), ("descriptors", 2, 8)]:
    if len(steady) < 2:
        print(f"{name}: too few samples after the {warmup} s warm-up")
        verdict = False
        continue
    base = median(r[col] for r in steady)
    # The level: the median of each minute after the warm-up, each within 5 % of the
    # whole run's (a leak drifts it). Single samples may catch a burst in flight (a
    # reload under load, large bodies): they are held to twice that.
    minutes = {}
    for r in steady:
        minutes.setdefault((r[0] - warmup) // 60, []).append(r[col])
    levels = [median(m) for m in minutes.values()]
    drift = max(abs(level - base) for level in levels)
    worst = max(abs(r[col] - base) for r in steady)
    flat = drift <= max(base * 0.05, slack) and worst <= max(base * 0.10, slack)
    verdict &= flat
    print(f"{name}: median {base} after {warmup} s; each minute's median within {drift} "
          f"({100 * drift / base:.1f} %) of it, first {levels[0]}, last {levels[-1]}; "
          f"every sample within {worst} ({100 * worst / base:.1f} %); "
          f"{'flat' if flat else 'NOT flat'}")
print("PASS" if verdict else "FAIL")
sys.exit(0 if verdict else 1)
EOF
