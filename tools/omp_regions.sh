#!/bin/sh
# OpenMP parallel regions a command opens, per source line (GCC builds).
#
#   tools/omp_regions.sh [--per N] COMMAND [ARGS...]
#
# Runs COMMAND with tools/omp_regions.c preloaded and prints, per call site
# in the command's own binary, the regions run on one thread (an if()
# clause was false: nobody is woken) and on more, divided by N (e.g. the
# number of decode tokens or training steps; subtract a run with fewer of
# them to leave start-up out). Example, regions per decode token:
#   tools/omp_regions.sh --per 32 build/bench_forward --model M --threads 2 \
#       --prompt 64 --decode 32 --reps 1 --no-limits
set -eu
per=1
if [ "${1:-}" = "--per" ]; then per=$2; shift 2; fi
[ $# -ge 1 ] || { sed -n '2,13p' "$0"; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -shared -fPIC -o "$tmp/omp_regions.so" "$here/omp_regions.c" -ldl -lpthread
OMP_REGIONS_OUT="$tmp/sites" LD_PRELOAD="$tmp/omp_regions.so" "$@" > /dev/null
exe=$(readlink -f "$(command -v "$1")")
# keep the command's own call sites; name them with addr2line
awk -v exe="$exe" -v cmd="$1" '$1 == exe || $1 == cmd' "$tmp/sites" > "$tmp/own"
cut -d' ' -f2 "$tmp/own" | sed 's/^/0x/' | addr2line -f -s -e "$exe" | paste - - > "$tmp/names"
paste -d' ' "$tmp/own" "$tmp/names" | awk -v per="$per" '
  { key = $5 " " $6; one[key] += $3; many[key] += $4 }
  END { for (k in one) printf "%10.1f %10.1f  %s\n", one[k] / per, many[k] / per, k }' |
  sort -k2,2nr -k1,1nr > "$tmp/rows"
printf "%10s %10s  %s\n" "1 thread" "threads>1" "site (per $per)"
cat "$tmp/rows"
awk '{ a += $1; b += $2 } END { printf "%10.1f %10.1f  total\n", a, b }' "$tmp/rows"
