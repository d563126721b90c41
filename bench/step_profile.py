"""What remains between hlm's training step and the matmul-only bound: one `small` step profiled, eager and
compiled (`hlm train --compile`: the trunk one graph), time by kind of operation.

    python bench/step_profile.py [--objective causal] [--preset small] [--batch 16] [--seq-len 128]

The bound is the step's model FLOPs at the measured bf16 matmul peak (MFU 100%); the table splits the measured
step into matrix multiplies (aten::mm / addmm / bmm / linear's), attention (SDPA's kernels), the optimizer, and
the rest (elementwise, casts, copies, reductions: what a fusing compiler removes), so the gap is named by kind.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import alternate, append_results, training_precision  # noqa: E402
from train_throughput import V, step_flops, step_fn  # noqa: E402

from hybridlm.config import TrainConfig  # noqa: E402
from hybridlm.losses import loss_of  # noqa: E402
from hybridlm.model import build_model  # noqa: E402
from hybridlm.objectives import objective_class  # noqa: E402
from hybridlm.plan import attention_backend  # noqa: E402

KINDS = (
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")),
    ("attention", ("scaled_dot_product", "flash_attention", "_efficient_attention", "flex_attention")),
    ("optimizer", ("fused_adamw", "_foreach", "adamw", "clip_grad")),
)
OTHER = "other (elementwise, casts, copies, reductions; Inductor's fused kernels when compiled)"


def kind_of(name: str) -> str:
    low = name.lower()
    return next((k for k, keys in KINDS if any(key.lower() in low for key in keys)), OTHER)


def profile_step(step) -> dict:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    by_kind = defaultdict(float)
    for event in prof.key_averages():
        by_kind[kind_of(event.key)] += event.self_cpu_time_total
    total = sum(by_kind.values())
    return {k: v / total for k, v in by_kind.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--objective", default="causal")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    ap.add_argument("--attention", default="auto", help="auto (as hlm train picks), sdpa or matmul")
    a = ap.parse_args()
    precision, peak = training_precision(a.precision)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, V, (a.batch, a.seq_len + 1), generator=g)
    obj = objective_class(a.objective)(V)
    batch = obj.corrupt(ids, torch.Generator().manual_seed(1)).prepared()
    rows = [
        "| mode | step s | MFU | bound s (100% MFU) | matmul | attention | optimizer | other |",
        "|---|---|---|---|---|---|---|---|",
    ]
    steps = {}
    for mode in ("eager", "compiled"):
        torch.manual_seed(0)
        model = build_model(a.preset, V, min_seq_len=a.seq_len)
        how = TrainConfig(precision=precision, attention=a.attention)  # as hlm train attends
        model.attention_backend = attention_backend(how, torch.device("cpu"), compiled=mode == "compiled")
        if mode == "compiled":
            model.compile_trunk()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        head = "inductor" if mode == "compiled" else None  # as hlm train --compile: the head's chunks compiled too
        steps[mode] = step_fn(
            model,
            opt,
            lambda model=model, head=head: loss_of(model, obj, batch, compile_backend=head)[0],
            precision=precision,
        )
    # both sides are the same model: one count of its FLOPs
    flops = step_flops(model.num_parameters(), V * model.cfg.d_model, model.cfg, a.batch, a.seq_len,
                       int(batch.scored.numel()))  # fmt: skip
    seconds = alternate(steps, repeats=a.repeats, warmup=3)
    bound = flops / (peak * 1e12)
    for mode, step in steps.items():
        share = profile_step(step)
        cells = [f"{share.get(k, 0.0):.0%}" for k, _ in KINDS] + [f"{share.get(OTHER, 0.0):.0%}"]
        mfu = bound / seconds[mode]
        rows.append(f"| {mode} | {seconds[mode]:.3f} | {mfu:.0%} | {bound:.3f} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    notes = [
        f"{a.objective}, {a.preset}, batch {a.batch} x {a.seq_len}, {precision}, attention {model.attention_backend} "
        f"(--attention {a.attention}), fused AdamW; shares are of the "
        "profiled step's CPU time (self time by operator)",
        f"{precision} matmul peak measured here: {peak:.2f} TFLOP/s",
    ]
    append_results("Where a training step's time goes (bench/step_profile.py)", rows, notes)


if __name__ == "__main__":
    main()
