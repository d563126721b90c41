"""Warm starts across objectives: a new run that starts from another run's weights.

`--init-from RUN[:CHECKPOINT]` loads the source's weights (its latest checkpoint by default) into
a new run of any objective, e.g. causal then diffusion ("Scaling diffusion LMs via adaptation from
autoregressive models", Gong et al. 2024) or causal then masked ("Should we still pretrain encoders
with MLM?"). The source must have the data's tokenizer and the new model's shape; both are checked
before anything is written. Words and tokens seen continue from the source: BabyLM counts every
word a model saw, so the epoch cap and the words_N checkpoints cover both phases. The run records
its source (an absolute path and the checkpoint it resolved to); once the run has a checkpoint of
its own, the source is never read again (moved or deleted, the run still resumes), and a source is
read as a checkpoint is: its state whole numbers, its weights finite, its tokenizer the data's.

`--attention-anneal-steps N` turns a causal model's attention into full attention gradually, as
DiffuLLaMA does: at step s each bidirectional row also sees a random share min(1, s / N) of the
positions after it (the causal part stays), drawn per step from the run's seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from hybridlm import checkpoint as ckpt
from hybridlm.errors import UserError
from hybridlm.model import build_model
from hybridlm.runs import RunDir
from hybridlm.tokenizer import tokenizer_hash


@dataclass
class Source:
    run: RunDir
    checkpoint: Path
    words_seen: int
    tokens_seen: int
    weights: dict | None = None  # read (and checked finite) once, by find_source
    which: str = "raw"  # "ema": the source's moving average of its weights


def parse_source(text: str) -> tuple[RunDir, str | None]:
    """RUN or RUN:CHECKPOINT (a checkpoint name of that run, e.g. step_0001000 or words_10M)."""
    path, _, name = str(text).rpartition(":")
    if path and ckpt.NAME.fullmatch(name):
        return RunDir(path), name
    return RunDir(text), None


def recorded(text: str) -> str:
    """RUN[:CHECKPOINT] as a run records it: the absolute path and the checkpoint it names now (the
    latest when none is given), so that the record means the same weights later."""
    run, name = parse_source(text)
    if not run.is_run():
        return text  # find_source says what is wrong
    return f"{run.path.resolve()}:{run.checkpoint(name).name}"


def tokens_before(run: RunDir, cfg) -> int:
    """Tokens a warm start's source had seen before the run's first step: read from the run's own latest
    checkpoint once it has one (a started run never needs its source again), else from the source."""
    latest = run.latest_checkpoint()
    if latest is not None:
        state = ckpt.checkpoint_state(latest)
        trained = cfg.batch_schedule()[2][min(int(state.get("step", 0)), cfg.max_steps)]
        return max(0, int(state.get("tokens_seen", 0)) - int(trained))
    return source_tokens(cfg.init_from) if cfg.init_from else 0


def source_tokens(text: str) -> int:
    """Tokens the source had seen at its checkpoint (0 when it cannot be read: find_source explains)."""
    run, name = parse_source(text)
    try:
        return int(json.loads((run.checkpoint(name) / "state.json").read_text()).get("tokens_seen", 0))
    except (UserError, OSError, ValueError):
        return 0


def find_source(cfg, vocab_size: int, data_tokenizer: str) -> Source:
    """The --init-from source, checked against the new run (one line, before anything is written)."""
    run, name = parse_source(cfg.init_from)
    if not run.is_run():
        raise UserError(f"--init-from {cfg.init_from}: not a hybridlm run (no {RunDir.CONFIG}); give a trained run")
    path = run.checkpoint(name)
    if not run.tokenizer_path.is_file():
        raise UserError(f"--init-from {run}: it has no {run.tokenizer_path.name}; it is not a complete run")
    if tokenizer_hash(run.tokenizer_path) != data_tokenizer:
        raise UserError(
            f"--init-from {run}: it was trained with another tokenizer than the data in {cfg.data}; "
            "warm-start from a run on the same tokenizer"
        )
    with torch.device("meta"):  # the new model's shapes, without allocating it
        want = {
            k: tuple(v.shape)
            for k, v in build_model(cfg.preset, vocab_size, cfg.model_overrides()).state_dict().items()
        }
    try:
        with safe_open(str(path / "model.safetensors"), "pt") as f:
            have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:
        raise UserError(f"--init-from {path}: its weights are not readable ({str(e).splitlines()[0][:100]})") from None
    # extra heads and a noise conditioning the source lacks start fresh (the adaLN gates at zero)
    trunk = {k: v for k, v in want.items() if not k.startswith(("mtp.", "noise_embed.", "adaln."))}
    wrong = [k for k, shape in trunk.items() if have.get(k) != shape]
    if wrong:
        k = wrong[0]
        raise UserError(
            f"--init-from {run}: its model has another shape ({k}: {have.get(k)} there, {want[k]} here); "
            "use the source's --preset and --model"
        )
    # the source is read as a checkpoint is on resume: its counters whole numbers, its weights finite
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        if not isinstance(state, dict):
            raise ValueError("state.json is not an object")
        ckpt._check_state(state)
    except FileNotFoundError:
        raise UserError(f"--init-from {path}: no state.json; it is not a complete checkpoint") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"--init-from {path}: damaged state ({str(e).splitlines()[0][:100]})") from None
    weights, which = ckpt.read_weights(path, run.path, cfg.init_weights)
    if bad := ckpt.first_non_finite(weights):
        raise UserError(
            f"--init-from {path}: its weights are not finite ({bad} has nan or inf); warm-start from an earlier "
            "checkpoint of it (RUN:CHECKPOINT)"
        )
    return Source(run, path, int(state.get("words_seen", 0)), int(state.get("tokens_seen", 0)), weights, which)


def load_source_weights(model: torch.nn.Module, source: Source) -> None:
    """The source's weights into `model` (its extra multi-token heads, when the source has none, stay fresh)."""
    weights = source.weights
    if weights is None:
        weights = ckpt.read_weights(source.checkpoint, source.run.path, source.which)[0]
    own = model.state_dict()
    model.load_state_dict({**own, **{k: v for k, v in weights.items() if k in own}})


def annealed_visibility(seq_len: int, step: int, anneal_steps: int, seed: int) -> torch.Tensor | None:
    """[T, T] bool: the positions a bidirectional row sees at `step` of a causal-to-full anneal (the
    causal part and a random share step / anneal_steps of the rest); None once the anneal is over."""
    if not anneal_steps or step >= anneal_steps:
        return None
    share = step / anneal_steps
    g = torch.Generator().manual_seed((seed * 1_000_003 + step) * 7 + 5)
    return torch.ones(seq_len, seq_len, dtype=torch.bool).tril() | (torch.rand(seq_len, seq_len, generator=g) < share)
