"""The run directory: the one place that knows the layout of RUN/, and loading a trained run.

    RUN/config.json        the resolved TrainConfig
    RUN/tokenizer.json     the tokenizer the run was trained with
    RUN/metrics.jsonl      one JSON record per logged step (training and validation)
    RUN/checkpoints/       step_NNNNNNN/ folders and the `latest` pointer (hybridlm.checkpoint)
    RUN/eval/              results of hlm eval (blimp-SCORER.json, babylm-SCORER.json, perplexity.json, ...)
    RUN/eval/checkpoints/  per checkpoint: words_1M/babylm-SCORER.json (hlm eval babylm --all-checkpoints)
    RUN/tensorboard/       TensorBoard events, with --log tensorboard
    RUN/.lock              held (flock) while a process trains in the run

A run is identified by where it is: nothing in it names its own folder.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from hybridlm import checkpoint as ckpt
from hybridlm.config import merge_config
from hybridlm.errors import UserError
from hybridlm.files import atomic_write_bytes, atomic_write_json, check_out_folder, read_json, refuse_symlink
from hybridlm.model import build_model
from hybridlm.objectives import build_objective
from hybridlm.tokenizer import TOKENIZER_FILE, load_tokenizer


class RunDir:
    CONFIG = "config.json"
    METRICS = "metrics.jsonl"
    EVAL = "eval"
    LOCK = ".lock"

    def __init__(self, path):
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------ layout
    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    @property
    def eval_dir(self) -> Path:
        return self.path / self.EVAL

    def eval_path(self, name) -> Path:
        """An evaluation result: a name inside RUN/eval/, or a path already inside it."""
        name = Path(name)
        return (
            name
            if name.is_absolute() or name.parts[: len(self.eval_dir.parts)] == self.eval_dir.parts
            else self.eval_dir / name
        )

    def checkpoint_eval_path(self, checkpoint: str, name: str) -> Path:
        """A result for one checkpoint (hlm eval babylm --all-checkpoints): RUN/eval/checkpoints/CKPT/NAME."""
        return self.eval_dir / "checkpoints" / checkpoint / name

    def is_run(self) -> bool:
        return self.config_path.is_file()

    def require(self) -> RunDir:
        if not self.is_run():
            raise UserError(f"{self.path} is not a hybridlm run directory (no {self.CONFIG}); train one with hlm train")
        return self

    # ------------------------------------------------------------ config and creation
    def read_config(self):
        values = read_json(self.require().config_path, "run config")
        if not isinstance(values, dict):
            raise UserError(f"run config {self.config_path} is not a JSON object; restore it from a backup")
        cfg = merge_config(values, source=str(self.config_path))
        # shim (until 0.2): runs written before objectives owned their options saved every objective's keys
        try:
            own = cfg.objective_options()
        except UserError:
            return cfg  # validation says what is wrong with them
        cfg.options = {k: v for k, v in cfg.options.items() if k in own}
        try:  # a damaged or crafted config (a seq_len of 10^12) is refused here, before anything is allocated
            return cfg.validate()
        except UserError as e:
            raise UserError(f"run config {self.config_path}: {e}") from None

    def write_config(self, cfg) -> None:
        atomic_write_json(self.config_path, cfg.to_dict())

    def create(self, cfg, tokenizer_file: Path) -> None:
        """Make a new run here: an absent or empty folder only (never a user's folder or a run)."""
        from hybridlm.sft import check_new_run_folder

        check_out_folder(self.path, "it holds files and is not a run; choose a new or empty --out",
                         ignore=check_new_run_folder(self.path))  # fmt: skip
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.tokenizer_path, Path(tokenizer_file).read_bytes())
        self.write_config(cfg)

    # ------------------------------------------------------------ checkpoints
    def checkpoints(self) -> list[Path]:
        """Every checkpoint folder (step_N and words_N)."""
        return ckpt.list_checkpoints(self.path, ckpt.NAME)

    def words_checkpoints(self) -> list[tuple[Path, dict]]:
        """The words_N checkpoints (BabyLM's schedule) with their state, in order of words seen."""
        return ckpt.words_checkpoints(self.path)

    def latest_checkpoint(self) -> Path | None:
        return ckpt.latest_checkpoint(self.path)

    def checkpoint(self, name: str | None = None) -> Path:
        if name is not None and (not ckpt.NAME.fullmatch(str(name)) or (self.path / ckpt.CKPT_DIR / name).is_symlink()):
            have = ", ".join(p.name for p in ckpt.list_checkpoints(self.path, ckpt.NAME)) or "none yet"
            raise UserError(
                f"--checkpoint takes the name of one of this run's own checkpoints (got {name!r}; {self.path} has: "
                f"{have})"
            )
        path = self.path / ckpt.CKPT_DIR / name if name else self.latest_checkpoint()
        if path is None or not path.is_dir() or not ckpt.NAME.fullmatch(path.name):
            raise UserError(
                f"run {self.path} has no checkpoint {name or 'yet'}; train it (hlm train --out {self.path})"
            )
        return path

    # ------------------------------------------------------------ metrics
    def read_metrics(self) -> list[dict]:
        """The logged records. A last line cut short (a kill while appending) is dropped; a damaged
        line before it is an error."""
        if not self.metrics_path.is_file():
            return []
        lines = self.metrics_path.read_bytes().decode("utf-8", errors="replace").splitlines()
        records = []
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
                    raise ValueError("not a record with a step")
            except ValueError as e:
                if i == len(lines):
                    break
                raise UserError(f"{self.metrics_path}:{i}: damaged record ({str(e)[:60]}); delete that line") from None
            records.append(rec)
        return records

    def truncate_metrics(self, step: int) -> None:
        """Keep the records up to `step` (what a resumed run redoes is dropped), rewritten atomically."""
        refuse_symlink(self.metrics_path)
        kept = [r for r in self.read_metrics() if r["step"] <= step]
        atomic_write_bytes(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept).encode())

    def append_metrics(self, record: dict) -> None:
        refuse_symlink(self.metrics_path)
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------ evaluation results
    def check_eval_writable(self, name) -> None:
        """Before an evaluation starts: its result file can be written (no link anywhere on the way)."""
        path = self.eval_path(name)
        for parent in [path, *path.parents]:
            refuse_symlink(parent)
            if parent == self.eval_dir:
                break

    def read_checkpoint_evals(self) -> list[dict]:
        """Every result of hlm eval babylm --all-checkpoints, as written (each names its words_seen)."""
        root = self.eval_dir / "checkpoints"
        out = []
        for f in sorted(root.glob("*/*.json")) if root.is_dir() else []:
            data = read_json(f, "evaluation result")
            if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
                raise UserError(
                    f"evaluation result {f} is not a BabyLM result; delete it and re-run hlm eval babylm "
                    "--all-checkpoints"
                )
            out.append(data)
        return out

    def write_eval(self, name: str, result: dict) -> Path:
        self.check_eval_writable(name)
        return atomic_write_json(self.eval_path(name), result)

    def read_evals(self) -> list[tuple[str, dict]]:
        if not self.eval_dir.is_dir():
            return []
        out = []
        for f in sorted(self.eval_dir.glob("*.json")):
            data = read_json(f, "evaluation result")
            if not isinstance(data, dict):
                raise UserError(f"evaluation result {f} is not a JSON object; delete it and re-run hlm eval")
            out.append((f.name, data))
        return out

    # ------------------------------------------------------------ lock
    @contextlib.contextmanager
    def lock(self):
        """An advisory lock held while training: released by the OS when the process dies."""
        import fcntl

        refuse_symlink(self.path / self.LOCK)
        fd = os.open(self.path / self.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(
                    f"another process is training in {self.path}; wait for it to finish (or stop it)"
                ) from None
            yield
        finally:
            os.close(fd)

    # ------------------------------------------------------------ loading a trained model
    def weights_read(self, checkpoint: str | None = None, weights: str = "auto") -> str:
        """Which weights load(checkpoint, weights) reads: "ema" (the moving average) or "raw"."""
        return ckpt.weights_kind(self.checkpoint(checkpoint), weights)

    def load(self, device: str = "cpu", checkpoint: str | None = None, weights: str = "auto") -> LoadedRun:
        """The trained model at `checkpoint` (default: the latest), with its moving average of the weights where
        it keeps one (weights="auto"; "raw": the weights as trained)."""
        cfg = self.read_config()
        path = self.checkpoint(checkpoint)
        tokenizer = load_tokenizer(self.tokenizer_path)
        weights, which = ckpt.read_weights(path, self.path, weights)
        if bad := ckpt.first_non_finite(weights):
            raise UserError(
                f"checkpoint {path} holds non-finite weights ({bad} has nan or inf): training diverged before it "
                "was written; use an earlier checkpoint (--checkpoint NAME)"
            )
        vocab = weights["embed.weight"].shape[0] if "embed.weight" in weights else tokenizer.get_vocab_size()
        if vocab != tokenizer.get_vocab_size():
            raise UserError(
                f"run {self.path}: the checkpoint has {vocab} tokens but the tokenizer {tokenizer.get_vocab_size()}; "
                "the run directory is inconsistent"
            )
        model = build_model(cfg.preset, vocab, cfg.model_overrides(), min_seq_len=cfg.max_len())
        try:
            model.load_state_dict(weights)
        except RuntimeError as e:
            raise UserError(
                f"checkpoint {path} does not fit the run's config ({str(e).splitlines()[0][:100]})"
            ) from None
        model.to(device).eval()
        objective = build_objective(cfg, vocab)
        objective.condition(model)
        state = read_json(path / "state.json", "checkpoint state") if (path / "state.json").is_file() else {}
        state = state if isinstance(state, dict) else {}
        return LoadedRun(
            self,
            cfg,
            model,
            tokenizer,
            objective,
            state.get("step", 0),
            state.get("words_seen"),
            which,
        )


@dataclass
class LoadedRun:
    dir: RunDir
    config: object  # TrainConfig
    model: torch.nn.Module
    tokenizer: object
    objective: object  # the Objective instance the run was trained with
    step: int
    words_seen: int | None = None  # at the loaded checkpoint (None: data prepared without word counts)
    weights: str = "raw"  # "ema": the run's moving average of its weights; "raw": the weights as trained

    @property
    def path(self) -> Path:
        return self.dir.path


def load_run(run_dir, device: str = "cpu", checkpoint: str | None = None, weights: str = "auto") -> LoadedRun:
    return RunDir(run_dir).load(device, checkpoint, weights)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


__all__ = ["RunDir", "LoadedRun", "load_run", "default_device"]
