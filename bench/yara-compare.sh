#!/usr/bin/env bash
# Compares the speed of yara and `vmi yara` (Vmi.Signatures' YaraCli) on one rules file and one memory image.
#
#   bench/yara-compare.sh [-r RULES] [-i IMAGE | --lab] [-n RUNS] [-m IMAGE_MB] [-a "EXTRA YARA ARGS"]
#
#   -r RULES   rules file (default: the generated ~3000-rule set, build/yara-bench/rules.yar)
#   -i IMAGE   file to scan (default: build/yara-bench/image.bin, a generated 256 MiB image)
#   --lab      scan the newest lab guest RAM dump in build/test-dumps/*.elf instead
#   -n RUNS    runs per tool; the best (fastest) counts (default 3)
#   -m MB      size of the generated image (default 256)
#   -a ARGS    extra options for both tools, e.g. -a "-s" (default none)
#   --regen    regenerate the default rules and image even if present
#
# The default rules and image are written by the test project's Export_generated_set_when_requested test
# (tests/Vmi.Signatures.Tests/Differential/GeneratedRuleSetTests.cs) when VMI_YARA_EXPORT_DIR is set:
#   VMI_YARA_EXPORT_DIR=build/yara-bench VMI_YARA_EXPORT_IMAGE_MB=256 dotnet test tests/Vmi.Signatures.Tests -c Release \
#     --filter FullyQualifiedName~Export_generated_set_when_requested
# The image is deterministic: 1 MiB chunks of seeded random pages, zero pages and word-soup text, every 4th chunk
# starting with one of the generated inputs (so many rules match).
#
# Both outputs must agree (as sets of lines: a folder-free single-file scan is ordered, but this keeps the check
# robust); the script then prints each tool's best time, throughput and the ratio yara_time / vmi_time (> 1: vmi faster).
# Uses hyperfine when installed (apt-get install hyperfine), else bash timing.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
out="$here/build/yara-bench"
rules=""
image=""
runs=3
mb=256
extra=""
lab=0
regen=0
while [ $# -gt 0 ]; do
  case "$1" in
    -r) rules="$2"; shift 2 ;;
    -i) image="$2"; shift 2 ;;
    -n) runs="$2"; shift 2 ;;
    -m) mb="$2"; shift 2 ;;
    -a) extra="$2"; shift 2 ;;
    --lab) lab=1; shift ;;
    --regen) regen=1; shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done

command -v yara >/dev/null || { echo "yara is not installed (apt-get install yara)" >&2; exit 1; }

if [ -z "$rules" ] || { [ -z "$image" ] && [ "$lab" = 0 ]; }; then
  if [ "$regen" = 1 ] || [ ! -f "$out/rules.yar" ] || { [ -z "$image" ] && [ "$lab" = 0 ] && [ ! -f "$out/image.bin" ]; }; then
    echo "generating the rule set and a ${mb} MiB image in $out ..." >&2
    mkdir -p "$out"
    VMI_YARA_EXPORT_DIR="$out" VMI_YARA_EXPORT_IMAGE_MB="$mb" \
      dotnet test "$here/tests/Vmi.Signatures.Tests" -c Release --nologo --verbosity quiet \
        --filter "FullyQualifiedName~Export_generated_set_when_requested" >&2
  fi
  [ -n "$rules" ] || rules="$out/rules.yar"
  [ -n "$image" ] || [ "$lab" = 1 ] || image="$out/image.bin"
fi
if [ "$lab" = 1 ]; then
  image="$(ls -t "$here"/build/test-dumps/*.elf 2>/dev/null | head -1 || true)"
  [ -n "$image" ] || { echo "no lab dump in build/test-dumps/*.elf" >&2; exit 1; }
  [ -r "$image" ] || { echo "$image is not readable by $(id -un)" >&2; exit 1; }
fi
[ -f "$rules" ] || { echo "no rules file $rules" >&2; exit 1; }
[ -f "$image" ] || { echo "no image $image" >&2; exit 1; }

# Build once so that timing excludes compilation of vmi itself.
dotnet build "$here/src/Vmi.Cli" -c Release --nologo --verbosity quiet >&2
vmi="$here/vmi"

bytes=$(stat -c %s "$image")
mib=$(echo "scale=3; $bytes / 1048576" | bc)
read -r -a xargs_ <<< "$extra"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "rules: $rules ($(grep -c '^rule ' "$rules" || true) rules)"
echo "image: $image ($mib MiB)"
echo "args:  ${extra:-<none>}"

# Output agreement first (one run each, outputs kept).
yara "${xargs_[@]}" "$rules" "$image" >"$tmp/yara.out" 2>"$tmp/yara.err" || { echo "yara failed:"; cat "$tmp/yara.err"; exit 1; }
"$vmi" yara "${xargs_[@]}" "$rules" "$image" >"$tmp/vmi.out" 2>"$tmp/vmi.err" || { echo "vmi yara failed:"; cat "$tmp/vmi.err"; exit 1; }
sort -u "$tmp/yara.out" >"$tmp/yara.sorted"
sort -u "$tmp/vmi.out" >"$tmp/vmi.sorted"
if ! cmp -s "$tmp/yara.sorted" "$tmp/vmi.sorted"; then
  echo "OUTPUTS DIFFER: yara $(wc -l <"$tmp/yara.out") lines, vmi $(wc -l <"$tmp/vmi.out") lines; first differences:"
  diff "$tmp/yara.sorted" "$tmp/vmi.sorted" | head -20
  exit 1
fi
echo "outputs agree: $(wc -l <"$tmp/yara.out") lines"

q() { printf '%q ' "$@"; }
yara_cmd="$(q yara "${xargs_[@]}" "$rules" "$image")"
vmi_cmd="$(q "$vmi" yara "${xargs_[@]}" "$rules" "$image")"

if command -v hyperfine >/dev/null; then
  hyperfine --runs "$runs" --warmup 0 --style basic --export-csv "$tmp/hf.csv" \
    -n yara "$yara_cmd >/dev/null" -n vmi "$vmi_cmd >/dev/null" >&2
  # CSV: command,mean,stddev,median,user,system,min,max
  t_yara=$(awk -F, '$1=="yara"{print $7}' "$tmp/hf.csv")
  t_vmi=$(awk -F, '$1=="vmi"{print $7}' "$tmp/hf.csv")
else
  best() {
    local cmd="$1" best="" s e t
    for _ in $(seq "$runs"); do
      s=$(date +%s.%N); bash -c "$cmd >/dev/null 2>&1"; e=$(date +%s.%N)
      t=$(echo "$e - $s" | bc)
      if [ -z "$best" ] || [ "$(echo "$t < $best" | bc)" = 1 ]; then best=$t; fi
    done
    echo "$best"
  }
  t_yara=$(best "$yara_cmd")
  t_vmi=$(best "$vmi_cmd")
fi

printf '%-6s best of %d: %8.3f s  %9.1f MB/s\n' yara "$runs" "$t_yara" "$(echo "scale=3; $bytes / 1000000 / $t_yara" | bc)"
printf '%-6s best of %d: %8.3f s  %9.1f MB/s\n' vmi "$runs" "$t_vmi" "$(echo "scale=3; $bytes / 1000000 / $t_vmi" | bc)"
printf 'ratio yara_time / vmi_time = %.2f (> 1: vmi is faster)\n' "$(echo "scale=4; $t_yara / $t_vmi" | bc)"
