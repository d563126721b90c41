"""Training tokens/s: hybridlm vs the Hugging Face model a user would train instead, same shape.

causal and hybrid vs LlamaForCausalLM; masked and diffusion vs ModernBertForMaskedLM. Same batch,
sequence length, precision (bf16 autocast where the hardware has bf16 units, else fp32), AdamW (fused
on both sides), in one process, alternating, median of several repeats. Before timing, the causal
loss of hybridlm and of Llama loaded with the same weights must agree (fp32). MFU is the model FLOPs
each side performs (PaLM's 6 x parameters x tokens + attention, with the output head counted only at
the positions where it is computed: hybridlm computes it at the scored positions, the HF models at
every position) against a matmul peak measured here in that precision. So speed-up = (HF FLOPs /
hybridlm FLOPs) x (hybridlm MFU / HF MFU): work skipped, and work done faster.

    python bench/train_throughput.py [--batch 16] [--seq-len 128] [--repeats 5] [--large]
    python bench/train_throughput.py --device cuda      # every objective at small and base, compiled

With --compile (always on CUDA) both sides train the way a user would: hlm as `hlm train --compile`
does (the trunk compiled as one graph, the mask built outside; on CUDA FlexAttention over packed
documents: the windows hold several documents each, as prepared data does), the HF models with SDPA
and torch.compile; a third side, hlm eager with the same weights, gives compiled / eager hlm. MFU is
against the measured peak.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import transformers  # noqa: E402
from _common import alternate, append_results, training_precision  # noqa: E402

from hybridlm.config import TrainConfig  # noqa: E402
from hybridlm.export import llama_config, llama_state_dict  # noqa: E402
from hybridlm.losses import loss_of
from hybridlm.model import build_model  # noqa: E402
from hybridlm.objectives import objective_class  # noqa: E402
from hybridlm.plan import attention_backend  # noqa: E402

V = 16384


def hf_llama(model, attention="sdpa"):
    cfg = transformers.LlamaConfig(
        **{k: v for k, v in llama_config(model).items() if k not in ("architectures", "model_type", "torch_dtype")}
    )
    cfg._attn_implementation = attention
    hf = transformers.LlamaForCausalLM(cfg)
    hf.load_state_dict(llama_state_dict(model), strict=False)
    hf.tie_weights()
    return hf


def hf_modernbert(model, attention="sdpa"):
    c = model.cfg
    cfg = transformers.ModernBertConfig(
        vocab_size=V,
        hidden_size=c.d_model,
        intermediate_size=c.d_ffn,
        num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head,
        max_position_embeddings=c.max_seq_len,
        global_attn_every_n_layers=1,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        cls_token_id=1,
        sep_token_id=2,
        mask_token_id=3,
    )
    cfg._attn_implementation = attention
    return transformers.ModernBertForMaskedLM(cfg)


def step_fn(model, opt, run, device="cpu", precision="bf16"):
    def fn():
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = run()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return fn


def step_flops(n_params, head_params, cfg, batch, seq_len, head_positions):
    """PaLM's model FLOPs of one training step, with the output head only where it is computed."""
    tokens = batch * seq_len
    attention = 12 * cfg.n_layer * cfg.d_model * seq_len * tokens
    return 6 * (n_params - head_params) * tokens + attention + 6 * head_params * head_positions


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=None, help="default 16 (cuda: 128)")
    ap.add_argument("--seq-len", type=int, default=None, help="default 128 (cuda: 512)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--large", action="store_true", help="also the larger shape (base preset, seq 256) for MFU")
    ap.add_argument(
        "--compile", action="store_true", help="torch.compile both models (each side's best setting on some machines)"
    )
    ap.add_argument("--device", default="cpu", help="cpu or cuda (cuda: compiled, every objective at small and base)")
    ap.add_argument(
        "--objectives",
        default="causal,masked,hybrid,diffusion,mntp,prefix",
        help="comma-separated (a GPU session's time is short: each row compiles two models)",
    )
    ap.add_argument(
        "--precision", default="auto", choices=["auto", "bf16", "fp32"], help="auto: bf16 where the hardware has it"
    )
    ap.add_argument("--presets", default="small,base", help="with --large or on cuda: which of small,base to run")
    ap.add_argument("--hf-attention", default="sdpa", help="transformers' attn_implementation: sdpa or eager")
    ap.add_argument(
        "--attention", default="auto", help="hlm's attention: auto (as hlm train picks), sdpa, matmul, flex"
    )
    a = ap.parse_args()
    cuda = a.device.startswith("cuda")
    # the GPU shapes: GPT-BERT's batch of 128 x 512 at small, 32 x 512 at base; compiled
    a.batch, a.seq_len = a.batch or (128 if cuda else 16), a.seq_len or (512 if cuda else 128)
    if cuda:
        a.compile, a.large = True, True
    torch.manual_seed(0)
    precision, peak = training_precision(a.precision, a.device)
    g = torch.Generator().manual_seed(0)
    mode = "torch.compile" if a.compile else "eager"
    rows = [
        "| objective | preset | tokens/step | hybridlm tok/s | HF model | HF tok/s | speed-up | HF/hybridlm "
        "FLOPs | hybridlm MFU | HF MFU |" + (" hlm eager tok/s | compiled / eager hlm |" if a.compile else ""),
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if a.compile else ""),
    ]
    how = TrainConfig(precision=precision, attention=a.attention)  # hlm attends as hlm train would
    hlm_attention = attention_backend(how, torch.device(a.device), a.compile)
    head_backend = "inductor" if a.compile else None  # the head's chunks compiled too, as hlm train --compile does
    notes = [
        f"both sides {mode}; {'bf16 autocast' if precision == 'bf16' else 'fp32'}, fused AdamW, clip 2.0",
        f"{precision} matmul peak measured here: {peak:.2f} TFLOP/s (2048x2048)",
        f"attention: hlm {hlm_attention} (--attention {a.attention}), transformers {a.hf_attention}",
    ]
    shapes = [("small", a.seq_len, a.batch)] + (
        [("base", a.seq_len if cuda else 256, a.batch // 4 if cuda else 8)] if a.large else []
    )
    shapes = [sh for sh in shapes if sh[0] in a.presets.split(",")]
    every = tuple(x for x in a.objectives.split(",") if x)
    for preset, L, B in shapes:
        ids = torch.randint(5, V, (B, L + 1), generator=g)
        ids[:, 0] = 1
        if cuda:  # packed documents, as prepared data has them (a BabyLM line is ~20 tokens; here ~128)
            ids[:, 1:][torch.rand(B, L, generator=g) < 1 / 128] = 1
        for objective in every if preset == "small" or cuda else every[:1]:
            torch.manual_seed(0)
            ours = build_model(preset, V, min_seq_len=L).to(a.device)
            ours.attention_backend = hlm_attention
            obj = objective_class(objective)(V)
            batch = obj.corrupt(ids, torch.Generator().manual_seed(1)).prepared().to(a.device)
            dev_ids = ids.to(a.device)
            if objective in ("causal", "hybrid", "prefix"):
                hf, hf_name = hf_llama(ours, a.hf_attention).to(a.device), "LlamaForCausalLM"
                if objective == "causal" and not cuda:  # same weights, same loss: the comparison is like for like
                    with torch.no_grad():
                        a_loss = loss_of(ours, obj, batch)[0].item()
                        b_loss = hf(input_ids=ids[:, :-1], labels=ids[:, :-1]).loss.item()
                        logits = ours(ids[:, :-1], logits=True)
                    # HF shifts labels itself: its loss covers L-1 targets, ours L; compare on the same targets
                    ref = torch.nn.functional.cross_entropy(
                        logits[:, :-1].reshape(-1, V), ids[:, 1:-1].reshape(-1)
                    ).item()
                    assert abs(b_loss - ref) < 1e-4, (b_loss, ref)
                    # and hybridlm's training loss (fused head + CE) is the plain CE over all its targets
                    full = torch.nn.functional.cross_entropy(logits.reshape(-1, V), ids[:, 1:].reshape(-1)).item()
                    assert abs(a_loss - full) < 1e-4, (a_loss, full)
                    notes.append(
                        f"{preset}: causal loss check passed (hybridlm {ref:.5f} = Llama {b_loss:.5f} on the "
                        "same targets)"
                    )
                hf_run = lambda hf: hf(input_ids=dev_ids[:, :-1], labels=dev_ids[:, :-1]).loss
            else:
                hf, hf_name = hf_modernbert(ours, a.hf_attention).to(a.device), "ModernBertForMaskedLM"
                labels = torch.where(batch.loss_weights > 0, batch.targets, torch.full_like(batch.targets, -100))
                hf_in = batch.input_ids
                hf_run = lambda hf, hf_in=hf_in, labels=labels: hf(input_ids=hf_in, labels=labels).loss
            opt_a = torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=True)
            opt_b = torch.optim.AdamW(hf.parameters(), lr=1e-4, fused=True)
            sides = {}
            if a.compile:  # as hlm train --compile does: the trunk one graph, masks (FlexAttention on CUDA) outside
                torch.manual_seed(0)
                eager = build_model(preset, V, min_seq_len=L).to(a.device)  # the same weights, not compiled
                eager.attention_backend = attention_backend(how, torch.device(a.device), compiled=False)
                opt_e = torch.optim.AdamW(eager.parameters(), lr=1e-4, fused=True)
                sides["eager"] = step_fn(eager, opt_e, lambda: loss_of(eager, obj, batch)[0], a.device, precision)
                ours.compile_trunk()
                hf_fwd = torch.compile(hf)
            else:
                hf_fwd = hf
            sides["ours"] = step_fn(
                ours, opt_a, lambda: loss_of(ours, obj, batch, compile_backend=head_backend)[0], a.device, precision
            )
            sides["hf"] = step_fn(hf, opt_b, lambda: hf_run(hf_fwd), a.device, precision)
            t = alternate(sides, repeats=a.repeats, warmup=3 if a.compile else 1, device=a.device)
            tokens = B * L
            head = V * ours.cfg.d_model  # tied: the embedding matrix is the head
            flops_ours = step_flops(ours.num_parameters(), head, ours.cfg, B, L, int(batch.scored.numel()))
            flops_hf = step_flops(hf.num_parameters(), head, ours.cfg, B, L, tokens)  # HF: logits everywhere
            mfu_ours = flops_ours / t["ours"] / 1e12 / peak
            mfu_hf = flops_hf / t["hf"] / 1e12 / peak
            rows.append(
                f"| {objective} | {preset} (L={L}) | {tokens:,} | {tokens / t['ours']:,.0f} | {hf_name} | "
                f"{tokens / t['hf']:,.0f} | "
                f"{t['hf'] / t['ours']:.2f}x | {flops_hf / flops_ours:.2f} | {mfu_ours:.0%} | {mfu_hf:.0%} |"
                + (f" {tokens / t['eager']:,.0f} | {t['eager'] / t['ours']:.2f}x |" if a.compile else "")
            )
            print(rows[-1], flush=True)
    append_results(f"Training throughput (bench/train_throughput.py{' --device cuda' if cuda else ''})", rows, notes)


if __name__ == "__main__":
    main()
