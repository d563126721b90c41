"""Minimal-pair scoring throughput, on the same exported model, with the same scores checked first.

A hybridlm run (causal, masked) is exported with `hlm export`; hybridlm scores the run, the
baseline scores the export with `transformers`:
- causal: hybridlm's batched scorer vs a direct `transformers` loop (one forward per sentence).
- PLL: hybridlm's batched masked copies (output head only at the masked position) vs the naive
  one-mask-per-forward loop of minicons-style scorers.

    python bench/eval_throughput.py [--pairs-per-paradigm 20] [--preset small]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, append_results  # noqa: E402

from hybridlm.evaluate.blimp import load_pairs  # noqa: E402
from hybridlm.evaluate.lm import HFLM, RunLM  # noqa: E402
from hybridlm.evaluate.scoring import score_sentences  # noqa: E402
from hybridlm.export import export_run  # noqa: E402
from hybridlm.grammar import write_minimal_pairs  # noqa: E402
from hybridlm.model import build_model  # noqa: E402


def naive_causal(model, tok, sentences):
    out = []
    with torch.no_grad():
        for s in sentences:
            ids = torch.tensor([[tok.bos_token_id] + tok(s, add_special_tokens=False)["input_ids"]])
            logp = torch.log_softmax(model(ids).logits.double(), -1)
            out.append(logp[0, :-1].gather(-1, ids[0, 1:, None]).sum().item())
    return out


def naive_pll(model, tok, sentences):
    out = []
    with torch.no_grad():
        for s in sentences:
            ids = [tok.bos_token_id] + tok(s, add_special_tokens=False)["input_ids"]
            total = 0.0
            for i in range(1, len(ids)):
                masked = torch.tensor([ids[:i] + [tok.mask_token_id] + ids[i + 1 :]])
                total += torch.log_softmax(model(masked).logits[0, i].double(), -1)[ids[i]].item()
            out.append(total)
    return out


def make_run(path: Path, objective: str, preset: str, tok_dir, V: int) -> Path:
    """A run directory holding a randomly initialised model (speed does not depend on training)."""
    from hybridlm.checkpoint import save_checkpoint
    from hybridlm.config import TrainConfig
    from hybridlm.runs import RunDir

    torch.manual_seed(0)
    model = build_model(preset, V)
    RunDir(path).create(TrainConfig(objective=objective, preset=preset), Path(tok_dir) / "tokenizer.json")
    save_checkpoint(path, 0, model.state_dict(), {"state": {}, "param_groups": []}, {"tokens_seen": 0})
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs-per-paradigm", type=int, default=3)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--tokenizer", default=None, help="a tokenizer dir (default: one trained on grammar text)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hlm-bench-"))
    if (SHARED / "blimp").is_dir():
        pairs = load_pairs([SHARED / "blimp"], limit=a.pairs_per_paradigm)
        source = f"BLiMP, first {a.pairs_per_paradigm} pairs of each of 67 paradigms"
    else:
        pairs = load_pairs([write_minimal_pairs(tmp / "pairs", a.pairs_per_paradigm * 10)])
        source = "grammar pairs (../shared/data/blimp not found)"
    tok_dir = a.tokenizer
    if tok_dir is None:
        from hybridlm.grammar import write_corpus
        from hybridlm.tokenizer import train_tokenizer

        corpus = write_corpus(tmp / "c.txt", 50_000)
        if (SHARED / "gutenberg-10m" / "valid.txt").is_file():
            corpus = SHARED / "gutenberg-10m" / "valid.txt"
        train_tokenizer([corpus], 16384, tmp / "tok")
        tok_dir = tmp / "tok"
    from hybridlm.tokenizer import load_tokenizer

    V = load_tokenizer(tok_dir).get_vocab_size()
    rows = [
        "| scorer | pairs | hybridlm s | hybridlm pairs/s | baseline | baseline s | baseline pairs/s | speed-up "
        "| max abs diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for objective, kind, naive, name in (
        ("causal", "causal", naive_causal, "transformers loop, one sentence per forward"),
        ("masked", "pll", naive_pll, "naive PLL, one mask per forward"),
    ):
        run = make_run(tmp / objective, objective, a.preset, tok_dir, V)
        export_run(run, tmp / f"{objective}-hf")
        ours_lm, hf_lm = RunLM(run), HFLM(tmp / f"{objective}-hf", trust_remote_code=True)  # our own export
        some = pairs if kind == "causal" else pairs[:: max(1, len(pairs) // 40)]  # PLL: ~40 pairs across paradigms
        sub = sorted({p["good"] for p in some} | {p["bad"] for p in some})
        t = time.perf_counter()
        ours = score_sentences(ours_lm, sub, kind)
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        ref = naive(hf_lm.model, hf_lm.tok, sub)
        t_ref = time.perf_counter() - t
        diff = max(abs(x - y) for x, y in zip(ours, ref))
        assert diff < 1e-3, f"{kind}: scores differ by {diff}"
        n = len(some)
        rows.append(
            f"| {kind} | {n:,} | {t_ours:.1f} | {n / t_ours:.1f} | {name} | {t_ref:.1f} | {n / t_ref:.1f} | "
            f"{t_ref / t_ours:.1f}x | {diff:.1e} |"
        )
        print(rows[-1], flush=True)
        # for reference only: bf16 scoring (not the fp32 convention), with its deviation from fp32
        t = time.perf_counter()
        fast = score_sentences(RunLM(run, precision="bf16"), sub, kind)
        t_fast = time.perf_counter() - t
        dev = max(abs(x - y) for x, y in zip(fast, ours))
        rows.append(
            f"| {kind}, bf16 (reference) | {n:,} | {t_fast:.1f} | {n / t_fast:.1f} | {name} | {t_ref:.1f} | "
            f"{n / t_ref:.1f} | {t_ref / t_fast:.1f}x | {dev:.1e} (vs fp32) |"
        )
        print(rows[-1], flush=True)
    notes = [
        f"pairs: {source}; model: {a.preset} shape, random weights (speed does not depend on training), fp32 scoring",
        "scores are checked equal (max abs diff column) before the timings count",
        "bf16 rows (`--precision bf16`: body in bf16, head and log-probs in fp32): faster, scores move by the "
        "deviation shown "
        "(summed over a sentence, random weights); BabyLM scores in fp32, so fp32 is the default",
    ]
    append_results("Evaluation throughput (bench/eval_throughput.py)", rows, notes)


if __name__ == "__main__":
    main()
