"""Issue 15's correctness checks on a GPU, in one short script (a few minutes with compilation):

    python bench/gpu_check.py WORKDIR

1. FlexAttention equals SDPA's dense mask on CUDA, outputs and gradients (the CPU test covers
   outputs only: PyTorch's FlexAttention has no CPU backward).
2. The training step never synchronises with the host: steps run under
   torch.cuda.set_sync_debug_mode("error") after the warm-up (compilation) steps.
3. The first steps' training loss on CUDA (bf16, compiled, FlexAttention) equals the CPU's (fp32,
   eager, SDPA) to bf16 tolerance: causal, hybrid (mixed rows), diffusion, prefix.
4. Graph breaks inside a compiled block (torch._dynamo.explain), reported.

Prints one line per check and exits non-zero when one fails. Data: the demo's grammar corpus,
made in WORKDIR.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import torch

from hybridlm.config import TrainConfig
from hybridlm.data import prepare
from hybridlm.grammar import write_corpus
from hybridlm.model import AttentionSpec, build_model
from hybridlm.runs import RunDir
from hybridlm.tokenizer import train_tokenizer
from hybridlm.train import Dist, prepare_batch, read_record, setup, train, train_step

OBJECTIVES = (
    "causal",
    "hybrid",
    "diffusion",
    "prefix",
)  # every attention mode and loss shape, kept short: compilation costs
failed = []


STARTED = time.time()


def report(name: str, ok: bool, detail: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'} [{time.time() - STARTED:5.0f}s] {name}: {detail}", flush=True)
    if not ok:
        failed.append(name)


def flex_equals_sdpa():
    torch.manual_seed(0)
    B, T = 8, 256
    docs = torch.cumsum((torch.rand(B, T) < 0.03).int(), -1).cuda()
    kw = dict(
        is_causal=torch.tensor([True, False] * 4).cuda(),
        document_ids=docs,
        prefix_lengths=torch.tensor([0, 0, 40, 0, 100, 0, 0, 7]).cuda(),
    )
    ids = torch.randint(5, 1000, (B, T)).cuda()
    out = {}
    for backend in ("sdpa", "flex"):
        torch.manual_seed(0)
        model = build_model("tiny", 1000, min_seq_len=T).cuda()
        model.attention_backend = backend
        if backend == "flex":
            model.compile_trunk()  # as hlm train --compile does
        hidden = model(ids, AttentionSpec(**kw))
        hidden.float().pow(2).mean().backward()
        out[backend] = (hidden.detach(), [p.grad.clone() for p in model.parameters()])
    diff = (out["flex"][0] - out["sdpa"][0]).abs().max().item()
    gdiff = max(
        (a - b).abs().max().item() / (b.abs().max().item() + 1e-12) for a, b in zip(out["flex"][1], out["sdpa"][1])
    )
    report(
        "flex = sdpa (fp32, outputs and gradients)",
        diff < 1e-4 and gdiff < 1e-3,
        f"max |diff| {diff:.2e}, max relative grad diff {gdiff:.2e}",
    )
    mask, _ = AttentionSpec(**kw).mask(T, "cuda", backend="flex")
    report("flex block sparsity", True, f"{mask.sparsity():.1f}% of blocks skipped")


def no_host_sync(data: Path, work: Path):
    for objective in ("causal", "hybrid", "diffusion"):
        out = work / f"sync-{objective}"
        cfg = TrainConfig(
            data=str(data),
            out=str(out),
            objective=objective,
            preset="tiny",
            seq_len=128,
            batch_size=32,
            max_steps=1,
            eval_interval=0,
            device="cuda",
        )
        train(cfg, quiet=True)
        run = RunDir(out)
        t = setup(run.read_config(), Dist("cuda"), run, resume=True)
        t.cfg.max_steps = 8
        for _ in range(3):  # warm-up: compilation may synchronise
            train_step(t)
        hosts = [prepare_batch(t, s) for s in range(t.step, t.step + 3)]
        torch.cuda.synchronize()
        error = None
        torch.cuda.set_sync_debug_mode("error")
        try:
            for host in hosts:
                record = train_step(t, host)
        except RuntimeError as e:
            error = str(e).splitlines()[0]
        finally:
            torch.cuda.set_sync_debug_mode("default")
        report(
            f"no host sync in the step ({objective})",
            error is None,
            error or f"3 steps, loss {read_record(t, record)['loss']:.4f}",
        )


def cuda_equals_cpu(data: Path, work: Path):
    for objective in OBJECTIVES:
        losses = {}
        for device, precision in (("cpu", "fp32"), ("cuda", "bf16")):
            out = work / f"eq-{objective}-{device}"
            train(
                TrainConfig(
                    data=str(data),
                    out=str(out),
                    objective=objective,
                    preset="tiny",
                    seq_len=64,
                    batch_size=16,
                    max_steps=5,
                    eval_interval=0,
                    log_interval=1,
                    device=device,
                    precision=precision,
                ),
                quiet=True,
            )
            rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
            losses[device] = [r["loss"] for r in rows if "loss" in r]
        worst = max(abs(a - b) / abs(a) for a, b in zip(losses["cpu"], losses["cuda"]))
        report(
            f"CUDA bf16 loss = CPU fp32 loss, 5 steps ({objective})",
            worst < 2e-2,
            f"worst relative diff {worst:.2e}: cpu {losses['cpu'][-1]:.4f}, cuda {losses['cuda'][-1]:.4f}",
        )


def graph_breaks():
    model = build_model("small", 16384).cuda()
    x = torch.randn(4, 512, 384, device="cuda")
    cos, sin = model.rope_cos[:512], model.rope_sin[:512]
    docs = torch.cumsum((torch.rand(4, 512) < 0.01).int(), -1).cuda()
    model.attention_backend = "flex"
    mask, flag = AttentionSpec(torch.ones(4, dtype=torch.bool, device="cuda"), docs).mask(512, "cuda", backend="flex")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        explained = torch._dynamo.explain(model.blocks[0])(x, cos, sin, mask, flag)
    report(
        "graph breaks in a compiled block",
        explained.graph_break_count == 0,
        f"{explained.graph_break_count} ({'; '.join(str(b.reason) for b in explained.break_reasons)[:300] or 'none'})",
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("workdir")
    a = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_check needs a CUDA device")
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    if not (data / "manifest.json").is_file():
        corpus = write_corpus(work / "grammar.txt", 100_000, seed=0)
        train_tokenizer([corpus], 512, work / "tokenizer", force=True)
        with contextlib.redirect_stderr(io.StringIO()):
            prepare([corpus], work / "tokenizer", data, val_fraction=0.02, force=True)
    for check in (flex_equals_sdpa, graph_breaks):
        check()
    no_host_sync(data, work)
    cuda_equals_cpu(data, work)
    print(f"{len(failed)} check(s) failed: {', '.join(failed)}" if failed else "all checks passed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
