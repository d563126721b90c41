"""Generation tokens/s: causal decoding with and without the KV cache; diffusion sampling by steps.

python bench/generate_throughput.py [--preset small] [--new-tokens 128]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import append_results  # noqa: E402

from hybridlm.generate import generate_causal, unmask  # noqa: E402
from hybridlm.model import build_model  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="small")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--vocab-size", type=int, default=16384)
    a = ap.parse_args()
    torch.manual_seed(0)
    model = build_model(a.preset, a.vocab_size).eval()
    prompt = [1] + torch.randint(5, a.vocab_size, (16,)).tolist()
    rows = ["| mode | new tokens | seconds | tokens/s | note |", "|---|---|---|---|---|"]
    with torch.no_grad():
        out = {}
        for cache in (True, False):
            t = time.perf_counter()
            out[cache] = generate_causal(model, prompt, a.new_tokens, temperature=0, use_cache=cache)
            dt = time.perf_counter() - t
            rows.append(
                f"| causal, {'KV cache' if cache else 'no cache (full recompute)'} | {len(out[cache])} | "
                f"{dt:.2f} | {len(out[cache]) / dt:,.1f} | greedy |"
            )
            print(rows[-1], flush=True)
        assert out[True] == out[False], "the KV cache changed the greedy output"
        for steps in (8, 32, 128):
            ids = prompt + [3] * a.new_tokens
            t = time.perf_counter()
            filled = unmask(model, ids, 3, steps=steps, generator=torch.Generator().manual_seed(0))
            dt = time.perf_counter() - t
            assert 3 not in filled
            rows.append(
                f"| diffusion, {steps} unmasking steps | {a.new_tokens} | {dt:.2f} | {a.new_tokens / dt:,.1f} | "
                "confidence order, float64 sampling |"
            )
            print(rows[-1], flush=True)
    append_results(
        "Generation throughput (bench/generate_throughput.py)",
        rows,
        [f"{a.preset} preset, random weights, batch 1, fp32; greedy outputs checked equal with and without the cache"],
    )


if __name__ == "__main__":
    main()
