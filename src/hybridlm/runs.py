"""Load a trained run (model, tokenizer, config, objective) for evaluation, generation and export."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from hybridlm import checkpoint as ckpt
from hybridlm.config import TrainConfig
from hybridlm.errors import UserError
from hybridlm.model import Transformer, build_model
from hybridlm.tokenizer import TOKENIZER_FILE, load_tokenizer


@dataclass
class LoadedRun:
    path: Path
    config: TrainConfig
    model: Transformer
    tokenizer: object
    step: int

    @property
    def objective(self) -> str:
        return self.config.objective


def load_run(run_dir, device: str = "cpu", checkpoint: str | None = None) -> LoadedRun:
    run = Path(run_dir)
    cfg_file = run / "config.json"
    if not cfg_file.is_file():
        raise UserError(f"{run} is not a hybridlm run directory (no config.json); train one with hlm train")
    cfg = TrainConfig(**json.loads(cfg_file.read_text()))
    path = run / ckpt.CKPT_DIR / checkpoint if checkpoint else ckpt.latest_checkpoint(run)
    if path is None or not path.is_dir():
        raise UserError(f"run {run} has no checkpoint yet; train it (hlm train --out {run}) or wait for the first save")
    tokenizer = load_tokenizer(run / TOKENIZER_FILE)
    weights = ckpt.load_weights(path, run)
    vocab = weights["embed.weight"].shape[0] if "embed.weight" in weights else tokenizer.get_vocab_size()
    if vocab != tokenizer.get_vocab_size():
        raise UserError(f"run {run}: the checkpoint has {vocab} tokens but the tokenizer {tokenizer.get_vocab_size()}; the run directory is inconsistent")
    model = build_model(cfg.preset, vocab, cfg.model, min_seq_len=cfg.max_len())
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise UserError(f"checkpoint {path} does not fit the run's config ({str(e).splitlines()[0][:100]})") from None
    model.to(device).eval()
    step = json.loads((path / "state.json").read_text()).get("step", 0) if (path / "state.json").is_file() else 0
    return LoadedRun(run, cfg, model, tokenizer, step)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
