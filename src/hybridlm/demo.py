"""`hlm demo`: the whole pipeline on built-in grammar text, the default objectives (or any), one table.

Nothing is downloaded: the corpus and the minimal pairs come from hybridlm.grammar.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from pathlib import Path

import torch

from hybridlm.config import TrainConfig
from hybridlm.data import prepare
from hybridlm.errors import UserError
from hybridlm.evaluate.blimp import evaluate_pairs
from hybridlm.evaluate.generation import evaluate_generation
from hybridlm.evaluate.lm import RunLM
from hybridlm.files import check_out_folder
from hybridlm.finetune import FinetuneConfig, RunClassifier, finetune
from hybridlm.generate import sample_text
from hybridlm.grammar import minimal_pairs, write_corpus, write_grammaticality
from hybridlm.objectives import DEFAULT_OBJECTIVES, Generation, objective_class
from hybridlm.runs import load_run
from hybridlm.samplers import Sampling
from hybridlm.tokenizer import train_tokenizer
from hybridlm.train import train

DEMO_WORDS = 300_000
DEMO_STEPS = 500
SAMPLE_TOKENS = 48  # tokens per sample whose sentences the grammar parses
ICL_SHOTS, ICL_ITEMS = (0, 4), 100  # the grammaticality question in context: shots, held-out items


def run_demo(
    out=None, steps=None, objectives=None, seed=0, words=DEMO_WORDS, pairs_per_paradigm=100, sampler=None
) -> list[dict]:
    objectives = [o.strip() for item in (objectives or DEFAULT_OBJECTIVES) for o in item.split(",") if o.strip()]
    for o in objectives:
        if not objective_class(o).capabilities.scorers:  # (an unknown name fails here too, before any work)
            raise UserError(f"the demo scores minimal pairs: a {o} model has no sentence scorer yet (leave it out)")
    steps = DEMO_STEPS if steps is None else steps
    if steps <= 0:
        raise UserError(f"--steps must be positive (got {steps})")
    if out is not None:
        check_out_folder(out, "a previous demo? choose a new --out or remove it")
    ctx = tempfile.TemporaryDirectory(prefix="hlm-demo-") if out is None else contextlib.nullcontext(out)
    with ctx as root:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        corpus = write_corpus(root / "grammar.txt", words, seed=seed)
        train_tokenizer([corpus], 512, root / "tokenizer")
        with contextlib.redirect_stderr(io.StringIO()):  # no progress bars for the tiny corpus
            manifest = prepare([corpus], root / "tokenizer", root / "data", val_fraction=0.02)
        grammar_task = write_grammaticality(root / "grammaticality", n_train=2000, n_valid=400, seed=seed + 7)
        pairs = [
            {
                "good": p["sentence_good"],
                "bad": p["sentence_bad"],
                "UID": p["UID"],
                "field": p["field"],
                "term": p["linguistics_term"],
            }
            for p in minimal_pairs(pairs_per_paradigm, seed=seed + 1)
        ]
        print(
            f"demo: {words:,} words of grammar text -> {manifest['splits']['train']['tokens']:,} tokens "
            f"({time.time() - t0:.1f}s); {len(pairs)} minimal pairs in {len(pairs) // pairs_per_paradigm} paradigms; "
            f"{steps} steps per objective on {torch.get_num_threads()} threads"
        )
        rows = []
        for objective in objectives:
            cfg = TrainConfig(
                data=str(root / "data"),
                out=str(root / "runs" / objective),
                objective=objective,
                preset="tiny",
                model={"d_model": 128, "n_head": 4, "d_ffn": 384, "n_layer": 3},
                seq_len=64,
                batch_size=32,
                max_steps=steps,
                lr=1.5e-3,
                eval_interval=steps,
                eval_batches=8,
                checkpoint_interval=steps,
                seed=seed,
                log_interval=max(1, steps // 10),
                **objective_class(objective).demo_config,
            )
            summary = train(cfg, quiet=True)
            lm = RunLM(cfg.out)
            result = evaluate_pairs(lm, pairs)
            sample = sample_text(
                lm.run, "the", lm.run.objective.demo_sample_text, 16, seed, temperature=0.7, sampler=sampler
            )
            grammatical = None
            if lm.run.objective.capabilities.generation is not Generation.NONE:  # true samples: temperature 1
                drawn = evaluate_generation(
                    lm.run, Sampling(sampler or "", steps=SAMPLE_TOKENS), 32, SAMPLE_TOKENS, seed, grammar=True
                )
                grammatical = drawn["grammatical"]
            tuned = finetune(
                lambda n, run=cfg.out: RunClassifier(load_run(run), n, 0.1),
                "grammar",
                grammar_task,
                FinetuneConfig(lr=5e-4, epochs=3, seed=seed),
                progress=False,
            )
            in_context = {k: _in_context(cfg.out, grammar_task, k) for k in ICL_SHOTS}
            rows.append(
                {
                    **summary,
                    "in_context": in_context,
                    "loss_label": lm.run.objective.capabilities.loss_label,
                    "pair_accuracy": result["macro_accuracy"],
                    "scorer": result["scorer"],
                    "sample": sample,
                    "finetune_accuracy": tuned["value"],
                    "grammatical": grammatical,
                }
            )
            print(
                f"  {objective:<9} val {summary.get('val_loss', float('nan')):.3f}  pairs "
                f"{result['macro_accuracy']:.1%} "
                f"({result['scorer']})  fine-tuned {tuned['value']:.1%}  in-context "
                + "/".join(_percent(v) for v in in_context.values())
                + "  samples grammatical "
                f"{_percent(grammatical)}  {summary['seconds']:.0f}s"
            )
        _print_table(rows)
        print(f"demo finished in {time.time() - t0:.0f}s" + (f"; runs kept in {root / 'runs'}" if out else ""))
    return rows


def _in_context(run, task_dir, shots: int) -> float | None:
    """Accuracy on the grammatical-or-not question asked in context (lm-evaluation-harness, the run's
    scorer), None without the harness."""
    try:
        from hybridlm.evaluate.harness import run_harness
    except ImportError:
        return None
    with contextlib.redirect_stderr(io.StringIO()), _quiet_logs():
        result = run_harness(run=str(run), tasks="grammar_icl", glue_data=task_dir, num_fewshot=shots, limit=ICL_ITEMS)
    return result["results"]["grammar_icl"]["acc,none"]


@contextlib.contextmanager
def _quiet_logs():
    import logging

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _percent(value) -> str:
    return "—" if value is None else f"{value:.1%}"


def _print_table(rows):
    head = (
        f"{'objective':<10} {'params':>8} {'tokens':>9} {'val loss':>9} {'measure':<22} {'pairs acc':>9} "
        f"{'fine-tuned':>10} {'ICL 0/4-shot':>12} {'grammatical':>11} {'time':>6}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        print(
            f"{r['objective']:<10} {r['parameters']:>8,} {r['tokens_seen']:>9,} "
            f"{r.get('val_loss', float('nan')):>9.3f} "
            f"{r['loss_label']:<22} {r['pair_accuracy']:>9.1%} {r['finetune_accuracy']:>10.1%} "
            f"{'/'.join(_percent(v) for v in r['in_context'].values()):>12} "
            f"{_percent(r.get('grammatical')):>11} {r['seconds']:>5.0f}s"
        )
    print("\nsamples:")
    for r in rows:
        print(f"  {r['objective']:<10} {r['sample']}")
    print(
        "\n(val loss measures differ by objective: only a likelihood or its bound (causal CE, the diffusion"
        " NELBO) compares across objectives; pairs: macro accuracy on 6 grammar paradigms, chance 50%;"
        " fine-tuned: grammatical-or-not classification of held-out sentences, 3 epochs, chance 50%;"
        f" ICL: the same question asked in context (lm-evaluation-harness, the run's scorer, {ICL_ITEMS} items,"
        " 0 and 4 examples);"
        f" grammatical: complete sentences the grammar parses in 32 samples of {SAMPLE_TOKENS} tokens at temperature 1,"
        " — where the objective does not generate)"
    )
