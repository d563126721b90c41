"""The training loop: one model, the objective as a switch, exact resume, same batches on any N.

Each step, every process draws the same global batch of token windows (a pure function of seed
and step), corrupts it with a generator seeded by (seed, step), and trains on its own rows.
Loss weights are normalised over the global batch, so the gradient does not depend on how rows
are split over processes and micro-batches; DDP's gradient mean is undone by scaling by N.

The model and the training loss are one module (`losses.TrainingLoss`), which DDP and FSDP2 wrap,
as GIDD and torchtitan do; `--compile` (on by default on CUDA) compiles the model's trunk as one
graph (each block, with FSDP2), so the attention mask is built once per forward outside it, and the
fused head + CE's chunks as another.

On a GPU the host prepares the next step's batch while the device trains on this one
(`BatchPrefetcher`), and the step never waits for the device: positions are gathered by indices
found on the host, statistics stay on the device until a log step, and a non-finite loss skips
the optimizer step on the device (the fused AdamW's found_inf) and stops the run at the next log,
evaluation or checkpoint, before anything is written.

What the run is (its resolved configuration, data, objective, warm-start source) comes from `plan.py`;
this module builds the trainer from that plan (`setup`), steps it (`train_step`), evaluates and saves.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch
from tqdm import tqdm

from hybridlm import checkpoint as ckpt
from hybridlm import warmstart
from hybridlm.config import TrainConfig, word_label
from hybridlm.curriculum import CurriculumSampler
from hybridlm.data import PackedTokens
from hybridlm.errors import UserError
from hybridlm.files import data_lock
from hybridlm.losses import build_loss
from hybridlm.mixture import LanguageMixture
from hybridlm.model import build_model
from hybridlm.objectives import Likelihood, Objective
from hybridlm.optim import WeightEMA, apply_config, build_optimizer, skips_on_device
from hybridlm.plan import Plan, attention_backend, epoch_cap_steps, plan_run, resolve_config
from hybridlm.runs import RunDir
from hybridlm.runtime import Dist, autocast_for, gpt_bert_schedule, warmup_cosine
from hybridlm.tokenizer import TOKENIZER_FILE, load_tokenizer, token_byte_lengths, tokenizer_hash

COMPILE_BACKEND = "inductor"  # torch.compile's backend for --compile (tests count recompilations with "eager")


# ---------------------------------------------------------------- schedule and randomness
def lr_at(step: int, cfg: TrainConfig) -> float:
    schedule = gpt_bert_schedule if cfg.lr_schedule == "gpt-bert" else warmup_cosine
    return schedule(step, cfg.max_steps, cfg.lr, cfg.warmup_fraction, cfg.min_lr_ratio, cfg.cooldown_fraction)


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """The corruption RNG of one step: a pure function of (seed, step), so resume is exact."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 7 + stream)


# ---------------------------------------------------------------- configuration
# ---------------------------------------------------------------- metrics
class MetricsLog:
    """metrics.jsonl always; TensorBoard / W&B when asked for and installed."""

    def __init__(self, run: RunDir, cfg: TrainConfig, active: bool, resume_step: int | None):
        self.run, self.active = run, active
        self.tb = self.wandb = None
        if not active:
            return
        if resume_step is not None:
            run.truncate_metrics(resume_step)  # what a killed run logged after its last checkpoint is redone
        if "tensorboard" in cfg.log:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError("--log tensorboard needs TensorBoard: pip install 'hybridlm[tensorboard]'") from None
            self.tb = SummaryWriter(str(run.tensorboard_dir))
        if "wandb" in cfg.log:
            try:
                import wandb
            except ImportError:
                raise UserError("--log wandb needs Weights & Biases: pip install 'hybridlm[wandb]'") from None
            self.wandb = wandb.init(project="hybridlm", name=run.path.name, config=cfg.to_dict(), resume="allow")

    def write(self, record: dict):
        if not self.active:
            return
        self.run.append_metrics(record)
        numeric = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self.tb:
            for k, v in numeric.items():
                self.tb.add_scalar(k, v, record["step"])
        if self.wandb:
            self.wandb.log(numeric, step=record["step"])

    def close(self):
        if self.tb:
            self.tb.close()
        if self.wandb:
            self.wandb.finish()


# ---------------------------------------------------------------- set-up
@dataclass
class TrainState:
    """Where a run is: its counters, the data position (a function of the step) and the processes'
    RNG, saved and restored as one object (state.json and rng.json of a checkpoint)."""

    step: int = 0
    tokens_seen: int = 0
    words_seen: int | float = 0  # words in the windows trained on: BabyLM's whitespace count, or with languages
    # English-equivalent words (a float, bytes / (5.43 x byte premium)), also kept by language
    language_words: dict = field(default_factory=dict)
    teacher_flops: float = 0.0  # distillation: forward FLOPs spent in the teachers so far
    elapsed_before: float = 0.0  # seconds trained before this process started

    def state_dict(self, cfg: TrainConfig, world: int, elapsed: float) -> dict:
        first, L, n_rows = stage_at(cfg, self.step)
        return {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "words_seen": self.words_seen,
            **({"language_words": dict(self.language_words)} if self.language_words else {}),
            "teacher_flops": self.teacher_flops,
            "elapsed": elapsed,
            # the data position: batches are a pure function of (seed, stage, step in stage)
            "stage": cfg.stages().index((first, L, n_rows)),
            "step_in_stage": self.step - first,
            "seq_len": L,
            "world_size": world,
            "rng": ckpt.rng_state(),
        }

    def load_state_dict(self, state: dict, words_before=None) -> None:
        """From a checkpoint's state (older checkpoints lack some counters: words_before(step) counts them)."""
        self.step, self.tokens_seen = state["step"], state.get("tokens_seen", 0)
        self.elapsed_before = state.get("elapsed", 0.0)
        self.words_seen = state["words_seen"] if "words_seen" in state else words_before(self.step)
        self.language_words = dict(state.get("language_words", {}))
        self.teacher_flops = state.get("teacher_flops", 0.0)
        ckpt.set_rng_state(state["rng"])


def stage_at(cfg: TrainConfig, step: int) -> tuple[int, int, int]:
    """(first step, seq_len, sequences per step) of the sequence-length stage that holds `step`."""
    return [s for s in cfg.stages() if s[0] <= step][-1]


@dataclass
class Trainer:
    cfg: TrainConfig
    dist: Dist
    run: RunDir
    model: torch.nn.Module  # the transformer (unwrapped: state dicts and the optimizer use it)
    objective: Objective
    module: torch.nn.Module  # TrainingLoss, wrapped by DDP / FSDP2 when distributed
    optimizer: torch.optim.Optimizer
    amp: object
    precision: str
    train_data: dict
    val_data: PackedTokens
    token_bytes: torch.Tensor
    state: TrainState
    curriculum: CurriculumSampler | None = None
    ema: WeightEMA | None = None  # --ema-decay
    schedule: tuple | None = None  # TrainConfig.batch_schedule(): each step's rows, where they start, tokens before
    mix_shares: dict | None = None  # --mix-languages
    mixtures: dict = field(default_factory=dict)  # (seq_len, seed) -> LanguageMixture, built as the run goes
    first_bad: torch.Tensor | None = None  # on the device: the first step whose loss was not finite (-1: none)
    started: float = 0.0

    def __post_init__(self):
        self.first_bad = torch.full((), -1, dtype=torch.long, device=self.dist.device)

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def loss(self):
        """The training loss (unwrapped from DDP)."""
        return getattr(self.module, "module", self.module)

    @property
    def counts_words(self) -> bool:
        return all(d.has_words for d in self.train_data.values())

    def stage_at(self, step: int) -> tuple[int, int, int]:
        return stage_at(self.cfg, step)

    @property
    def elapsed(self) -> float:
        return self.state.elapsed_before + time.time() - self.started


def setup(cfg: TrainConfig, dist: Dist, run: RunDir, resume: bool, plan: Plan | None = None) -> Trainer:
    """The trainer of a run, built from its plan (made here when not given) and, on --resume, its latest
    checkpoint: the model, the loss (sharded, compiled, wrapped as asked), the optimizer and the state."""
    started = resume and run.latest_checkpoint() is not None
    plan = plan or plan_run(cfg, dist, started)
    torch.manual_seed(cfg.seed)  # initialisation is a function of the seed alone (data_seed: the data's order)
    model = build_model(cfg.preset, plan.manifest["vocab_size"], cfg.model_overrides(), min_seq_len=cfg.max_len())
    plan.objective.condition(model)
    model.to(dist.device)
    resumed = _read_checkpoint(run.latest_checkpoint(), run, model) if started else None
    source = plan.source if resumed is None else None  # a warm start: its weights, words and tokens seen
    if source is not None:
        warmstart.load_source_weights(model, source)
    module, fsdp = _parallelize(cfg, dist, model, build_loss(cfg, model, plan.objective, dist.device))
    optimizer = build_optimizer(cfg, model, fused=dist.device.type in ("cuda", "cpu") and not fsdp)
    amp, precision = autocast_for(cfg.precision, dist.device)
    token_bytes = torch.from_numpy(token_byte_lengths(load_tokenizer(run.tokenizer_path))).to(torch.float64)
    t = Trainer(cfg, dist, run, model, plan.objective, module, optimizer, amp, precision, plan.train_data,
                plan.val_data, token_bytes, TrainState())  # fmt: skip
    if source is not None:
        t.state.words_seen, t.state.tokens_seen = source.words_seen, source.tokens_seen
    if plan.scores is not None:
        t.curriculum = CurriculumSampler(plan.scores, cfg.pacing, cfg.max_steps, cfg.select_fraction)
    t.schedule, t.mix_shares = plan.schedule, plan.mix_shares
    if cfg.ema_decay:  # of the weights as they now are (sharded, where FSDP2 shards them)
        t.ema = WeightEMA(model, cfg.ema_decay, cfg.ema_warmup)
    if resumed is not None:
        _restore_training_state(t, *resumed)
    return t


def _read_checkpoint(path: Path, run: RunDir, model: torch.nn.Module) -> tuple:
    """Load a checkpoint's weights into the model; its optimizer and training state, for after the optimizer
    is built."""
    weights = ckpt.load_weights(path, run.path)
    opt_state, rng, state = ckpt.load_training_state(path, run.path)
    try:
        model.load_state_dict(weights)
    except (RuntimeError, ValueError) as e:
        raise UserError(
            f"checkpoint {path} does not fit this model ({str(e).splitlines()[0][:100]}); check --preset/--model"
        ) from None
    return path, opt_state, {**state, "rng": rng}


def _parallelize(cfg: TrainConfig, dist: Dist, model: torch.nn.Module, module: torch.nn.Module) -> tuple:
    """The training loss sharded (FSDP2) or wrapped (DDP) over the processes and compiled where asked;
    returns it and whether it is sharded."""
    fsdp = dist.world > 1 and cfg.distributed == "fsdp"
    if fsdp:  # shard first: the optimizer must hold the sharded parameters
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            fully_shard(block)
        fully_shard(module)
    compiled = cfg.compile if cfg.compile is not None else dist.device.type == "cuda"
    model.attention_backend = attention_backend(cfg, dist.device, compiled)
    if compiled and fsdp:  # each sharded block in place (FSDP2's hooks stay between the graphs)
        for block in [*model.blocks, *(head["block"] for head in model.mtp)]:
            block.compile(backend=COMPILE_BACKEND)
    elif compiled:
        # the trunk as one graph; parameter names, checkpoints and optimizer state do not change; the
        # mask is built outside, once per forward
        model.compile_trunk(COMPILE_BACKEND)
    if compiled:  # the fused head + CE's chunks: its own graph, as its chunk loop is Python
        module.compile_head(COMPILE_BACKEND)
    if dist.world > 1 and not fsdp:
        module = torch.nn.parallel.DistributedDataParallel(module)
    return module, fsdp


def _restore_training_state(t: Trainer, path: Path, opt_state: dict, state: dict) -> None:
    """The optimizer's moments (checked: a crafted or damaged state would train on garbage) and the run's state."""
    # saved keyed by parameter name (full, unsharded), so it loads whatever the process count or mode
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    cfg, optimizer = t.cfg, t.optimizer
    try:
        set_optimizer_state_dict(t.model, optimizer, opt_state, options=StateDictOptions(full_state_dict=True))
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise UserError(
            f"the optimizer state in {path} does not fit this model ({str(e).splitlines()[0][:100]})"
        ) from None
    for param, moments in optimizer.state.items():
        for key, value in moments.items():
            if (
                key != "step"
                and isinstance(value, torch.Tensor)
                and (value.shape != param.shape or ckpt.first_non_finite({key: value}) is not None)
            ):
                raise UserError(
                    f"the optimizer state in {path} is damaged ({key} of shape {tuple(value.shape)} for a "
                    f"parameter of shape {tuple(param.shape)}, or not finite); resume from another checkpoint"
                )
    apply_config(optimizer, cfg)  # the config's betas and weight decay, which may have changed
    t.state.load_state_dict(state, words_before=lambda step: sum(step_words(t, s) for s in range(step)))
    if t.ema is not None:  # the average goes on from the checkpoint's (one that has none: from the weights)
        ema = ckpt.load_ema(path, t.run.path)
        if ema is not None:
            t.ema.load_state_dict(ema, updates=t.state.step)


def step_windows(t: Trainer, step: int):
    """(data, window indices) of the global batch of `step`: a pure function of (seed, step)."""
    first, L, n_rows = t.stage_at(step)
    # each stage has its own seeded order; within it, a batch is a pure function of the step
    stage = t.cfg.stages().index((first, L, n_rows))
    data = t.train_data[L]
    if t.curriculum is not None:  # the easiest share the pacing allows at this step
        return data, t.curriculum.batch_windows(step, n_rows, t.cfg.order_seed)
    rows, start, _ = step_schedule(t, step)  # with a batch warm-up, batches of growing size, one after another
    seed = t.cfg.order_seed + 1000 * stage
    if t.mix_shares is not None:  # languages at their shares of the words seen, at every sample
        if (L, seed) not in t.mixtures:
            t.mixtures[(L, seed)] = LanguageMixture(data, t.mix_shares, seed)
        return data, t.mixtures[(L, seed)].windows_from(start, rows)
    return data, data.windows_from(start, rows, seed)


def step_schedule(t: Trainer, step: int) -> tuple[int, int, int]:
    """(rows, where they start in the stage's order, tokens of the steps before) of the global batch of `step`."""
    rows, offsets, tokens = t.schedule
    if step < len(rows):
        return int(rows[step]), int(offsets[step]), int(tokens[step])
    # past the schedule (a caller stepping beyond max_steps): full batches of the last stage, one after another
    first, length, full = t.stage_at(step)
    past = step - len(rows)
    start = int(offsets[-1] + rows[-1]) + past * full if first < len(rows) else (step - first) * full
    return full, start, int(tokens[-1]) + past * full * length


def step_words(t: Trainer, step: int) -> int:
    data, ks = step_windows(t, step)
    return data.words(ks)


# ---------------------------------------------------------------- one step
@dataclass
class HostBatch:
    """What the host prepares for one step: this process's micro-batches (corrupted, and on the
    device or on their way there) and the words in the global batch's windows."""

    step: int
    micro_batches: list
    words: int | float
    tokens: int  # in the global batch
    language_words: dict = field(default_factory=dict)  # with languages: the words of each


def prepare_batch(t: Trainer, step: int) -> HostBatch:
    """The host's share of step `step`: a pure function of (seed, step), so it can run ahead."""
    cfg, dist = t.cfg, t.dist
    _, L, _ = t.stage_at(step)
    data, windows = step_windows(t, step)
    n_rows = len(windows)  # the stage's batch, or a batch warm-up's share of it
    ids, generator = data.windows(windows), step_generator(cfg.order_seed, step)
    batch = t.objective.corrupt(ids, generator, fraction_done=step / cfg.max_steps)
    visible = warmstart.annealed_visibility(L, step, cfg.attention_anneal_steps, cfg.order_seed)
    if visible is not None:  # causal to full attention over the first steps
        batch = replace(batch, attention=replace(batch.attention, visible=visible))
    batch = batch.rows(dist.rows(n_rows))
    micro = cfg.micro_batch_size * cfg.seq_len // L if cfg.micro_batch_size else len(batch)
    # scored positions and attention found here on the host; on CUDA pinned and copied without waiting (a batch
    # warm-up's last micro-batch may be smaller: the loss is normalised over the global batch)
    parts = [
        batch.rows(slice(m, m + micro)).prepared().to(dist.device, non_blocking=True)
        for m in range(0, len(batch), micro)
    ]
    return HostBatch(step, parts, data.words(windows), n_rows * L, data.language_words(windows))


class BatchPrefetcher:
    """Prepares the next step's batch in a background thread while the device trains on this one.

    Batches are a pure function of (seed, step), so a batch prepared ahead is the batch the step
    would have made; on the CPU (where the thread would only take cores from the step) it is off."""

    def __init__(self, t: Trainer, enabled: bool):
        self.t, self.enabled = t, enabled
        self.pool = None
        self.pending = None  # (step, future)
        if enabled:
            from concurrent.futures import ThreadPoolExecutor

            # the thread's CUDA device is this process's (as DataLoader's pin-memory thread does): a new
            # thread starts on cuda:0, and pinning there would open a context on another rank's GPU
            init = (torch.cuda.set_device, (t.dist.device,)) if t.dist.device.type == "cuda" else (None, ())
            self.pool = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="hlm-batches", initializer=init[0], initargs=init[1]
            )

    def get(self, step: int) -> HostBatch:
        if not self.enabled:
            return prepare_batch(self.t, step)
        host = self.pending[1].result() if self.pending and self.pending[0] == step else prepare_batch(self.t, step)
        self.pending = (
            (step + 1, self.pool.submit(prepare_batch, self.t, step + 1)) if step + 1 < self.t.cfg.max_steps else None
        )
        return host

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def train_step(t: Trainer, host: HostBatch | None = None) -> dict:
    """One optimizer step on the global batch of step t.step. Returns its statistics as device
    tensors (`read_record` turns them into numbers): nothing here waits for the device."""
    cfg, dist, step = t.cfg, t.dist, t.step
    host = host if host is not None else prepare_batch(t, step)
    lr = lr_at(step, cfg)
    for g in t.optimizer.param_groups:
        g["lr"] = lr
    n_micro = len(host.micro_batches)
    sums = None
    for m, mb in enumerate(host.micro_batches):
        no_sync = isinstance(t.module, torch.nn.parallel.DistributedDataParallel) and m < n_micro - 1
        with t.module.no_sync() if no_sync else contextlib.nullcontext():
            with t.amp:
                loss, metrics = t.module(mb)
            (loss * dist.world).backward()
        values = torch.stack([v.detach().double() for pair in metrics.values() for v in pair])
        sums = values if sums is None else sums + values
    reduced = dist.all_reduce_sum(sums)  # the same numbers on every process: all skip a bad step together
    grad_norm = (
        torch.nn.utils.clip_grad_norm_(t.model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else torch.zeros(())
    )
    if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor; its plain value may be one shard's part
        grad_norm = grad_norm.full_tensor()
    # a non-finite loss or gradient never reaches the weights: checked before the optimizer step, which it skips
    bad = ~torch.isfinite(reduced[0]) | ~torch.isfinite(grad_norm.to(reduced.device))
    t.first_bad = torch.where(bad & (t.first_bad < 0), step + 1, t.first_bad)
    if skips_on_device(t.optimizer):
        t.optimizer.found_inf = bad.float()  # the fused AdamW and LAMB skip the whole update on the device
    else:  # FSDP2's (foreach) AdamW and Muon have no found_inf: this path waits for the device
        check_finite(t)
    t.optimizer.step()
    t.optimizer.zero_grad(set_to_none=True)
    if t.ema is not None:
        t.ema.update()
    t.state.step += 1
    t.state.tokens_seen += host.tokens
    t.state.words_seen += host.words
    for lang, words in host.language_words.items():
        t.state.language_words[lang] = t.state.language_words.get(lang, 0.0) + words
    t.state.teacher_flops += t.loss.flops(host.tokens)  # for comparisons at equal compute
    return {"stats": reduced, "names": list(metrics), "lr": lr, "grad_norm": grad_norm}


def _divergence_advice(t: Trainer) -> str:
    """What to do after a divergence, true for this run: the checkpoint it resumes from, and the
    fixes that apply at its precision."""
    latest = ckpt.latest_checkpoint(t.run.path)
    kept = f"the last checkpoint, {latest.name}, is kept" if latest is not None else "no checkpoint was written"
    fixes = (
        "lower --lr"
        + (" or use --precision fp32" if t.precision != "fp32" else "")
        + (f" (resume: hlm train --out {t.run.path} --resume --lr LOWER)" if latest is not None else "")
    )
    return f"{kept}; {fixes}"


def check_finite(t: Trainer) -> None:
    """Stop at the first non-finite loss or gradient (its optimizer step was skipped, so the weights
    and every checkpoint stay finite). Waits for the device: called at log steps, evaluations and
    checkpoints."""
    if (bad := int(t.first_bad)) >= 0:
        t.optimizer.zero_grad(set_to_none=True)
        # the weights of step bad-1 gave the bad step: a checkpoint of them is no place to resume from
        aside = ckpt.set_aside(t.run.path, bad - 1) if t.dist.main else []
        note = f" (checkpoint {', '.join(aside)} of those weights set aside as diverged-*)" if aside else ""
        raise UserError(
            f"training diverged: the loss or its gradient became non-finite (nan or inf) at step {bad}, "
            f"which never reached the weights{note}; {_divergence_advice(t)}"
        )


def read_record(t: Trainer, record: dict) -> dict:
    """The numbers of a step's record (a device synchronisation: log steps only)."""
    check_finite(t)
    stats = dict(zip(record["names"], record["stats"].view(-1, 2).tolist()))
    out = {"loss": stats["loss"][0], "lr": record["lr"], "grad_norm": float(record["grad_norm"])}
    out.update({k: v / max(c, 1) for k, (v, c) in stats.items() if k.startswith("ce_")})
    if "kl" in stats:
        out.update(kl=stats["kl"][0], teacher_flops=t.state.teacher_flops)
    return out


# ---------------------------------------------------------------- evaluation during training
@torch.no_grad()
def evaluate(t: Trainer) -> dict:
    """Validation with fixed corruption (seeded by batch index) at the final mask ratio, for each of
    the objective's views; bits per byte from the UTF-8 bytes of the very tokens scored. With an EMA of
    the weights, the same for it (val_*_ema)."""
    result = _validate(t)
    if t.ema is not None:
        _reshard(t)  # FSDP2 keeps the root's gathered weights after a forward: the swap must reach what it uses
        t.ema.swap()
        try:
            result.update({f"{k}_ema": v for k, v in _validate(t).items()})
        finally:
            _reshard(t)
            t.ema.swap()
    return result


def _reshard(t: Trainer) -> None:
    if t.dist.world > 1 and t.cfg.distributed == "fsdp":
        from torch.distributed.fsdp import FSDPModule

        for m in t.module.modules():
            if isinstance(m, FSDPModule):
                m.reshard()


def _validate(t: Trainer) -> dict:
    cfg, dist = t.cfg, t.dist
    t.module.eval()
    out, views = {}, t.objective.validation_views()
    for name, (view, _) in views.items():
        loss_sum, nats, n_bytes, n = 0.0, 0.0, 0.0, 0
        for i, ids in enumerate(t.val_data.eval_batches(cfg.batch_size, cfg.eval_batches)):
            batch = view.corrupt(ids, step_generator(cfg.order_seed, i, stream=99), train=False)
            batch = batch.rows(dist.rows(len(batch))).prepared()
            counted = batch.token_mask
            local = torch.stack(
                [
                    torch.zeros((), dtype=torch.float64),
                    counted.sum().double(),
                    t.token_bytes[batch.targets[counted]].sum(),
                ]
            )
            with t.amp:
                _, metrics = t.module(batch.to(dist.device), view, train=False)
            local[0] = metrics["nll"][0].double().cpu()
            nll, tokens, byte_count = dist.all_reduce_sum(local).tolist()  # nll: the global per-token mean
            loss_sum += nll
            nats += nll * tokens
            n_bytes += byte_count
            n += 1
        out[name] = (loss_sum / max(n, 1), nats / max(n_bytes, 1) / math.log(2))
    t.module.train()
    result = {"val_loss": sum(w * out[name][0] for name, (_, w) in views.items())}
    if len(views) > 1:
        result.update({f"val_ce_{name}": out[name][0] for name in views})
    caps = t.objective.capabilities
    if caps.likelihood is not Likelihood.NONE:  # exact, or an upper bound (NELBO): bits per byte means something
        result["val_bpb"] = out[caps.likelihood_view][1]
    return result


# ---------------------------------------------------------------- checkpoints
def save(t: Trainer, names=(None,)):
    """Checkpoint the current step under each of `names` (None: step_N). Every process calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    check_finite(t)  # a run that went bad is never checkpointed
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    msd, osd = get_model_state_dict(t.model, options=opts), get_optimizer_state_dict(t.model, t.optimizer, options=opts)
    ema = t.ema.state_dict() if t.ema is not None else None
    if ckpt.first_non_finite({"model": msd, "optimizer": osd, "ema": ema or {}}):  # an overflowed update is never saved
        raise UserError(
            f"training diverged: the weights or optimizer state became non-finite (nan or inf) by step "
            f"{t.step}; nothing was saved for it; {_divergence_advice(t)}"
        )
    if t.dist.main:
        state = t.state.state_dict(t.cfg, t.dist.world, t.elapsed)
        for name in names:
            ckpt.save_checkpoint(t.run.path, t.step, msd, osd, state, keep=t.cfg.keep_checkpoints, name=name, ema=ema)
    t.dist.barrier()


# ---------------------------------------------------------------- the loop
def _given(config) -> tuple[dict, str]:
    if isinstance(config, dict):
        return dict(config), config.get("out", "")
    # a TrainConfig from Python: every key that differs from its default counts as given
    default = TrainConfig()
    given = {
        f.name: getattr(config, f.name)
        for f in fields(TrainConfig)
        if f.name != "options" and getattr(config, f.name) != getattr(default, f.name)
    }
    return {**given, **config.options}, config.out


def train(config: TrainConfig | dict, resume: bool = False, quiet: bool = False) -> dict:
    """Train (or with resume=True continue) a run. `config`: a TrainConfig, or a dict of exactly the
    keys the user gave (what the CLI passes), which is what --resume checks and applies."""
    given, out = _given(config)
    if not out:
        raise UserError("--out is required (the run directory)")
    run = RunDir(out)
    cfg = resolve_config(run, given, resume)  # validated whole before anything is written
    dist = Dist(cfg.device)
    plan = plan_run(cfg, dist, started=resume and run.latest_checkpoint() is not None)
    if resume:
        if tokenizer_hash(run.tokenizer_path) != plan.manifest["tokenizer_hash"]:
            raise UserError(
                f"the tokenizer of run {run} does not match the data in {cfg.data}; re-prepare the data or use a "
                "new --out"
            )
    elif run.is_run() or run.checkpoints():
        raise UserError(f"run directory {run} already holds a run; pass --resume to continue it or choose a new --out")
    dist.barrier()  # every process has checked before the first one writes
    with contextlib.ExitStack() as stack:
        if dist.main:
            if not resume:
                run.create(cfg, Path(cfg.data) / TOKENIZER_FILE)
                if plan.source is not None:  # a model imported from elsewhere: its export needs the original vocabulary
                    from hybridlm.hf_import import carry_import

                    carry_import(plan.source.run.path, run.path)
            stack.enter_context(run.lock())
            ckpt.remove_stale(run.path)
        stack.enter_context(data_lock(cfg.data, exclusive=False))  # prepare --force waits for the run to end
        dist.barrier()
        return _loop(cfg, dist, run, resume, quiet, plan)


def _loop(cfg: TrainConfig, dist: Dist, run: RunDir, resume: bool, quiet: bool, plan: Plan) -> dict:
    t = setup(cfg, dist, run, resume, plan)
    if resume and dist.main:  # once the checkpoint has loaded: the applied changes (a longer max_steps) are the run
        run.write_config(cfg)
    start, thresholds = t.step, cfg.word_thresholds()
    # a warm start's source saw tokens before this run's first step: the cap counts them
    tokens_before = t.state.tokens_seen - step_schedule(t, t.step)[2]
    cap = epoch_cap_steps(cfg, tokens_before) if cfg.max_epochs else cfg.max_steps
    log = MetricsLog(run, cfg, dist.main, start if resume else None)
    if dist.main and not quiet:
        _announce(t)
    t.started = time.time()
    if cfg.init_from and start == 0 and cfg.eval_interval:  # a warm start: where the source's weights begin
        last = evaluate(t)
        log.write({"step": 0, "tokens": t.state.tokens_seen, **last})
    prefetch = BatchPrefetcher(t, enabled=dist.device.type == "cuda")
    bar = tqdm(
        total=cfg.max_steps,
        initial=start,
        disable=not dist.main or quiet or None,
        desc=cfg.objective,
        dynamic_ncols=True,
    )
    window_t, window_tokens, last = time.time(), 0, {}
    stopped = None
    while t.step < cfg.max_steps:
        if t.step >= cap:
            stopped = f"stopped at step {t.step} of {cfg.max_steps}: --max-epochs {cfg.max_epochs:g} reached"
            break
        words_before = t.state.words_seen
        host = prefetch.get(t.step)
        record = train_step(t, host)
        at_end = t.step in (cfg.max_steps, cap)
        bar.update(1)
        window_tokens += host.tokens
        if t.step % cfg.log_interval == 0 or at_end:
            now = time.time()
            tps = window_tokens / max(now - window_t, 1e-9)
            window_t, window_tokens = now, 0
            record = read_record(t, record)
            words = {"words": t.state.words_seen} if t.counts_words else {}  # shim (until 0.2): see PackedTokens
            words.update({f"words_{lang}": w for lang, w in sorted(t.state.language_words.items())})
            log.write({"step": t.step, "tokens": t.state.tokens_seen, **words, **record, "tokens_per_s": tps,
                       "elapsed": t.elapsed})  # fmt: skip
            bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{tps:,.0f}")
        if cfg.eval_interval and (t.step % cfg.eval_interval == 0 or at_end):
            check_finite(t)
            last = evaluate(t)
            log.write({"step": t.step, "tokens": t.state.tokens_seen, **last})
            if dist.main and not quiet:
                bar.write(f"step {t.step}: " + "  ".join(f"{k} {v:.4f}" for k, v in last.items()))
        out_of_time = cfg.max_seconds and time.time() - t.started > cfg.max_seconds
        # BabyLM: a checkpoint at the first step whose words seen reach each threshold, kept forever
        names = [f"words_{word_label(w)}" for w in thresholds if words_before < w <= t.state.words_seen]
        if t.step % cfg.checkpoint_interval == 0 or at_end or out_of_time:
            names.append(None)
        if names:
            save(t, names)
        if out_of_time:
            break
    bar.close()
    prefetch.close()
    check_finite(t)
    if stopped and dist.main and not quiet:
        print(
            f"hlm: {stopped} ({t.state.tokens_seen:,} tokens, {t.state.words_seen:,.0f} words seen); "
            f"set --max-steps {cap} to fit the learning-rate schedule inside the cap",
            file=sys.stderr,
        )
    if start >= cfg.max_steps and dist.main and not quiet:
        print(f"run {run} is already complete at step {start}")
    log.close()
    summary = _summary(t, last, stopped)
    if dist.world > 1:
        torch.distributed.destroy_process_group()
    return summary


def _announce(t: Trainer) -> None:
    cfg, dist = t.cfg, t.dist
    if cfg.checkpoint_schedule and not cfg.max_epochs:
        print(
            f"hlm: warning: --checkpoint-schedule {cfg.checkpoint_schedule} without --max-epochs; "
            "BabyLM 2025 allows at most 10 epochs (--max-epochs 10)",
            file=sys.stderr,
        )
    print(
        f"hybridlm: {cfg.objective} | preset {cfg.preset} | {t.model.num_parameters():,} parameters | {t.precision} | "
        f"{dist.world} process(es) on {dist.device.type} | "
        f"{t.val_data.manifest['splits']['train']['tokens']:,} train tokens"
    )


def _summary(t: Trainer, last: dict, stopped: str | None) -> dict:
    """What train() returns (and hlm train prints): the run's size, length and last validation metrics."""
    summary = {
        "objective": t.cfg.objective,
        "parameters": t.model.num_parameters(),
        "steps": t.step,
        "tokens_seen": t.state.tokens_seen,
        "words_seen": t.state.words_seen,
        "seconds": t.elapsed,
        "precision": t.precision,
        **last,
    }
    if t.state.teacher_flops:
        summary["teacher_flops"] = t.state.teacher_flops
    if stopped:
        summary["stopped"] = stopped
    return summary
