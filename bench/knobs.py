"""The data-efficiency knobs against the seed spread: three seeds per arm, mean ± s.d.

    python bench/knobs.py WORKDIR [--steps 200] [--seeds 1,2,3] [--mb 4]

On the first MB of gutenberg-10m (tokenizer and data made once in WORKDIR), tiny models, equal
training words per arm:
- diffusion from scratch (STEPS) against causal (STEPS/2) then diffusion (STEPS/2) from its weights
  (--init-from, --diffusion-shift, --attention-anneal-steps STEPS/4): equal total words, since words
  seen continue from the source;
- causal in random order against a unigram-surprisal curriculum (linear pacing);
- masked LM with span masking against whole-word masking;
- (--set recipes) the hybrid with AdamW against LAMB (lr 1e-2) with an EMA of the weights (decay 0.99: GPT-BERT's
  0.999 averages over more steps than these runs have), scored with the EMA; diffusion with the log-linear
  schedule against the 2025 winner's bimodal Gaussian with loss-weight power 0.1, without and with its time
  conditioning (adaLN, cond_dim 128).
Each run is validated (bits per byte where it is a likelihood or a bound) and scored on BLiMP fast
(--pairs-per-paradigm of each paradigm); the table comes from `hlm report --group-by folder`.
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
from hybridlm.report import make_report
from hybridlm.runs import RunDir
from hybridlm.tokenizer import train_tokenizer
from hybridlm.train import train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MODEL = {"d_model": 64, "n_head": 2, "d_ffn": 176, "n_layer": 2}


def arms(steps: int, which: str = "knobs") -> list[tuple[str, dict, int, str | None]]:
    """(group, options, steps, source group) of every arm of a set."""
    half = steps // 2
    if which == "recipes":
        bimodal = {"schedule": "bimodal-gaussian", "loss_weight_power": 0.1, "bimodal_right_initial": 0.4}
        return [
            ("hybrid-adamw", {"objective": "hybrid"}, steps, None),
            ("hybrid-lamb-ema", {"objective": "hybrid", "optimizer": "lamb", "lr": 1e-2, "ema_decay": 0.99}, steps,
             None),
            ("diffusion-loglinear", {"objective": "diffusion"}, steps, None),
            ("diffusion-bimodal", {"objective": "diffusion", **bimodal}, steps, None),
            ("diffusion-bimodal-time", {"objective": "diffusion", "time_conditioning": True, **bimodal}, steps, None),
        ]  # fmt: skip
    return [
        ("diffusion-scratch", {"objective": "diffusion"}, steps, None),
        ("causal-source", {"objective": "causal"}, half, None),
        (
            "causal-then-diffusion",
            {"objective": "diffusion", "diffusion_shift": True, "attention_anneal_steps": half // 2},
            half,
            "causal-source",
        ),  # fmt: skip
        ("causal-random-order", {"objective": "causal"}, steps, None),
        ("causal-curriculum", {"objective": "causal", "curriculum": "unigram", "pacing": "linear:0,0.5"}, steps, None),
        ("masked-span", {"objective": "masked"}, steps, None),
        ("masked-whole-word", {"objective": "masked", "masking": "whole-word"}, steps, None),
    ]


COMPARISONS = {
    "knobs": [
        ("diffusion-scratch", "causal-then-diffusion"),
        ("causal-random-order", "causal-curriculum"),
        ("masked-span", "masked-whole-word"),
    ],
    "recipes": [
        ("hybrid-adamw", "hybrid-lamb-ema"),
        ("diffusion-loglinear", "diffusion-bimodal"),
        ("diffusion-loglinear", "diffusion-bimodal-time"),
    ],
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("workdir")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--mb", type=float, default=4.0, help="megabytes of gutenberg-10m's train.txt to train on")
    p.add_argument("--pairs-per-paradigm", type=int, default=20)
    p.add_argument("--set", default="knobs", choices=list(COMPARISONS), help="which comparisons to run")
    a = p.parse_args()
    root = Path(a.workdir)
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "data" / "manifest.json").is_file():
        text = (SHARED / "gutenberg-10m" / "train.txt").read_bytes()[: int(a.mb * 1e6)].decode("utf-8", "ignore")
        (root / "train.txt").write_text(text[: text.rfind("\n") + 1])
        valid = (SHARED / "gutenberg-10m" / "valid.txt").read_bytes()[:400_000].decode("utf-8", "ignore")
        (root / "valid.txt").write_text(valid[: valid.rfind("\n") + 1])
        train_tokenizer([root / "train.txt"], 2048, root / "tokenizer", force=True)
        with contextlib.redirect_stderr(io.StringIO()):
            prepare([root / "train.txt"], root / "tokenizer", root / "data", valid_inputs=[root / "valid.txt"])
    pairs = load_pairs([SHARED / "babylm-2025" / "fast_eval" / "blimp_fast"], limit=a.pairs_per_paradigm)
    seeds = [int(s) for s in a.seeds.split(",")]
    runs: dict[str, list[Path]] = {}
    for group, options, steps, source in arms(a.steps, a.set):
        for seed in seeds:
            out = root / "runs" / group / f"seed_{seed}"
            t0 = time.time()
            if not (out / "config.json").is_file():
                init = {"init_from": str(root / "runs" / source / f"seed_{seed}")} if source else {}
                options = {"lr": 2e-3, **options}
                train(TrainConfig(data=str(root / "data"), out=str(out), preset="tiny", model=MODEL, seq_len=64,
                                  batch_size=16, max_steps=steps, eval_interval=steps, eval_batches=16,
                                  checkpoint_interval=steps, seed=seed, log_interval=50, **options, **init),
                      quiet=True)  # fmt: skip
                result = evaluate_pairs(RunLM(out), pairs)
                RunDir(out).write_eval(f"blimp-{result['scorer']}.json", result)
            runs.setdefault(group, []).append(out)
            print(f"{group} seed {seed}: {time.time() - t0:.0f}s", flush=True)
    for a_group, b_group in COMPARISONS[a.set]:  # each comparison on its own: its best, its ≈ marks
        name = f"{a_group}-vs-{b_group}"
        report = make_report(runs[a_group] + runs[b_group], root / "report" / name, samples=False, group_by="folder")
        text = report.read_text()
        print(f"\n### {a_group} vs {b_group}\n" + text[text.index("| group |") : text.index("mean ± s.d.")])


if __name__ == "__main__":
    main()
