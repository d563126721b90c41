"""The training loop: one model, the objective as a switch, exact resume, same batches on any N.

Each step, every process draws the same global batch of token windows (a pure function of seed
and step), corrupts it with a generator seeded by (seed, step), and trains on its own rows.
Loss weights are normalised over the global batch, so the gradient does not depend on how rows
are split over processes and micro-batches; DDP's gradient mean is undone by scaling by N.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
from tqdm import tqdm

from hybridlm import checkpoint as ckpt
from hybridlm.config import TrainConfig
from hybridlm.data import PackedTokens, load_manifest
from hybridlm.errors import UserError
from hybridlm.model import build_model
from hybridlm.objectives import build_objective
from hybridlm.objectives.hybrid import HybridObjective
from hybridlm.tokenizer import TOKENIZER_FILE, tokenizer_hash

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"


# ---------------------------------------------------------------- environment
class Dist:
    """The process group from torchrun's environment, or a single process."""

    def __init__(self, device_pref: str = "auto"):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device_pref == "auto":
            device_pref = "cuda" if torch.cuda.is_available() else "cpu"
        if device_pref == "cuda":
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device(device_pref)
        if self.world > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            t = t.clone()
            torch.distributed.all_reduce(t)
        return t

    def barrier(self):
        if self.world > 1:
            torch.distributed.barrier()


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except Exception:
            return False
    return False


def autocast_for(precision: str, device: torch.device):
    use = precision == "bf16" or (precision == "auto" and bf16_supported(device))
    if not use:
        return contextlib.nullcontext(), "fp32"
    return torch.autocast(device.type, dtype=torch.bfloat16), "bf16"


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, cosine decay to min_lr_ratio * lr, then an optional linear cooldown to 0."""
    warmup = max(1, round(cfg.warmup_fraction * cfg.max_steps))
    cooldown = round(cfg.cooldown_fraction * cfg.max_steps)
    floor = cfg.lr * cfg.min_lr_ratio
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    decay_end = cfg.max_steps - cooldown
    if step >= decay_end:
        return floor * (cfg.max_steps - step) / max(1, cooldown)
    progress = min(1.0, (step - warmup) / max(1, decay_end - warmup))
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """The corruption RNG of one step: a pure function of (seed, step), so resume is exact."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 7 + stream)


def objective_options(cfg: TrainConfig, unigram=None) -> dict:
    common = dict(document_mask=cfg.document_mask, z_loss=cfg.z_loss)
    span = dict(mask_ratio_start=cfg.mask_ratio_start, mask_ratio_end=cfg.mask_ratio_end, max_span=cfg.max_span)
    return {
        "causal": common,
        "masked": {**common, **span},
        "hybrid": {**common, **span, "causal_fraction": cfg.causal_fraction},
        "diffusion": {**common, "schedule": cfg.schedule, "eps": cfg.diffusion_eps,
                      "frequency_masking": cfg.frequency_masking, "unigram": unigram,
                      "estimator": cfg.diffusion_estimator},
    }[cfg.objective]


def make_objective(cfg: TrainConfig, vocab_size: int, data_dir=None):
    unigram = None
    if cfg.objective == "diffusion" and cfg.frequency_masking and data_dir is not None:
        import numpy as np

        unigram = np.load(Path(data_dir) / "unigram.npy")
    return build_objective(cfg.objective, vocab_size, **objective_options(cfg, unigram))


# ---------------------------------------------------------------- run directory
def prepare_run_dir(cfg: TrainConfig, resume: bool, dist: Dist) -> TrainConfig:
    run = Path(cfg.out)
    saved = run / CONFIG_FILE
    if resume:
        if not saved.is_file():
            raise UserError(f"nothing to resume in {run} (no {CONFIG_FILE}); drop --resume to start a new run")
        previous = TrainConfig(**json.loads(saved.read_text()))
        # The run's identity must not change on resume; its length and logging may.
        for key in ("objective", "preset", "model", "seq_len", "batch_size", "seed"):
            if getattr(previous, key) != getattr(cfg, key) and getattr(cfg, key) != getattr(TrainConfig(), key):
                raise UserError(f"--resume with {key}={getattr(cfg, key)!r} but the run has {getattr(previous, key)!r}; use a new --out")
        mutable = ("max_steps", "eval_interval", "checkpoint_interval", "log_interval", "log", "max_seconds", "keep_checkpoints", "micro_batch_size", "compile", "device")
        merged = previous.to_dict()
        merged.update({k: getattr(cfg, k) for k in mutable if getattr(cfg, k) != getattr(TrainConfig(), k)})
        merged["data"] = cfg.data or previous.data
        return TrainConfig(**merged)  # train() checks the run's tokenizer against the data, on every path
    if ckpt.list_checkpoints(run) or saved.is_file():
        raise UserError(f"run directory {run} already holds a run; pass --resume to continue it or choose a new --out")
    load_manifest(cfg.data)  # a bad data directory fails before the run directory is made
    dist.barrier()  # every process has checked before the first one writes
    if dist.main:
        run.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(cfg.data) / TOKENIZER_FILE, run / TOKENIZER_FILE)
        tmp = run / (CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(cfg.to_dict(), indent=2))
        os.replace(tmp, saved)
    dist.barrier()
    return cfg


class MetricsLog:
    """metrics.jsonl always; TensorBoard / W&B when asked for and installed."""

    def __init__(self, run: Path, cfg: TrainConfig, active: bool, resume_step: int | None):
        self.path = run / METRICS_FILE
        self.active = active
        self.tb = self.wandb = None
        if not active:
            return
        if resume_step is not None and self.path.is_file():
            # Drop what a killed run logged after its last checkpoint: those steps are redone.
            kept = [ln for ln in self.path.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        if "tensorboard" in cfg.log:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError("--log tensorboard needs TensorBoard: pip install 'hybridlm[tensorboard]'") from None
            self.tb = SummaryWriter(str(run / "tensorboard"))
        if "wandb" in cfg.log:
            try:
                import wandb
            except ImportError:
                raise UserError("--log wandb needs Weights & Biases: pip install 'hybridlm[wandb]'") from None
            self.wandb = wandb.init(project="hybridlm", name=run.name, config=cfg.to_dict(), resume="allow")

    def write(self, record: dict):
        if not self.active:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
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


# ---------------------------------------------------------------- evaluation during training
@torch.no_grad()
def validation_loss(model, cfg: TrainConfig, objective, val: PackedTokens, dist: Dist, amp) -> dict:
    """Mean validation loss with fixed corruption (seeded by batch index), at the final mask ratio."""
    model.eval()
    modes = [(cfg.objective, objective)]
    if isinstance(objective, HybridObjective):  # report both modes of the one model
        opts = objective_options(cfg)
        modes = [(m, HybridObjective(objective.vocab_size, **{**opts, "causal_fraction": f})) for m, f in (("causal", 1.0), ("masked", 0.0))]
    out = {}
    for mode, obj in modes:
        total, n = torch.zeros(()), 0
        for i, ids in enumerate(val.eval_batches(cfg.batch_size, cfg.eval_batches)):
            batch = obj.corrupt(ids, step_generator(cfg.seed, i, stream=99), train=False)
            rows = _rank_rows(len(batch), dist)
            with amp:
                loss, _ = obj.loss(model, batch.rows(rows).to(dist.device))
            total += dist.all_reduce_sum(loss.detach().float().cpu())
            n += 1
        out[mode] = (total / max(n, 1)).item()
    model.train()
    if isinstance(objective, HybridObjective):
        f = objective.causal_fraction
        result = {"val_loss": f * out["causal"] + (1 - f) * out["masked"], "val_ce_causal": out["causal"], "val_ce_masked": out["masked"]}
        likelihood = out["causal"]
    else:
        result = {"val_loss": out[cfg.objective]}
        likelihood = out[cfg.objective] if cfg.objective in ("causal", "diffusion") else None
    if likelihood is not None:  # causal: exact; diffusion: an upper bound (NELBO)
        result["val_bpb"] = likelihood / math.log(2) / val.bytes_per_token()
    return result


def _rank_rows(n: int, dist: Dist) -> slice:
    per = n // dist.world
    return slice(dist.rank * per, (dist.rank + 1) * per)


# ---------------------------------------------------------------- the loop
def train(cfg: TrainConfig, resume: bool = False, quiet: bool = False) -> dict:
    cfg.validate()
    dist = Dist(cfg.device)
    if not cfg.data and not resume:
        raise UserError("--data is required (a directory made by hlm prepare)")
    if not cfg.out:
        raise UserError("--out is required (the run directory)")
    cfg = prepare_run_dir(cfg, resume, dist)
    run = Path(cfg.out)
    manifest = load_manifest(cfg.data)
    if tokenizer_hash(run / TOKENIZER_FILE) != manifest["tokenizer_hash"]:
        raise UserError(f"the tokenizer of run {run} does not match the data in {cfg.data}; re-prepare the data or use a new --out")
    vocab = manifest["vocab_size"]
    stages = cfg.stages()
    for _, L, rows in stages:
        if rows % dist.world:
            raise UserError(f"the batch of {rows} sequences (length {L}) must be a multiple of the process count {dist.world}")
        micro = cfg.micro_batch_size * cfg.seq_len // L if cfg.micro_batch_size else rows // dist.world
        if micro == 0 or (rows // dist.world) % micro:
            raise UserError(f"micro_batch_size {cfg.micro_batch_size} must divide the {rows // dist.world} rows of each process at length {L}")

    torch.manual_seed(cfg.seed)  # initialisation is a function of the seed alone
    model = build_model(cfg.preset, vocab, cfg.model, min_seq_len=cfg.max_len())
    objective = make_objective(cfg, vocab, cfg.data)
    train_data = {L: PackedTokens(cfg.data, "train", L) for _, L, _ in stages}
    val_data = PackedTokens(cfg.data, "val", cfg.seq_len)
    model.to(dist.device)

    start_step, tokens_seen, elapsed_before = 0, 0, 0.0
    resume_step = None
    opt_state = None
    if resume:
        path = ckpt.latest_checkpoint(run)
        if path is not None:
            weights = ckpt.load_weights(path, run)
            opt_state, rng, state = ckpt.load_training_state(path, run)
            try:
                model.load_state_dict(weights)
            except (RuntimeError, ValueError) as e:
                raise UserError(f"checkpoint {path} does not fit this model ({str(e).splitlines()[0][:100]}); check --preset/--model") from None
            ckpt.set_rng_state(rng)
            start_step, tokens_seen, elapsed_before = state["step"], state["tokens_seen"], state.get("elapsed", 0.0)
        resume_step = start_step

    n_params = model.num_parameters()
    train_model = model
    fsdp = dist.world > 1 and cfg.distributed == "fsdp"
    if fsdp:  # shard first: the optimizer must hold the sharded parameters
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
    if cfg.compile:
        train_model = torch.compile(model)
    if dist.world > 1 and not fsdp:
        train_model = torch.nn.parallel.DistributedDataParallel(train_model)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = dist.device.type in ("cuda", "cpu") and not fsdp
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused)
    if opt_state is not None:
        # saved keyed by parameter name (full, unsharded), so it loads whatever the process count or mode
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        try:
            set_optimizer_state_dict(model, optimizer, opt_state, options=StateDictOptions(full_state_dict=True))
        except (RuntimeError, ValueError, KeyError) as e:
            raise UserError(f"the optimizer state in {path} does not fit this model ({str(e).splitlines()[0][:100]})") from None
    amp, precision = autocast_for(cfg.precision, dist.device)
    log = MetricsLog(run, cfg, dist.main, resume_step)
    if dist.main and not quiet:
        print(f"hybridlm: {cfg.objective} | preset {cfg.preset} | {n_params:,} parameters | {precision} | "
              f"{dist.world} process(es) on {dist.device.type} | {val_data.manifest['splits']['train']['tokens']:,} train tokens")

    def stage_at(step):
        return [s for s in stages if s[0] <= step][-1]

    def save(step):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        msd, osd = get_model_state_dict(model, options=opts), get_optimizer_state_dict(model, optimizer, options=opts)
        if dist.main:
            first, L, _ = stage_at(step)
            # the data position: batches are a pure function of (seed, stage, step in stage)
            state = {"tokens_seen": tokens_seen, "stage": stages.index(stage_at(step)), "step_in_stage": step - first,
                     "seq_len": L, "elapsed": elapsed_before + time.time() - t0, "world_size": dist.world}
            ckpt.save_checkpoint(run, step, msd, osd, state, keep=cfg.keep_checkpoints)
        dist.barrier()

    t0 = time.time()
    bar = tqdm(total=cfg.max_steps, initial=start_step, disable=not dist.main or quiet or None, desc=cfg.objective, dynamic_ncols=True)
    window_t, window_tokens = time.time(), 0
    last = {}
    done = start_step
    for step in range(start_step, cfg.max_steps):
        lr = lr_at(step, cfg)
        for g in optimizer.param_groups:
            g["lr"] = lr
        first, L, n_rows = stage_at(step)
        # each stage has its own seeded order; within it, a batch is a pure function of the step
        ids = train_data[L].batch(step - first, n_rows, cfg.seed + 1000 * stages.index((first, L, n_rows)))
        batch = objective.corrupt(ids, step_generator(cfg.seed, step), progress=step / cfg.max_steps).rows(_rank_rows(n_rows, dist))
        micro = cfg.micro_batch_size * cfg.seq_len // L if cfg.micro_batch_size else len(batch)
        stats_sum: dict[str, list] = {}
        n_micro = len(batch) // micro
        for m in range(n_micro):
            mb = batch.rows(slice(m * micro, (m + 1) * micro)).to(dist.device)
            sync = contextlib.nullcontext()
            if isinstance(train_model, torch.nn.parallel.DistributedDataParallel) and m < n_micro - 1:
                sync = train_model.no_sync()
            with sync:
                with amp:
                    loss, stats = objective.loss(train_model, mb)
                (loss * dist.world).backward()
            for k, (s, c) in stats.items():
                acc = stats_sum.setdefault(k, [0.0, 0])
                acc[0] += float(s)
                acc[1] += c
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else torch.zeros(())
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor
            grad_norm = grad_norm.full_tensor()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens_seen += cfg.batch_size * cfg.seq_len
        window_tokens += cfg.batch_size * cfg.seq_len

        reduced = dist.all_reduce_sum(torch.tensor([[s, c] for s, c in stats_sum.values()], dtype=torch.float64)) if stats_sum else None
        loss_value = float(reduced[list(stats_sum).index("loss")][0]) if reduced is not None else float("nan")
        if not math.isfinite(loss_value):
            raise UserError(f"loss became {loss_value} at step {step}; lower --lr or use --precision fp32 (last checkpoint kept)")
        done = step + 1
        bar.update(1)
        if done % cfg.log_interval == 0 or done == cfg.max_steps:
            now = time.time()
            tps = window_tokens / max(now - window_t, 1e-9)
            window_t, window_tokens = now, 0
            record = {"step": done, "tokens": tokens_seen, "loss": loss_value, "lr": lr, "grad_norm": float(grad_norm), "tokens_per_s": tps,
                      "elapsed": elapsed_before + now - t0}
            for k, (s, c) in zip(stats_sum, reduced.tolist()):
                if k.startswith("ce_"):
                    record[k] = s / max(c, 1)
            log.write(record)
            bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{tps:,.0f}")
        if cfg.eval_interval and (done % cfg.eval_interval == 0 or done == cfg.max_steps):
            last = validation_loss(train_model, cfg, objective, val_data, dist, amp)
            log.write({"step": done, "tokens": tokens_seen, **last})
            if dist.main and not quiet:
                bar.write(f"step {done}: " + "  ".join(f"{k} {v:.4f}" for k, v in last.items()))
        out_of_time = cfg.max_seconds and time.time() - t0 > cfg.max_seconds
        if done % cfg.checkpoint_interval == 0 or done == cfg.max_steps or out_of_time:
            save(done)
        if out_of_time:
            break
    bar.close()
    if start_step >= cfg.max_steps and dist.main and not quiet:
        print(f"run {run} is already complete at step {start_step}")
    log.close()
    summary = {"objective": cfg.objective, "parameters": n_params, "steps": done,
               "tokens_seen": tokens_seen, "seconds": elapsed_before + time.time() - t0, "precision": precision, **last}
    if dist.world > 1:
        torch.distributed.destroy_process_group()
    return summary
