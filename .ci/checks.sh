#!/usr/bin/env bash
# Repository shape checks that no compiler runs: what each published crate packs, no import cycle
# between a crate's modules, no oversized source or example file, docs without warnings.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
fail() { echo "FAIL: $*"; status=1; }

echo "-- cargo package --list (each published crate packs only its sources, README, licenses, examples)"
allowed='^(\.cargo_vcs_info\.json|Cargo\.lock|Cargo\.toml|Cargo\.toml\.orig|README\.md|CHANGELOG\.md|LICENSE-MIT|LICENSE-APACHE|src/.+\.(rs|lua)|examples/.+\.(rs|html))$'
for crate in ssehub-core ssehub-memory ssehub-redis ssehub-nats ssehub-axum ssehub; do
  files=$(cargo package --list --allow-dirty -q -p "$crate")
  stray=$(grep -Ev "$allowed" <<<"$files" || true)
  [ -z "$stray" ] || fail "$crate packs files that do not belong: $(tr '\n' ' ' <<<"$stray")"
  for needed in README.md LICENSE-MIT LICENSE-APACHE src/lib.rs; do
    grep -qx "$needed" <<<"$files" || fail "$crate does not pack $needed"
  done
  echo "$crate: $(wc -l <<<"$files") files: $(grep -Ev '^src/' <<<"$files" | tr '\n' ' ')+ $(grep -c '^src/' <<<"$files") under src/"
done

echo "-- import cycles between the modules of each published crate"
python3 .ci/module-cycles.py core backend-memory backend-redis backend-nats adapter-axum || status=1

echo "-- file sizes (no source file in a crate's src/ over 600 lines, no example file over 400)"
while IFS= read -r f; do
  [ -f "$f" ] || continue
  n=$(wc -l <"$f")
  case "$f" in
    examples/*) [ "$n" -le 400 ] || fail "$f has $n lines (examples: at most 400)" ;;
    *) [ "$n" -le 600 ] || fail "$f has $n lines (at most 600)" ;;
  esac
done < <(git ls-files -co --exclude-standard -- '*/src/*.rs' 'src/*.rs' 'examples/*.rs' | grep -v '^fuzz/')

echo "-- cargo doc --workspace --all-features --no-deps, warnings denied"
RUSTDOCFLAGS="-D warnings" cargo doc -q --workspace --all-features --no-deps || fail "cargo doc has warnings"

exit "$status"
