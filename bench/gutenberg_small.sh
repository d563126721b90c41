#!/usr/bin/env bash
# The docs/results.md comparison: four `small` models, one per objective, same data, same steps,
# same batch (so the same compute), then perplexity/bits per byte and BLiMP for each.
# Usage: bash bench/gutenberg_small.sh WORKDIR [STEPS] [BLIMP_LIMIT] [PPL_TOKENS] [PLL_TOKENS]
# (PLL-type perplexity costs one forward pass per token: it gets its own, smaller budget.)
set -euo pipefail
W=${1:?workdir}; STEPS=${2:-240}; LIMIT=${3:-30}; PPL_TOKENS=${4:-8192}; PLL_TOKENS=${5:-1024}
G=${GUTENBERG:-$(dirname "$0")/../../shared/data/gutenberg-10m}
B=${BLIMP:-$(dirname "$0")/../../shared/data/blimp}
mkdir -p "$W"
[ -f "$W/tok/tokenizer.json" ] || hlm tokenizer train --input "$G/train.txt" --vocab-size 16384 --out "$W/tok"
[ -f "$W/data/manifest.json" ] || hlm prepare --input "$G/train.txt" --valid "$G/valid.txt" --tokenizer "$W/tok" --out "$W/data"
for obj in causal masked hybrid diffusion; do
  [ -f "$W/runs/$obj/checkpoints/step_$(printf %07d "$STEPS")/model.safetensors" ] && continue
  hlm train --data "$W/data" --objective "$obj" --preset small --out "$W/runs/$obj" --max-steps "$STEPS" \
    --seq-len 128 --batch-size 32 --lr 2e-3 --eval-interval 40 --eval-batches 8 --checkpoint-interval 40 \
    $( [ -f "$W/runs/$obj/config.json" ] && echo --resume )
done
for obj in causal masked hybrid diffusion; do
  case $obj in
    causal) hlm eval perplexity --run "$W/runs/$obj" --input "$G/valid.txt" --max-tokens "$PPL_TOKENS" ;;
    masked) hlm eval perplexity --run "$W/runs/$obj" --input "$G/valid.txt" --max-tokens "$PLL_TOKENS" ;;
    hybrid) hlm eval perplexity --run "$W/runs/$obj" --input "$G/valid.txt" --max-tokens "$PLL_TOKENS" ;;  # causal and MNTP
    diffusion) hlm eval perplexity --run "$W/runs/$obj" --input "$G/valid.txt" --max-tokens "$PPL_TOKENS" --samples 16 ;;
  esac
  hlm eval blimp --run "$W/runs/$obj" --data "$B" --limit "$LIMIT"
done
hlm report "$W"/runs/causal "$W"/runs/masked "$W"/runs/hybrid "$W"/runs/diffusion --out "$W/report"
