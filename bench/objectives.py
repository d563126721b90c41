"""The objectives side by side at the same tokens: validation loss and bits per byte where defined,
minimal pairs, and a distilled student against its teacher.

    python bench/objectives.py WORKDIR [--steps 300]                      # the demo's grammar corpus
    python bench/objectives.py WORKDIR --corpus ../shared/data/gutenberg-10m \
        --pairs ../shared/data/babylm-2025/fast_eval/blimp_fast --vocab 4096 --seq-len 128 --batch-size 16

Every run sees the same corpus, the same batches and steps, so the same training tokens; FLOPs
differ only by what an objective adds (the MTP heads, the teachers' forward passes, which the
table lists). --corpus takes a folder with train.txt and valid.txt; --pairs a folder of
minimal-pair .jsonl files (BLiMP's format). Prints a Markdown table for docs/results.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
from pathlib import Path

from hybridlm.config import TrainConfig
from hybridlm.data import prepare
from hybridlm.evaluate.blimp import evaluate_pairs, load_pairs
from hybridlm.evaluate.lm import RunLM
from hybridlm.grammar import write_corpus, write_minimal_pairs
from hybridlm.tokenizer import train_tokenizer
from hybridlm.train import train

MODEL = {"d_model": 64, "n_head": 2, "d_ffn": 176, "n_layer": 2}  # `tiny`: what 2 slow CPU cores allow
STUDENT = {"d_model": 32, "n_head": 2, "d_ffn": 96, "n_layer": 1}

RUNS = [  # name, objective options, model
    ("causal", {"objective": "causal"}, MODEL),
    ("causal+mtp3", {"objective": "causal", "mtp_heads": 3}, MODEL),
    ("prefix", {"objective": "prefix"}, MODEL),
    ("mntp", {"objective": "mntp"}, MODEL),
    ("hybrid", {"objective": "hybrid"}, MODEL),
    ("mix-linear", {"objective": "mix", "mix": "causal:1,mntp:3", "mix_end": "causal:1,mntp:1"}, MODEL),
    ("mix-antlm", {"objective": "mix", "mix_phases": [[0.0, "causal:1"], [0.25, "mntp:1"], [0.75, "causal:1"]]}, MODEL),
    ("student", {"objective": "causal"}, STUDENT),
    (
        "student-distilled",
        {"objective": "causal", "distill_from": ["@causal"], "distill_alpha": 0.5, "distill_temperature": 2.0},
        STUDENT,
    ),
]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("workdir")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--only", default=None, help="comma-separated run names")
    p.add_argument("--corpus", default=None, help="folder with train.txt and valid.txt (default: the grammar corpus)")
    p.add_argument("--pairs", default=None, help="folder of minimal-pair .jsonl files (default: the grammar's pairs)")
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1.5e-3)
    a = p.parse_args()
    root = Path(a.workdir)
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "data" / "manifest.json").is_file():
        if a.corpus:
            corpus, valid = Path(a.corpus) / "train.txt", [Path(a.corpus) / "valid.txt"]
        else:
            corpus, valid = write_corpus(root / "grammar.txt", 300_000, seed=0), None
        train_tokenizer([corpus], a.vocab, root / "tokenizer", force=True)
        with contextlib.redirect_stderr(io.StringIO()):
            prepare([corpus], root / "tokenizer", root / "data", val_fraction=0.02, valid_inputs=valid, force=True)
    pairs = load_pairs([a.pairs or write_minimal_pairs(root / "pairs", n_per_paradigm=100, seed=1)])
    rows = []
    for name, options, model in RUNS:
        if a.only and name not in a.only.split(","):
            continue
        out = root / "runs" / name
        options = {
            k: ([str(root / "runs" / t[1:]) for t in v] if k == "distill_from" else v) for k, v in options.items()
        }
        t0 = time.time()
        if not (out / "config.json").is_file():
            summary = train(
                TrainConfig(
                    data=str(root / "data"),
                    out=str(out),
                    preset="tiny",
                    model=model,
                    seq_len=a.seq_len,
                    batch_size=a.batch_size,
                    max_steps=a.steps,
                    lr=a.lr,
                    eval_interval=a.steps,
                    eval_batches=16,
                    checkpoint_interval=a.steps,
                    seed=0,
                    log_interval=50,
                    **options,
                ),
                quiet=True,
            )
        else:
            import json

            summary = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if "val_loss" in x][-1]
            summary.update(parameters=RunLM(out).model.num_parameters())
        lm = RunLM(out)
        result = evaluate_pairs(lm, pairs)
        rows.append((name, summary, result, time.time() - t0))
        print(
            f"{name}: val {summary['val_loss']:.3f}  bpb {summary.get('val_bpb', float('nan')):.3f}  "
            f"pairs {result['macro_accuracy']:.1%} ({result['scorer']})  {time.time() - t0:.0f}s",
            flush=True,
        )
    print("\n| run | parameters | val loss | val bits/byte | minimal pairs (scorer) | teacher FLOPs |")
    print("|---|---|---|---|---|---|")
    for name, s, r, _ in rows:
        bpb = f"{s['val_bpb']:.3f}" if "val_bpb" in s else "—"
        teacher = f"{s['teacher_flops']:.2e}" if s.get("teacher_flops") else "—"
        print(
            f"| {name} | {s['parameters']:,} | {s['val_loss']:.3f} | {bpb} | {r['macro_accuracy']:.1%} "
            f"({r['scorer']}) | {teacher} |"
        )


if __name__ == "__main__":
    main()
