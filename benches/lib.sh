# Shared by the bench scripts (sourced, from the repository's root). Everything they start
# runs on 127.0.0.1 and is stopped by PID on exit.

# The harness's builds (bench-backend, minproxy): $BENCH_BIN, the harness's target, or a
# scratch build.
bench=${BENCH:-../shared/bench}
bin=${BENCH_BIN:-$bench/target/release}
[[ -x $bin/bench-backend ]] || bin=/tmp/bench-scratch/target/release
# The harness's two backends (started on 18081 and 18082), for a switchyard config file.
harness_backends='[[backends]]
id = "b1"
url = "http://127.0.0.1:18081"
[[backends]]
id = "b2"
url = "http://127.0.0.1:18082"'

harness_built() {
  [[ -x $bin/bench-backend ]] || {
    echo "build the harness first: (cd $bench && cargo build --release)" >&2
    exit 1
  }
}

# start CPU COMMAND...: runs COMMAND in the background pinned to CPU (`-` for any), its
# output discarded; its PID is appended to `pids` and stopped on exit.
pids=()
stop_started() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap stop_started EXIT
start() {
  local cpu=$1
  shift
  if [[ $cpu == - ]]; then
    "$@" >/dev/null 2>&1 &
  else
    taskset -c "$cpu" "$@" >/dev/null 2>&1 &
  fi
  pids+=($!)
}

# make_certificate DIR NAME: a CA (DIR/ca.pem) and an ECDSA P-256 certificate it signed
# for 127.0.0.1 and localhost (DIR/NAME.pem, DIR/NAME.key), made with openssl.
make_certificate() {
  (
    cd "$1"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout ca.key -out ca.pem -days 2 -subj "/CN=switchyard bench CA"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout "$2.key" -out "$2.csr" -subj "/CN=127.0.0.1"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > san.cnf
    openssl x509 -req -in "$2.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
      -out "$2.pem" -days 2 -extfile san.cnf
  ) 2>/dev/null
}

# cpu_per_request LABEL PID URL DURATION WRK_ARGS...: a 2 s wrk warm-up, then a wrk run of
# DURATION (wrk on cpu0), reading PID's user and system time from /proc around it. Prints
# LABEL, then user, system and total µs per request, kreq per CPU-second, and requests.
cpu_per_request() {
  local label=$1 pid=$2 url=$3 duration=$4
  shift 4
  local hz n u1 s1 u2 s2
  hz=$(getconf CLK_TCK)
  taskset -c 0 wrk "$@" -d2s "$url" >/dev/null
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  n=$(taskset -c 0 wrk "$@" -d"$duration" "$url" | awk '/requests in/ {print $1}')
  read -r u2 s2 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  python3 -c "
n, hz = $n, $hz
u, s = ($u2 - $u1) / hz, ($s2 - $s1) / hz
print(f'$label {u / n * 1e6:.2f} {s / n * 1e6:.2f} {(u + s) / n * 1e6:.2f} {n / (u + s) / 1e3:.1f} {n}')"
}
