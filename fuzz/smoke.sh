#!/usr/bin/env bash
# Build the cargo-fuzz targets and run each for SECONDS_PER_TARGET seconds (default 20).
#
#   fuzz/smoke.sh [SECONDS_PER_TARGET]
#
# Prints libFuzzer's final stats per target (runs, exec/s, coverage) and exits non-zero if any
# target crashed, timed out or ran out of memory, printing the artifact that reproduces it
# (`cargo fuzz run <target> <artifact>` replays it).
#
# cargo-fuzz passes `-Z` flags (sanitizer, sancov passes) to rustc, which only a nightly compiler
# takes; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. AddressSanitizer works that way
# too (rust-std ships its runtime for x86_64-unknown-linux-gnu), so the default sanitizer is kept.
# Build output goes to $SSEHUB_FUZZ_TARGET (default ~/.cache/ssehub/fuzz-target), never to the
# workspace's target dir; the corpus grows in fuzz/corpus/<target>, crashes land in
# fuzz/artifacts/<target> (both ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-20}"
case "$secs" in
  '' | *[!0-9]*) echo "usage: fuzz/smoke.sh [SECONDS_PER_TARGET]" >&2; exit 2 ;;
esac
targets=(sse_framing last_event_id resource_id nats_subject stream_position lean_head)
target_dir="${SSEHUB_FUZZ_TARGET:-$HOME/.cache/ssehub/fuzz-target}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

echo "== building ${#targets[@]} fuzz targets into $target_dir ($(cargo fuzz --version))"
start=$SECONDS
logs="$(mktemp -d)"
if ! cargo fuzz build --target-dir "$target_dir" >"$logs/build.log" 2>&1; then
  tail -n 40 "$logs/build.log"
  echo "fuzz build FAILED"
  exit 1
fi
grep -E '^(warning|error)' "$logs/build.log" || true
echo "built in $((SECONDS - start)) s"

failed=()
for t in "${targets[@]}"; do
  log="$logs/$t.log"
  set +e
  # -timeout: one input running 10 s is a hang, reported like a crash.
  cargo fuzz run --target-dir "$target_dir" "$t" -- \
    -max_total_time="$secs" -timeout=10 >"$log" 2>&1
  rc=$?
  set -e
  stats="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)"
  if [ "$rc" -eq 0 ] && [ -n "$stats" ]; then
    runs="$(sed -E 's/^#([0-9]+).*/\1/' <<<"$stats")"
    cov="$(grep -oE 'cov: [0-9]+' <<<"$stats" | cut -d' ' -f2)"
    ft="$(grep -oE 'ft: [0-9]+' <<<"$stats" | cut -d' ' -f2)"
    corp="$(grep -oE 'corp: [^ ]+' <<<"$stats" | cut -d' ' -f2)"
    eps="$(grep -oE 'exec/s: [0-9]+' <<<"$stats" | cut -d' ' -f2)"
    printf '%-14s ok      runs %-10s exec/s %-7s cov %-5s ft %-6s corpus %s\n' \
      "$t" "$runs" "$eps" "$cov" "$ft" "$corp"
    echo "               $stats"
  else
    failed+=("$t")
    echo "$t FAILED (exit $rc); full log: $log"
    # The panic message (or sanitizer / timeout report) and libFuzzer's summary.
    awk '!seen && /panicked at|==ERROR|ERROR: libFuzzer|ALARM: working on the last Unit/ { seen = 1; n = 12 }
         /^stack backtrace:/ { n = 0 }
         seen && n-- > 0 { print }' "$log" | cut -c1-400 | sed 's/^/    /'
    grep -E '^SUMMARY' "$log" | sed 's/^/    /' || true
    artifact="$(grep -oE 'Test unit written to [^ ]+' "$log" | tail -n 1 | cut -d' ' -f5 || true)"
    if [ -n "$artifact" ]; then
      echo "    artifact: $artifact"
      echo "    reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --target-dir $target_dir $t $artifact"
    fi
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz smoke FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz smoke: ${#targets[@]} targets, ${secs} s each, no crash"
