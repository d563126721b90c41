"""Atomic checkpoints without pickle: weights, optimizer, data position and RNG state.

RUN/checkpoints/step_0000200/ (periodic, the newest `keep_checkpoints` kept) or words_10M/ (at a
count of words seen, BabyLM's schedule, kept forever) holds model.safetensors, optimizer.safetensors (the tensors; the
parameter groups as JSON in its metadata), state.json (step, data position) and rng.json. It is
written to a temporary folder and renamed into place; RUN/checkpoints/latest names the newest
complete one and is itself replaced atomically, so a kill at any moment leaves the previous
checkpoint usable. Nothing in a checkpoint is loaded with pickle, so a checkpoint from someone
else cannot run code.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from hybridlm.errors import UserError
from hybridlm.files import no_space

CKPT_DIR = "checkpoints"
EMA_FILE = "ema.safetensors"  # the moving average of the weights, when the run keeps one
STEP_NAME = re.compile(r"step_\d{7,}")  # periodic checkpoints (pruned to the newest few)
WORDS_NAME = re.compile(r"words_\d+[KM]?")  # at a count of words seen (kept)
NAME = re.compile(f"{STEP_NAME.pattern}|{WORDS_NAME.pattern}")  # only these folders are checkpoints


def _fsync_dir(path: Path):
    try:
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


# ---------------------------------------------------------------- RNG state as JSON
def rng_state() -> dict:
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state().tolist(),
        "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "numpy": [np_name, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "python": [py_version, list(py_state), py_gauss],
    }


def set_rng_state(state: dict):
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, py_state, py_gauss = state["python"]
    random.setstate((version, tuple(py_state), py_gauss))


# ---------------------------------------------------------------- optimizer state in safetensors
def _save_optimizer(osd: dict, path: Path):
    """A full optimizer state dict keyed by parameter name: tensors in safetensors, the rest as JSON."""
    tensors, scalars = {}, {}
    for param, entry in osd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param}\t{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{param}\t{key}"] = value
    meta = {"param_groups": json.dumps(osd["param_groups"]), "scalars": json.dumps(scalars)}
    save_file(tensors, str(path), metadata=meta)


def _load_optimizer(path: Path) -> dict:
    state: dict[str, dict] = {}
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        for name in f.keys():
            param, key = name.split("\t")
            state.setdefault(param, {})[key] = f.get_tensor(name)
    for name, value in json.loads(meta.get("scalars", "{}")).items():
        param, key = name.split("\t")
        state.setdefault(param, {})[key] = value
    return {"state": state, "param_groups": json.loads(meta["param_groups"])}


# ---------------------------------------------------------------- saving and finding
def save_checkpoint(
    run_dir,
    step: int,
    model_state: dict,
    optimizer_state: dict,
    state: dict,
    keep: int = 2,
    name: str | None = None,
    ema: dict | None = None,
) -> Path:
    """Write checkpoint `name` (default step_NNNNNNN) atomically and point `latest` at it; prune
    the step_N checkpoints to the newest `keep`, never fewer than two, so that a divergence found
    at the next step can fall back (words_N ones are never pruned). `ema`: the moving average of the
    weights (--ema-decay), kept beside them as ema.safetensors with the same names."""
    root = Path(run_dir) / CKPT_DIR
    if root.is_symlink():  # writing (and pruning) there would act on another folder
        raise UserError(
            f"{root} is a symbolic link; hlm writes checkpoints only into the run's own folder (replace the link)"
        )
    root.mkdir(parents=True, exist_ok=True)
    name = name or f"step_{step:07d}"
    if not NAME.fullmatch(name):
        raise ValueError(f"not a checkpoint name: {name}")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))  # unpredictable, created exclusively
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
        _save_optimizer(optimizer_state, tmp / "optimizer.safetensors")
        if ema is not None:
            save_file({k: v.detach().contiguous().cpu() for k, v in ema.items()}, str(tmp / EMA_FILE))
        state = dict(state)
        (tmp / "rng.json").write_text(json.dumps(state.pop("rng", None) or rng_state()))
        (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    except (
        BaseException
    ) as e:  # a full disk, a kill: no half-written folder stays, the previous checkpoint is untouched
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, Exception) and (err := no_space(root / name, e)):
            raise err from None
        raise
    final = root / name
    if final.is_symlink():
        raise UserError(f"{final} is a symbolic link; hlm does not write through links (remove it)")
    if final.exists():  # re-saving the same step (e.g. after a resume): keep the old until the new is in place
        old = Path(tempfile.mkdtemp(prefix=f".old-{name}-", dir=root))
        os.replace(final, old / name)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    _point_latest(root, name)
    for old in list_checkpoints(run_dir)[: -max(keep, 2)] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _point_latest(root: Path, name: str) -> None:
    """RUN/checkpoints/latest names `name`, replaced atomically (the temporary file made exclusively)."""
    fd, tmp = tempfile.mkstemp(prefix=".latest-", dir=root)
    with os.fdopen(fd, "w") as f:
        f.write(name + "\n")
    os.replace(tmp, root / "latest")
    _fsync_dir(root)


def set_aside(run_dir, step: int) -> list[str]:
    """The checkpoints of `step` renamed to diverged-NAME (kept to look at, never loaded: training
    from their weights diverged), and `latest` pointed at the newest remaining one, when an older
    checkpoint remains to resume from. Returns the names set aside."""
    root = Path(run_dir) / CKPT_DIR
    every = list_checkpoints(run_dir, NAME)
    at_step = [p for p in every if checkpoint_state(p).get("step") == step]
    if not at_step or len(at_step) == len(every):
        return []  # nothing older to fall back to: the only checkpoint stays (the error says what happened)
    for path in at_step:
        target = root / f"diverged-{path.name}"
        if target.exists():
            shutil.rmtree(target)
        os.replace(path, target)
    remaining = [p for p in every if p not in at_step]
    _point_latest(root, max(remaining, key=lambda p: checkpoint_state(p).get("step", -1)).name)
    return [p.name for p in at_step]


def remove_stale(run_dir) -> list[str]:
    """Remove the temporary folders a kill during a checkpoint write leaves behind."""
    root = Path(run_dir) / CKPT_DIR
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith((".tmp-", ".old-", ".latest-")) and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p.name)
    return removed


def list_checkpoints(run_dir, pattern: re.Pattern = STEP_NAME) -> list[Path]:
    """The checkpoint folders whose names match `pattern` (default: the periodic step_N ones), sorted."""
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and pattern.fullmatch(p.name))


def checkpoint_state(path: Path) -> dict:
    """state.json of a checkpoint ({} when unreadable): step, tokens and words seen, data position."""
    try:
        state = json.loads((path / "state.json").read_text())
        return state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        return {}


def words_checkpoints(run_dir) -> list[tuple[Path, dict]]:
    """The words_N checkpoints with their state, in order of words seen."""
    found = [(p, checkpoint_state(p)) for p in list_checkpoints(run_dir, WORDS_NAME)]
    return sorted(found, key=lambda ps: (ps[1].get("words_seen", 0), ps[1].get("step", 0)))


def latest_checkpoint(run_dir) -> Path | None:
    root = Path(run_dir) / CKPT_DIR
    pointer = root / "latest"
    if pointer.is_file() and not pointer.is_symlink():
        name = pointer.read_text(errors="replace").strip()
        if NAME.fullmatch(name) and (root / name).is_dir():
            return root / name
    ckpts = list_checkpoints(run_dir, NAME)  # no pointer: the one of the highest step
    return max(ckpts, key=lambda p: checkpoint_state(p).get("step", -1)) if ckpts else None


# ---------------------------------------------------------------- loading
def _corrupt(path: Path, why: str, run_dir) -> UserError:
    others = [p.name for p in list_checkpoints(run_dir, NAME) if p != path]
    fix = f"move it aside to use {others[-1]}" if others else "retrain, or restore it from a backup"
    return UserError(f"checkpoint {path} is corrupt ({why}); {fix}")


def load_weights(path: Path, run_dir=None) -> dict:
    f = path / "model.safetensors"
    if not f.is_file():
        raise _corrupt(path, "model.safetensors missing", run_dir or path.parent.parent)
    try:
        return load_file(str(f))
    except Exception as e:
        raise _corrupt(path, str(e).splitlines()[0][:120], run_dir or path.parent.parent) from None


WEIGHTS = ("auto", "ema", "raw")  # which weights a trained run is read with (auto: the EMA where it has one)


def weights_kind(path: Path, which: str = "auto") -> str:
    """Which weights of a checkpoint `which` (auto, ema, raw) means: "ema" (its moving average, where it keeps
    one) or "raw" (the weights as trained)."""
    if which not in WEIGHTS:
        raise UserError(f"unknown --weights {which!r} (choose one of: {', '.join(WEIGHTS)})")
    if which != "raw" and (path / EMA_FILE).is_file():
        return "ema"
    if which == "ema":
        raise UserError(f"checkpoint {path} keeps no moving average of its weights (trained without --ema-decay); "
                        "drop --weights ema")  # fmt: skip
    return "raw"


def read_weights(path: Path, run_dir=None, which: str = "auto") -> tuple[dict, str]:
    """(weights, "ema" or "raw") of a checkpoint, as `weights_kind` picks them."""
    kind = weights_kind(path, which)
    return (load_ema(path, run_dir) if kind == "ema" else load_weights(path, run_dir)), kind


def load_ema(path: Path, run_dir=None) -> dict | None:
    """The checkpoint's moving average of the weights (--ema-decay), or None when it has none."""
    f = path / EMA_FILE
    if not f.is_file():
        return None
    try:
        return load_file(str(f))
    except Exception as e:
        raise _corrupt(path, str(e).splitlines()[0][:120], run_dir or path.parent.parent) from None


def first_non_finite(state, name: str = "") -> str | None:
    """The name of the first floating-point tensor holding nan or inf in a (nested) state dict, or None."""
    if isinstance(state, torch.Tensor):
        return name if state.is_floating_point() and not bool(torch.isfinite(state).all()) else None
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    return next((bad for k, v in items if (bad := first_non_finite(v, f"{name}.{k}" if name else str(k)))), None)


def _check_state(state: dict) -> None:
    """The counters of state.json: whole numbers (or finite seconds and FLOPs), never negative."""

    def finite(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < float("inf")

    for key in ("step", "tokens_seen", "stage", "step_in_stage", "seq_len"):
        if key in state and (not isinstance(state[key], int) or isinstance(state[key], bool) or state[key] < 0):
            raise ValueError(f"state.json: {key} is {state[key]!r}, not a count")
    # words seen: a count, or English-equivalent words (a float) with languages
    for key in ("words_seen", "elapsed", "teacher_flops"):
        if key in state and not finite(state[key]):
            raise ValueError(f"state.json: {key} is {state[key]!r}, not a finite number")
    words = state.get("language_words", {})
    if not isinstance(words, dict) or not all(isinstance(k, str) and finite(v) for k, v in words.items()):
        raise ValueError("state.json: language_words is not words by language")


def _check_rng(rng) -> None:
    """RNG states of the shapes this process's generators take (set_rng_state would fail mid-way)."""
    mine = rng_state()
    ok = isinstance(rng, dict) and isinstance(rng.get("torch"), list) and len(rng["torch"]) == len(mine["torch"])
    ok = (
        ok
        and isinstance(rng.get("numpy"), list)
        and len(rng["numpy"]) == 5
        and isinstance(rng["numpy"][1], list)
        and len(rng["numpy"][1]) == len(mine["numpy"][1])
    )
    ok = (
        ok
        and isinstance(rng.get("python"), list)
        and len(rng["python"]) == 3
        and isinstance(rng["python"][1], list)
        and len(rng["python"][1]) == len(mine["python"][1])
    )
    if not ok or not all(isinstance(v, int) and 0 <= v < 256 for v in rng["torch"]):
        raise ValueError("rng.json does not hold the random generators' states")


def load_training_state(path: Path, run_dir) -> tuple[dict, dict, dict]:
    """(optimizer state, rng state, state.json) of a checkpoint, with a clear error if damaged."""
    if (path / "rng.pt").exists() and not (path / "rng.json").exists():
        raise UserError(
            f"checkpoint {path} is in the old pickle format, which hlm no longer loads (it could run code); "
            "its weights still evaluate and export, but to train on start a new run"
        )
    try:
        state = json.loads((path / "state.json").read_text())
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            raise ValueError("state.json has no step")
        _check_state(state)
        optimizer = _load_optimizer(path / "optimizer.safetensors")
        if not isinstance(optimizer["param_groups"], list) or not all(
            isinstance(g, dict) for g in optimizer["param_groups"]
        ):
            raise ValueError("the optimizer's param_groups are not a list of groups")
        rng = json.loads((path / "rng.json").read_text())
        _check_rng(rng)
    except FileNotFoundError as e:
        raise _corrupt(path, f"{Path(e.filename).name} missing", run_dir) from None
    except Exception as e:
        raise _corrupt(path, str(e).splitlines()[0][:120] if str(e) else type(e).__name__, run_dir) from None
    return optimizer, rng, state
