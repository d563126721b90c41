"""A run's plan: its configuration resolved from what the user gave (and, on --resume, what the run saved), and
everything it is built from read and checked once, before its folder is touched.

`resolve_config` settles the keys (identity keys refused on --resume when they change, the data folder, a warm
start recorded as the checkpoint it means, --max-epochs turned into steps); `plan_run` reads the data, builds
the objective, finds a warm start's source and a curriculum's scores, and refuses what cannot train, each as a
one-line error. `train.setup` builds the trainer from the plan and reads none of it again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from hybridlm import warmstart
from hybridlm.config import TRACK_BUDGETS, TrainConfig, merge_config
from hybridlm.curriculum import window_scores
from hybridlm.data import PackedTokens, load_manifest, open_split
from hybridlm.distill import Distiller
from hybridlm.errors import UserError
from hybridlm.mixture import LanguageMixture, parse_shares
from hybridlm.objectives import Objective, build_objective
from hybridlm.runs import RunDir
from hybridlm.runtime import Dist, autocast_for

# What a run *is*: refused on --resume when they differ from the saved run (the objective's own
# options are added to these). Every other key (length, optimiser, logging, device) may change.
IDENTITY_KEYS = (
    "objective",
    "preset",
    "model",
    "seq_len",
    "seq_len_schedule",
    "batch_size",
    "optimizer",  # its saved state fits no other
    "seed",
    "document_mask",
    "distill_from",
    "distill_alpha",
    "distill_temperature",
    "init_from",
    "attention_anneal_steps",
    "data_seed",
    "curriculum",
    "pacing",
    "select_fraction",
    "mix_languages",  # the data order
)


def resolve_config(run: RunDir, given: dict, resume: bool) -> TrainConfig:
    """The run's configuration from what the user gave (flags and config-file keys).

    New run: the defaults with `given` applied. --resume: the saved config; identity keys in
    `given` must equal the saved values, every other given key is applied. The run folder is
    always the one given (never a path saved inside it); the data folder is --data when given,
    else the saved one (relative paths are taken from the run folder)."""
    given = {k: v for k, v in given.items() if k != "out"}
    if isinstance(given.get("distill_from"), list):  # teachers are saved as absolute paths: a run resumes from anywhere
        given["distill_from"] = [str(Path(str(p)).resolve()) for p in given["distill_from"]]
    if not resume:
        cfg = merge_config(given, source="command line")
        if not cfg.data:
            raise UserError("--data is required (a directory made by hlm prepare)")
        cfg.data = str(Path(cfg.data).resolve())
        if cfg.init_from:  # recorded as an absolute path and the checkpoint it resolves to now, with its weights
            cfg.init_from = warmstart.recorded(cfg.init_from)
            source, name = warmstart.parse_source(cfg.init_from)
            if source.is_run() and cfg.init_weights == "auto":
                cfg.init_weights = source.weights_read(name)
    else:
        if not run.is_run():
            raise UserError(f"nothing to resume in {run} (no {RunDir.CONFIG}); drop --resume to start a new run")
        saved = run.read_config()
        if given.get("init_from") and saved.init_from:  # compared as recorded: an absolute path and a checkpoint
            source, name = warmstart.parse_source(given["init_from"])
            given["init_from"] = f"{source.path.resolve()}:{name or saved.init_from.rpartition(':')[2]}"
        kept = {**{k: getattr(saved, k) for k in IDENTITY_KEYS}, **saved.objective_options()}
        identity = tuple(kept)
        for key in identity:
            if key in given and given[key] != kept[key]:
                raise UserError(
                    f"--resume with {key}={given[key]!r} but the run has {kept[key]!r}; "
                    "drop that flag or start a new run with a new --out"
                )
        cfg = merge_config({k: v for k, v in given.items() if k not in identity}, saved, source="command line")
        if "data" not in given:
            data = Path(saved.data)
            cfg.data = str(data if data.is_absolute() else (run.path / data).resolve())
    cfg.out = str(run.path)
    cfg.validate()
    if cfg.max_epochs and "max_steps" not in given and (not resume or "max_epochs" in given):
        # --max-epochs alone sets the run's length (and its LR schedule); a warm start's source counts
        cfg.max_steps = epoch_cap_steps(cfg, warmstart.tokens_before(run, cfg) if resume else
                                        warmstart.source_tokens(cfg.init_from) if cfg.init_from else 0,
                                        fit_length=True)  # fmt: skip
    if resume and cfg.batch_warmup > 1 and cfg.max_steps != saved.max_steps:
        raise UserError(
            f"--batch-warmup sizes every batch by its share of --max-steps: a resumed run keeps max_steps "
            f"{saved.max_steps} (got {cfg.max_steps}); start a new run with a new --out to change it"
        )
    return cfg


def epoch_cap_steps(cfg: TrainConfig, tokens_before: int = 0, fit_length: bool = False) -> int:
    """The steps that see the training tokens max_epochs times (BabyLM 2025 caps training at 10 epochs),
    counting the tokens a warm start's source saw before (tokens_before). With a batch warm-up, the steps of
    cfg.max_steps's schedule that fit, or with fit_length (--max-epochs alone sets the length) the longest
    run whose growing batches fit."""
    windows = open_split(cfg.data, "train", cfg.seq_len)
    budget = cfg.max_epochs * windows.n_windows * cfg.seq_len - tokens_before
    if cfg.batch_warmup <= 1:
        steps = int(budget // (cfg.batch_size * cfg.seq_len))
    elif not fit_length:
        steps = int(np.searchsorted(cfg.batch_schedule()[2], budget, side="right")) - 1
    else:  # the schedule depends on the length: the longest whose tokens fit (they grow with it)
        lo, hi = 0, int(budget * cfg.batch_warmup // (cfg.batch_size * cfg.seq_len)) + 2
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if replace(cfg, max_steps=mid).batch_schedule()[2][-1] <= budget:
                lo = mid
            else:
                hi = mid - 1
        steps = lo
    if steps < 1:
        raise UserError(
            f"--max-epochs {cfg.max_epochs} is less than one step of {cfg.batch_size} sequences over "
            f"{windows.n_windows} training windows; raise it or lower --batch-size"
        )
    return steps


@dataclass
class Plan:
    """What a run is built from, read and checked once, before its folder is touched: the data (its manifest,
    the training windows of each sequence-length stage, the validation windows), the objective, a warm start's
    source and a curriculum's scores. setup() builds the trainer from it and reads none of them again."""

    manifest: dict
    objective: Objective
    train_data: dict[int, PackedTokens]  # seq_len -> the training windows of that stage
    val_data: PackedTokens
    source: warmstart.Source | None = None  # --init-from
    scores: np.ndarray | None = None  # --curriculum: one difficulty score per training window
    schedule: tuple | None = None  # TrainConfig.batch_schedule(): rows, offsets in stage, tokens before, per step
    mix_shares: dict | None = None  # --mix-languages: each language's share of the words seen


def plan_run(cfg: TrainConfig, dist: Dist, started: bool = False) -> Plan:
    """The run's plan; every check that can be made before the run folder is touched fails here, as one line.
    started: the run has a checkpoint to resume from, which holds every weight (a warm start's source is then
    never read again)."""
    manifest = load_manifest(cfg.data)
    attention_backend(cfg, dist.device, compiled=cfg.compile is not False)  # --attention flex needs CUDA
    # the shards and the objective's own data (unigram counts) are read here, so that damaged or
    # crafted data is one line before anything is written
    objective = build_objective(cfg, manifest["vocab_size"], cfg.data)
    if cfg.model_overrides().get("cond_dim"):  # a noise-conditioned model: its objective must have a noise level
        objective.noise_level(torch.zeros((1, 1), dtype=torch.long))
    train_data = {L: open_split(cfg.data, "train", L) for _, L, _ in cfg.stages()}
    plan = Plan(manifest, objective, train_data, open_split(cfg.data, "val", cfg.seq_len))
    if manifest.get("kind") == "sft":  # prompt/response rows: the prompt is never corrupted nor scored
        from hybridlm.sft import Supervised

        plan.objective = objective = Supervised(objective)
    if cfg.distill_from:
        Distiller.check(cfg.distill_from, cfg.data, manifest["tokenizer_hash"], objective.capabilities.attention)
    if cfg.init_from and not started:
        plan.source = warmstart.find_source(cfg, manifest["vocab_size"], manifest["tokenizer_hash"])
    if cfg.curriculum:
        plan.scores = window_scores(cfg.curriculum, cfg.data, cfg.seq_len)
    languages = train_data[cfg.seq_len].languages
    if cfg.mix_languages:
        if cfg.curriculum:
            raise UserError("--mix-languages and --curriculum each choose the windows of a step: use one of them")
        plan.mix_shares = parse_shares(cfg.mix_languages, languages)
        for data in train_data.values():  # every stage's windows hold every language mixed
            LanguageMixture(data, plan.mix_shares, cfg.order_seed)
    if cfg.track:
        budget, words = TRACK_BUDGETS[cfg.track], manifest["splits"]["train"].get("words", 0)
        if cfg.track == "multilingual" and not languages:
            raise UserError(f"--track multilingual counts English-equivalent words: prepare {cfg.data} with --lang")
        if cfg.track != "multilingual" and languages:
            raise UserError(f"--track {cfg.track} counts English by whitespace; {cfg.data} has languages: "
                            "use --track multilingual")  # fmt: skip
        if words > budget:
            raise UserError(
                f"{cfg.data} holds {words:,.0f} training words, over the {cfg.track} track's budget of {budget:,}: "
                "prepare a smaller corpus"
            )
    if cfg.word_thresholds() and not all(d.has_words for d in train_data.values()):
        raise UserError(
            f"{cfg.data} was prepared without per-token word counts, which checkpoints at words seen need; "
            "re-run hlm prepare (with --force)"
        )
    plan.schedule = cfg.batch_schedule()
    if cfg.batch_warmup > 1:  # batches of any size: the processes' shares differ by a row at most
        if plan.schedule[0].min() < dist.world:
            raise UserError(
                f"the first step's batch of {plan.schedule[0].min()} sequences (--batch-warmup {cfg.batch_warmup:g} "
                f"of {cfg.batch_size}) is smaller than the {dist.world} process(es); lower --batch-warmup"
            )
        return plan
    for _, L, rows in cfg.stages():
        if rows % dist.world:
            raise UserError(
                f"the batch of {rows} sequences (length {L}) must be a multiple of the process count {dist.world}"
            )
        micro = cfg.micro_batch_size * cfg.seq_len // L if cfg.micro_batch_size else rows // dist.world
        if micro == 0 or (rows // dist.world) % micro:
            raise UserError(
                f"micro_batch_size {cfg.micro_batch_size} must divide the {rows // dist.world} rows of each "
                f"process at length {L}"
            )
    return plan


def attention_backend(cfg: TrainConfig, device: torch.device, compiled: bool) -> str:
    """FlexAttention where it is fast (compiled, on CUDA), two matmuls on a CPU in bf16 (SDPA's CPU kernel is
    2-3x slower there: bench/RESULTS.md), SDPA elsewhere, unless the config says."""
    if cfg.attention == "auto":
        if device.type == "cuda":
            return "flex" if compiled else "sdpa"
        return "matmul" if device.type == "cpu" and autocast_for(cfg.precision, device)[1] == "bf16" else "sdpa"
    if cfg.attention == "flex" and device.type != "cuda":
        raise UserError(
            "--attention flex trains on CUDA only (PyTorch's FlexAttention has no backward on the CPU); "
            "use --attention sdpa"
        )
    return cfg.attention
