"""Supervised fine-tuning on a task with one right answer (issue 37): the demo grammar's "plural : SENTENCE =" ->
" the sentence with its subject plural", exact match of greedy answers on held-out pairs, before and after `hlm sft`,
per objective. Each objective is first pretrained on the grammar's text (the demo's shape), then fine-tuned.

    python bench/sft.py --out .gpu/sft [--objectives causal,diffusion] [--pretrain-steps 500] [--sft-steps 300]

Writes OUT/results.jsonl (a line per objective and stage) as it goes; prints the table docs/results.md keeps.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

from hybridlm.config import TrainConfig  # noqa: E402
from hybridlm.data import prepare  # noqa: E402
from hybridlm.grammar import write_corpus, write_plural_pairs  # noqa: E402
from hybridlm.runs import load_run  # noqa: E402
from hybridlm.sft import exact_match, read_pairs, sft  # noqa: E402
from hybridlm.tokenizer import train_tokenizer  # noqa: E402
from hybridlm.train import train  # noqa: E402

SHAPE = {"d_model": 128, "n_head": 4, "d_ffn": 384, "n_layer": 3}  # the demo's


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--objectives", default="causal,diffusion")
    ap.add_argument("--pretrain-steps", type=int, default=500)
    ap.add_argument("--sft-steps", type=int, default=300)
    ap.add_argument("--n-valid", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eos", default="", help="pad | stop (default: stop for causal, prefix, hybrid; pad otherwise)")
    a = ap.parse_args()
    root = Path(a.out)
    root.mkdir(parents=True, exist_ok=True)
    log = open(root / "results.jsonl", "a")
    print(machine())
    if not (root / "data").is_dir():
        corpus = write_corpus(root / "grammar.txt", 300_000, seed=a.seed)
        train_tokenizer([corpus], 512, root / "tokenizer")
        with contextlib.redirect_stderr(io.StringIO()):
            prepare([corpus], root / "tokenizer", root / "data", val_fraction=0.02)
        write_plural_pairs(root, n_train=2000, n_valid=a.n_valid, seed=11 + a.seed)
    valid = read_pairs(root / "sft.valid.jsonl")
    for objective in [o for o in a.objectives.split(",") if o]:
        base, tuned = root / "runs" / objective, root / "runs" / f"{objective}-sft"
        eos = a.eos or ("stop" if objective in ("causal", "prefix", "hybrid") else "pad")
        t0 = time.time()
        if not base.is_dir():
            cfg = TrainConfig(data=str(root / "data"), out=str(base), objective=objective, preset="tiny", model=SHAPE,
                              seq_len=64, batch_size=32, max_steps=a.pretrain_steps, lr=1.5e-3,
                              eval_interval=a.pretrain_steps, eval_batches=8, checkpoint_interval=a.pretrain_steps,
                              seed=a.seed, log_interval=50)  # fmt: skip
            train(cfg, quiet=True)
        before = exact_match(load_run(base), valid)
        if not tuned.is_dir():
            sft(base, root / "sft.train.jsonl", tuned, eos, root / "sft.valid.jsonl", seq_len=64,
                max_steps=a.sft_steps, batch_size=32, lr=1e-3, eval_interval=a.sft_steps, eval_batches=4,
                checkpoint_interval=a.sft_steps, log_interval=50, seed=a.seed)  # fmt: skip
        after = exact_match(load_run(tuned), valid)
        row = {"objective": objective, "eos": eos, "pretrain_steps": a.pretrain_steps, "sft_steps": a.sft_steps,
               "seed": a.seed, "before": before["exact_match"], "after": after["exact_match"], "n": after["n"],
               "examples": after["examples"][:3], "seconds": round(time.time() - t0, 1),
               "threads": torch.get_num_threads()}  # fmt: skip
        log.write(json.dumps(row) + "\n")
        log.flush()
        print(f"{objective:10s} eos {eos:4s}  exact match {100 * before['exact_match']:5.1f}% -> "
              f"{100 * after['exact_match']:5.1f}%  ({after['n']} held-out pairs)  e.g. "
              f"{after['examples'][0]}")  # fmt: skip


if __name__ == "__main__":
    main()
