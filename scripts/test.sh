#!/usr/bin/env bash
# Runs every test (unit, real-QEMU and lab integration) and prints "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
results=build/test-results
rm -rf "$results"
mkdir -p "$results"
dotnet build Vmi.sln -c Release --verbosity quiet -nologo || { echo "0 passed, 1 failed"; exit 1; }
./vmi lab build || { echo "0 passed, 1 failed"; exit 1; }
./vmi lab build --flavour cloud-amd64 || { echo "0 passed, 1 failed"; exit 1; }
dotnet test Vmi.sln -c Release --no-build --logger "trx" --logger "console;verbosity=normal" --blame-hang-timeout 20m --blame-hang-dump-type none \
  --results-directory "$results" -- RunConfiguration.TestSessionTimeout=2400000 2>&1 | tee "$results/console.log"
status=${PIPESTATUS[0]}
passed=0 failed=0 skipped=0
for trx in "$results"/*.trx; do
  [ -f "$trx" ] || continue
  counters=$(grep -o '<Counters [^>]*>' "$trx" | head -1)
  get() { echo "$counters" | sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p"; }
  total=$(get total); executed=$(get executed); p=$(get passed); f=$(get failed); e=$(get error); t=$(get timeout); a=$(get aborted)
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0} + ${e:-0} + ${t:-0} + ${a:-0}))
  skipped=$((skipped + ${total:-0} - ${executed:-0}))
done
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  failed=1 # the run failed without a failing test (crash, build or discovery error)
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
