"""`hlm`: the command-line entry point (a thin layer over the package's modules)."""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
from dataclasses import fields
from pathlib import Path

from hybridlm.checkpoint import WEIGHTS
from hybridlm.errors import UserError
from hybridlm.files import atomic_write_bytes, atomic_write_json, check_out_folder, check_output_file, no_space
from hybridlm.samplers import MAX_STEPS, SAMPLERS


def _train_args(p: argparse.ArgumentParser):
    from hybridlm.config import config_help

    p.add_argument("--config", help="TOML/YAML/JSON file of config keys (flags given here override it)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument(
        "--seeds",
        default=None,
        help="e.g. 1,2,3: one run per seed, side by side in OUT/seed_N (with --data-seed, only initialisation varies)",
    )
    groups = {"": p}
    for name, default, say, group in config_help():  # the general keys and every registered objective's options
        if group not in groups:
            groups[group] = p.add_argument_group(group)
        p_ = groups[group]
        flag = "--" + name.replace("_", "-")
        say = f"{say}; " if say else ""
        if isinstance(default, bool) or default is None:  # None: a bool whose default the device decides
            p_.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=say or None)
        elif isinstance(default, list):
            p_.add_argument(
                flag, dest=name, action="append", default=None, help=f"{say or 'repeatable '}(default: {default})"
            )
        elif isinstance(default, dict):
            p_.add_argument(flag, dest=name, type=json.loads, default=None, help="JSON, e.g. '{\"n_layer\": 4}'")
        else:
            p_.add_argument(flag, dest=name, type=type(default), default=None, help=f"{say}default: {default!r}")


def cmd_train(a):
    from hybridlm.config import config_keys, merge_config, read_config_file
    from hybridlm.train import train

    # exactly what the user gave (config file, then flags over it): --resume checks and applies these
    given = read_config_file(a.config) if a.config else {}
    flags = {k: getattr(a, k) for k in config_keys() if getattr(a, k) is not None}
    merge_config(flags, source="command line")  # names and types, before anything else
    values = {**given, **flags}
    runs = [(values, a.resume)]
    if a.seeds:  # the same run once per seed, side by side: OUT/seed_N
        from hybridlm.runs import RunDir

        if not values.get("out"):
            raise UserError("--seeds needs --out: the folder that holds one run per seed (OUT/seed_N)")
        seeds = _seed_list(a.seeds)
        runs = [{**values, "seed": s, "out": str(Path(values["out"]) / f"seed_{s}")} for s in seeds]
        for run in runs:  # every seed's configuration checked before the first one trains
            merge_config(run, source="command line").validate()
        if a.resume:  # the seeds already started resume, the others start
            runs = [(run, RunDir(run["out"]).is_run()) for run in runs]
        else:
            check_out_folder(
                values["out"], "--seeds writes OUT/seed_N into a new or empty folder (or pass --resume to finish them)"
            )
            runs = [(run, False) for run in runs]
    for run, resume in runs:
        summary = train(run, resume=resume)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()}))


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0 or max(seeds) >= 2**63 or len(seeds) > 100:
        raise UserError(f"--seeds takes distinct seeds >= 0, comma-separated, e.g. --seeds 1,2,3 (got {text!r})")
    return seeds


def cmd_tokenizer_train(a):
    from hybridlm.tokenizer import train_tokenizer

    tok = train_tokenizer(a.input, a.vocab_size, a.out, kind=a.kind, min_frequency=a.min_frequency, force=a.force,
                          languages=a.lang, sample_languages=a.sample_languages, text_field=a.text_field)  # fmt: skip
    print(f"tokenizer with {tok.get_vocab_size()} tokens written to {a.out}/tokenizer.json")


def cmd_prepare(a):
    from hybridlm.data import prepare

    m = prepare(a.input, a.tokenizer, a.out, valid_inputs=a.valid, val_fraction=a.val_fraction, force=a.force,
                languages=a.lang, valid_languages=a.valid_lang, text_field=a.text_field)  # fmt: skip
    tr, va = m["splits"]["train"], m["splits"]["val"]
    kind = " English-equivalent" if "languages" in tr else ""
    print(
        f"prepared {tr['tokens']:,} train tokens ({tr['documents']} documents, {tr['words']:,.0f}{kind} words) and "
        f"{va['tokens']:,} validation tokens ({va['source']}) in {a.out}"
    )
    for lang, t in tr.get("languages", {}).items():  # BabyLM 2026: each language's size in English-equivalents
        v = va["languages"].get(lang, {})
        print(f"  {lang}: {t['words'] + v.get('words', 0):,.0f} English-equivalent words ({t['words']:,.0f} train), "
              f"{t['bytes'] + v.get('bytes', 0):,} bytes, byte premium {t['byte_premium']:.4f}")  # fmt: skip


def cmd_demo(a):
    from hybridlm.demo import run_demo

    run_demo(a.out, steps=a.steps, objectives=a.objectives, seed=a.seed, sampler=a.sampler)


def _weights_arg(p):
    p.add_argument(
        "--weights",
        default="auto",
        choices=WEIGHTS,
        help="a run's weights: its moving average where it keeps one (auto, ema; hlm train --ema-decay) or as "
        "trained (raw); results say which",
    )


def _model_args(p):
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--run", help="a hybridlm run directory")
    g.add_argument("--hf-model", help="a local Hugging Face model directory (causal or masked LM)")
    _weights_arg(p)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="--hf-model: run the model code shipped in the folder (only for folders you trust; hlm's masked "
        "exports need it); eval harness: also the Python a task file names (!function)",
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16"],
        help="fp32 (the BabyLM convention) or bf16: the transformer body in bf16, the output head and log-probs "
        "in fp32 (about 2x faster on CPUs with bf16 units)",
    )


def _lm(a):
    from hybridlm.evaluate.lm import load_lm
    from hybridlm.runs import default_device

    return load_lm(a.run, a.hf_model, a.device or default_device(), a.precision, a.trust_remote_code, a.weights)


def _check_json_target(path, flag: str = "--json", inputs=()):
    """Fail before the work, not after it, when --json cannot be written or would land on an input: never a
    run's or data's file, and never one of the command's inputs (files and folders) nor inside one."""
    if path and (Path(path).is_dir() or Path(path).is_symlink()):
        raise UserError(f"{flag} {path} is a folder or a link; give a file name")
    if path:
        check_output_file(path, flag)
        out = Path(path).resolve()
        for given in inputs:
            if given is not None and (out == Path(given).resolve() or Path(given).resolve() in out.parents):
                raise UserError(f"{flag} {path} would land on the input {given} (or in it); write it elsewhere")


def _write_json(path, obj, a=None, name=None):
    from hybridlm.runs import RunDir

    if path:
        atomic_write_json(path, obj)
    if a is not None and a.run:  # runs keep their evaluations, for hlm report
        RunDir(a.run).write_eval(name, obj)


def cmd_perplexity(a):
    from hybridlm.evaluate.perplexity import evaluate_file
    from hybridlm.runs import RunDir

    _check_samples(a.samples)
    for flag, value in (("--max-tokens", a.max_tokens + 1), ("--seq-len", a.seq_len or 2)):
        if value <= 0 or (flag == "--seq-len" and value < 2):
            raise UserError(f"{flag} is out of range (got {getattr(a, flag[2:].replace('-', '_'))})")
    _check_json_target(a.json, inputs=(a.input, a.hf_model))
    lm = _lm(a)
    if a.run:
        RunDir(a.run).check_eval_writable("perplexity.json")
    result = evaluate_file(
        lm,
        a.input,
        scorer=a.scorer,
        seq_len=a.seq_len,
        max_tokens=a.max_tokens,
        samples=a.samples,
        seed=a.seed,
        progress=True,
    )
    from hybridlm.evaluate.scoring import SCORERS

    for kind in SCORERS:
        if kind in result:
            r = result[kind]
            se = f" ± {r['nll_per_token_stderr']:.4f}" if "nll_per_token_stderr" in r else ""
            print(
                f"{kind:<10} {r['measure']:<20} tokens {r['tokens']:>9,}  nats/token {r['nll_per_token']:.4f}{se}  "
                f"ppl {r['perplexity']:.3f}  bits/byte {r['bits_per_byte']:.4f}  word ppl {r['word_perplexity']:.2f}"
            )
    _write_json(a.json, result, a, "perplexity.json")


def cmd_blimp(a):
    from hybridlm.evaluate.blimp import evaluate_pairs, load_pairs
    from hybridlm.evaluate.scoring import check_scorer
    from hybridlm.runs import RunDir

    if a.limit is not None and a.limit <= 0:
        raise UserError(f"--limit must be positive (got {a.limit})")
    _check_samples(a.samples)
    _check_json_target(a.json, inputs=(*a.data, a.hf_model))
    pairs = load_pairs(a.data, a.limit)
    lm = _lm(a)
    if a.run:
        RunDir(a.run).check_eval_writable(f"blimp-{check_scorer(lm, a.scorer)}.json")
    result = evaluate_pairs(lm, pairs, a.scorer, progress=True, samples=a.samples)
    width = max(len(k) for k in result["paradigms"])
    for uid, r in result["paradigms"].items():
        print(f"{uid:<{width}}  {r['accuracy']:6.1%}  (n={r['n']})")
    print("-" * (width + 18))
    for name, r in result["fields"].items():
        print(f"{'field: ' + name:<{width}}  {r['accuracy']:6.1%}  (n={r['n']})")
    print(
        f"{'macro accuracy (' + str(len(result['paradigms'])) + ' paradigms)':<{width}}  "
        f"{result['macro_accuracy']:6.1%}"
        f"  ± {result['macro_stderr']:.1%} (s.e.)  scorer {result['scorer']}, {result['ties']} ties (never "
        "counted correct)"
    )
    if not a.keep_pairs:
        result = {k: v for k, v in result.items() if k != "pairs"}
    _write_json(a.json, result, a, f"blimp-{result['scorer']}.json")  # one file per scorer: a hybrid has two


MAX_SAMPLES = 10_000  # samples drawn in one command, Monte-Carlo samples per score
MAX_DOCUMENTS = 10**9  # harness documents per task
MAX_SHOTS = 1_000  # in-context examples


def _check_samples(samples: int) -> None:
    if not 0 < samples <= MAX_SAMPLES:
        raise UserError(f"--samples must lie in 1 ... {MAX_SAMPLES:,} (got {samples})")


def _check_counts(a):
    """The sampling commands' own numbers (the sampler's knobs are Sampling.check's)."""
    checks = [("--seed", 0 <= a.seed < 2**63, "in 0 ... 2^63 - 1")]
    for flag in ("--max-new-tokens", "--span", "--length"):
        value = getattr(a, flag[2:].replace("-", "_"), None)
        if value is not None:
            checks.append((flag, 0 < value <= MAX_STEPS, f"in 1 ... {MAX_STEPS:,}"))
    for flag in ("--num-samples", "--batch-size"):
        value = getattr(a, flag[2:].replace("-", "_"), None)
        if value is not None:
            checks.append((flag, 0 < value <= MAX_SAMPLES, f"in 1 ... {MAX_SAMPLES:,}"))
    for flag, ok, want in checks:
        if not ok:
            raise UserError(f"{flag} must be {want} (got {getattr(a, flag[2:].replace('-', '_'))})")


def _babylm_multilingual(a):
    """hlm eval babylm --track multilingual: BabyLM 2026's zero-shot groups through the harness backend."""
    from hybridlm.evaluate.multilingual import evaluate_multilingual, format_multilingual
    from hybridlm.runs import RunDir, default_device

    refused = [flag for flag, given in (("--tasks", a.tasks), ("--all-checkpoints", a.all_checkpoints),
                                        ("--predictions", a.predictions)) if given]  # fmt: skip
    if refused:
        raise UserError(f"--track multilingual runs the track's groups on the final weights; drop {refused[0]}")
    if a.run:
        RunDir(a.run).check_eval_writable("babylm-multilingual.json")
    languages = [x.strip() for x in a.languages.split(",") if x.strip()] if a.languages else None
    result = evaluate_multilingual(
        a.data, languages, a.convention, run=a.run, hf_model=a.hf_model, scorer=a.scorer, samples=a.samples,
        device=a.device or default_device(), precision=a.precision, trust_remote_code=a.trust_remote_code,
    )  # fmt: skip
    print(format_multilingual(result))
    _write_json(a.json, result, a, f"babylm-multilingual-{result['scorer']}.json")


def cmd_babylm(a):
    from hybridlm.evaluate.babylm import evaluate_babylm, find_tasks, format_table, read_task
    from hybridlm.evaluate.scoring import check_scorer
    from hybridlm.runs import RunDir, default_device

    _check_json_target(a.json, inputs=(a.data, a.hf_model))
    _check_samples(a.samples)
    if a.track == "multilingual":
        return _babylm_multilingual(a)
    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()] if a.tasks else None
    for task, folder in find_tasks(a.data, tasks).items():  # bad data fails before the model loads
        read_task(task, folder)
    if a.predictions:
        from hybridlm.evaluate import submission

        submission.check_predictions_dir(a.predictions, inputs=(a.data, a.run, a.hf_model))
    if a.all_checkpoints:
        from hybridlm.evaluate.babylm import evaluate_checkpoints

        if not a.run:
            raise UserError("--all-checkpoints evaluates the words_N checkpoints of a --run")
        if a.predictions:  # the submission's chck_* revisions (and AoA), in the pipeline's convention or hlm's
            if a.json:
                raise UserError("--all-checkpoints --predictions writes the results tree; leave out --json")
            tree = submission.predict_checkpoints(
                a.run, a.data, tasks, a.scorer, a.convention, a.samples, a.predictions,
                a.device or default_device(), a.precision, progress=True,
            )  # fmt: skip
            print(f"predictions of every words_N checkpoint in {tree.model_dir} (backend {tree.backend})")
            return
        if a.convention != "hlm":
            raise UserError(
                "--all-checkpoints without --predictions draws hlm's learning curves, with the default convention"
            )
        results = evaluate_checkpoints(
            a.run, a.data, tasks, a.scorer, a.samples, a.device or default_device(), a.precision, progress=True
        )
        if a.json:
            atomic_write_json(a.json, {"run": a.run, "checkpoints": results})
        print(
            f"{len(results)} checkpoints evaluated; results in {RunDir(a.run).eval_dir / 'checkpoints'} (hlm "
            "report draws the learning curves)"
        )
        return
    lm = _lm(a)
    scorer = check_scorer(lm, a.scorer)
    if a.run:
        RunDir(a.run).check_eval_writable(f"babylm-{scorer}.json")
    if a.predictions:
        tree = submission.Tree(
            a.predictions, submission.model_name(a.run or a.hf_model), submission.tree_backend(scorer, a.convention)
        )
        result = submission.predict_model(lm, a.data, tasks, scorer, a.convention, a.samples, tree, progress=True)
    else:
        result = evaluate_babylm(lm, a.data, tasks, scorer, a.convention, samples=a.samples, progress=True)
    print(format_table(result))
    if a.predictions:
        print(f"predictions in {result['predictions']}")
    _write_json(a.json, result, a, f"babylm-{result['scorer']}.json")


def _finetune_2026(a, cfg):
    """hlm finetune --recipe babylm-2026: every task of every language, one fresh classifier each."""
    from hybridlm.finetune import HFClassifier, RunClassifier, finetune_2026, format_2026, plan_2026
    from hybridlm.runs import RunDir, default_device, load_run

    if a.predictions:
        raise UserError("--predictions writes the 2025 submission's files; drop it with --recipe babylm-2026")
    split = lambda text: [x.strip() for x in text.split(",") if x.strip()] if text else None  # noqa: E731
    plan = plan_2026(a.data, split(a.languages), split(a.task))  # bad data fails before the model loads
    for tasks in plan.values():
        for task in tasks:
            cfg.resolved(task)
    device = a.device or default_device()
    if a.run:
        RunDir(a.run).check_eval_writable("finetune-babylm-2026.json")
        make = lambda n: RunClassifier(load_run(a.run, device, weights=a.weights), n, cfg.dropout)  # noqa: E731
    else:
        official = a.convention == "official"
        make = lambda n: HFClassifier(a.hf_model, n, cfg.dropout, a.trust_remote_code, official)  # noqa: E731
    result = finetune_2026(make, plan, cfg, a.convention, device, progress=True, name=a.run or a.hf_model)
    if a.run:
        from hybridlm.results import stamp

        result = stamp("finetune-multilingual", result, RunDir(a.run).weights_read(None, a.weights))
    print(format_2026(result))
    _write_json(a.json, result, a, "finetune-babylm-2026.json")


def cmd_finetune(a):
    from hybridlm.finetune import TASKS, FinetuneConfig, HFClassifier, RunClassifier, find_files, finetune, load_split
    from hybridlm.runs import RunDir, default_device, load_run

    _check_json_target(a.json, inputs=(a.data, a.hf_model))
    given = {f.name: getattr(a, f.name) for f in fields(FinetuneConfig) if getattr(a, f.name) is not None}
    if a.recipe == "babylm-2026":
        return _finetune_2026(a, FinetuneConfig.for_recipe(a.recipe, **given))
    refused = [flag for flag, value in (("--languages", a.languages), ("--convention", a.convention != "official"))
               if value]  # fmt: skip
    if refused:
        raise UserError(f"{refused[0]} belongs to --recipe babylm-2026; drop it for the 2025 recipe")
    if a.task is None:
        raise UserError(f"--task is required with the 2025 recipe (choose from: {', '.join(TASKS)})")
    if a.task not in TASKS:
        raise UserError(f"unknown task {a.task!r} (choose from: {', '.join(TASKS)})")
    if a.predictions:
        from hybridlm.evaluate import submission

        submission.check_predictions_dir(a.predictions, inputs=(a.data, a.run, a.hf_model))
    cfg = FinetuneConfig(**given)
    cfg.resolved(a.task)  # the numbers, checked before anything runs
    for f in find_files(a.data, a.task):
        load_split(f, a.task)  # bad data fails before the model loads
    device = a.device or default_device()
    if a.run:
        RunDir(a.run).check_eval_writable(f"finetune-{a.task}.json")
        make = lambda n: RunClassifier(load_run(a.run, device, weights=a.weights), n, cfg.dropout)  # noqa: E731
    else:
        make = lambda n: HFClassifier(a.hf_model, n, cfg.dropout, a.trust_remote_code)  # noqa: E731
    result = finetune(make, a.task, a.data, cfg, device, progress=True, name=a.run or a.hf_model)
    if a.run:  # which of the run's weights were fine-tuned
        from hybridlm.results import stamp

        result = stamp("finetune", result, RunDir(a.run).weights_read(None, a.weights))
    predictions = result.pop("predictions")
    if a.predictions:  # the submission's fine-tuning part: MODEL/main/finetune/TASK/predictions.json
        tree = submission.Tree(a.predictions, submission.model_name(a.run or a.hf_model), "")
        tree.write(tree.finetune_file(a.task), submission.finetune_predictions(a.task, predictions))
        print(f"predictions of the best epoch in {tree.finetune_file(a.task)}")
    spread = f" ± {result['stdev']:.3f} (s.d. over {cfg.seeds} seeds)" if cfg.seeds > 1 else ""
    base = f"; majority class {result['majority_baseline']:.3f}" if result.get("majority_baseline") is not None else ""
    print(f"{a.task}: best-epoch validation {result['metric']} {result['value']:.3f}{spread}{base}")
    _write_json(a.json, result, a, f"finetune-{a.task}.json")


def cmd_generation(a):
    from hybridlm.evaluate.generation import check_judge, evaluate_generation, read_samples, result_name
    from hybridlm.evaluate.lm import load_lm
    from hybridlm.generate import check_generates
    from hybridlm.objectives import Generation
    from hybridlm.runs import RunDir, default_device, load_run

    _check_counts(a)
    sampling = _sampling(a)
    _check_json_target(a.json, inputs=(a.samples, a.judge, a.judge_hf))
    texts = read_samples(a.samples) if a.samples else None
    device = a.device or default_device()
    run = load_run(a.run, device, weights=a.weights)
    if texts is None:
        check_generates(run.objective)
    # left to right or block by block, the window slides past the context; a whole canvas must fit in it
    generation = run.objective.capabilities.generation_for(sampling.view, run.objective.name)
    slides = generation in (Generation.CAUSAL, Generation.BLOCKS, Generation.MASKS) or sampling.block_length
    if texts is None and not slides and not 0 < a.length < run.model.cfg.max_seq_len:
        raise UserError(
            f"--length must lie in 1 ... {run.model.cfg.max_seq_len - 1} (the run's context, after <s>; past it "
            "left-to-right runs, block diffusion and diffusion with --block-length)"
        )
    judge = None
    if a.judge or a.judge_hf:
        judge = check_judge(
            load_lm(run=a.judge, hf_model=a.judge_hf, device=device, trust_remote_code=a.trust_remote_code)
        )
    RunDir(a.run).check_eval_writable("generation.json")
    result = evaluate_generation(
        run, sampling, a.num_samples, a.length, a.seed, judge, texts, a.grammar, a.batch_size, progress=True
    )
    name = result_name(result)
    if a.json:
        atomic_write_json(a.json, result)
    RunDir(a.run).write_eval(name, result)
    shown = [
        ("gen. perplexity", result.get("gen_ppl"), ".2f"),
        ("entropy", result["entropy"], ".3f"),
        ("data entropy", result["data_entropy"], ".3f"),
        ("degenerate", result["degenerate"], ".1%"),
        ("distinct-2", result["distinct_2"], ".3f"),
        ("grammatical", result.get("grammatical"), ".1%"),
        ("calls/sample", result["nfe"], ".1f"),
        ("s/sample", result["seconds_per_sample"], ".3f"),
    ]
    print(
        f"{result['sampler']} ({result['num_samples']} samples of {a.length} tokens"
        + (f", {result['steps']} steps" if result["steps"] else "")
        + "): "
        + ", ".join(f"{k} {v:{f}}" for k, v, f in shown if v is not None)
    )
    print(f"(kept in {RunDir(a.run).eval_path(name)})", file=sys.stderr)


def cmd_harness(a):
    from hybridlm.runs import RunDir, default_device

    try:
        from hybridlm.evaluate.harness import run_harness
    except ImportError as e:
        raise UserError(f"hlm eval harness needs lm-evaluation-harness ({e}): pip install 'hybridlm[lmeval]'") from None

    _check_json_target(a.json, inputs=(a.include_path, a.glue_data, a.hf_model))
    _check_samples(a.samples)
    checks = [
        ("--limit", a.limit is None or 0 < a.limit <= MAX_DOCUMENTS, f"in 1 ... {MAX_DOCUMENTS:,} (leave it out: all)"),
        ("--num-fewshot", a.num_fewshot is None or 0 <= a.num_fewshot <= MAX_SHOTS, f"in 0 ... {MAX_SHOTS}"),
        ("--steps", 0 <= a.steps <= MAX_STEPS, f"in 0 ... {MAX_STEPS:,} (0: one network call per token)"),
        ("--mask-padding", 0 <= a.mask_padding <= MAX_STEPS, f"in 0 ... {MAX_STEPS:,}"),
        ("--seed", 0 <= a.seed < 2**32, "in 0 ... 2^32 - 1"),
    ]
    for flag, ok, want in checks:
        if not ok:
            raise UserError(f"{flag} must be {want} (got {getattr(a, flag[2:].replace('-', '_'))})")
    if a.run:
        RunDir(a.run).check_eval_writable("harness.json")
    result = run_harness(
        run=a.run, hf_model=a.hf_model, tasks=a.tasks, num_fewshot=a.num_fewshot, include_path=a.include_path,
        glue_data=a.glue_data, limit=a.limit, scorer=a.scorer, samples=a.samples, mask_padding=a.mask_padding,
        device=a.device or default_device(),
        precision=a.precision, trust_remote_code=a.trust_remote_code, sampler=a.sampler, steps=a.steps,
        block_length=a.block_length, threshold=a.threshold, threshold_factor=a.threshold_factor, cache=a.cache,
        cache_refresh=a.cache_refresh, cfg_scale=a.cfg_scale, view=a.view, seed=a.seed, log_samples=a.log_samples,
        task_data=a.task_data,
    )  # fmt: skip
    for task, metrics in result["results"].items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float) and "stderr" not in k)
        print(f"{task}: {shown}")
    shots = "fewshot" if a.num_fewshot is None else f"{a.num_fewshot}shot"
    _write_json(a.json, result, a, f"harness-{'+'.join(sorted(result['results']))[:80]}-{shots}.json")


def _sampling(a):
    from hybridlm.generate import sampling_of

    parallel = a.threshold is not None or a.threshold_factor is not None
    steps = a.steps if a.steps is not None else 0 if parallel else 32  # a threshold: at most one round per token
    return sampling_of(
        a.sampler, steps, a.order, eta=a.eta, remdm_schedule=a.remdm_schedule, block_length=a.block_length,
        temperature=a.temperature, top_k=a.top_k, top_p=a.top_p, min_p=a.min_p, threshold=a.threshold,
        threshold_factor=a.threshold_factor, cache=a.cache, cache_refresh=a.cache_refresh, cfg_scale=a.cfg_scale,
        view=getattr(a, "view", None) or "", min_new_tokens=getattr(a, "min_new_tokens", 0),
        stop=tuple(getattr(a, "stop", None) or ()), self_correct=getattr(a, "self_correct", 0),
        correct_temperature=getattr(a, "correct_temperature", 0.1),
    )  # fmt: skip


def _generation_args(p, harness: bool = False):
    """How a sample is read and ended: the run's view, and the end-of-text rule's knobs."""
    from hybridlm.samplers import VIEWS

    p.add_argument(
        "--view", default=None, choices=VIEWS,
        help="a run that generates in several ways (a hybrid: causal or masked): which (default: its first)",
    )  # fmt: skip
    if harness:  # (the harness's requests bring their own stop strings and lengths)
        return
    p.add_argument(
        "--min-new-tokens", type=int, default=0,
        help="`</s>` ends a sample (it and what follows are dropped, for every objective): not before N tokens",
    )  # fmt: skip
    p.add_argument(
        "--stop", action="append", default=None, metavar="TEXT",
        help="also end a sample before this text (repeatable), as lm-evaluation-harness's `until`",
    )  # fmt: skip


def cmd_generate(a):
    from hybridlm.generate import generate_samples
    from hybridlm.runs import default_device, load_run

    _check_counts(a)
    sampling = _sampling(a)
    run = load_run(a.run, a.device or default_device(), weights=a.weights)
    samples = generate_samples(run, a.prompt, a.max_new_tokens, sampling, a.num_samples, a.seed,
                               batch_size=a.batch_size)  # fmt: skip
    for text in samples.texts:
        print((a.prompt + text).strip())
    calls = sum(samples.nfe) / len(samples.nfe)
    print(f"({a.num_samples} sample(s) in {samples.seconds:.2f}s, {calls:.1f} network calls each)", file=sys.stderr)


def _span(value: str):
    """--span: N tokens per <mask>, or auto[:MIN,MAX] (the gap's length chosen by the model)."""
    from hybridlm.generate import AUTO_SPANS

    if value.isdigit():
        return int(value)
    head, _, bounds = value.partition(":")
    try:
        if head == "auto":
            return tuple(int(b) for b in bounds.split(",")) if bounds else AUTO_SPANS
    except ValueError:
        pass
    raise UserError(f"--span takes a number of tokens or auto[:MIN,MAX], e.g. auto:1,6 (got {value!r})")


def cmd_infill(a):
    from hybridlm.generate import infill_auto, infill_text
    from hybridlm.runs import default_device, load_run

    span = _span(a.span)
    a.span = span if isinstance(span, int) else None  # (the count checks read a number)
    _check_counts(a)
    sampling = _sampling(a)
    run = load_run(a.run, a.device or default_device(), weights=a.weights)
    knobs = {k: v for k, v in vars(sampling).items() if k not in ("sampler", "steps")}
    fill = dict(steps=a.steps, seed=a.seed, sampler=sampling.sampler, **knobs)
    if isinstance(span, int):
        print(infill_text(run, a.text, span=span, **fill))
        return
    if len(span) != 2:
        raise UserError(f"--span auto:MIN,MAX takes two numbers (got {len(span)})")
    chosen = infill_auto(run, a.text, span, **fill)
    print(chosen.text)
    shown = ", ".join(f"{k}: {v:.3f}" + (" (chosen)" if k == chosen.length else "") for k, v, _ in chosen.candidates)
    print(f"(gap length by score per token: {shown})", file=sys.stderr)


def _fast_decoding_args(p):
    """Fast-dLLM's threshold and caches, LLaDA's guidance: diffusion decoding's knobs (Sampling's fields)."""
    from hybridlm.samplers import CACHES

    p.add_argument(
        "--threshold", type=float, default=None,
        help="confidence: each round reveal every masked token at least this sure, and at least one (Fast-dLLM)",
    )  # fmt: skip
    p.add_argument(
        "--threshold-factor", type=float, default=None,
        help="confidence: Fast-dLLM's factor rule: the n most confident, largest n with (n+1)(1-c_n) < F",
    )  # fmt: skip
    p.add_argument(
        "--cache", default="none", choices=CACHES,
        help="diffusion with --block-length: reuse keys and values between refreshes (Fast-dLLM): prefix = the text "
        "before the block, dual = also the masked text after it; refreshed at each block",
    )  # fmt: skip
    p.add_argument("--cache-refresh", type=int, default=None, help="with --cache: also recompute it every K rounds")
    p.add_argument(
        "--cfg-scale", type=float, default=0.0,
        help="diffusion: unsupervised classifier-free guidance (LLaDA): u + (w+1)(c - u), u with the prompt masked",
    )  # fmt: skip


def _sampling_args(p):
    from hybridlm.samplers import REMDM_SCHEDULES

    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument(
        "--sampler",
        default=None,
        choices=SAMPLERS,
        help="diffusion and block diffusion: ancestral (MDLM), remdm (ReMDM remasking, --eta), first-hitting "
        "(one call per token), confidence | margin | entropy (LLaDA's low-confidence remasking; the default), first "
        "(left to right); masked and MNTP runs: first (the default) | confidence | margin | entropy of their window",
    )
    p.add_argument(
        "--steps", type=int, default=None,
        help="diffusion: unmasking rounds in all (not first-hitting; default 32, with a threshold 0 = one per token at "
        "most: an upper bound)",
    )  # fmt: skip
    p.add_argument("--eta", type=float, default=0.0, help="remdm: remasking strength")
    p.add_argument(
        "--remdm-schedule", default="cap", choices=REMDM_SCHEDULES, help="remdm: sigma = min(eta, max) or eta*max"
    )
    p.add_argument(
        "--block-length", type=int, default=0, help="diffusion: reveal the answer in blocks of N tokens, left to right"
    )
    _fast_decoding_args(p)
    p.add_argument(
        "--self-correct", type=int, default=0, metavar="K",
        help="after generating, up to K rounds of GIDD's self-correction: the token the model most surely redraws "
        "is replaced, one a round (diffusion, gidd, masked and MNTP runs; 0 = off)",
    )  # fmt: skip
    p.add_argument(
        "--correct-temperature", type=float, default=0.1, help="--self-correct: the redraws' temperature (GIDD: 0.1)"
    )
    # shim (until 0.2): --order is --sampler's older name
    p.add_argument("--order", default=None, choices=["confidence", "random"], help="older name: random = ancestral")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)


def _babylm_tasks() -> tuple:
    from hybridlm.evaluate.babylm import TASKS

    return TASKS


def _scorer_names() -> str:
    from hybridlm.scorers import SCORERS

    return " | ".join(SCORERS)


def _add_eval_commands(sub):
    ev = sub.add_parser("eval", help="evaluate a run or a local HF model").add_subparsers(
        dest="eval_command", required=True
    )
    pp = ev.add_parser("perplexity", help="perplexity (or its bound) and bits per byte of a text file")
    _model_args(pp)
    pp.add_argument("--input", required=True)
    pp.add_argument("--scorer", default=None, help=f"{_scorer_names()} (default: by objective)")
    pp.add_argument("--seq-len", type=int, default=None, help="window length (default: the model's context)")
    pp.add_argument("--max-tokens", type=int, default=0, help="evaluate only the first N tokens (0 = all)")
    pp.add_argument("--samples", type=int, default=8, help="diffusion: Monte Carlo samples of t per window")
    pp.add_argument("--seed", type=int, default=0)
    _json_arg(pp, "perplexity.json")
    pp.set_defaults(func=cmd_perplexity)

    bl = ev.add_parser("blimp", help="accuracy on BLiMP-format minimal pairs")
    _model_args(bl)
    bl.add_argument("--data", nargs="+", required=True, help="a directory of .jsonl files, or files")
    bl.add_argument("--scorer", default=None, help=f"{_scorer_names()} (default: by objective)")
    bl.add_argument("--limit", type=int, default=None, help="first N pairs of each paradigm")
    bl.add_argument("--samples", type=int, default=1, help="elbo: random masks per subset size")
    _json_arg(bl, "blimp-SCORER.json")
    bl.add_argument("--keep-pairs", action="store_true", help="include per-pair scores in --json")
    bl.set_defaults(func=cmd_blimp)

    bb = ev.add_parser(
        "babylm", help="the BabyLM 2025 zero-shot suite (BLiMP, supplement, EWoK, entity tracking, WUG, reading)"
    )
    _model_args(bb)
    bb.add_argument(
        "--data", required=True, help="a BabyLM evaluation folder, e.g. ../shared/data/babylm-2025/fast_eval"
    )
    bb.add_argument(
        "--tasks",
        default=None,
        help=f"comma-separated: {','.join(_babylm_tasks())} (default: every task found; aoa with --all-checkpoints)",
    )
    bb.add_argument(
        "--scorer",
        default=None,
        help=f"{_scorer_names()} (default: by objective)",
    )
    bb.add_argument(
        "--convention",
        default="hlm",
        choices=["hlm", "official"],
        help="hlm: explicit <s>, fp32, ties never correct (default); official: the official pipeline's numbers "
        "on its backends (scorer causal = causal, pll = mlm, mntp = mntp; ties counted correct)",
    )
    bb.add_argument("--samples", type=int, default=1, help="elbo: random masks per subset size")
    bb.add_argument(
        "--track",
        default="strict",
        choices=["strict-small", "strict", "multilingual"],
        help="multilingual: BabyLM 2026's zero-shot groups (zeroshot_eng, _nld, _zho) from --data's tasks/ and "
        "task-data/ (docs/babylm-2026.md); the others: the 2025 suite (default)",
    )
    bb.add_argument("--languages", default=None, help="--track multilingual: e.g. nld,zho (default: eng,nld,zho)")
    bb.add_argument(
        "--all-checkpoints",
        action="store_true",
        help="BabyLM 2025 learning curves: every words_N checkpoint of --run, resumably (RUN/eval/checkpoints/)",
    )
    _json_arg(bb, "babylm-SCORER.json")
    _predictions_arg(
        bb,
        "MODEL/REVISION/zero_shot/BACKEND/TASK/DATA/predictions.json per task (main; with --all-checkpoints each "
        "chck_N and AoA); BACKEND: causal | mlm | mntp with --convention official, else the scorer's name",
    )
    bb.set_defaults(func=cmd_babylm)

    gq = ev.add_parser(
        "generation",
        help="sample quality: generative perplexity under a judge, entropy, distinct-n, calls, time (and grammar)",
    )
    gq.add_argument("--run", required=True, help="the run that samples (results land in RUN/eval/)")
    gq.add_argument("--samples", default=None, help="measure these texts (JSONL 'text' or a line each) instead")
    gq.add_argument("--num-samples", type=int, default=64)
    gq.add_argument("--length", type=int, default=64, help="tokens per sample (past the context: see hlm generate)")
    gq.add_argument("--batch-size", type=int, default=32, help="samples drawn in one batch")
    judge = gq.add_mutually_exclusive_group()
    judge.add_argument("--judge", default=None, help="a causal hlm run that scores the samples")
    judge.add_argument("--judge-hf", default=None, help="a local Hugging Face causal LM that scores the samples")
    gq.add_argument("--trust-remote-code", action="store_true", help="--judge-hf: run the code shipped in the folder")
    gq.add_argument("--grammar", action="store_true", help="samples of the built-in grammar (hlm demo): parse them")
    _weights_arg(gq)
    _sampling_args(gq)
    _generation_args(gq)
    _json_arg(gq, "generation-SAMPLER-steps-N.json")
    gq.set_defaults(func=cmd_generation)

    hz = ev.add_parser(
        "harness", help="lm-evaluation-harness tasks with the run's scorer (pip install 'hybridlm[lmeval]')"
    )
    _model_args(hz)
    hz.add_argument(
        "--tasks", required=True, help="comma-separated harness tasks or groups (local YAMLs: --include-path)"
    )
    hz.add_argument("--num-fewshot", type=int, default=None, help="in-context examples (default: the task's)")
    hz.add_argument("--include-path", default=None, help="a folder of task YAMLs")
    hz.add_argument(
        "--task-data",
        default=None,
        help="local copies of the tasks' hub datasets (DIR/OWNER/NAME): the task files read them, offline",
    )
    hz.add_argument(
        "--glue-data",
        default=None,
        help="the BabyLM glue_filtered folder: enables hlm's in-context tasks (rte_icl, mrpc_icl, ...)",
    )
    hz.add_argument("--limit", type=int, default=None, help="the first N documents of each task")
    hz.add_argument("--scorer", default=None, help=f"loglikelihood scorer: {_scorer_names()} (default: by objective)")
    hz.add_argument("--samples", type=int, default=1, help="bounds: Monte-Carlo masks per subset size")
    hz.add_argument(
        "--mask-padding", type=int, default=0, help="bidirectional scorers: <mask> tokens after the text (BERT ICL)"
    )
    hz.add_argument(
        "--sampler", default=None, choices=SAMPLERS,
        help="generate_until of diffusion runs (default confidence) and masked runs (default first)",
    )  # fmt: skip
    hz.add_argument("--steps", type=int, default=0, help="generate_until of diffusion runs: rounds (0: one per token)")
    hz.add_argument("--block-length", type=int, default=0, help="generate_until of diffusion runs: semi-AR blocks")
    _fast_decoding_args(hz)
    _generation_args(hz, harness=True)
    hz.add_argument("--seed", type=int, default=0, help="bounds' draws and sampling")
    hz.add_argument("--log-samples", action="store_true", help="keep every request's answer in the result")
    _json_arg(hz, "harness-TASKS-Kshot.json")
    hz.set_defaults(func=cmd_harness)


def _add_finetune_command(sub):
    from hybridlm.finetune import RECIPE_2026, RECIPES, TASKS_2026, FinetuneConfig
    from hybridlm.finetune import TASKS as FINETUNE_TASKS

    ft = sub.add_parser(
        "finetune",
        help="sequence classification: the BabyLM 2025 (Super)GLUE recipe, or the 2026 multilingual track's",
    )
    g_model = ft.add_mutually_exclusive_group(required=True)
    g_model.add_argument("--run", help="a hybridlm run directory")
    g_model.add_argument("--hf-model", help="a local Hugging Face model directory")
    ft.add_argument("--trust-remote-code", action="store_true", help="--hf-model: run the code shipped in the folder")
    _weights_arg(ft)
    ft.add_argument("--recipe", default="babylm-2025", choices=RECIPES,
                    help="babylm-2025: one (Super)GLUE task (default); babylm-2026: the multilingual track's tasks "
                    "for each language")  # fmt: skip
    ft.add_argument(
        "--task",
        help=f"babylm-2025: {' | '.join(FINETUNE_TASKS)} (required); babylm-2026: comma-separated from "
        f"{','.join(TASKS_2026)} (default: all the data holds)",
    )
    ft.add_argument(
        "--data",
        required=True,
        help="babylm-2025: folder with TASK.train.jsonl and TASK.valid.jsonl (e.g. .../full_eval/glue_filtered); "
        "babylm-2026: babylm-eval's multilingual/finetune/data/multilingual (en/, nl/, zh/)",
    )
    ft.add_argument("--languages", help="babylm-2026: comma-separated eng,nld,zho (default: every one in --data)")
    ft.add_argument("--convention", default="official", choices=["official", "hlm"],
                    help="babylm-2026: official (default): the script's data loader, which drops each epoch's last "
                    "partial batch and scores the first floor(n/8)*8 validation items; hlm: every item")  # fmt: skip
    ft.add_argument("--device", default=None)
    for f in fields(FinetuneConfig):  # the recipe's own record: a flag per field
        in_2026 = f" (babylm-2026: {RECIPE_2026[f.name]})" if f.name in RECIPE_2026 else ""
        ft.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None,
                        help=f"default: {f.metadata['say']}{in_2026}")  # fmt: skip
    _json_arg(ft, "finetune-TASK.json (babylm-2026: finetune-babylm-2026.json)")
    _predictions_arg(ft, "MODEL/main/finetune/TASK/predictions.json: the best epoch's labels of the validation file")
    ft.set_defaults(func=cmd_finetune)


def _add_generate_command(sub):
    g = sub.add_parser(
        "generate",
        help="sample text (causal, hybrid: left to right; diffusion: iterative unmasking; block diffusion: by blocks)",
    )
    g.add_argument("--run", required=True)
    g.add_argument("--prompt", default="")
    g.add_argument(
        "--max-new-tokens", type=int, default=50,
        help="past the context: causal, prefix, hybrid, masked and MNTP runs, block diffusion and diffusion with "
        "--block-length slide their window (left to right: its last half re-read from position 0); diffusion "
        "without blocks stops at its end",
    )  # fmt: skip
    g.add_argument("--num-samples", type=int, default=1)
    g.add_argument("--batch-size", type=int, default=None, help="samples drawn in one batch (default: all)")
    _weights_arg(g)
    _sampling_args(g)
    _generation_args(g)
    g.set_defaults(func=cmd_generate)


def _add_infill_command(sub):
    f = sub.add_parser("infill", help="fill <mask> tokens (masked, hybrid, diffusion runs)")
    f.add_argument("--run", required=True)
    f.add_argument("--text", required=True, help="e.g. 'The <mask> sat on the <mask>.'")
    f.add_argument(
        "--span", default="1",
        help="tokens per <mask> (multi-token spans for diffusion), or auto[:MIN,MAX] (default 1,8): the gap's length "
        "chosen by the model's own score per token of the filled text (one <mask>)",
    )  # fmt: skip
    _weights_arg(f)
    _sampling_args(f)
    f.set_defaults(func=cmd_infill)


def cmd_export(a):
    from hybridlm.export import HUB_CACHE, export_all_checkpoints, export_run

    if a.all_checkpoints:
        repo_id = a.repo_id or f"hybridlm/{Path(a.run).resolve().name}"
        branches = export_all_checkpoints(a.run, a.out, repo_id, a.weights)
        out = Path(a.out)
        print(
            f"exported {a.run} to {out}: a git repository with branches {', '.join(branches)} and main (the "
            "final weights)\n"
            f"load a branch: AutoModelForCausalLM.from_pretrained({repo_id!r}, revision={branches[0]!r}, "
            f"cache_dir={str(out / HUB_CACHE)!r})"
        )
        return
    out = export_run(a.run, a.out, checkpoint=a.checkpoint, weights=a.weights)
    print(f"exported {a.run} to {out}")


SFT_TRAIN_KEYS = ("max_steps", "lr", "min_lr_ratio", "warmup_fraction", "batch_size", "micro_batch_size", "seed",
                  "weight_decay", "optimizer", "eval_interval", "eval_batches", "checkpoint_interval", "log_interval",
                  "keep_checkpoints", "max_epochs", "grad_clip", "device", "precision", "compile")  # fmt: skip


def cmd_sft(a):
    from hybridlm.config import config_keys, merge_config
    from hybridlm.sft import sft
    from hybridlm.train import train

    values = {
        k: getattr(a, k) for k in (*SFT_TRAIN_KEYS, "seq_len") if k in config_keys() and getattr(a, k) is not None
    }
    merge_config(values, source="command line")  # names and types, before anything is written
    if a.resume:  # the run holds its config and its rows: only what may change on a resume is taken
        refused = [
            f for f, v in (("--run", a.run), ("--data", a.data), ("--valid", a.valid), ("--seq-len", a.seq_len)) if v
        ]
        if refused:
            raise UserError(f"--resume continues the fine-tuning in --out as it was set up; drop {refused[0]}")
        summary = train({**values, "out": a.out}, resume=True)
    else:
        if not a.run or not a.data:
            raise UserError("hlm sft needs --run (the model to fine-tune) and --data (prompt/response pairs, JSONL)")
        summary = sft(a.run, a.data, a.out, a.eos, a.valid, a.seq_len or 0,
                      **{k: v for k, v in values.items() if k != "seq_len"})  # fmt: skip
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()}))


def cmd_import(a):
    from hybridlm.hf_import import import_model

    if a.max_seq_len is not None and not 0 < a.max_seq_len <= 1_000_000:
        raise UserError(f"--max-seq-len must be a positive number of positions (got {a.max_seq_len})")
    record = import_model(a.hf_model, a.out, a.gguf_file, a.max_seq_len or 0)
    added = [role for role, r in record["roles"].items() if r["init"] != "token"]
    model = json.loads((Path(a.out) / "config.json").read_text())["model"]
    print(
        f"imported {a.hf_model} ({record['model_type']}, {record['vocab_size']} tokens"
        + (f"; hlm added {', '.join(added)}" if added else "")
        + f") as the causal run {a.out}\ntrain from it with: hlm train --init-from {a.out} --preset tiny "
        f"--model '{json.dumps(model, separators=(',', ':'))}' --objective OBJECTIVE --data DATA (data prepared "
        f"with hlm prepare --tokenizer {a.out})"
    )


def cmd_score_windows(a):
    import numpy as np

    from hybridlm.curriculum import reference_losses
    from hybridlm.runs import default_device, load_run

    if not a.out.endswith(".npy"):
        raise UserError(f"--out {a.out}: scores are written as a .npy file (e.g. --out scores.npy)")
    check_output_file(a.out, "--out")
    _check_json_target(a.out, "--out", inputs=(a.data, a.run))
    from hybridlm.data import load_manifest
    from hybridlm.tokenizer import tokenizer_hash

    run = load_run(a.run, a.device or default_device(), weights=a.weights)
    if tokenizer_hash(run.dir.tokenizer_path) != load_manifest(a.data)["tokenizer_hash"]:
        raise UserError(
            f"--run {a.run} was trained with another tokenizer than the data in {a.data}: its losses would score "
            "other tokens; score with a run trained on this data's tokenizer"
        )
    seq_len = a.seq_len or run.config.seq_len
    scores = reference_losses(run, a.data, seq_len, progress=True)
    buf = io.BytesIO()
    np.save(buf, scores, allow_pickle=False)
    atomic_write_bytes(Path(a.out), buf.getvalue())
    print(f"{len(scores):,} windows of {seq_len} tokens scored by {a.run} (mean loss {scores.mean():.4f}) in {a.out}; "
          f"train on them with --curriculum {a.out} [--pacing ...] [--select-fraction F]")  # fmt: skip


def cmd_report(a):
    from hybridlm.report import make_report

    path = make_report(a.runs, a.out, fmt=a.format, samples=not a.no_samples, seed=a.seed, group_by=a.group_by)
    print(f"report written to {path}")


def _add_score_windows_command(sub):
    s = sub.add_parser(
        "score-windows", help="a reference run's loss on every training window, for --curriculum and --select-fraction"
    )
    s.add_argument("--run", required=True, help="the reference run")
    s.add_argument("--data", required=True, help="the prepared data whose training windows are scored")
    s.add_argument("--out", required=True, help="a .npy file: one score per window")
    s.add_argument("--seq-len", type=int, default=0, help="window length (default: the reference run's)")
    _weights_arg(s)
    s.add_argument("--device", default=None)
    s.set_defaults(func=cmd_score_windows)


def _add_report_command(sub):
    r = sub.add_parser("report", help="plots and tables for one or more runs (Markdown or HTML with PNGs)")
    r.add_argument("runs", nargs="+", metavar="RUN")
    r.add_argument("--out", required=True)
    r.add_argument("--format", default="md", choices=["md", "html"])
    r.add_argument("--no-samples", action="store_true")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument(
        "--group-by",
        default=None,
        help="mean ± s.d. over seeds: group runs by config keys (e.g. objective or objective,masking), auto "
        "(runs that differ only in their seeds) or folder (hlm train --seeds: OUT/seed_N)",
    )
    r.set_defaults(func=cmd_report)


def _add_sft_command(sub):
    from hybridlm.config import config_keys
    from hybridlm.sft import EOS_POLICIES, GENERATING

    sf = sub.add_parser("sft", help=f"supervised fine-tuning on prompt/response pairs ({', '.join(GENERATING)})")
    sf.add_argument("--run", help="the run to fine-tune (its objective, shape and tokenizer)")
    sf.add_argument("--data", help='JSONL of {"prompt": ..., "response": ...} (write the space before a response)')
    sf.add_argument("--valid", help="validation pairs (default: 5%% of --data held out, seeded)")
    sf.add_argument("--out", required=True, help="the new run (it holds its prepared pairs in sft-data/)")
    sf.add_argument("--eos", default="pad", choices=EOS_POLICIES,
                    help="pad: the canvas after the answer filled with </s>, each scored (LLaDA); stop: one </s>, "
                    "then <pad>, never scored")  # fmt: skip
    sf.add_argument("--resume", action="store_true", help="continue the fine-tuning in --out")
    sf.add_argument("--seq-len", type=int, default=None, help="tokens per pair with <s> and </s> (default: the run's)")
    keys = config_keys()
    for k in SFT_TRAIN_KEYS:
        default = keys[k]
        flag = "--" + k.replace("_", "-")
        if isinstance(default, bool) or default is None:
            sf.add_argument(flag, dest=k, action=argparse.BooleanOptionalAction, default=None)
        else:
            sf.add_argument(flag, dest=k, type=type(default), default=None, help=f"default: {default!r}")
    sf.set_defaults(func=cmd_sft)


def _add_import_command(sub):
    im = sub.add_parser(
        "import", help="a local Llama-family causal LM (safetensors or GGUF) as an hlm run, to adapt to any objective"
    )
    im.add_argument("--hf-model", required=True, help="a local Hugging Face model folder (no code of its own runs)")
    im.add_argument("--gguf-file", default=None, help="a GGUF file in that folder to read instead (needs gguf)")
    im.add_argument("--out", required=True, help="the new run (absent or empty)")
    im.add_argument("--max-seq-len", type=int, default=None, help="positions the run keeps (default: the model's)")
    im.set_defaults(func=cmd_import)


def _add_export_command(sub):
    e = sub.add_parser("export", help="write a run as a Hugging Face transformers model directory")
    e.add_argument("--run", required=True)
    e.add_argument("--out", required=True)
    e.add_argument(
        "--checkpoint",
        default=None,
        help="a checkpoint of the run, e.g. step_0000200 or words_2M (default: the latest)",
    )
    e.add_argument(
        "--all-checkpoints",
        action="store_true",
        help="BabyLM 2025: a git repository with a branch chck_NM per words_NM checkpoint and main the final weights",
    )
    e.add_argument(
        "--repo-id",
        default=None,
        help="--all-checkpoints: the name the local hub cache uses (default: hybridlm/RUN_NAME)",
    )
    _weights_arg(e)
    e.set_defaults(func=cmd_export)


class _Parser(argparse.ArgumentParser):
    """argparse with hlm's one-line errors (no usage dump)."""

    def error(self, message):
        hint = f"see {self.prog} --help"
        if "expected one argument" in message:
            hint = "a negative number goes after '=', e.g. --lr=-1e-3; " + hint
        self.exit(2, f"hlm: error: {message} ({hint})\n")


def _predictions_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--predictions",
        default=None,
        metavar="DIR",
        help=f"write the official pipeline's results tree under DIR (for hlm submission): {what}",
    )


def cmd_submission(a):
    from hybridlm.evaluate import submission

    _check_json_target(a.out, "--out")
    out = Path(a.out).resolve()
    for flag, given in (("--predictions", a.predictions), ("--data", a.data)):
        if Path(given).resolve() in out.parents:
            raise UserError(f"--out {a.out} is inside {flag} {given}, an input; write it elsewhere")
    model_dir = submission.find_model_dir(a.predictions, a.model)
    collated = submission.collate(model_dir, a.backend, a.track, a.data)
    atomic_write_bytes(out, json.dumps(collated).encode("utf-8"))
    print(submission.summary(collated, a.track, a.backend))
    print(f"written to {a.out}")


def _add_submission_command(sub):
    s = sub.add_parser(
        "submission",
        help="BabyLM 2025: collate a results tree (hlm eval babylm / hlm finetune --predictions) into the one file "
        "the leaderboard takes, with collate_preds.py's checks",
    )
    s.add_argument("--predictions", required=True, metavar="DIR", help="the results tree (DIR/MODEL/main, chck_*)")
    s.add_argument("--model", default=None, help="the model's folder in DIR (default: the only one)")
    s.add_argument("--track", required=True, choices=["strict-small", "strict"], help="which chck_* revisions it holds")
    s.add_argument(
        "--backend", required=True, help="causal | mlm | mntp (the pipeline's), or an hlm scorer's name (e.g. elbo)"
    )
    s.add_argument(
        "--data",
        required=True,
        help="the fast_eval folder the revisions were scored on (their fast scores come from it)",
    )
    s.add_argument("--out", required=True, help="the submission file (JSON)")
    s.set_defaults(func=cmd_submission)


def _json_arg(p: argparse.ArgumentParser, kept_as: str) -> None:
    p.add_argument(
        "--json", default=None, help=f"also write the result here (with --run it is always kept in RUN/eval/{kept_as})"
    )


def _add_tokenizer_command(sub):
    tk = sub.add_parser("tokenizer", help="tokenizer commands").add_subparsers(dest="tokenizer_command", required=True)
    t = tk.add_parser("train", help="train a byte-level BPE (or WordPiece) tokenizer")
    _add_corpus_inputs(t)
    t.add_argument(
        "--sample-languages",
        default="",
        help="each language's share of the training text in English-equivalent words, e.g. eng:1,nld:1,zho:1 or "
        "uniform (documents sampled: the scarcest language whole)",
    )
    t.add_argument("--vocab-size", type=int, required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--kind", default="bpe", choices=["bpe", "wordpiece"])
    t.add_argument("--min-frequency", type=int, default=2)
    t.add_argument("--force", action="store_true", help="replace a tokenizer already in --out")
    t.set_defaults(func=cmd_tokenizer_train)


def _add_corpus_inputs(p):
    """--input, --lang and --text-field: a corpus of text, JSONL or Parquet files and its languages."""
    p.add_argument(
        "--input",
        nargs="+",
        required=True,
        help="text (a paragraph a line, a blank line between documents), or .jsonl / .parquet (a document a row)",
    )
    p.add_argument(
        "--lang",
        nargs="+",
        help="the inputs' languages (one, or one per input: eng, nld, zho_hans, ...): words become English-"
        "equivalent words by byte premium (BabyLM 2026 multilingual); a row's own language field wins",
    )
    p.add_argument("--text-field", default="text", help="the text's field in .jsonl / .parquet rows")


def _add_prepare_command(sub):
    pr = sub.add_parser("prepare", help="tokenize text into memmapped token shards")
    _add_corpus_inputs(pr)
    pr.add_argument("--valid-lang", nargs="+", help="the --valid files' languages (default: --lang)")
    pr.add_argument("--tokenizer", required=True, help="a folder with tokenizer.json (an hlm run's included), "
                    "or a transformers model folder: its tokenizer mapped as hlm import maps it")  # fmt: skip
    pr.add_argument("--out", required=True)
    pr.add_argument("--valid", nargs="+", help="validation text (default: hold out the corpus tail)")
    pr.add_argument("--val-fraction", type=float, default=0.005)
    pr.add_argument("--force", action="store_true", help="replace prepared data already in --out")
    pr.set_defaults(func=cmd_prepare)


def _add_train_command(sub):
    from hybridlm.objectives import OBJECTIVES

    tr = sub.add_parser("train", help=f"train a model with one of the objectives ({', '.join(OBJECTIVES)})")
    _train_args(tr)
    tr.set_defaults(func=cmd_train)


def _add_demo_command(sub):
    from hybridlm.objectives import DEFAULT_OBJECTIVES, OBJECTIVES

    d = sub.add_parser(
        "demo",
        help=f"train {', '.join(DEFAULT_OBJECTIVES)} (or --objectives) on built-in grammar text and compare them",
    )
    d.add_argument("--out", default=None, help="keep the runs here (default: a temporary directory)")
    d.add_argument("--steps", type=int, default=None, help="training steps per objective")

    d.add_argument(
        "--objectives",
        nargs="+",
        default=None,
        help=f"any of {', '.join(OBJECTIVES)}, e.g. causal,hybrid,prefix,mix (default: {' '.join(DEFAULT_OBJECTIVES)})",
    )
    d.add_argument("--seed", type=int, default=0)
    d.add_argument(
        "--sampler",
        default=None,
        choices=SAMPLERS,
        help="how diffusion, block diffusion and masked runs sample (default: each its own; see hlm generate --help)",
    )
    d.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hlm", description="hybridlm: one transformer, the pretraining objective a switch over it")
    sub = p.add_subparsers(dest="command", required=True)

    for add in COMMANDS:  # each command declared once, in its _add_* function; --help lists them in this order
        add(sub)
    return p


COMMANDS = (
    _add_tokenizer_command,
    _add_prepare_command,
    _add_train_command,
    _add_demo_command,
    _add_eval_commands,
    _add_finetune_command,
    _add_import_command,
    _add_sft_command,
    _add_generate_command,
    _add_infill_command,
    _add_score_windows_command,
    _add_report_command,
    _add_export_command,
    _add_submission_command,
)


def main(argv=None):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    if hasattr(signal, "SIGXFSZ"):  # past a file-size limit a write fails (EFBIG, one line) instead of killing hlm
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except UserError as e:
        print(f"hlm: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("hlm: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # a full disk or a file-size limit anywhere: one line naming where, not a traceback
        err = no_space(getattr(e, "filename", None) or "a file", e)
        if err is None:
            raise
        print(f"hlm: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
