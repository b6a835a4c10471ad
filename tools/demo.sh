#!/usr/bin/env bash
# The main job on the built-in default: build mxlora, write a tiny
# gpt-oss-shaped model (MXFP4 experts, like the real one), train a LoRA
# adapter on the bundled sample data (recipes/demo.json), then ask the
# model questions without and with the adapter, and compare the loss.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/build.sh
bin=build/mxlora
model=models/tiny-demo
adapter=runs/demo/adapter.mxla

# --overwrite: every run of the demo trains afresh (an existing run folder is
# otherwise refused, see recipes/README.md).
$bin train recipes/demo.json --overwrite

echo
echo "== Answers with the adapter (greedy) =="
for q in "What is the mxlora mascot?" "Tell me what mxlora is." "Какой девиз у mxlora?" \
         "Can mxlora run without a GPU?" "Кто талисман mxlora?"; do
  echo "> $q"
  $bin generate --model "$model" --adapter "$adapter" --chat --temperature 0 \
    --max-tokens 48 --prompt "$q" 2>/dev/null
done
echo
echo "== The same question without the adapter =="
echo "> What is the mxlora mascot?"
answer=$($bin generate --model "$model" --chat --temperature 0 --max-tokens 24 \
  --prompt "What is the mxlora mascot?" 2>/dev/null || true)
if [ -z "${answer//[[:space:]]/}" ]; then
  echo "(no answer: the random tiny base never writes a harmony final message)"
else
  echo "$answer"
fi
echo
echo "== Held-out phrasings of the facts =="
$bin eval --model "$model" --data datasets/samples/facts_eval.jsonl --adapter "$adapter" \
  --seq-len 256
echo
echo "Loss curve: runs/demo/loss.svg   metrics: runs/demo/metrics.jsonl"
