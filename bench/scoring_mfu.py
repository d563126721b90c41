"""Scoring at the training step's pace: each scorer's MFU (the model FLOPs it computes over the time it takes, of
the measured matmul peak) next to the MFU of a training step of the same model, timed in one process, alternating.

    python bench/scoring_mfu.py [--every 40] [--repeats 3] [--preset small]

Per scorer, a run of the objective that offers it (random weights: speed does not depend on training) scores
two workloads of fast_eval: BLiMP's short sentences (every --every-th pair) and entity tracking's long
completions (every --every-th item; causal copies share their prefix). Model FLOPs count the body at every
real token (not padding), attention over each row's length, and the output head only where a score is read;
the training step is `bench/train_throughput.py`'s (16 x 128, PaLM's 6N + attention, the head where scored).
Scoring is fp32 (BabyLM's convention); the training step runs at the precision `hlm train` would pick.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, alternate, append_results, peak_tflops, training_precision  # noqa: E402
from eval_throughput import make_run  # noqa: E402
from train_throughput import step_flops, step_fn  # noqa: E402

from hybridlm.evaluate.babylm import read_task  # noqa: E402
from hybridlm.evaluate.lm import RunLM  # noqa: E402
from hybridlm.evaluate.scoring import SCORERS, _copies, _row, score_copies, share_prefixes  # noqa: E402
from hybridlm.losses import loss_of  # noqa: E402
from hybridlm.tokenizer import load_tokenizer, train_tokenizer  # noqa: E402

# (objective, scorer): each scorer on a run whose objective offers it
SCORING = [("causal", "causal"), ("masked", "pll"), ("hybrid", "mntp"), ("diffusion", "elbo")]
WORKLOADS = (("blimp", "blimp_fast"), ("entity_tracking", "entity_tracking_fast"))


def forward_flops(lm: RunLM, rows) -> float:
    """Model FLOPs of scoring `rows` (token lists as computed): 2N per real token for the body, attention over
    each row, 2 x the head's weights per read."""
    model, cfg = lm.model, lm.model.cfg
    head = model.output_weight.numel()
    body = model.num_parameters() - head
    tokens = sum(len(r.ids) for r in rows)
    attention = 4 * cfg.n_layer * cfg.d_model * sum(len(r.ids) ** 2 for r in rows)
    reads = sum(len(r.reads) for r in rows)
    return 2 * body * tokens + attention + 2 * head * reads


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--preset", default="small")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hlm-scoring-mfu-"))
    train_tokenizer([SHARED / "gutenberg-10m" / "valid.txt"], 16384, tmp / "tok")
    V = load_tokenizer(tmp / "tok").get_vocab_size()
    precision, train_peak = training_precision("auto")
    fp32_peak = peak_tflops(torch.float32)
    fast = SHARED / "babylm-2025" / "fast_eval"
    tasks = {name: read_task(name, fast / folder).items[:: a.every] for name, folder in WORKLOADS}
    table = [
        "| scorer | objective | workload | texts | rows | tokens | reads | copies built s | scoring s "
        f"| scoring MFU (fp32) | training step MFU ({precision}) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    g = torch.Generator().manual_seed(0)
    train_ids = torch.randint(5, V, (16, 129), generator=g)
    for objective, scorer in SCORING:
        lm = RunLM(make_run(tmp / objective, objective, a.preset, tmp / "tok", V))
        model = lm.model
        obj = lm.objective
        batch = obj.corrupt(train_ids, torch.Generator().manual_seed(1)).prepared()
        opt = torch.optim.AdamW(model.parameters(), lr=0.0, fused=True)  # lr 0: the scored weights stay put
        train = step_fn(model, opt, lambda model=model, obj=obj, batch=batch: loss_of(model, obj, batch)[0],
                        precision=precision)  # fmt: skip
        train_flops = step_flops(model.num_parameters(), model.output_weight.numel(), model.cfg, 16, 128,
                                 int(batch.scored.numel()))  # fmt: skip
        for task, items in tasks.items():
            texts = [(t, s) for it in items for t, s in zip(it.texts, it.starts)]
            started = time.perf_counter()  # tokenising and building the copies, once
            copies = [
                c for i, (t, s) in enumerate(texts) for c in _copies(SCORERS[scorer], lm, i, t, completion_start=s)
            ]
            prepare = time.perf_counter() - started
            causal = SCORERS[scorer].causal
            rows = share_prefixes(copies, lm.max_len) if causal else [_row(c) for c in copies]

            def score(copies=copies, n=len(texts), causal=causal):
                model.eval()
                score_copies(lm, copies, n, causal)

            def step():
                model.train()
                train()

            t = alternate({"score": score, "train": step}, repeats=a.repeats, warmup=1)
            mfu = forward_flops(lm, rows) / t["score"] / 1e12 / fp32_peak
            train_mfu = train_flops / t["train"] / 1e12 / train_peak
            table.append(
                f"| {scorer} | {objective} | {task} | {len(texts):,} | {len(rows):,} | "
                f"{sum(len(r.ids) for r in rows):,} | {sum(len(r.reads) for r in rows):,} | {prepare:.2f} | "
                f"{t['score']:.1f} | "
                f"{mfu:.0%} | {train_mfu:.0%} |"
            )
            print(table[-1], flush=True)
    notes = [
        f"every {a.every}-th item of fast_eval's blimp_fast and entity_tracking_fast; model: {a.preset}, random "
        f"weights, vocab {V}; median of {a.repeats}, scoring and training step alternating",
        f"measured matmul peak: fp32 {fp32_peak:.3f} TFLOP/s"
        + (f", {precision} {train_peak:.3f}" if precision != "fp32" else "")
        + "; the training step is eager, 16 x 128 tokens (bench/train_throughput.py's)",
    ]
    append_results("Scoring MFU next to the training step's (bench/scoring_mfu.py)", table, notes)


if __name__ == "__main__":
    main()
