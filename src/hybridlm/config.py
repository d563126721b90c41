"""Training configuration: one dataclass; every CLI flag of `hlm train` is also a config key."""

from __future__ import annotations

import difflib
import json
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from hybridlm.errors import UserError


@dataclass
class TrainConfig:
    data: str = ""  # prepared data directory (hlm prepare)
    out: str = ""  # run directory
    objective: str = "causal"  # causal | masked | hybrid | diffusion
    preset: str = "tiny"  # tiny | small | base
    model: dict = field(default_factory=dict)  # overrides of the preset, e.g. {n_layer = 4}
    seed: int = 1337
    # batch: the global batch is batch_size sequences of seq_len tokens, whatever the process count
    seq_len: int = 128
    batch_size: int = 32
    # [[fraction of steps, seq_len], ...], e.g. GPT-BERT's [[0, 128], [0.7, 256], [0.9, 512]]; tokens per
    # step stay batch_size * seq_len, so a stage of length L has batch_size * seq_len / L sequences
    seq_len_schedule: list = field(default_factory=list)
    micro_batch_size: int = 0  # sequences per forward pass per process; 0 = all of that process's rows
    max_steps: int = 1000
    # optimiser (AdamW) and schedule (linear warmup, cosine decay to min_lr_ratio * lr)
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_fraction: float = 0.016
    cooldown_fraction: float = 0.0  # last fraction of steps: linear from min_lr to 0
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    grad_clip: float = 2.0
    z_loss: float = 0.0
    # objective options (each objective reads the ones it has)
    mask_ratio_start: float = 0.3
    mask_ratio_end: float = 0.15
    max_span: int = 3
    causal_fraction: float = 1 / 16
    schedule: str = "loglinear"
    diffusion_eps: float = 1e-3
    diffusion_estimator: str = "time"  # time: t ~ U(eps, 1), weight -a'/(1-a); count: k masked ~ U{1..n}, weight 1/k (log-linear only)
    frequency_masking: float = 0.0
    document_mask: bool = True
    # run mechanics
    precision: str = "auto"  # auto (bf16 where supported) | bf16 | fp32
    compile: bool = False
    device: str = "auto"
    distributed: str = "ddp"  # ddp | fsdp (under torchrun)
    eval_interval: int = 100
    eval_batches: int = 16
    checkpoint_interval: int = 200
    keep_checkpoints: int = 2
    log_interval: int = 10
    log: list = field(default_factory=list)  # extra loggers: tensorboard, wandb
    max_seconds: float = 0.0  # stop (with a checkpoint) after this wall time; 0 = no limit

    def to_dict(self) -> dict:
        return asdict(self)

    def stages(self) -> list[tuple[int, int, int]]:
        """(first step, seq_len, sequences per step) of each sequence-length stage."""
        if not self.seq_len_schedule:
            return [(0, self.seq_len, self.batch_size)]
        tokens = self.batch_size * self.seq_len
        return [(round(f * self.max_steps), int(L), tokens // int(L)) for f, L in self.seq_len_schedule]

    def max_len(self) -> int:
        return max(L for _, L, _ in self.stages())

    def validate(self) -> "TrainConfig":
        from hybridlm.model import PRESETS
        from hybridlm.objectives import OBJECTIVES
        from hybridlm.objectives.diffusion import SCHEDULES

        if self.objective not in OBJECTIVES:
            raise UserError(f"unknown objective {self.objective!r} (choose one of: {', '.join(OBJECTIVES)})")
        if self.preset not in PRESETS:
            raise UserError(f"unknown preset {self.preset!r} (choose one of: {', '.join(PRESETS)})")
        if self.schedule not in SCHEDULES:
            raise UserError(f"unknown schedule {self.schedule!r} (choose one of: {', '.join(SCHEDULES)})")
        if self.diffusion_estimator not in ("time", "count"):
            raise UserError(f"unknown diffusion_estimator {self.diffusion_estimator!r} (choose time or count)")
        if self.diffusion_estimator == "count" and (self.schedule != "loglinear" or self.frequency_masking):
            raise UserError("diffusion_estimator = count is the log-linear NELBO: use schedule loglinear and no frequency_masking")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise UserError(f"unknown precision {self.precision!r} (choose auto, bf16 or fp32)")
        if self.distributed not in ("ddp", "fsdp"):
            raise UserError(f"unknown distributed mode {self.distributed!r} (choose ddp or fsdp)")
        for name in ("seq_len", "batch_size", "max_steps"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name} must be positive (got {getattr(self, name)})")
        if not 0 <= self.causal_fraction <= 1:
            raise UserError(f"causal_fraction must lie in [0, 1] (got {self.causal_fraction})")
        for name in ("mask_ratio_start", "mask_ratio_end"):
            if not 0 < getattr(self, name) < 1:
                raise UserError(f"{name} must lie in (0, 1) (got {getattr(self, name)})")
        for i, stage in enumerate(self.seq_len_schedule):
            if not (isinstance(stage, (list, tuple)) and len(stage) == 2 and 0 <= stage[0] < 1 and int(stage[1]) > 0):
                raise UserError(f"seq_len_schedule entry {stage!r} must be [fraction in [0, 1), seq_len]")
            if (self.batch_size * self.seq_len) % int(stage[1]):
                raise UserError(f"seq_len_schedule length {stage[1]} must divide batch_size * seq_len = {self.batch_size * self.seq_len}")
        if self.seq_len_schedule and self.seq_len_schedule[0][0] != 0:
            raise UserError("seq_len_schedule must start at fraction 0")
        unknown = set(self.log) - {"tensorboard", "wandb"}
        if unknown:
            raise UserError(f"unknown logger {sorted(unknown)[0]!r} (choose tensorboard or wandb)")
        return self


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


def merge_config(values: dict, base: TrainConfig | None = None, source: str = "config") -> TrainConfig:
    """Apply `values` over `base`, rejecting unknown keys with the closest valid one."""
    valid = {f.name: f for f in fields(TrainConfig)}
    for key in values:
        if key not in valid:
            close = difflib.get_close_matches(key, list(valid), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"unknown key {key!r} in {source}{hint}")
    cfg = asdict(base) if base is not None else asdict(TrainConfig())
    for key, value in values.items():
        default = getattr(TrainConfig(), key)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise UserError(f"{key} in {source} must be true or false (got {value!r})")
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(default) in (int, float, str, list, dict) and not isinstance(value, type(default)):
            raise UserError(f"{key} in {source} must be a {type(default).__name__} (got {value!r})")
        cfg[key] = value
    return TrainConfig(**cfg)


def load_config(path) -> TrainConfig:
    path = Path(path)
    return merge_config(_read_file(path), source=str(path))
