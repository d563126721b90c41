"""GIDD's uniform noise against masking at equal training tokens (issue 40): bounds, BLiMP, samples.

    python bench/gidd.py WORKDIR [--steps 1000] [--p 0.1,0.5] [--seeds 0] [--only NAME,...]
    python bench/gidd.py WORKDIR --sampling [--steps 1000] [--gutenberg-steps 600] [--seeds 0] [--samples 64]
        [--skip-grammar | --skip-gutenberg] [--bounds-only]

--sampling: `diffusion` (p = 0), gidd p = 0.1 (GIDD's dynamic weights) and p = 1 (uniform-state, the bound's
weights), and a causal judge, on the demo grammar (seq_len 64) and on a 2 MB gutenberg-10m slice (2,048-token
BPE, seq_len 128): validation bits per byte; on the grammar, unconditional samples of up to 63 tokens by the
ancestral sampler of each (diffusion: MDLM's; gidd: its reverse process, every position redrawn) at 16 and 63
rounds, each with and without 32 rounds of GIDD's self-correction (grammatical rate, generative perplexity under
the causal run, entropy, degenerate share, network calls); on gutenberg, BLiMP fast (each objective's bound) and
the same samples' generative perplexity. Writes WORKDIR/sampling.jsonl as it goes.

The demo grammar and the shape of bench/generation.py's grammar runs (705k parameters, 32 x 64 tokens a step):
`diffusion` (p = 0: masking) against `gidd` at each p_uniform, with the bound's weights (elbo) and GIDD's
recipe (dynamic). Every number is a bound (the NELBO) in bits per byte. Writes WORKDIR/gidd.jsonl as it goes.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from generation import SHARED, make_grammar, make_gutenberg  # noqa: E402

from hybridlm.config import TrainConfig  # noqa: E402
from hybridlm.evaluate.blimp import evaluate_pairs, load_pairs  # noqa: E402
from hybridlm.evaluate.generation import evaluate_generation  # noqa: E402
from hybridlm.evaluate.lm import RunLM  # noqa: E402
from hybridlm.runs import load_run  # noqa: E402
from hybridlm.samplers import Sampling  # noqa: E402
from hybridlm.train import train  # noqa: E402

SAMPLING_ARMS = [
    ("causal", {"objective": "causal"}),
    ("diffusion", {"objective": "diffusion"}),
    ("gidd-p0.1", {"objective": "gidd", "options": {"p_uniform": 0.1, "loss_weighting": "dynamic"}}),
    ("gidd-p1", {"objective": "gidd", "options": {"p_uniform": 1.0}}),
]
KEEP = ("grammatical", "gen_ppl", "entropy", "degenerate", "distinct_2", "nfe", "mean_tokens")


def record(root: Path, entry: dict) -> None:
    with open(root / "sampling.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")
    print(json.dumps(entry), flush=True)


def sampling_bench(root: Path, a) -> None:
    """The --sampling section (see the module's text)."""
    corpora = [("grammar", make_grammar, a.steps, dict(model={"d_model": 128, "n_head": 4, "d_ffn": 384,
                "n_layer": 3}, seq_len=64, batch_size=32, lr=1.5e-3))] if not a.skip_grammar else []  # fmt: skip
    if not a.skip_gutenberg:
        corpora.append(("gutenberg", lambda r: make_gutenberg(r, 2.0), a.gutenberg_steps, dict(lr=2e-3)))
    for seed in (int(s) for s in a.seeds.split(",")):
        for corpus, make, steps, shape in corpora:
            (root / corpus).mkdir(parents=True, exist_ok=True)
            data = make(root / corpus)
            runs = {}
            for name, options in SAMPLING_ARMS:
                out = root / corpus / "runs" / f"{name}-seed{seed}"
                runs[name] = out
                if (out / "metrics.jsonl").is_file():
                    continue
                t0 = time.time()
                summary = train(TrainConfig(data=str(data), out=str(out), seed=seed, preset="tiny", max_steps=steps,
                                            eval_interval=steps, eval_batches=16, checkpoint_interval=steps, **shape,
                                            **options), quiet=True)  # fmt: skip
                record(root, {"corpus": corpus, "run": name, "seed": seed, "val_bpb": summary["val_bpb"],
                              "tokens": summary["tokens_seen"], "seconds": round(time.time() - t0, 1)})  # fmt: skip
            judge = RunLM(runs["causal"])
            for name in ("diffusion", "gidd-p0.1", "gidd-p1"):
                run = load_run(runs[name])
                if corpus == "gutenberg":
                    t0 = time.time()
                    pairs = load_pairs([SHARED / "babylm-2025" / "fast_eval" / "blimp_fast"])
                    blimp = evaluate_pairs(RunLM(run), pairs)
                    record(root, {"corpus": corpus, "run": name, "seed": seed, "blimp_fast": blimp["macro_accuracy"],
                                  "seconds": round(time.time() - t0, 1)})  # fmt: skip
                for rounds in (16, 63) if not a.bounds_only else ():
                    for correct in (0, 32):
                        sampling = Sampling(sampler="ancestral", steps=rounds, self_correct=correct)
                        r = evaluate_generation(run, sampling, a.samples, 63, seed=0, judge=judge,
                                                grammar=corpus == "grammar")  # fmt: skip
                        record(root, {"corpus": corpus, "run": name, "seed": seed, "steps": rounds,
                                      "self_correct": correct, **{k: r.get(k) for k in KEEP},
                                      "example": r["samples"][0]})  # fmt: skip


def main():
    p = argparse.ArgumentParser()
    p.add_argument("workdir")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--p", default="0.1,0.5")
    p.add_argument("--seeds", default="0")
    p.add_argument("--only", default=None, help="comma-separated run names, e.g. diffusion,gidd-p0.1-dynamic")
    p.add_argument("--sampling", action="store_true", help="bounds, BLiMP and samples (see above)")
    p.add_argument("--gutenberg-steps", type=int, default=600)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--skip-gutenberg", action="store_true")
    p.add_argument("--skip-grammar", action="store_true")
    p.add_argument("--bounds-only", action="store_true", help="--sampling: bounds and BLiMP, no samples")
    a = p.parse_args()
    root = Path(a.workdir)
    if a.sampling:
        return sampling_bench(root, a)
    (root / "grammar").mkdir(parents=True, exist_ok=True)
    data = make_grammar(root / "grammar")
    n = a.steps
    shape = dict(
        preset="tiny",
        model={"d_model": 128, "n_head": 4, "d_ffn": 384, "n_layer": 3},
        seq_len=64,
        batch_size=32,
        max_steps=n,
        lr=1.5e-3,
        eval_interval=n,
        eval_batches=16,
        checkpoint_interval=n,
    )
    arms = [("diffusion", {"objective": "diffusion"})]
    for pu in (float(x) for x in a.p.split(",")):
        for weighting in ("elbo", "dynamic"):
            arms.append((f"gidd-p{pu:g}-{weighting}", {"objective": "gidd",
                         "options": {"p_uniform": pu, "loss_weighting": weighting}}))  # fmt: skip
    for seed in (int(s) for s in a.seeds.split(",")):
        for name, options in arms:
            if a.only and name not in a.only.split(","):
                continue
            out = root / "runs" / f"{name}-seed{seed}"
            if (out / "metrics.jsonl").is_file():
                continue
            t0 = time.time()
            summary = train(TrainConfig(data=str(data), out=str(out), seed=seed, **shape, **options), quiet=True)
            record = {"run": name, "seed": seed, "val_loss": summary["val_loss"], "val_bpb": summary["val_bpb"],
                      "tokens": summary["tokens_seen"], "seconds": round(time.time() - t0, 1)}  # fmt: skip
            with open(root / "gidd.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
