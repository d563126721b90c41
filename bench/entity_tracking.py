"""Entity tracking with the causal scorer: each item's ~110-token context computed once for its options
(hlm's shared-prefix packing) against once per option (what hlm did before, and what the official pipeline
does), on the same copies, alternating, scores checked equal first.

    python bench/entity_tracking.py [--every 10] [--repeats 2] [--preset small]

The model is a `small` run with random weights (speed does not depend on training; a 16k BPE trained on
gutenberg-10m's validation text); the items are every --every-th of fast_eval's entity_tracking_fast.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from _common import SHARED, alternate, append_results, peak_tflops  # noqa: E402
from eval_throughput import make_run  # noqa: E402

from hybridlm.evaluate.babylm import _accuracy, per_item, read_task  # noqa: E402
from hybridlm.evaluate.lm import RunLM  # noqa: E402
from hybridlm.evaluate.scoring import SCORERS, _copies, score_copies, share_prefixes  # noqa: E402
from hybridlm.tokenizer import load_tokenizer, train_tokenizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--preset", default="small")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hlm-entity-bench-"))
    train_tokenizer([SHARED / "gutenberg-10m" / "valid.txt"], 16384, tmp / "tok")
    V = load_tokenizer(tmp / "tok").get_vocab_size()
    lm = RunLM(make_run(tmp / "causal", "causal", a.preset, tmp / "tok", V))
    data = read_task("entity_tracking", SHARED / "babylm-2025" / "fast_eval" / "entity_tracking_fast")
    items = data.items[:: a.every]
    texts = [(t, s) for it in items for t, s in zip(it.texts, it.starts)]
    copies = [c for i, (t, s) in enumerate(texts) for c in _copies(SCORERS["causal"], lm, i, t, completion_start=s)]
    rows = share_prefixes(copies, lm.max_len)
    scores = {}  # each side's scores, kept from its timed calls (the whole set is too slow to score twice more)

    def side(name, share):
        return lambda: scores.__setitem__(name, score_copies(lm, copies, len(texts), True, share_prefix=share))

    for share in (False, True):  # warm both paths on a few items (the timed calls are each side's first whole pass)
        score_copies(lm, copies[:50], len(texts), True, share_prefix=share)
    t = alternate({"alone": side("alone", False), "shared": side("shared", True)}, repeats=a.repeats, warmup=0)
    alone, shared = scores["alone"], scores["shared"]
    gap = float(np.abs(np.subtract(alone, shared)).max())
    assert gap < 1e-4, gap
    accuracy = _accuracy(per_item(shared, items), items, official=False)[0]  # per subset, ties never correct
    assert accuracy == _accuracy(per_item(alone, items), items, official=False)[0], accuracy
    peak = peak_tflops(torch.float32)
    body = lm.model.num_parameters() - lm.model.output_weight.numel()
    reads = sum(len(c.positions) for c in copies)

    def mfu(tokens, seconds):  # forward FLOPs: the body at every token, the head where read
        return (2 * body * tokens + 2 * lm.model.output_weight.numel() * reads) / seconds / 1e12 / peak

    before, after = sum(len(c.ids) for c in copies), sum(len(r.ids) for r in rows)
    table = [
        "| scoring | items | texts | input rows | tokens computed | seconds | speed-up | fp32 MFU |",
        "|---|---|---|---|---|---|---|---|",
        f"| each option whole (before) | {len(items):,} | {len(texts):,} | {len(copies):,} | {before:,} | "
        f"{t['alone']:.1f} | 1.00x | {mfu(before, t['alone']):.0%} |",
        f"| a shared prefix once, its options packed after it | {len(items):,} | {len(texts):,} | {len(rows):,} | "
        f"{after:,} | {t['shared']:.1f} | {t['alone'] / t['shared']:.2f}x | {mfu(after, t['shared']):.0%} |",
    ]
    print("\n".join(table))
    notes = [
        f"every {a.every}-th item of fast_eval entity_tracking_fast; model: {a.preset}, random weights, vocab {V}; "
        f"fp32; median of {a.repeats}, alternating",
        f"scores equal to {gap:.1e} (largest difference), accuracy identical "
        f"({', '.join(f'{k} {v:.4f}' for k, v in accuracy.items())})",
        f"fp32 matmul peak measured here: {peak:.2f} TFLOP/s; MFU counts the forward FLOPs of the tokens computed",
    ]
    append_results("Entity tracking, causal: a shared prefix computed once (bench/entity_tracking.py)", table, notes)


if __name__ == "__main__":
    main()
