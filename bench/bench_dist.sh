#!/usr/bin/env bash
# Data-parallel training speed: tokens/s of 1 process and of 2 MPI ranks,
# 1 thread each, on the tiny "bench" preset (~70M parameters, MXFP4
# experts), and the time per step spent in the gradient all-reduce.
#
#   bench/bench_dist.sh [BUILD_DIR] [STEPS] [REPS]     (defaults: build 12 3)
#
# Three runs per repetition, interleaved so that a busy machine slows all
# of them alike:
#   one   1 process,  batch 1 row           the baseline
#   two   2 ranks,    batch 1 row each      global batch 2 rows
#   one2  1 process,  batch 2 rows          the same global batch as "two"
# Reported (medians over REPS): tokens/s of every rank together over the
# training steps (setup excluded), all-reduce seconds per step of rank 0
# (waiting for the slower rank included), the scaling efficiency
# two / (2 × one) and the speed-up two / one2. Needs mpirun.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
steps=${2:-12}
reps=${3:-3}
bin=$build/mxlora
launcher="mpirun --oversubscribe"
[ "$(id -u)" = 0 ] && launcher="$launcher --allow-run-as-root"
work=$(mktemp -d /tmp/mxl_bench_dist_XXXXXX)
trap 'rm -rf "$work"' EXIT

$bin tiny "$work/model" --preset bench --seed 1 --layout hf \
  --vocab-corpus datasets/samples/train.jsonl >/dev/null 2>&1
common=(--model "$work/model" --data datasets/samples/train.jsonl --steps "$steps"
        --seq-len 512 --threads 1 --rank 16 --lr 1e-4 --set eval_fraction=0 --overwrite)

# field NAME FILE: a number from summary.json
field() { sed -n "s/.*\"$1\":[[:space:]]*\\([0-9.eE+-]*\\).*/\\1/p" "$2"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

declare -A tps ar
for rep in $(seq "$reps"); do
  $bin train "${common[@]}" --batch-size 1 --out "$work/one" >/dev/null 2>&1
  tps[one]+="$(field tokens_per_s "$work/one/summary.json") "
  $launcher -np 2 $bin train "${common[@]}" --batch-size 1 --out "$work/two" >/dev/null 2>&1
  tps[two]+="$(field tokens_per_s "$work/two/summary.json") "
  ar[two]+="$(field allreduce_s_per_step "$work/two/summary.json") "
  $bin train "${common[@]}" --batch-size 2 --out "$work/one2" >/dev/null 2>&1
  tps[one2]+="$(field tokens_per_s "$work/one2/summary.json") "
done

m() { echo $1 | tr ' ' '\n' | grep . | median; }
one=$(m "${tps[one]}") two=$(m "${tps[two]}") one2=$(m "${tps[one2]}") allreduce=$(m "${ar[two]}")
echo "bench_dist: bench preset, seq 512, rank 16, $steps steps x $reps repetitions"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), family" \
     "$(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | tr -d ' '), model" \
     "$(grep -m1 '^model[[:space:]]*:' /proc/cpuinfo | cut -d: -f2 | tr -d ' '), $(nproc) cores," \
     "load $(cut -d' ' -f1-3 /proc/loadavg)"
printf "  1 process  x 1 row   %8.1f tokens/s   (all: %s)\n" "$one" "${tps[one]}"
printf "  2 ranks    x 1 row   %8.1f tokens/s   (all: %s)\n" "$two" "${tps[two]}"
printf "  1 process  x 2 rows  %8.1f tokens/s   (all: %s)\n" "$one2" "${tps[one2]}"
printf "  all-reduce per step  %8.4f s          (all: %s)\n" "$allreduce" "${ar[two]}"
awk -v a="$one" -v b="$two" -v c="$one2" 'BEGIN {
  printf "  scaling efficiency 2 ranks / (2 x 1 process): %.2f\n", b / (2 * a);
  printf "  speed-up of 2 ranks over 1 process with the same global batch: %.2f\n", b / c }'
