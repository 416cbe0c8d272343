#!/usr/bin/env bash
# Runs every fuzz target (or those in TARGETS), one after another, each until RUNS
# executions or SECS seconds, whichever comes first, and prints one summary row per
# target (executions, seconds, libFuzzer's final `cov:` and `ft:`).
#   fuzz/run-all.sh                              # 10 million executions or 2 h each
#   RUNS=-1 SECS=120 fuzz/run-all.sh             # 120 s each (RUNS=-1: no execution cap)
#   TARGETS="chunked host" SECS=600 fuzz/run-all.sh
# Knobs: RUNS (10000000), SECS (7200), MAX_LEN (8192 bytes), TARGETS (all),
# SANITIZER (none), LOGS (a new temporary directory: each target's full libFuzzer output).
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); the stable toolchain is used with
# RUSTC_BOOTSTRAP=1 for the sanitizer-coverage flags.
#
# New inputs go to a scratch corpus (under LOGS), read together with the committed seeds
# in fuzz/corpus/<target>; add one to the seeds only to keep it (crashes, minimised, are
# regression tests: see fuzz/README.md). A crash stops that target's run and leaves its
# input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
runs=${RUNS:-10000000}
secs=${SECS:-7200}
max_len=${MAX_LEN:-8192}
sanitizer=${SANITIZER:-none}
logs=${LOGS:-$(mktemp -d)}
targets=${TARGETS:-$(ls fuzz_targets | sed 's/\.rs$//')}
export RUSTC_BOOTSTRAP=1 CARGO_INCREMENTAL=0
cargo fuzz build -s "$sanitizer" -a >/dev/null
echo "logs: $logs"
echo "| target | executions | seconds | exec/s | cov | ft | result |"
echo "|---|---:|---:|---:|---:|---:|---|"
status=0
for t in $targets; do
  mkdir -p "$logs/corpus/$t"
  result=ok
  # One process (no -jobs/-workers: the machine's cores are shared).
  cargo fuzz run -s "$sanitizer" -a "$t" "$logs/corpus/$t" "corpus/$t" -- \
    -runs="$runs" -max_total_time="$secs" -max_len="$max_len" -print_final_stats=1 \
    >"$logs/$t.log" 2>&1 || { result=CRASH; status=1; }
  last=$(grep -E '^#[0-9]+' "$logs/$t.log" | tail -1)
  execs=$(awk '/^stat::number_of_executed_units/ {print $2}' "$logs/$t.log")
  took=$(awk '/^Done [0-9]+ runs in/ {print $5}' "$logs/$t.log")
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  rate=$(awk '/^stat::average_exec_per_sec/ {print $2}' "$logs/$t.log")
  echo "| $t | ${execs:-?} | ${took:-?} | ${rate:-?} | ${cov:-?} | ${ft:-?} | $result |"
done
exit $status
