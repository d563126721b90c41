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
5. --fast-grid: fast diffusion decoding (Fast-dLLM) against speed. A diffusion run and a causal judge
   trained at a 520-token context on each corpus (--grid-train-steps); unconditional samples of
   64, 256 and 512 tokens with the confidence sampler over blocks of 32 (LLaDA's semi-autoregressive
   schedule): one token per round with no cache (the slow setting) against every threshold x cache
   setting of GRID; grammatical rate (the grammar), generative perplexity under the judge with its
   standard error, entropy and the degenerate share, calls and wall time per sample, at batch 16 and
   at batch 1 (a sample is the same text at any batch: batch 1 is timed on its first samples).
6. --harness-check (after --fast-grid): `hlm eval harness` generate_until on a local task of grammar
   prompts (the first three words of held-out sentences, greedy, until "."), with the grammar's
   diffusion run: the slow setting against --threshold 0.9 with no cache, the prefix and the dual cache,
   answers compared one by one, and the time of each.
7. --every-objective: the grammar runs of section 1 with masked, MNTP and hybrid runs beside them (the same
   shape, tokens and seed): SAMPLES unconditional samples of up to 63 tokens of each way every objective
   generates (the hybrid by both views; masked and MNTP by the first and the most confident <mask>; diffusion
   and block diffusion by confidence, one round per token), ended by `</s>` (hlm's one rule), grammatical
   rate, generative perplexity under the causal run, entropy, calls.
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
# every objective that generates, section 7 (the first four are ARMS: their runs are shared)
EVERY_OBJECTIVE = ARMS + [
    ("masked", {"objective": "masked"}),
    ("mntp", {"objective": "mntp"}),
    ("hybrid", {"objective": "hybrid"}),
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

# fast decoding: (label, knobs) over the confidence sampler, blocks of 32, at most one round per token
GRID = [
    ("one per round", {}),
    ("prefix cache", {"cache": "prefix"}),
    ("dual cache", {"cache": "dual"}),
    ("tau 0.9", {"threshold": 0.9}),
    ("tau 0.9 + prefix", {"threshold": 0.9, "cache": "prefix"}),
    ("tau 0.9 + dual", {"threshold": 0.9, "cache": "dual"}),
    ("tau 0.5 + dual", {"threshold": 0.5, "cache": "dual"}),
    ("tau 0.1 + dual", {"threshold": 0.1, "cache": "dual"}),
    ("factor 1 + dual", {"threshold_factor": 1.0, "cache": "dual"}),
    ("factor 4 + dual", {"threshold_factor": 4.0, "cache": "dual"}),
]
GRID_BLOCK = 32
GRID_CONTEXT = 520  # <s> + 512 new tokens fit


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


def train_arms(root: Path, data: Path, corpus: str, shape: dict, arms=ARMS) -> dict[str, Path]:
    runs = {}
    for name, options in arms:
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


# section 7: (run, label, sampling)
EVERY_WAY = [
    ("causal", "left to right", Sampling()),
    ("masked", "<mask>s, first", Sampling("first")),
    ("masked", "<mask>s, most confident", Sampling("confidence")),
    ("mntp", "<mask>s, first", Sampling("first")),
    ("mntp", "<mask>s, most confident", Sampling("confidence")),
    ("masked", "<mask>s, first, prefix cache", Sampling("first", cache="prefix")),
    ("mntp", "<mask>s, most confident, prefix cache", Sampling("confidence", cache="prefix")),
    ("hybrid", "causal view", Sampling(view="causal")),
    ("hybrid", "masked view, first", Sampling("first", view="masked")),
    ("diffusion", "confidence, 63 rounds", Sampling("confidence", steps=63)),
    ("block4", "confidence, 64 rounds", Sampling("confidence", steps=64)),
    ("block16", "confidence, 64 rounds", Sampling("confidence", steps=64)),
]


def every_objective(root: Path, runs: dict[str, Path], samples: int) -> None:
    judge = RunLM(runs["causal"])
    bpb = {}
    for line in (root / "results.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("corpus") == "grammar" and "val_bpb" in record:
            bpb[record["run"]] = record["val_bpb"]
    for name, label, sampling in EVERY_WAY:
        r = evaluate_generation(load_run(runs[name]), sampling, samples, 63, seed=0, judge=judge, grammar=True)
        log(root, {"section": "every-objective", "run": name, "way": label, "val_bpb": bpb.get(name),
                   "mean_tokens": r["mean_tokens"], **{k: r[k] for k in COLUMNS}})  # fmt: skip


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


def train_long(root: Path, data: Path, corpus: str, shape: dict, steps: int) -> dict[str, Path]:
    """A causal judge and a diffusion run at GRID_CONTEXT tokens (the grid's samples reach 512)."""
    model = {**shape.get("model", {}), "max_seq_len": GRID_CONTEXT}
    runs = {}
    for name in ("causal", "diffusion"):
        out = root / "long" / name
        if not (out / "metrics.jsonl").is_file():
            t0 = time.time()
            cfg = TrainConfig(data=str(data), out=str(out), **{**shape, "model": model}, seq_len=GRID_CONTEXT,
                              batch_size=16, max_steps=steps, eval_interval=steps, checkpoint_interval=steps,
                              objective=name)  # fmt: skip
            summary = train(cfg, quiet=True)
            log(root, {"corpus": corpus, "run": f"long-{name}", "val_loss": summary.get("val_loss"),
                       "val_bpb": summary.get("val_bpb"), "tokens": summary["tokens_seen"],
                       "seconds": round(time.time() - t0, 1)})  # fmt: skip
        runs[name] = out
    return runs


def decoding_checks(root: Path, run, device: str) -> None:
    """The tests' equalities again on this device: a cache refreshed every round is no cache, tau = 1 is one
    token per round, and a sample is the same text alone and in a batch (with a threshold and the dual cache)."""
    from hybridlm.generate import generate_samples

    def texts(n, batch=None, **knobs):
        sampling = Sampling("confidence", **{"steps": 0, "block_length": 16, **knobs})
        return generate_samples(run, "", 64, sampling, n, seed=5, batch_size=batch).texts

    checks = {
        "refresh every round = no cache": texts(4, cache="dual", cache_refresh=1) == texts(4),
        "tau 1 = one per round": texts(4, threshold=1.0) == texts(4),
        "sample i alone = in a batch": texts(2, 1, cache="dual", threshold=0.8)
        == texts(6, cache="dual", threshold=0.8)[:2],
    }
    for name, ok in checks.items():
        log(root, {"check": name, "device": device, "ok": ok})


def fast_grid(root: Path, corpus: str, runs: dict[str, Path], lengths, samples: int, device: str, grammar: bool):
    """Every GRID setting at every length, at batch 16 (quality and time) and batch 1 (time)."""
    import torch

    run, judge = load_run(runs["diffusion"], device), RunLM(runs["causal"], device)
    decoding_checks(root, run, device)
    timed_alone = max(2, samples // 8)
    for length in lengths:
        # answers of the full length (`</s>` kept out, as Fast-dLLM measures at a fixed generation length)
        base = Sampling("confidence", steps=0, block_length=GRID_BLOCK, min_new_tokens=length)
        evaluate_generation(run, base, 2, length, seed=99, batch_size=2)  # warm-up (kernels, allocator)
        slow = {}
        for label, knobs in GRID:
            sampling = Sampling(**{**vars(base), **knobs}).check()
            for batch in (16, 1):
                n = samples if batch == 16 else timed_alone
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                r = evaluate_generation(run, sampling, n, length, seed=0, judge=judge if batch == 16 else None,
                                        grammar=grammar and batch == 16, batch_size=batch)  # fmt: skip
                slow.setdefault(batch, r["seconds_per_sample"])
                row = {
                    "grid": corpus,
                    "device": device,
                    "length": length,
                    "batch": batch,
                    "setting": label,
                    "speedup": slow[batch] / r["seconds_per_sample"],
                    **{k: r.get(k) for k in COLUMNS + ("nll_per_token", "nll_per_token_stderr", "mean_tokens")},
                }
                if batch == 16:
                    row["samples"] = r["samples"][:2]
                    RunDir(runs["diffusion"]).write_eval(f"grid-L{length}-{label.replace(' ', '_')}.json", r)
                log(root, row)


def harness_check(root: Path, run: Path, prompts: int = 40) -> None:
    """generate_until through the harness backend, slow and fast, on the same local task."""
    from hybridlm.evaluate.harness import run_harness
    from hybridlm.grammar import sentences_of

    tasks = root / "harness-task"
    tasks.mkdir(exist_ok=True)
    sentences = sentences_of(write_corpus(tasks / "held_out.txt", 2_000, seed=7).read_text())[0][:prompts]
    docs = [{"prompt": " ".join(s.split()[:3]), "answer": " " + " ".join(s.split()[3:])} for s in sentences]
    (tasks / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tasks / "grammar_gen.yaml").write_text(json.dumps({
        "task": "grammar_gen", "dataset_path": "json", "test_split": "test", "output_type": "generate_until",
        "dataset_kwargs": {"data_files": {"test": str(tasks / "docs.jsonl")}}, "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{answer}}", "generation_kwargs": {"until": ["."], "max_gen_toks": 32, "do_sample": False},
        "metric_list": [{"metric": "exact_match"}],
    }))  # fmt: skip
    answers = {}
    settings = [("slow", {}), ("tau 0.9", {"threshold": 0.9}),
                ("tau 0.9 + prefix", {"threshold": 0.9, "cache": "prefix"}),
                ("tau 0.9 + dual", {"threshold": 0.9, "cache": "dual"})]  # fmt: skip
    for label, knobs in settings:
        t0 = time.perf_counter()
        result = run_harness(run=str(run), tasks="grammar_gen", include_path=str(tasks), log_samples=True,
                             block_length=GRID_BLOCK // 4, **knobs)  # fmt: skip
        seconds = time.perf_counter() - t0
        answers[label] = [s["resps"][0] for s in result["samples"]["grammar_gen"]]
        log(root, {"harness": label, "seconds": round(seconds, 2), "requests": len(docs),
                   "exact_match": result["results"]["grammar_gen"].get("exact_match,none")})  # fmt: skip
    for label, _ in settings[1:]:
        same = sum(a == b for a, b in zip(answers["slow"], answers[label]))
        log(root, {"harness": f"same answers as slow: {label}", "same": same, "of": len(docs)})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("workdir")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--gutenberg-steps", type=int, default=600)
    p.add_argument("--mb", type=float, default=2.0)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--skip-gutenberg", action="store_true")
    p.add_argument("--fast-grid", action="store_true", help="only section 5: fast decoding against speed")
    p.add_argument("--grid-train-steps", type=int, default=1500)
    p.add_argument("--grid-lengths", default="64,256,512")
    p.add_argument("--grid-samples", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--harness-check", action="store_true", help="with --fast-grid: section 6 (needs lm_eval)")
    p.add_argument("--every-objective", action="store_true", help="only section 7: every objective's samples")
    a = p.parse_args()
    root = Path(a.workdir)
    (root / "grammar").mkdir(parents=True, exist_ok=True)
    data = make_grammar(root / "grammar")
    if a.fast_grid:
        lengths = [int(x) for x in a.grid_lengths.split(",")]
        shape = dict(preset="tiny", model={"d_model": 128, "n_head": 4, "d_ffn": 384, "n_layer": 3}, lr=1.5e-3,
                     eval_batches=16, seed=0, device=a.device, compile=False)  # fmt: skip
        runs = train_long(root / "grammar", data, "grammar", shape, a.grid_train_steps)
        if a.harness_check:
            harness_check(root, runs["diffusion"])
            return
        fast_grid(root, "grammar", runs, lengths, a.grid_samples, a.device, grammar=True)
        if not a.skip_gutenberg:
            (root / "gutenberg").mkdir(exist_ok=True)
            data = make_gutenberg(root / "gutenberg", a.mb)
            shape = dict(preset="tiny", lr=2e-3, eval_batches=16, seed=0, device=a.device, compile=False)
            runs = train_long(root / "gutenberg", data, "gutenberg", shape, a.grid_train_steps)
            fast_grid(root, "gutenberg", runs, lengths, a.grid_samples, a.device, grammar=False)
        return
    shape = dict(preset="tiny", model={"d_model": 128, "n_head": 4, "d_ffn": 384, "n_layer": 3}, seq_len=64,
                 batch_size=32, max_steps=a.steps, lr=1.5e-3, eval_interval=a.steps, eval_batches=16,
                 checkpoint_interval=a.steps, seed=0)  # fmt: skip
    if a.every_objective:
        every_objective(root, train_arms(root, data, "grammar", shape, EVERY_OBJECTIVE), a.samples)
        return
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
