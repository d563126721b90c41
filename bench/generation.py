"""Masked diffusion as a generator: objectives at equal training tokens, then every sampler against steps.

    python bench/generation.py WORKDIR [--steps 1000] [--gutenberg-steps 600] [--samples 64]

1. The demo grammar (300k words, the demo's model shape, seq_len 64, batch 32): causal, block
   diffusion B = 4 and B = 16, diffusion, each STEPS steps (equal training tokens), validation bits
   per byte (a likelihood or its bound).
2. A gutenberg-10m slice (--mb MB, 2,048-token BPE, tiny model, seq_len 128): the same four.
3. Samples of the grammar runs: every sampler x steps, SAMPLES unconditional samples of 63 tokens,
   grammaticality (the grammar parses each complete sentence) and generative perplexity under the
   causal run as the judge, network calls and wall time per sample; a plot (WORKDIR/samplers.png).
4. The protocol's sanity check: the causal run's own samples (temperature 1) under itself, against
   its validation perplexity, with the standard error.
Every result is also written to WORKDIR/results.jsonl as it comes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import time
from pathlib import Path

from hybridlm.config import TrainConfig
from hybridlm.data import prepare
from hybridlm.evaluate.generation import evaluate_generation
from hybridlm.evaluate.lm import RunLM
from hybridlm.grammar import write_corpus
from hybridlm.runs import RunDir, load_run
from hybridlm.samplers import Sampling
from hybridlm.tokenizer import train_tokenizer
from hybridlm.train import train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ARMS = [
    ("causal", {"objective": "causal"}),
    ("block4", {"objective": "block_diffusion", "block_size": 4}),
    ("block16", {"objective": "block_diffusion", "block_size": 16}),
    ("diffusion", {"objective": "diffusion"}),
]
COLUMNS = (
    "sampler",
    "steps",
    "grammatical",
    "gen_ppl",
    "entropy",
    "degenerate",
    "distinct_2",
    "nfe",
    "seconds_per_sample",
)
SWEEP = [
    ("ancestral", {}, (4, 8, 16, 32, 64)),
    ("remdm", {"eta": 0.04}, (16, 32, 64, 128)),
    ("first-hitting", {}, (None,)),
    ("confidence", {}, (4, 8, 16, 32, 64)),
    ("margin", {}, (8, 32)),
    ("entropy", {}, (8, 32)),
]


def log(root: Path, record: dict) -> None:
    with open(root / "results.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "samples"}), flush=True)


def make_grammar(root: Path) -> Path:
    if not (root / "data" / "manifest.json").is_file():
        corpus = write_corpus(root / "grammar.txt", 300_000, seed=0)
        train_tokenizer([corpus], 512, root / "tokenizer", force=True)
        with contextlib.redirect_stderr(io.StringIO()):
            prepare([corpus], root / "tokenizer", root / "data", val_fraction=0.02)
    return root / "data"


def make_gutenberg(root: Path, mb: float) -> Path:
    if not (root / "data" / "manifest.json").is_file():
        text = (SHARED / "gutenberg-10m" / "train.txt").read_bytes()[: int(mb * 1e6)].decode("utf-8", "ignore")
        (root / "train.txt").write_text(text[: text.rfind("\n") + 1])
        valid = (SHARED / "gutenberg-10m" / "valid.txt").read_bytes()[:300_000].decode("utf-8", "ignore")
        (root / "valid.txt").write_text(valid[: valid.rfind("\n") + 1])
        train_tokenizer([root / "train.txt"], 2048, root / "tokenizer", force=True)
        with contextlib.redirect_stderr(io.StringIO()):
            prepare([root / "train.txt"], root / "tokenizer", root / "data", valid_inputs=[root / "valid.txt"])
    return root / "data"


def train_arms(root: Path, data: Path, corpus: str, shape: dict) -> dict[str, Path]:
    runs = {}
    for name, options in ARMS:
        out = root / "runs" / name
        if not (out / "metrics.jsonl").is_file():
            t0 = time.time()
            summary = train(TrainConfig(data=str(data), out=str(out), **shape, **options), quiet=True)
            log(root, {"corpus": corpus, "run": name, "val_loss": summary.get("val_loss"),
                       "val_bpb": summary.get("val_bpb"), "tokens": summary["tokens_seen"],
                       "seconds": round(time.time() - t0, 1)})  # fmt: skip
        runs[name] = out
    return runs


def sweep(root: Path, runs: dict[str, Path], samples: int) -> list[dict]:
    judge = RunLM(runs["causal"])
    rows = []
    for name in ("diffusion", "block4", "block16"):
        run = load_run(runs[name])
        for sampler, knobs, step_list in SWEEP:
            for steps in step_list:
                sampling = Sampling(sampler, steps=steps or 64, **knobs).check()
                r = evaluate_generation(run, sampling, samples, 63, seed=0, judge=judge, grammar=True)
                RunDir(runs[name]).write_eval(f"generation-{sampler}-steps{steps}.json", r)
                row = {"run": name, **{k: r[k] for k in COLUMNS}}
                log(root, row)
                rows.append(row)
    run = load_run(runs["causal"])
    r = evaluate_generation(run, Sampling(), samples, 63, seed=0, judge=judge, grammar=True)
    row = {"run": "causal", **{k: r[k] for k in COLUMNS}}
    log(root, row)
    rows.append(row)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    causal = next(r for r in rows if r["run"] == "causal")
    for run, style in (("diffusion", "-"), ("block4", "--"), ("block16", ":")):
        for sampler, _, _ in SWEEP:
            pts = sorted(
                (r["nfe"], r["grammatical"], r["gen_ppl"]) for r in rows if (r["run"], r["sampler"]) == (run, sampler)
            )
            if pts:
                xs = [p[0] for p in pts]
                axes[0].plot(xs, [p[1] for p in pts], style, marker="o", label=f"{run} {sampler}")
                axes[1].plot(xs, [p[2] for p in pts], style, marker="o")
    for ax, key, label in (
        (axes[0], "grammatical", "grammatical sentences"),
        (axes[1], "gen_ppl", "gen. perplexity (causal judge)"),
    ):
        ax.axhline(causal[key], color="k", lw=0.8, label="causal (autoregressive)")
        ax.set_xscale("log")
        ax.set_xlabel("network calls per sample (63 tokens)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def sanity(root: Path, causal: Path, samples: int) -> None:
    """Gen. perplexity of the causal run's own samples under itself vs its validation perplexity."""
    run, judge = load_run(causal), RunLM(causal)
    r = evaluate_generation(run, Sampling(), samples, 63, seed=1, judge=judge)
    val = [m for m in RunDir(causal).read_metrics() if "val_loss" in m][-1]["val_loss"]
    log(root, {"check": "own samples under itself", "gen_ppl": r["gen_ppl"], "gen_nll": r["nll_per_token"],
               "gen_nll_stderr": r["nll_per_token_stderr"], "val_ppl": math.exp(val), "val_nll": val})  # fmt: skip


def main():
    p = argparse.ArgumentParser()
    p.add_argument("workdir")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--gutenberg-steps", type=int, default=600)
    p.add_argument("--mb", type=float, default=2.0)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--skip-gutenberg", action="store_true")
    a = p.parse_args()
    root = Path(a.workdir)
    (root / "grammar").mkdir(parents=True, exist_ok=True)
    data = make_grammar(root / "grammar")
    shape = dict(preset="tiny", model={"d_model": 128, "n_head": 4, "d_ffn": 384, "n_layer": 3}, seq_len=64,
                 batch_size=32, max_steps=a.steps, lr=1.5e-3, eval_interval=a.steps, eval_batches=16,
                 checkpoint_interval=a.steps, seed=0)  # fmt: skip
    runs = train_arms(root, data, "grammar", shape)
    sanity(root, runs["causal"], 4 * a.samples)
    rows = sweep(root, runs, a.samples)
    plot(rows, root / "samplers.png")
    if not a.skip_gutenberg:
        (root / "gutenberg").mkdir(exist_ok=True)
        data = make_gutenberg(root / "gutenberg", a.mb)
        n = a.gutenberg_steps
        shape = dict(preset="tiny", seq_len=128, batch_size=16, max_steps=n, lr=2e-3, eval_interval=n,
                     eval_batches=16, checkpoint_interval=n, seed=0)  # fmt: skip
        train_arms(root / "gutenberg", data, "gutenberg", shape)


if __name__ == "__main__":
    main()
