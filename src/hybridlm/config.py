"""Training configuration: one dataclass; every CLI flag of `hlm train` is also a config key."""

from __future__ import annotations

import difflib
import json
import math
import re
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from hybridlm.checkpoint import WEIGHTS
from hybridlm.curriculum import parse_pacing
from hybridlm.errors import UserError
from hybridlm.model import PRESETS, check_model_overrides
from hybridlm.objectives import OBJECTIVES, objective_class, option_fields, option_owners
from hybridlm.objectives.base import option_default
from hybridlm.optim import OPTIMIZERS


@dataclass
class TrainConfig:
    data: str = ""  # prepared data directory (hlm prepare)
    out: str = ""  # run directory
    objective: str = "causal"  # a registered objective: causal | masked | hybrid | diffusion | ...
    preset: str = "tiny"  # tiny | small | base
    model: dict = field(default_factory=dict)  # overrides of the preset, e.g. {n_layer = 4}
    seed: int = 1337  # initialisation, and the data's order and masking unless data_seed is set
    data_seed: int = -1  # the data's order and masking (-1: seed): vary one and keep the other
    # batch: the global batch is batch_size sequences of seq_len tokens, whatever the process count
    seq_len: int = 128
    batch_size: int = 32
    # [[fraction of steps, seq_len], ...], e.g. GPT-BERT's [[0, 128], [0.7, 256], [0.9, 512]]; tokens per
    # step stay batch_size * seq_len, so a stage of length L has batch_size * seq_len / L sequences
    seq_len_schedule: list = field(default_factory=list)
    micro_batch_size: int = 0  # sequences per forward pass per process; 0 = all of that process's rows
    batch_warmup: float = 1.0  # the batch grows from 1/F of batch_size to all of it over training (1: off)
    max_steps: int = 1000
    # optimiser and schedule (linear warmup, cosine decay to min_lr_ratio * lr)
    lr: float = 2e-3
    lr_schedule: str = "cosine"  # cosine (hlm's) | gpt-bert (GPT-BERT's and the 2025 diffusion winner's)
    min_lr_ratio: float = 0.1
    warmup_fraction: float = 0.016
    cooldown_fraction: float = 0.0  # last fraction of steps: linear from min_lr to 0
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    optimizer: str = "adamw"  # adamw | lamb | muon (hybridlm.optim)
    adam_eps: float = 1e-8
    muon_momentum: float = 0.95
    ema_decay: float = 0.0  # an exponential moving average of the weights (0: off)
    ema_warmup: bool = False
    grad_clip: float = 2.0
    z_loss: float = 0.0
    # distillation (BabyLlama): loss = alpha * CE + (1 - alpha) * T^2 * KL(mean of the teachers || student)
    # teacher runs, or local HF causal LMs (same tokenizer as the data)
    distill_from: list = field(default_factory=list)
    distill_alpha: float = 0.5
    distill_temperature: float = 2.0
    document_mask: bool = True
    # run mechanics
    precision: str = "auto"  # auto (bf16 where supported) | bf16 | fp32
    compile: bool | None = None  # None: on CUDA only (torch.compile of the trunk and the head + loss chunks)
    attention: str = "auto"  # auto (flex compiled on CUDA, matmul on a CPU in bf16, else sdpa) | sdpa | flex | matmul
    device: str = "auto"
    distributed: str = "ddp"  # ddp | fsdp (under torchrun)
    eval_interval: int = 100
    eval_batches: int = 16
    checkpoint_interval: int = 200
    keep_checkpoints: int = 2  # the newest step_N checkpoints kept; words_N checkpoints are kept forever
    # BabyLM 2025: checkpoints at counts of words seen, e.g. ["1M", "2M", "10M"] or a named schedule
    # (babylm-strict-small: every 1M to 10M, every 10M to 100M; babylm-strict: also every 100M to 1B)
    checkpoint_words: list = field(default_factory=list)
    checkpoint_schedule: str = ""
    max_epochs: float = 0.0  # stop once the training tokens have been seen this many times; 0 = no cap
    # BabyLM's tracks: the corpus budget checked and the checkpoint schedule set (strict-small | strict | multilingual)
    track: str = ""
    # data with languages: each language's share of the words seen, e.g. "eng:1,nld:1,zho:1", or "uniform"
    mix_languages: str = ""
    log_interval: int = 10
    log: list = field(default_factory=list)  # extra loggers: tensorboard, wandb
    max_seconds: float = 0.0  # stop (with a checkpoint) after this wall time; 0 = no limit
    # warm starts: start from another run's weights (RUN or RUN:CHECKPOINT; any objective), and anneal a
    # causal model's attention to full over the first N steps (DiffuLLaMA)
    init_from: str = ""
    init_weights: str = "auto"  # the source's moving average where it keeps one (auto, ema) or its raw weights
    attention_anneal_steps: int = 0
    # curricula and selection: windows ordered by a difficulty score (length, unigram, or a .npy of scores
    # from hlm score-windows), each step drawn from the easiest share the pacing allows (CLIMB)
    curriculum: str = ""
    pacing: str = "linear"
    select_fraction: float = 1.0
    # the objectives' options given (flat keys, e.g. mask_ratio_start): each objective's Options
    # dataclass defines them, their defaults and checks; they read as attributes too (cfg.max_span)
    options: dict = field(default_factory=dict)

    def __getattr__(self, name):
        fields_ = option_fields()
        if name in fields_:  # an objective's option: the value given, else its default
            return self.options.get(name, option_default(fields_[name]))
        raise AttributeError(name)

    def objective_options(self) -> dict:
        """The options that make this run what it is: its objective's (and a mix's objectives'), resolved."""
        return objective_class(self.objective).identity(self.options)

    @property
    def order_seed(self) -> int:
        """The seed of the data's order and masking: data_seed, or the seed when it is not set."""
        return self.seed if self.data_seed < 0 else self.data_seed

    def to_dict(self) -> dict:
        """Flat keys, as config files write them: the general keys and the objective's options."""
        out = {k: v for k, v in asdict(self).items() if k != "options"}
        try:
            return {**out, **self.objective_options()}
        except UserError:  # options that do not validate (a config being reported as refused): as given
            return {**out, **self.options}

    def stages(self) -> list[tuple[int, int, int]]:
        """(first step, seq_len, sequences per step) of each sequence-length stage."""
        if not self.seq_len_schedule:
            return [(0, self.seq_len, self.batch_size)]
        tokens = self.batch_size * self.seq_len
        return [(round(f * self.max_steps), int(L), tokens // int(L)) for f, L in self.seq_len_schedule]

    def word_thresholds(self) -> list[int]:
        """The words-seen counts to checkpoint at: checkpoint_words and the named schedule, sorted."""
        schedule = self.checkpoint_schedule or TRACK_SCHEDULES.get(self.track, "")
        values = set(CHECKPOINT_SCHEDULES[schedule]) if schedule else set()
        for item in self.checkpoint_words:
            for part in str(item).split(",") if isinstance(item, str) else [item]:
                if str(part).strip():
                    values.add(parse_word_count(part))
        return sorted(values)

    def model_overrides(self) -> dict:
        """The preset's overrides with what the objective adds to the model (extra MTP heads)."""
        heads = self.options.get("mtp_heads", 1)
        out = {**self.model, "mtp_heads": heads} if heads > 1 else dict(self.model)
        if self.options.get("time_conditioning"):  # the objective's noise level reaches the model through adaLN
            out["cond_dim"] = self.options.get("cond_dim", 128)
        return out

    def max_len(self) -> int:
        return max(L for _, L, _ in self.stages())

    def batch_rows(self, step: int) -> int:
        """Sequences in the global batch of `step`: its stage's, or with batch_warmup F growing from 1/F of it to
        all of it over training, as GPT-BERT's train_10m.py computes it: int(B/F (1 - s/S) + B s/S + 0.5)."""
        rows = [r for first, _, r in self.stages() if first <= step][-1]
        if self.batch_warmup <= 1:
            return rows
        done = step / self.max_steps
        return int(rows / self.batch_warmup * (1 - done) + rows * done + 0.5)

    def batch_schedule(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per step 0 ... max_steps - 1: the global batch's rows, the rows before it in its stage (where its
        windows start in the stage's order) and the tokens of all steps before it (one more entry: the run's)."""
        stages = self.stages()
        rows = np.empty(self.max_steps, dtype=np.int64)
        offsets = np.empty(self.max_steps, dtype=np.int64)
        tokens = np.zeros(self.max_steps + 1, dtype=np.int64)
        for i, (first, length, _) in enumerate(stages):
            end = stages[i + 1][0] if i + 1 < len(stages) else self.max_steps
            steps = range(first, min(end, self.max_steps))
            if not len(steps):
                continue
            rows[first : steps.stop] = [self.batch_rows(s) for s in steps] if self.batch_warmup > 1 else stages[i][2]
            offsets[first : steps.stop] = np.cumsum(rows[first : steps.stop]) - rows[first : steps.stop]
            tokens[first + 1 : steps.stop + 1] = rows[first : steps.stop] * length
        return rows, offsets, np.cumsum(tokens)

    def validate(self) -> TrainConfig:
        """Every value checked before anything is written: a bad one is a one-line error, never a stub run."""
        objective = objective_class(self.objective)
        if self.preset not in PRESETS:
            raise UserError(f"unknown preset {self.preset!r} (choose one of: {', '.join(PRESETS)})")
        check_model_overrides(self.model)
        shape = {**PRESETS[self.preset], **self.model}
        if shape["d_model"] % shape["n_head"] or (shape["d_model"] // shape["n_head"]) % 2:
            raise UserError(f"d_model {shape['d_model']} must split into {shape['n_head']} heads of even size")
        for name, allowed in (
            ("precision", ("auto", "bf16", "fp32")),
            ("distributed", ("ddp", "fsdp")),
            ("attention", ("auto", "sdpa", "flex", "matmul")),
            ("lr_schedule", ("cosine", "gpt-bert")),
            ("optimizer", OPTIMIZERS),
            ("init_weights", WEIGHTS),
        ):
            if getattr(self, name) not in allowed:
                raise UserError(f"unknown {name} {getattr(self, name)!r} (choose one of: {', '.join(allowed)})")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise UserError(f"unknown device {self.device!r} (choose auto, cpu or cuda)")
        # every number finite (nan and inf pass most range checks), the seed a generator's seed
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise UserError(f"{f.name} must be a finite number (got {value})")
        if not 0 <= self.seed < 2**63:
            raise UserError(f"seed must lie in [0, 2**63) (got {self.seed})")
        if not -1 <= self.data_seed < 2**63:
            raise UserError(f"data_seed must lie in [0, 2**63), or be -1 (the seed) (got {self.data_seed})")
        if self.batch_size * self.seq_len > MAX_TOKENS_PER_STEP:  # the host builds the whole global batch each step
            raise UserError(
                f"batch_size x seq_len = {self.batch_size * self.seq_len:,} tokens a step is more than hlm builds "
                f"({MAX_TOKENS_PER_STEP:,}, ~16M: GPT-3's batch was 3.2M tokens); lower --batch-size or --seq-len"
            )
        if self.z_loss > 1:
            raise UserError(f"z_loss must lie in [0, 1] (PaLM uses 1e-4; got {self.z_loss})")
        if not 0 < self.adam_eps < 1:
            raise UserError(f"adam_eps must lie in (0, 1) (got {self.adam_eps})")
        for name in ("muon_momentum", "ema_decay"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"{name} must lie in [0, 1) (got {getattr(self, name)})")
        if not self.batch_warmup >= 1:
            raise UserError(f"batch_warmup must be >= 1 (GPT-BERT: 4; 1 = off; got {self.batch_warmup})")
        if self.batch_warmup > 1 and self.curriculum:
            raise UserError("--batch-warmup draws batches of growing size in the data's order; drop --curriculum")
        if self.ema_warmup and not self.ema_decay:
            raise UserError("--ema-warmup needs --ema-decay (e.g. 0.999)")
        if self.curriculum:
            parse_pacing(self.pacing)
            if self.seq_len_schedule:
                raise UserError("--curriculum orders windows of one length; drop seq_len_schedule or the curriculum")
        if not 0 < self.select_fraction <= 1 or (self.select_fraction < 1 and not self.curriculum):
            raise UserError(f"select_fraction must lie in (0, 1] and needs --curriculum (got {self.select_fraction})")
        if self.attention_anneal_steps < 0:
            raise UserError(f"attention_anneal_steps must be >= 0 (got {self.attention_anneal_steps})")
        for name in ("seq_len", "batch_size", "max_steps", "eval_batches", "checkpoint_interval", "log_interval"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name} must be positive (got {getattr(self, name)})")
        for name in (
            "eval_interval",
            "micro_batch_size",
            "keep_checkpoints",
            "max_seconds",
            "weight_decay",
            "grad_clip",
            "z_loss",
        ):
            if not getattr(self, name) >= 0:
                raise UserError(f"{name} must be >= 0 (got {getattr(self, name)})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"lr must be positive (got {self.lr})")
        for name in ("beta1", "beta2", "warmup_fraction", "cooldown_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"{name} must lie in [0, 1) (got {getattr(self, name)})")
        if not 0 <= self.min_lr_ratio <= 1:
            raise UserError(f"min_lr_ratio must lie in [0, 1] (got {self.min_lr_ratio})")
        if self.warmup_fraction + self.cooldown_fraction > 1:
            raise UserError("warmup_fraction + cooldown_fraction must not exceed 1")
        for stage in self.seq_len_schedule:
            if not (
                isinstance(stage, (list, tuple))
                and len(stage) == 2
                and all(isinstance(v, (int, float)) for v in stage)
                and 0 <= stage[0] < 1
                and int(stage[1]) > 0
            ):
                raise UserError(f"seq_len_schedule entry {stage!r} must be [fraction in [0, 1), seq_len]")
            if (self.batch_size * self.seq_len) % int(stage[1]):
                raise UserError(
                    f"seq_len_schedule length {stage[1]} must divide batch_size * seq_len = "
                    f"{self.batch_size * self.seq_len}"
                )
        if self.seq_len_schedule and self.seq_len_schedule[0][0] != 0:
            raise UserError("seq_len_schedule must start at fraction 0")
        if self.checkpoint_schedule and self.checkpoint_schedule not in CHECKPOINT_SCHEDULES:
            raise UserError(
                f"unknown checkpoint_schedule {self.checkpoint_schedule!r} (choose one of: "
                f"{', '.join(CHECKPOINT_SCHEDULES)})"
            )
        if self.track and self.track not in TRACK_BUDGETS:
            raise UserError(f"unknown track {self.track!r} (choose one of: {', '.join(TRACK_BUDGETS)})")
        self.word_thresholds()  # each entry parses
        if not (self.max_epochs >= 0 and math.isfinite(self.max_epochs)):
            raise UserError(f"max_epochs must be >= 0 (0 = no cap; got {self.max_epochs})")
        options = objective.read_options(self.options)  # the objective's options, checked by its Options
        for _, length, rows in self.stages():  # and against each stage's windows
            options.check_window(length, rows)
        read = self.objective_options()
        for key, value in self.options.items():  # an option set for another objective is a mistake, not a no-op
            if key not in read and value != option_default(option_fields()[key]):
                raise UserError(
                    f"{key} is an option of {', '.join(option_owners(key))}; objective {self.objective} "
                    "does not read it (drop it, or choose one of those objectives)"
                )
        if self.distill_from and objective.two_stream:
            raise UserError(f"--distill-from does not apply to {self.objective} (its rows are x_t and x_0); drop it")
        if not 0 <= self.distill_alpha <= 1 or not (
            self.distill_temperature > 0 and math.isfinite(self.distill_temperature)
        ):
            raise UserError(
                f"distill_alpha must lie in [0, 1] and distill_temperature be positive (got {self.distill_alpha}, "
                f"{self.distill_temperature})"
            )
        # (a hand-written config may hold anything here: names compared, never sorted)
        if not isinstance(self.log, (list, tuple)):
            raise UserError(f'log must be a list of loggers, e.g. ["tensorboard"] (got {self.log!r})')
        unknown = [name for name in self.log if name not in ("tensorboard", "wandb")]
        if unknown:
            raise UserError(f"unknown logger {unknown[0]!r} (choose tensorboard or wandb)")
        return self


MAX_TOKENS_PER_STEP = 2**24
GENERAL_KEYS = frozenset(f.name for f in fields(TrainConfig))
_init_fields = TrainConfig.__init__  # the dataclass's own


def _init(self, options: dict | None = None, **values):
    """TrainConfig(objective="masked", max_span=5): an objective's option keys go to `options`."""
    general = {k: values.pop(k) for k in list(values) if k in GENERAL_KEYS}
    known = option_fields()
    for key in values:
        if key not in known:
            raise TypeError(f"TrainConfig got an unknown key {key!r}")
    _init_fields(self, **general, options={**(options or {}), **values})


TrainConfig.__init__ = _init


# what `hlm train --help` says beside the default, for the keys whose name does not say it all
HELP = {
    "distill_from": "repeatable: a teacher run or local HF causal LM (same tokenizer); "
    "loss alpha*CE + (1-alpha)*T^2*KL",
    "checkpoint_words": "repeatable or comma-separated: checkpoint when words seen reach these, e.g. 1M,2M,10M",
    "checkpoint_schedule": "babylm-strict-small (1M..10M, 20M..100M) or babylm-strict (also 200M..1B)",
    "track": "BabyLM track: strict-small | strict | multilingual (2026): checks the corpus against its budget (10M, "
    "100M, 100M English-equivalent words) and sets its checkpoint schedule",
    "mix_languages": "data with languages: each language's share of the words seen, e.g. eng:1,nld:1,zho:1, or "
    "uniform (held at every checkpoint)",
    "compile": "torch.compile the trunk as one graph (each block with FSDP2) and the fused head + loss chunks "
    "(default: on CUDA, off on CPU)",
    "attention": "auto (FlexAttention compiled on CUDA, matmul on a CPU in bf16, else SDPA), sdpa, flex or matmul",
    "seed": "initialisation, and the data's order and masking unless --data-seed is set",
    "data_seed": "the data's order and masking (-1: --seed); fix it to vary only the initialisation",
    "init_from": "RUN or RUN:CHECKPOINT: start from that run's weights (same tokenizer and shape); words seen "
    "continue from it",
    "batch_warmup": "F: the global batch grows linearly from batch_size/F to batch_size over training (GPT-BERT's "
    "batch_reduction, 4); tokens, words and the epoch cap count the batches as they are",
    "init_weights": "with --init-from: auto (the source's EMA of its weights where it keeps one, else its weights), "
    "ema or raw; the run records which",
    "attention_anneal_steps": "bidirectional rows see a growing random share of later positions over the first N "
    "steps (causal to full, DiffuLLaMA)",
    "curriculum": "order the data by a difficulty score: length (words), unigram (mean surprisal), or a .npy of "
    "one score per window (hlm score-windows)",
    "pacing": "with --curriculum: linear, quadratic, root, step, exponential, log or none, optionally :START,END "
    "(fractions of training; default 0.1,0.7), as CLIMB",
    "select_fraction": "with --curriculum: train on the easiest share of the windows only (selection by a "
    "reference run's loss, cf. CoLoR-Filter)",
    "lr_schedule": "cosine: warmup to lr, cosine to min_lr_ratio by the cooldown, then linear to 0; gpt-bert: "
    "GPT-BERT's and the diffusion winner's (warmup from 0, cosine over the whole run clipped at the floor)",
    "optimizer": "adamw; lamb (GPT-BERT's and the 2025 diffusion winner's: lr ~1e-2); muon (the blocks' matrices, "
    "AdamW for the rest, one --lr)",
    "adam_eps": "epsilon of Adam, LAMB and Muon's AdamW part",
    "muon_momentum": "with --optimizer muon: its Nesterov momentum",
    "ema_decay": "keep an EMA of the weights (GPT-BERT: 0.999; 0 = off): validated as val_*_ema and saved in every "
    "checkpoint",
    "ema_warmup": "with --ema-decay: the 2025 diffusion winner's decay min(d, (1 + n) / (10 + n)) at update n",
    "max_epochs": "stop after this many passes over the training tokens (BabyLM 2025: 10); alone, it sets max_steps",
}

_UNITS = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9}

# BabyLM 2025's checkpoint schedule: every 1M words to 10M, every 10M to 100M, every 100M to 1,000M
# (the strict-small track, 10 epochs of 10M words, stops at 100M)
# BabyLM's tracks: the training corpus's budget in words (English-equivalent words for multilingual, 2026) and
# the checkpoint schedule a track's submission holds (multilingual: Strict's, the organisers name no other)
TRACK_BUDGETS = {"strict-small": 10_000_000, "strict": 100_000_000, "multilingual": 100_000_000}
TRACK_SCHEDULES = {"strict-small": "babylm-strict-small", "strict": "babylm-strict", "multilingual": "babylm-strict"}
CHECKPOINT_SCHEDULES = {
    "babylm-strict-small": [n * 10**6 for n in range(1, 10)] + [n * 10**7 for n in range(1, 11)],
    "babylm-strict": [n * 10**6 for n in range(1, 10)]
    + [n * 10**7 for n in range(1, 10)]
    + [n * 10**8 for n in range(1, 11)],
}


def parse_word_count(value) -> int:
    """'1M' -> 1_000_000, '50k' -> 50_000, '1.5M' -> 1_500_000, 20000 -> 20000."""
    text = str(value).strip().upper()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMBG]?)", text)
    if isinstance(value, bool) or not m or float(m.group(1)) * _UNITS[m.group(2)] < 1:
        raise UserError(f"checkpoint_words entry {value!r} is not a count of words (e.g. 1M, 500K, 20000)")
    return int(round(float(m.group(1)) * _UNITS[m.group(2)]))


def word_label(n: int) -> str:
    """The name of a words-seen count as BabyLM's branches write it: 1M, 20M, 50K, 1500K, 123."""
    for unit, size in (("M", 10**6), ("K", 10**3)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def _read_file(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:
                import tomli as tomllib
            return tomllib.loads(text)
        if path.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise UserError("YAML configs need PyYAML: pip install 'hybridlm[yaml]' (or use TOML)") from None
            return yaml.safe_load(text) or {}
        if path.suffix == ".json":
            return json.loads(text)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot parse {path}: {str(e).splitlines()[0]}") from None
    raise UserError(f"config {path} must be .toml, .yaml/.yml or .json")


def config_help() -> list[tuple[str, object, str, str]]:
    """Every key of `hlm train` as (name, default, help, group), in --help order: the general keys
    (group ""), with every registered objective's options after z_loss (group: the objectives that
    read it)."""
    defaults, out = TrainConfig(), []
    for f in fields(TrainConfig):
        if f.name == "options":
            continue
        say = HELP.get(f.name, "")
        if f.name == "objective":
            say = f"a registered objective: {', '.join(OBJECTIVES)}"
        out.append((f.name, getattr(defaults, f.name), say, ""))
        if f.name == "z_loss":
            for k, o in option_fields().items():
                group = f"options of {', '.join(option_owners(k))}"
                out.append((k, option_default(o), o.metadata.get("help", ""), group))
    return out


def config_keys() -> dict:
    """Every key of `hlm train` -> its default."""
    return {name: default for name, default, _, _ in config_help()}


def merge_config(values: dict, base: TrainConfig | None = None, source: str = "config") -> TrainConfig:
    """Apply `values` over `base`, rejecting unknown keys with the closest valid one."""
    defaults = config_keys()
    for key in values:
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"unknown key {key!r} in {source}{hint}")
    cfg = asdict(base) if base is not None else asdict(TrainConfig())
    options = dict(cfg.pop("options"))
    for key, value in values.items():
        default = defaults[key]
        into = cfg if key in GENERAL_KEYS else options
        if default is None:  # a bool that defaults to "decided by the device" (compile)
            if value is not None and not isinstance(value, bool):
                raise UserError(f"{key} in {source} must be true or false (got {value!r})")
            into[key] = value
            continue
        if isinstance(default, bool) != isinstance(value, bool):
            what = "true or false" if isinstance(default, bool) else f"a {type(default).__name__}"
            raise UserError(f"{key} in {source} must be {what} (got {value!r})")
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(default) in (int, float, str, list, dict) and not isinstance(value, type(default)):
            raise UserError(f"{key} in {source} must be a {type(default).__name__} (got {value!r})")
        into[key] = value
    return TrainConfig(**cfg, options=options)


def read_config_file(path) -> dict:
    """The keys of a TOML/YAML/JSON config file, checked (names and types) against TrainConfig."""
    path = Path(path)
    values = _read_file(path)
    if not isinstance(values, dict):
        raise UserError(f"config {path} must hold keys and values (a table / mapping), not a {type(values).__name__}")
    merge_config(values, source=str(path))
    return values


def load_config(path) -> TrainConfig:
    return merge_config(read_config_file(path), source=str(path))
